"""Every YAML kubetrade emits parses to the intended objects under go-yaml v2 rules (what
kubectl and the API server use): ``kubetrade tune --backend katib --dry-run`` stdout and
its written file, compiled pipelines, rendered overlays and the cluster profiles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _contracts import katib_validator, katib_webhook_errors, schema_problems
from typer.testing import CliRunner

from kubetrade.cli import app
from kubetrade.k8s import goyaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["base", "overlays/kind", "overlays/gpu"]


def _same_under_both(text: str) -> list[Any]:
    go = goyaml.load_all(text)
    py = [d for d in yaml.safe_load_all(text) if d is not None]
    assert go == py, "a scalar means different things to go-yaml v2 and PyYAML"
    return go


def test_tune_dry_run_prints_plain_yaml_that_kubectl_reads_as_meant(tmp_path: Path) -> None:
    """Issue #13, defect 3: stdout went through Rich (wrapped at the terminal width, so not
    YAML when piped) and ``min: 1e-05`` was unquoted (a float to go-yaml, a string in
    Katib's Go type: the webhook rejected it)."""
    result = CliRunner().invoke(
        app,
        ["tune", "--backend", "katib", "--dry-run", "--bundle", "runs/r1/bundle.npz",
         "--run-dir", str(tmp_path)],
        env={"COLUMNS": "40", "KUBETRADE_NAMESPACE": "team-a"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stdout = result.stdout
    assert max(len(line) for line in stdout.splitlines()) > 40  # not wrapped
    (exp,) = _same_under_both(stdout)
    written = (tmp_path / "tuning" / "katib_experiment.yaml").read_text()
    assert goyaml.load(written) == exp
    assert exp["kind"] == "Experiment" and exp["metadata"]["namespace"] == "team-a"
    spaces = {p["name"]: p["feasibleSpace"] for p in exp["spec"]["parameters"]}
    assert spaces["training.learning_rate"]["min"] == "1e-05"  # a string, as Katib's Go type
    assert "min: '1e-05'" in stdout
    for version in ("v0.18.0", "v0.19.0"):
        assert schema_problems(katib_validator(version), exp) == []
    assert katib_webhook_errors(exp) == []


@pytest.mark.parametrize(
    "path", sorted((ROOT / "pipelines" / "compiled").glob("*.yaml")), ids=lambda p: p.name
)
def test_compiled_pipelines_mean_the_same_under_go_yaml(path: Path) -> None:
    docs = _same_under_both(path.read_text(encoding="utf-8"))
    assert docs[0]["pipelineInfo"]["name"] == "kubetrade-training"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlays_mean_the_same_under_go_yaml(overlay: str) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is needed to render the overlays")
    text = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    objs = _same_under_both(text)
    profiles = [o for o in objs if o["metadata"]["name"] == "kubetrade-cluster-profile"]
    (profile,) = profiles
    # the ConfigMap's embedded profile is parsed by PyYAML in the step: no ambiguity there
    _same_under_both(profile["data"]["profile.yaml"])


@pytest.mark.parametrize("overlay", ["serving/base", "serving/overlays/kind"])
def test_rendered_serving_overlays_mean_the_same_under_go_yaml(overlay: str) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is needed to render the overlays")
    text = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    kinds = {o["kind"] for o in _same_under_both(text)}
    assert "InferenceService" in kinds


@pytest.mark.parametrize(
    "path", sorted((ROOT / "manifests").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_manifest_source_means_the_same_under_go_yaml(path: Path) -> None:
    _same_under_both(path.read_text(encoding="utf-8"))
