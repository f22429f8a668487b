"""Fault: the whole local pipeline killed mid-run (kill -9 of ``kubetrade run`` and all its
task processes), then run again: the rerun completes, the killed run's task outputs are
deleted and it is marked ``INTERRUPTED.json``, and the registry holds exactly one version.

Steps are idempotent (every output written to a temp name and renamed, each run in its own
folder), so the rerun repeats the finished steps rather than reusing them: kfp's local
runner has no cache. On a cluster, KFP's caching reuses them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
import contextlib

from test_local_pipeline import tiny_config  # noqa: E402


@pytest.mark.slow
def test_killed_pipeline_reruns_and_registers_exactly_one_version(tmp_path):
    import mlflow

    cfg = tiny_config(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "kubetrade", "run", "--config", str(cfg)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    # kill everything once the train task has started (tune and earlier steps finished)
    deadline = time.monotonic() + 600
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "train-op" in line or time.monotonic() > deadline:
            break
    assert any("train-op" in ln for ln in seen), "".join(seen)[-3000:]
    time.sleep(3)
    # kill -9 the whole tree: kfp task subprocesses and torchrun workers may have left the
    # process group, and a survivor would keep writing into the killed run's folder
    import psutil

    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=30)
    proc.wait(timeout=30)
    killed = next((tmp_path / "runs").glob("2*"))
    assert not (killed / "SUCCEEDED").exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (killed / "INTERRUPTED.json").is_file()
    assert not [p for p in killed.iterdir() if p.is_dir()]  # no half-written outputs left
    finished = [p for p in (tmp_path / "runs").glob("2*") if (p / "SUCCEEDED").is_file()]
    assert len(finished) == 1
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    registered = "register" in again.stdout + again.stderr
    versions = client.search_model_versions("name='kubetrade-hybrid'")
    assert len(versions) == (1 if registered else 0)
