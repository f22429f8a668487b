"""Eight registrations of one model at once (8 ``kubetrade register`` processes).

Each process registers its own logged model. Afterwards the versions must be exactly 1..8
(no gap, no duplicate), each tied to its process's run, ``champion`` on the best Sharpe and
``challenger`` on the newest version, and no promotion lock left behind. Run against a SQLite
store directly (local runs) and, marked slow, through a real ``mlflow server`` (the cluster).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kubetrade.registry.champion import REGISTRATION_TAG
from kubetrade.registry.store import LOCK_SUFFIX

N = 8
SHARPES = [0.3, 1.7, 0.9, 1.1, 0.2, 1.4, 0.6, 0.8]  # the best is not the last to start


def _exports(tmp_path: Path, store_uri: str) -> tuple[list[str], list[Path], list[Path]]:
    """N genuine hybrid exports (each its own run and logged pyfunc model) with results."""
    import mlflow
    from _registry_exports import make_export

    client = mlflow.MlflowClient(store_uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    runs, exports, results = [], [], []
    for i in range(N):
        export = make_export(client, exp, store_uri, tmp_path / f"export{i}", SHARPES[i],
                             bias=float(i))  # fmt: skip
        runs.append(export.run_id)
        exports.append(export.folder)
        results.append(export.results)
    return runs, exports, results


def _register_concurrently(
    tmp_path: Path, register_uri: str, exports: list[Path], results: list[Path]
) -> tuple[float, list[dict[str, object]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    procs = [
        subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "kubetrade",
                "register",
                "--export-dir",
                str(exports[i]),
                "--results",
                str(results[i]),
                "--model-name",
                "m",
                "--tracking-uri",
                register_uri,
                "--tag",
                f"proc={i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )  # fmt: skip
        for i in range(N)
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    wall = time.monotonic() - start
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return wall, [json.loads(out) for out, _ in outputs]


def _check(client, runs: list[str], outcomes: list[dict[str, object]]) -> None:
    versions = client.search_model_versions("name='m'")
    assert sorted(int(v.version) for v in versions) == list(range(1, N + 1))  # no gap, no dup
    by_proc = {int(v.tags["proc"]): v for v in versions}
    assert sorted(by_proc) == list(range(N))
    assert len({v.tags[REGISTRATION_TAG] for v in versions}) == N
    for i, v in by_proc.items():
        assert v.run_id == runs[i] and v.tags["mlflow_run_id"] == runs[i]
        assert float(v.tags["oos_sharpe_ratio"]) == SHARPES[i]
        assert outcomes[i]["version"] == str(v.version)
    best = max(range(N), key=lambda i: SHARPES[i])
    champ = client.get_model_version_by_alias("m", "champion")
    assert str(champ.version) == str(by_proc[best].version)
    assert str(client.get_model_version_by_alias("m", "challenger").version) == str(N)
    # each promotion was justified by the champion it saw under the lock
    promoted = [o for o in outcomes if o["promoted"]]
    assert promoted and all(
        o["champion_value"] is None or o["value"] > o["champion_value"] for o in promoted
    )
    assert not client.search_registered_models(f"name='m{LOCK_SUFFIX}'")


def test_eight_concurrent_registrations_sqlite_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs, exports, results = _exports(tmp_path, uri)
    wall, outcomes = _register_concurrently(tmp_path, uri, exports, results)
    _check(mlflow.MlflowClient(uri), runs, outcomes)
    print(f"\n{N} concurrent registrations (SQLite store): {wall:.1f} s wall")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_eight_concurrent_registrations_through_mlflow_server(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    db_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs, exports, results = _exports(tmp_path, db_uri)  # also creates the schema
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
         "--default-artifact-root", (tmp_path / "art").as_uri(), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start in 180 s"
                time.sleep(0.5)
        http = f"http://127.0.0.1:{port}"
        wall, outcomes = _register_concurrently(tmp_path, http, exports, results)
        _check(mlflow.MlflowClient(http), runs, outcomes)
        print(f"\n{N} concurrent registrations (mlflow server, SQLite backend): {wall:.1f} s wall")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
