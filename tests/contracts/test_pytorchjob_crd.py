"""Every PyTorchJob we build validates strictly against each supported Training Operator's
CRD (tests/contracts/upstream/pytorchjobs-crd-*.yaml): unknown fields fail."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from _contracts import PYTORCHJOB_CRDS, crd_validator, schema_problems

from conftest import job_profile
from kubetrade.k8s import build_experiment, build_pytorchjob, load_cluster_profile
from kubetrade.k8s.versions import TRAINING_OPERATOR_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "kubetrade/base:0.1.0"
PROFILES = sorted((ROOT / "manifests").glob("**/cluster-profile/profile.yaml"))


def _jobs() -> dict[str, dict[str, Any]]:
    jobs = {
        "cpu": build_pytorchjob("cpu", job_profile(IMAGE), args=["--bundle", "/data/b"]),
        "gpu": build_pytorchjob(
            "gpu",
            job_profile(
                "kubetrade/trainer:0.1.0",
                num_workers=3,
                nproc_per_node=2,
                gpus_per_worker=2,
                tolerations=[
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
                node_selector={"nvidia.com/gpu.present": "true"},
                secret_env={"TOKEN": {"secret": "s", "key": "k", "optional": True}},
                active_deadline_seconds=3600,
            ),
        ),
    }
    for path in PROFILES:
        profile = load_cluster_profile(path)
        jobs[str(path.parent.parent.relative_to(ROOT))] = profile.build(
            "train-x", ["--bundle", "/data/b"], namespace="kubetrade"
        )
    exp = build_experiment(
        "tune-x", namespace="kubetrade", trial_image=IMAGE,
        search_space={"lr": {"type": "uniform", "low": 0.1, "high": 0.5}},
        num_workers=1, profile=job_profile(IMAGE),
    )  # fmt: skip
    trial = copy.deepcopy(exp["spec"]["trialTemplate"]["trialSpec"])
    trial["metadata"]["name"] = "tune-x-abcd1234"  # Katib names the trial's job
    jobs["katib-trial"] = trial
    return jobs


def test_versions_match_the_matrix() -> None:
    assert set(TRAINING_OPERATOR_VERSIONS) == set(PYTORCHJOB_CRDS)


@pytest.mark.parametrize("version", TRAINING_OPERATOR_VERSIONS)
@pytest.mark.parametrize("name", list(_jobs()))
def test_every_pytorchjob_validates_strictly(version: str, name: str) -> None:
    assert schema_problems(crd_validator(version), _jobs()[name]) == []


@pytest.mark.parametrize("version", TRAINING_OPERATOR_VERSIONS)
def test_strict_schema_rejects_unknown_and_mistyped_fields(version: str) -> None:
    """Negative control: the schema really is strict (the API server would prune these)."""
    job = _jobs()["cpu"]
    typo = copy.deepcopy(job)
    typo["spec"]["runPolicy"]["cleanPodPolicyy"] = "Running"
    container_typo = copy.deepcopy(job)
    container_typo["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "imagePullPolicyy"
    ] = "Always"
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "1"
    for bad, fragment in (
        (typo, "cleanPodPolicyy"),
        (container_typo, "imagePullPolicyy"),
        (wrong_type, "is not of type 'integer'"),
    ):
        problems = schema_problems(crd_validator(version), bad)
        assert any(fragment in p for p in problems), problems
