"""Our custom resources against their schemas: PyTorchJob (Training Operator v1.9 CRD
subset + the Kubernetes 1.32 PodTemplateSpec) and Katib Experiment (Katib's v1beta1 OpenAPI
definitions, see schemas/*.json for provenance) plus a port of Katib's admission-webhook
rules. No cluster and no fakes: the builders' real output is checked."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from _k8s_checks import schema_errors

# one port of Katib's webhook rules, shared with the contract tests (tests/contracts/_contracts.py)
sys.path.insert(0, str(Path(__file__).parents[1] / "contracts"))
from _contracts import katib_webhook_errors  # noqa: E402

from conftest import job_profile
from kubetrade.k8s import (
    ALGORITHMS,
    TRIAL_NAME_PLACEHOLDER,
    MedianStop,
    build_experiment,
    build_pytorchjob,
)

PYTORCHJOB = "pytorchjob.kubeflow.org_v1.json"
EXPERIMENT = "experiment.kubeflow.org_v1beta1.json"
IMAGE = "kubetrade/base:0.1.0"
SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "batch_size": {"type": "choice", "values": [16, 32, 64, 128]},
    "model.lstm.hidden_dim": {"type": "choice", "values": [128, 256, 512]},
    "num_layers": {"type": "int", "low": 1, "high": 4},
    "dropout": {"type": "uniform", "low": 0.1, "high": 0.5},
}


def _jobs() -> list[dict[str, Any]]:
    return [
        build_pytorchjob("cpu", job_profile(IMAGE)),
        build_pytorchjob(
            "gpu",
            job_profile(
                "kubetrade/trainer:0.1.0",
                num_workers=3,
                nproc_per_node=4,
                gpus_per_worker=4,
                tolerations=[
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
                node_selector={"nvidia.com/gpu.present": "true"},
                secret_env={"TOKEN": {"secret": "s", "key": "k", "optional": True}},
                pvc_name="kubetrade-data",
                service_account="kubetrade-trainer",
                active_deadline_seconds=3600,
                ttl_seconds_after_finished=None,
            ),
        ),
    ]


@pytest.mark.parametrize("job", _jobs(), ids=["cpu", "gpu"])
def test_pytorchjob_matches_crd_schema(job: dict[str, Any]) -> None:
    assert schema_errors(job, PYTORCHJOB) == []


def test_pytorchjob_schema_rejects_mistakes() -> None:
    job = _jobs()[0]
    typo = copy.deepcopy(job)
    typo["spec"]["runPolicy"]["backofLimit"] = 3
    bad_policy = copy.deepcopy(job)
    bad_policy["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] = "Sometimes"
    bad_pod = copy.deepcopy(job)
    bad_pod["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "resources"
    ]["limit"] = {"cpu": "1"}
    no_master = copy.deepcopy(job)
    no_master["spec"]["pytorchReplicaSpecs"] = {
        "Chief": no_master["spec"]["pytorchReplicaSpecs"]["Master"]
    }
    for bad, fragment in [
        (typo, "backofLimit"),
        (bad_policy, "Sometimes"),
        (bad_pod, "limit"),
        (no_master, "Master"),
    ]:
        errors = schema_errors(bad, PYTORCHJOB)
        assert errors and any(fragment in e for e in errors), errors


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_experiment_matches_katib_schema_and_webhook_rules(algorithm: str) -> None:
    space: dict[str, Any] = dict(SPACE)
    settings: dict[str, str] = {}
    if algorithm == "grid":
        space = {
            "dropout": {"type": "uniform", "low": 0.1, "high": 0.5, "step": 0.1},
            "batch_size": {"type": "choice", "values": [16, 32]},
        }
    if algorithm == "hyperband":
        space["num_epochs"] = {"type": "int", "low": 4, "high": 36}
        settings = {"resource_name": "num_epochs", "eta": "3", "r_l": "9"}
    exp = build_experiment(
        f"tune-{algorithm}",
        search_space=space,
        trial_image=IMAGE,
        trial_args=["--bundle", "/data/b", "--out", f"/data/tune/{TRIAL_NAME_PLACEHOLDER}"],
        algorithm=algorithm,
        algorithm_settings=settings,
        additional_metrics=["val_loss", "val_accuracy"],
        early_stopping=MedianStop() if algorithm in {"tpe", "random"} else None,
        max_trial_count=10,
        parallel_trial_count=2,
        profile=job_profile(IMAGE, pvc_name="kubetrade-data", service_account="kubetrade-trainer"),
        num_workers=1,
    )
    assert schema_errors(exp, EXPERIMENT) == []
    assert katib_webhook_errors(exp) == []


def test_katib_checks_catch_mistakes() -> None:
    """Negative controls for the Katib schema and the webhook port."""
    exp = build_experiment("tune-x", search_space=SPACE, trial_image=IMAGE)
    typo = copy.deepcopy(exp)
    typo["spec"]["parameters"][0]["feasibleSpace"]["distrubution"] = "logUniform"
    assert any("distrubution" in e for e in schema_errors(typo, EXPERIMENT))

    unused = copy.deepcopy(exp)
    unused["spec"]["trialTemplate"]["trialParameters"].append(
        {"name": "momentum", "reference": "momentum"}
    )
    errors = katib_webhook_errors(unused)
    assert any("not in spec.parameters" in e for e in errors)
    assert any("'momentum' not found in trialSpec" in e for e in errors)

    undeclared = copy.deepcopy(exp)
    master = undeclared["spec"]["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"][
        "Master"
    ]
    master["template"]["spec"]["containers"][0]["args"].append("${trialParameters.ghost}")
    assert any("undeclared" in e for e in katib_webhook_errors(undeclared))

    named = copy.deepcopy(exp)
    named["spec"]["trialTemplate"]["trialSpec"]["metadata"]["name"] = "fixed"
    assert any("must be omitted" in e for e in katib_webhook_errors(named))
