"""Every Experiment we emit passes each supported Katib's Go types (its swagger.json,
strictly) and the webhook's rules (a port of validator.go), after go-yaml v2 decoding of
the YAML we print: what kubectl sends is what is checked."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from _contracts import KATIB_SWAGGER, katib_validator, katib_webhook_errors, schema_problems

from conftest import job_profile
from kubetrade.errors import ConfigError
from kubetrade.k8s import ALGORITHMS, MedianStop, build_experiment, goyaml
from kubetrade.k8s.versions import KATIB_VERSIONS, katib_has_distribution
from kubetrade.tuning.katib_backend import KatibOptions, build_tuning_experiment, experiment_yaml
from kubetrade.tuning.spec import TuningSpec

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "kubetrade/base:0.1.0"
LOG_SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "batch_size": {"type": "choice", "values": [16, 32, 64, 128]},
    "num_layers": {"type": "int", "low": 1, "high": 4},
    "dropout": {"type": "uniform", "low": 0.1, "high": 0.5, "step": 0.1},
}
LINEAR_SPACE = {k: v for k, v in LOG_SPACE.items() if k != "learning_rate"}


def _as_kubectl_sends(exp: dict[str, Any]) -> dict[str, Any]:
    decoded = goyaml.load(experiment_yaml(exp))
    assert decoded == exp  # the YAML means what we built, under go-yaml v2 rules
    return decoded


@cache
def _experiments(version: str) -> dict[str, dict[str, Any]]:
    space = LOG_SPACE if katib_has_distribution(version) else LINEAR_SPACE
    out = {}
    for algorithm in ALGORITHMS:
        settings: dict[str, Any] = {}
        trials = 12
        if algorithm == "hyperband":
            settings = {"resource_name": "num_layers", "eta": 3}
        if algorithm == "grid":
            trials = 8
        grid_space = {
            "batch_size": LOG_SPACE["batch_size"],
            "dropout": LOG_SPACE["dropout"],
        }
        out[algorithm] = build_experiment(
            f"tune-{algorithm}",
            namespace="team-a",
            search_space=grid_space if algorithm == "grid" else space,
            trial_image=IMAGE,
            algorithm=algorithm,
            algorithm_settings=settings,
            max_trial_count=trials,
            parallel_trial_count=2,
            early_stopping=MedianStop() if algorithm == "tpe" else None,
            additional_metrics=["val_loss"],
            katib_version=version,
            num_workers=1,
            profile=job_profile(IMAGE, pvc_name="kubetrade-data"),
        )
    spec = TuningSpec.from_yaml(ROOT / "config" / "search_space.yaml")
    if katib_has_distribution(version):
        out["cli-default-spec"] = build_tuning_experiment(
            spec, KatibOptions(image=IMAGE, katib_version=version), name="kubetrade-tuning"
        )
    return out


def test_versions_match_the_matrix() -> None:
    assert set(KATIB_VERSIONS) == set(KATIB_SWAGGER)


@pytest.mark.parametrize("version", KATIB_VERSIONS)
def test_every_experiment_passes_go_types_and_webhook(version: str) -> None:
    validator = katib_validator(version)
    for name, exp in _experiments(version).items():
        sent = _as_kubectl_sends(exp)
        assert schema_problems(validator, sent) == [], name
        assert katib_webhook_errors(sent) == [], name


@pytest.mark.parametrize("version", KATIB_VERSIONS)
def test_go_types_reject_floats_for_strings_and_unknown_fields(version: str) -> None:
    """Negative control: ``min: 1e-05`` unquoted decodes to a float, which the Go string
    field rejects; an unknown field is dropped by the Go decoder (strict here)."""
    exp = _experiments(version)["random"]
    text = experiment_yaml(exp).replace("min: '0.1'", "min: 1e-05", 1)
    assert "min: 1e-05" in text
    problems = schema_problems(katib_validator(version), goyaml.load(text))
    assert any("feasibleSpace/min" in p and "not of type 'string'" in p for p in problems)
    bad = copy.deepcopy(exp)
    bad["spec"]["parameters"][0]["feasibleSpace"]["distrbution"] = "uniform"
    assert any("distrbution" in p for p in schema_problems(katib_validator(version), bad))


def test_katib_v017_has_no_distribution_and_log_scale_is_refused() -> None:
    """Issue #13, defect 10: v0.17's Go type has no ``distribution``; a log-uniform
    parameter would silently be sampled uniformly. Upstream's types decide."""
    with_dist = build_experiment(
        "tune-x", namespace="a", search_space=LOG_SPACE, trial_image=IMAGE,
        katib_version="v0.18.0",
    )  # fmt: skip
    v017 = schema_problems(katib_validator("v0.17.0"), with_dist)
    assert any("distribution" in p for p in v017)  # v0.17 would drop it
    assert schema_problems(katib_validator("v0.18.0"), with_dist) == []
    with pytest.raises(ConfigError, match="learning_rate.*log-scale.*v0.17"):
        build_experiment(
            "tune-x", namespace="a", search_space=LOG_SPACE, trial_image=IMAGE,
            katib_version="v0.17.0",
        )  # fmt: skip
    linear = build_experiment(
        "tune-x", namespace="a", search_space=LINEAR_SPACE, trial_image=IMAGE,
        katib_version="0.17",
    )  # fmt: skip
    assert schema_problems(katib_validator("v0.17.0"), linear) == []


