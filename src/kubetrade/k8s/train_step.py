"""``backend: kubeflow``: the cluster training step (the heavy steps as cluster jobs, driven
from the pipeline's tasks).

With ``backend: kubeflow`` the ``train`` task does not train in its own pod: it stages the
run's window bundle and training config on the shared data volume (the PVC that the
compiled pipeline mounts into the task with kfp-kubernetes, and the cluster profile mounts
into trainer pods at the same path), creates a ``kubeflow.org/v1`` PyTorchJob running the
same torchrun entry point (``kubetrade.training.run``), streams the master's log, fails
the step when the job fails or misses its deadline, and copies the trained weights back
into the task's KFP artifact. Checkpoints and the resumable snapshot live on the volume,
so a restarted trainer pod resumes where it stopped. The ``tune`` task does the same with
a Katib Experiment whose trials are PyTorchJobs.

Where trainer pods run (image, workers, GPUs, tolerations, PVC) is the overlay's
:class:`~kubetrade.k8s.ClusterTrainingProfile`: the ConfigMap ``kubetrade-cluster-profile``,
or a YAML file named by ``$KUBETRADE_CLUSTER_PROFILE``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml

from kubetrade.config import TrainingConfig
from kubetrade.errors import TrainingError

__all__ = [
    "PROFILE_ENV",
    "resolve_profile",
    "stage_inputs",
    "train_on_cluster",
    "katib_options",
]

#: A cluster-profile YAML file to use instead of the overlay's ConfigMap.
PROFILE_ENV = "KUBETRADE_CLUSTER_PROFILE"


def resolve_profile(core: Any = None) -> Any:
    """The :class:`~kubetrade.k8s.ClusterTrainingProfile` for this run's trainer pods."""
    from kubetrade.k8s.cluster_profile import cluster_profile_from_configmap, load_cluster_profile
    from kubetrade.k8s.lifecycle import kube_clients

    path = os.environ.get(PROFILE_ENV)
    if path:
        return load_cluster_profile(path)
    if core is None:
        _, core = kube_clients()
    return cluster_profile_from_configmap(core)


def _job_name(prefix: str, key: str) -> str:
    """A DNS-1035 label (PyTorchJob / Experiment name) unique to this run."""
    clean = re.sub(r"[^a-z0-9]", "", key.lower())[:12] or uuid.uuid4().hex[:12]
    return f"{prefix}-{clean}"


def stage_inputs(
    profile: Any, key: str, bundle_path: str | Path, training: TrainingConfig
) -> tuple[Path, Path, Path]:
    """Copy the bundle and write the training config under ``<mount>/runs/<key>/``.

    Returns ``(stage_dir, bundle_on_volume, config_on_volume)``. The task and the trainer
    pods mount the same claim at ``profile.data_mount_path``, so these paths are valid in both.
    """
    if not profile.pvc_name:
        raise TrainingError(
            "backend kubeflow needs shared storage: set pvc_name in the cluster profile "
            "(ConfigMap kubetrade-cluster-profile) so the task and the trainer pods share files"
        )
    stage = Path(profile.data_mount_path) / "runs" / key
    try:
        stage.mkdir(parents=True, exist_ok=True)
        bundle = stage / "bundle.npz"
        tmp = stage / ".bundle.npz.tmp"
        shutil.copyfile(bundle_path, tmp)
        os.replace(tmp, bundle)
        config = stage / "training_config.yaml"
        config.write_text(
            yaml.safe_dump(training.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
    except OSError as exc:
        raise TrainingError(
            f"cannot stage inputs on the data volume at {stage} ({exc.strerror}); is the PVC "
            f"{profile.pvc_name!r} mounted at {profile.data_mount_path} in this task?"
        ) from None
    return stage, bundle, config


def train_on_cluster(
    training: TrainingConfig,
    bundle_path: str | Path,
    model_dir: str | Path,
    mlflow_run_id: str,
    tracking_uri: str,
    *,
    profile: Any = None,
    launcher: Any = None,
) -> Any:
    """Train as a PyTorchJob; returns the :class:`~kubetrade.training.trainer.TrainResult`
    with ``final_model_path`` pointing into ``model_dir``.

    Raises:
        TrainingError: the job failed, vanished or missed ``profile.wait_deadline_s`` (the
            job is then deleted), or it succeeded without writing its result.
    """
    from kubetrade.k8s.lifecycle import run_pytorchjob
    from kubetrade.training.trainer import RESULT_NAME, TrainResult

    profile = profile if profile is not None else resolve_profile()
    stage, bundle, config = stage_inputs(profile, mlflow_run_id, bundle_path, training)
    out = stage / "train"
    name = _job_name("kubetrade-train", mlflow_run_id)
    job = profile.build(
        name,
        args=[
            "--bundle", str(bundle), "--config", str(config), "--out", str(out),
            "--mlflow-run-id", mlflow_run_id, "--tracking-uri", tracking_uri,
        ],
        labels={"app.kubernetes.io/part-of": "kubetrade", "kubetrade/step": "train"},
    )  # fmt: skip
    print(
        f"[kubetrade] train: PyTorchJob {name} ({profile.num_workers + 1} pod(s) x "
        f"{profile.nproc_per_node} process(es), image {profile.image})",
        flush=True,
    )
    run_pytorchjob(
        job,
        deadline_s=profile.wait_deadline_s,
        poll_s=profile.poll_s,
        launcher=launcher,
        unschedulable_grace_s=profile.unschedulable_grace_s,
    )
    result_file = out / RESULT_NAME
    if not result_file.is_file():
        raise TrainingError(
            f"PyTorchJob {name} succeeded but wrote no {result_file}; check that the trainer "
            f"pods mount PVC {profile.pvc_name!r} at {profile.data_mount_path}"
        )
    result = TrainResult(**json.loads(result_file.read_text(encoding="utf-8")))
    if not result.final_model_path or not Path(result.final_model_path).is_file():
        raise TrainingError(f"PyTorchJob {name}: final model {result.final_model_path} missing")
    dest = Path(model_dir) / "final_model.pth"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.final_model_path, dest)
    result.final_model_path = str(dest)
    return result


def katib_options(profile: Any, key: str, bundle_path: str | Path, training: TrainingConfig) -> Any:
    """:class:`~kubetrade.tuning.KatibOptions` with the bundle staged on the data volume."""
    from kubetrade.tuning.katib_backend import KatibOptions

    stage, bundle, config = stage_inputs(profile, key, bundle_path, training)
    return KatibOptions(
        profile=profile,
        bundle_path=str(bundle),
        config_path=str(config),
        output_root=str(stage / "tuning"),
        deadline_s=profile.wait_deadline_s,
        run_id=re.sub(r"[^a-z0-9]", "", key.lower())[:8] or uuid.uuid4().hex[:8],
        katib_version=profile.katib_version,
    )
