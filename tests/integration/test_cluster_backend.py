"""``backend: kubeflow``: the train step as a PyTorchJob, against a fake API server.

No Kubernetes API server can run here, so the API is the suite's one fake
(``FakeKubernetesApi``, tests/conftest.py); its scripted status here does what the
Training Operator's Master pod would do on the first GET, i.e. runs the container's own
arguments through the real trainer entry point (``kubetrade.training.run``) on the
"volume" (a temp folder standing in for the PVC), then reports ``Succeeded``; or it
reports ``Failed`` without running anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import FakeKubernetesApi, tiny_training_config
from kubetrade.errors import TrainingError
from kubetrade.k8s import ClusterTrainingProfile, CustomResourceLauncher
from kubetrade.k8s.train_step import stage_inputs, train_on_cluster
from kubetrade.training.bundle import save_bundle, synthetic_bundle
from kubetrade.training.callbacks import model_from_checkpoint

torch.set_num_threads(1)


def _training_operator(succeed: bool = True) -> FakeKubernetesApi:
    """The suite's fake API with a Training Operator's behaviour scripted as the job's status:
    the first GET runs the Master's args in-process (then Succeeded), or reports Failed."""
    ran = False

    def status(fake: FakeKubernetesApi, job: dict[str, Any]) -> dict[str, Any]:
        nonlocal ran
        assert (job["group"], job["plural"]) == ("kubeflow.org", "pytorchjobs")
        if not succeed:
            cond = {"type": "Failed", "status": "True", "reason": "OOMKilled", "message": "boom"}
            return {"status": {"conditions": [cond]}}
        if not ran:
            from kubetrade.training.run import main

            master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
            args = master["containers"][0]["args"]
            assert main([*args, "--quiet"]) == 0
            ran = True
        return {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}

    return FakeKubernetesApi([status])


def _setup(tmp_path: Path, succeed: bool) -> tuple[Any, Any, FakeKubernetesApi, Path]:
    profile = ClusterTrainingProfile(
        image="kubetrade/base:0.1.0",
        num_workers=0,
        data_mount_path=str(tmp_path / "volume"),
        wait_deadline_s=120,
        poll_s=0.01,
    )
    api = _training_operator(succeed)
    launcher = CustomResourceLauncher.for_pytorchjobs(
        api, None, "kubetrade", sleep=lambda s: None, log=lambda m: None
    )
    bundle = synthetic_bundle(n_timestamps=146, n_symbols=2, sequence_length=12, n_features=4)
    bundle_path = save_bundle(bundle, tmp_path / "artifact" / "bundle.npz")
    return profile, launcher, api, Path(bundle_path)


def test_train_step_runs_the_trainer_as_a_pytorchjob_and_returns_its_model(tmp_path):
    profile, launcher, api, bundle_path = _setup(tmp_path, succeed=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    import mlflow

    run_id = (
        mlflow.MlflowClient(uri)
        .create_run(mlflow.MlflowClient(uri).create_experiment("k"))
        .info.run_id
    )
    result = train_on_cluster(
        tiny_training_config(num_epochs=2, scheduler={"T_max": 2}),
        bundle_path,
        tmp_path / "model",
        run_id,
        uri,
        profile=profile,
        launcher=launcher,
    )
    job = api.created[0]
    assert job["kind"] == "PyTorchJob" and job["metadata"]["name"].startswith("kubetrade-train-")
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    # the trainer pod mounts the same claim the task staged the inputs on
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == ["kubetrade-data"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--bundle") + 1].startswith(str(tmp_path / "volume" / "runs"))
    assert args[args.index("--mlflow-run-id") + 1] == run_id
    # the result points into the task's artifact folder and loads
    assert Path(result.final_model_path) == tmp_path / "model" / "final_model.pth"
    model = model_from_checkpoint(result.final_model_path)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert result.epochs_run == 2
    # per-epoch metrics reached the MLflow run the step opened
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, "val_loss")
    assert len(history) == 2


def test_failed_pytorchjob_fails_the_step(tmp_path):
    profile, launcher, api, bundle_path = _setup(tmp_path, succeed=False)
    with pytest.raises(TrainingError, match="Failed|OOMKilled|boom"):
        train_on_cluster(
            tiny_training_config(num_epochs=2, scheduler={"T_max": 2}), bundle_path, tmp_path / "model", "abc123", "sqlite:///x.db",
            profile=profile, launcher=launcher,
        )  # fmt: skip
    assert not (tmp_path / "model" / "final_model.pth").exists()


def test_staging_without_shared_storage_is_a_clear_error(tmp_path):
    profile = ClusterTrainingProfile(image="kubetrade/base:0.1.0", pvc_name=None)
    with pytest.raises(TrainingError, match="shared storage"):
        stage_inputs(
            profile,
            "k",
            tmp_path / "b.npz",
            tiny_training_config(num_epochs=2, scheduler={"T_max": 2}),
        )


def test_tune_step_disabled_passes_the_configured_training_config(tmp_path):
    from kubetrade.config import load_training_config
    from kubetrade.pipeline.steps import RunConfig, tune_step

    run = RunConfig(training=tiny_training_config(num_epochs=2, scheduler={"T_max": 2}))
    run.pipeline.tuning.enabled = False
    out = tune_step(run, tmp_path / "unused.npz", tmp_path / "tuning", tmp_path / "best.yaml")
    assert out == {"tuned": 0}
    assert load_training_config(tmp_path / "best.yaml") == run.training
    assert json.dumps(out)