def test_webhook_port_rejects_mistakes() -> None:
    """Negative control for the port of validator.go."""
    exp = _experiments("v0.19.0")["random"]
    cases = {
        "metadata.name": lambda e: e["metadata"].update(name="Bad_Name"),
        "parallelTrialCount > maxTrialCount": lambda e: e["spec"].update(parallelTrialCount=99),
        "not in spec.parameters": lambda e: e["spec"]["trialTemplate"]["trialParameters"][0].update(
            reference="nope"
        ),
        "must be omitted": lambda e: e["spec"]["trialTemplate"]["trialSpec"]["metadata"].update(
            name="x"
        ),
        "max or .min": lambda e: e["spec"]["parameters"][2]["feasibleSpace"].pop("max"),
        "two top subexpressions": lambda e: e["spec"]["metricsCollectorSpec"]["source"][
            "filter"
        ].update(metricsFormat=["([a-z]+)=.*"]),
    }
    for fragment, mutate in cases.items():
        bad = copy.deepcopy(exp)
        mutate(bad)
        assert any(fragment in e for e in katib_webhook_errors(bad)), fragment


def test_the_cluster_profile_names_its_katib_and_the_pipeline_follows_it(tmp_path: Path) -> None:
    from kubetrade.config import TrainingConfig
    from kubetrade.k8s import ClusterTrainingProfile, load_cluster_profile
    from kubetrade.k8s.train_step import katib_options

    kind = load_cluster_profile(ROOT / "manifests/overlays/kind/cluster-profile/profile.yaml")
    assert kind.katib_version == "v0.19.0"  # the kind pin
    profile = ClusterTrainingProfile(
        image=IMAGE, katib_version="0.17", data_mount_path=str(tmp_path)
    )
    bundle = tmp_path / "b.npz"
    bundle.write_bytes(b"x")
    options = katib_options(profile, "abc123", bundle, TrainingConfig())
    assert options.katib_version == "v0.17.0" and options.run_id == "abc123"
    with pytest.raises(ConfigError, match="log-scale"):  # the default space has a loguniform
        build_tuning_experiment(
            TuningSpec.from_yaml(ROOT / "config" / "search_space.yaml"), options, name="t"
        )
    with pytest.raises(ConfigError, match="Katib 'v0.16' is not supported"):
        ClusterTrainingProfile(image=IMAGE, katib_version="v0.16")
