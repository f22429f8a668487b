"""checkov on the rendered manifests of every overlay: zero failed checks, and every skipped
check is listed and justified in manifests/CHECKOV_SKIPS.md (and still needed).

checkov lives in its own virtualenv (its pins clash with constraints.txt): `make
checkov-setup` installs tests/manifests/checkov-requirements.txt into .venv/checkov. Without
it these tests skip, except under CI=true, where they fail. Needs kubectl to render. No fakes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _k8s_checks import (
    MANIFESTS,
    OVERLAYS,
    REPO,
    _render,  # the cached `kubectl kustomize` text
    render,
)

CONFIG = MANIFESTS / "checkov.yaml"
SKIPS_DOC = MANIFESTS / "CHECKOV_SKIPS.md"
REQUIREMENTS = Path(__file__).with_name("checkov-requirements.txt")
SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")


def _checkov() -> str:
    for candidate in (
        os.environ.get("KUBETRADE_CHECKOV"),
        str(REPO / ".venv" / "checkov" / "bin" / "checkov"),
        shutil.which("checkov"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    message = "checkov not installed: run `make checkov-setup` (installs it into .venv/checkov)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _run(checkov: str, target: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [checkov, "-f", str(target), "-o", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=target.parent,
    )


def _report(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, 1):  # 1 = some check failed; anything else is an error
        raise AssertionError(f"checkov {what} exited {proc.returncode}:\n{err[-3000:]}")
    data = json.loads(out)
    (report,) = [r for r in (data if isinstance(data, list) else [data])]
    assert report["check_type"] == "kubernetes"
    return dict(report)


def _strip_skip_annotations(text: str) -> str:
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        annotations = doc.get("metadata", {}).get("annotations") or {}
        for key in [k for k in annotations if SKIP_ANNOTATION.match(k)]:
            del annotations[key]
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One checkov run per overlay with our config, plus one on base with no skips at all
    (config skip list and annotations removed), all in parallel."""
    checkov = _checkov()
    folder = tmp_path_factory.mktemp("checkov")
    procs = {}
    for overlay in OVERLAYS:
        target = folder / f"{overlay.replace('/', '_')}.yaml"
        target.write_text(_render(overlay))
        procs[overlay] = _run(checkov, target, "--config-file", str(CONFIG))
    unskipped = folder / "base-unskipped.yaml"
    unskipped.write_text(_strip_skip_annotations(_render("base")))
    procs["unskipped"] = _run(
        checkov,
        unskipped,
        "--framework",
        "kubernetes",
        "--skip-download",
        "--check",
        ",".join(sorted({row["check"] for row in _documented()})),
    )
    return {name: _report(proc, name) for name, proc in procs.items()}


def _documented() -> list[dict[str, str]]:
    """Rows of the table in manifests/CHECKOV_SKIPS.md."""
    rows = []
    for line in SKIPS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"CKV2?_K8S_\d+", cells[0]):
            rows.append(dict(zip(("check", "scope", "where", "why"), cells, strict=True)))
    return rows


def _annotation_skips() -> set[tuple[str, str]]:
    """(check id, Kind/name) for every checkov.io/skip annotation in any overlay."""
    found = set()
    for overlay in OVERLAYS:
        for obj in render(overlay):
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if SKIP_ANNOTATION.match(key):
                    check, _, reason = str(value).partition("=")
                    assert reason.strip(), f"{key} on {obj['metadata']['name']} has no reason"
                    found.add((check.strip(), f"{obj['kind']}/{obj['metadata']['name']}"))
    return found


def test_requirements_pin_checkov_exactly() -> None:
    lines = [
        line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9._\-\[\]]+==[\w.+!-]+", line) for line in lines), lines
    assert any(line.startswith("checkov==") for line in lines)


def test_skip_list_equals_the_documented_list() -> None:
    rows = _documented()
    assert rows, "no rows parsed from manifests/CHECKOV_SKIPS.md"
    for row in rows:
        assert len(row["why"]) > 80, f"{row['check']}: justify the skip in CHECKOV_SKIPS.md"
    config = yaml.safe_load(CONFIG.read_text())
    assert config["framework"] == ["kubernetes"]
    assert set(config.get("skip-check") or []) == {r["check"] for r in rows if r["scope"] == "all"}
    assert _annotation_skips() == {(r["check"], r["scope"]) for r in rows if r["scope"] != "all"}
    assert not config.get("soft-fail") and not config.get("soft-fail-on")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_reports_no_failed_check(reports: dict[str, dict[str, Any]], overlay: str) -> None:
    report = reports[overlay]
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"].get("failed_checks", [])
    ]
    assert summary["failed"] == 0 and failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 300  # the scan really ran over every object
    # the only checks skipped in a run are the documented per-resource annotations
    skipped = {
        (c["check_id"], c["resource"].split(".")[0] + "/" + c["resource"].split(".")[-1])
        for c in report["results"].get("skipped_checks", [])
    }
    assert skipped == _annotation_skips()


def test_every_skip_is_still_needed(reports: dict[str, dict[str, Any]]) -> None:
    """Without the skips, each documented check fails exactly where the table says."""
    failed = {
        (c["check_id"], c["resource"].split(".")[0] + "/" + c["resource"].split(".")[-1])
        for c in reports["unskipped"]["results"].get("failed_checks", [])
    }
    workloads = {
        f"{o['kind']}/{o['metadata']['name']}"
        for o in render("base")
        if o["kind"] in {"Deployment", "StatefulSet"}
    }
    expected = set()
    for row in _documented():
        scopes = workloads if row["scope"] == "all" else {row["scope"]}
        expected |= {(row["check"], scope) for scope in scopes}
    assert failed == expected
