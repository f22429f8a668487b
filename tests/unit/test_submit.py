"""`kubetrade submit`: unreachable host is one clear line; the wait loop fails on failure.

A fake kfp client stands in for the Kubeflow Pipelines API server, which cannot
run on this machine (no Kubernetes); everything else is real.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

import kubetrade.k8s.submit as submit_mod
from kubetrade.k8s.submit import SubmitError, submit_pipeline


class FakeClient:
    def __init__(self, states, **kwargs):
        self.states = list(states)
        self.kwargs = kwargs
        self.created = None

    def create_run_from_pipeline_package(self, path, **kwargs):
        self.created = (path, kwargs)
        return SimpleNamespace(run_id="run-1")

    def get_run(self, run_id):
        return SimpleNamespace(state=self.states.pop(0))


@pytest.fixture
def package(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("pipelineSpec: {}\n")
    return p


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(submit_mod.time, "sleep", lambda s: None)


def test_wait_succeeds_and_passes_arguments(package):
    holder = {}

    def factory(**kw):
        holder["c"] = FakeClient(["PENDING", "RUNNING", "SUCCEEDED"], **kw)
        return holder["c"]

    seen = []
    info = submit_pipeline(package, "http://kfp", arguments={"run_config": "{}"}, wait=True,
                           client_factory=factory, on_state=seen.append)  # fmt: skip
    assert info == {"run_id": "run-1", "state": "SUCCEEDED"}
    assert seen == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert holder["c"].created[1]["arguments"] == {"run_config": "{}"}
    assert holder["c"].kwargs == {"host": "http://kfp", "namespace": "kubeflow"}


def test_wait_fails_the_command_when_the_run_fails(package):
    with pytest.raises(SubmitError, match="ended FAILED"):
        submit_pipeline(package, "http://kfp", wait=True,
                        client_factory=lambda **kw: FakeClient(["RUNNING", "FAILED"]))  # fmt: skip


def test_server_error_is_one_line(package):
    class Refusing(FakeClient):
        def create_run_from_pipeline_package(self, path, **kwargs):
            raise RuntimeError("(403)\nReason: Forbidden\nHTTP response body: ...")

    with pytest.raises(SubmitError, match=r"refused the run: \(403\)$"):
        submit_pipeline(package, "http://kfp", client_factory=lambda **kw: Refusing([]))


def test_cli_unreachable_host_is_one_clear_line(package):
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrade", "submit", str(package), "--host", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach Kubeflow Pipelines at http://127.0.0.1:9" in lines[0]
