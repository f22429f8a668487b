"""The MLflow store fails at registration: unreachable, failing halfway, locked, a stale lock.

Real stores only (SQLite files, a closed TCP port); no mocks. Every case checks that the
``champion`` alias did not move.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubetrade.errors import RegistryError
from kubetrade.registry import register_challenger, sha256_file
from kubetrade.registry.store import LOCK_SUFFIX

DR = {"kubetrade.test_period": "2012-01-03..2013-03-01", "kubetrade.symbols": "AAPL,IBM"}
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A SQLite store with a champion (version 1, Sharpe 0.8) of model ``m``."""
    import mlflow
    import torch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's fallback store (./mlflow.db) never in the repo
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())

    def model_uri() -> str:
        run = client.create_run(exp)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.pytorch.log_model(
                torch.nn.Linear(2, 1), name="model", serialization_format="pickle",
                pip_requirements=["torch"],
            )  # fmt: skip
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        return str(info.model_uri)

    first = register_challenger(
        model_uri(), "m", "sharpe_ratio", 0.8, tracking_uri=uri, data_range=DR
    )
    assert first.promoted and first.version == "1"
    yield db, uri, client, model_uri


def champion(client) -> str:
    return str(client.get_model_version_by_alias("m", "champion").version)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_tracking_server_fails_fast_in_one_line_champion_unchanged(
    store, tmp_path, monkeypatch
):
    db, uri, client, model_uri = store
    dead = f"http://127.0.0.1:{closed_port()}"
    before = {k: os.environ.get(k) for k in HTTP_ENV}
    new_model = model_uri()
    # the first HTTP request of a process imports MLflow's request-header plugins (Feast
    # registers one: ~10-25 s here); a one-off cost, not retry time, so keep it off the clock
    import mlflow.tracking.request_header.registry  # noqa: F401

    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)  # as the cluster passes it
    start = time.monotonic()
    with pytest.raises(RegistryError) as err:
        register_challenger(new_model, "m", "sharpe_ratio", 5.0)  # far better: would promote
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert "\n" not in message
    assert f"MLflow at {dead} failed to register the model after 4 attempts" in message
    assert "MLFLOW_TRACKING_URI" in message and "champion alias was not changed" in message
    # 4 attempts, backoff 0.5+1+2 s (+<=50 % jitter); refused connections fail at once
    assert elapsed < 10, elapsed
    assert {k: os.environ.get(k) for k in HTTP_ENV} == before  # MLflow's env restored
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert champion(client) == "1" and len(client.search_model_versions("name='m'")) == 1

    # the same through the CLI: exit code 2 and one error line on stderr
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.pt").write_bytes(b"torchscript")
    (export / "model_uri.json").write_text(json.dumps({
        "model_uri": new_model, "run_id": "r",
        "sha256": {"torchscript": sha256_file(export / "model.pt")},
        "files": {"torchscript": "model.pt"},
    }))  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"test": {"model": {"sharpe_ratio": 5.0}}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": dead}
    start = time.monotonic()
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "kubetrade", "register", "--export-dir", str(export),
         "--results", str(tmp_path / "results.json"), "--model-name", "m"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    cli_elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kubetrade: error:")]
    assert len(lines) == 1 and dead in lines[0] and "after 4 attempts" in lines[0], proc.stderr
    assert cli_elapsed < 90, cli_elapsed  # includes the imports (MLflow, the Feast plugin)
    assert champion(client) == "1"
    print(f"\nunreachable store: library {elapsed:.1f} s, CLI {cli_elapsed:.1f} s")


@pytest.mark.parametrize("table", ["model_versions", "registered_model_aliases"])
def test_store_failing_halfway_leaves_champion(store, table):
    """A store that rejects writes to one table (a SQLite trigger): creating the version
    fails, or the version is created and moving the champion alias fails."""
    db, uri, client, model_uri = store
    uri_new = model_uri()
    condition = "" if table == "model_versions" else "WHEN NEW.alias = 'champion'"
    with sqlite3.connect(db) as con:
        for op in ("INSERT", "UPDATE"):
            con.execute(
                f"CREATE TRIGGER fail_{op.lower()} BEFORE {op} ON {table} {condition} "
                "BEGIN SELECT RAISE(ABORT, 'injected store failure'); END"
            )
    step = "register the model" if table == "model_versions" else "promote the champion"
    with pytest.raises(RegistryError, match=f"failed to {step} after 2 attempts"):
        register_challenger(uri_new, "m", "sharpe_ratio", 5.0, tracking_uri=uri, data_range=DR, attempts=2,
                            backoff_s=0.05)  # fmt: skip
    assert champion(client) == "1"
    versions = sorted(int(v.version) for v in client.search_model_versions("name='m'"))
    if table == "model_versions":
        assert versions == [1]  # nothing half-written
    else:  # the version exists as challenger, never champion
        assert versions == [1, 2]
        assert str(client.get_model_version_by_alias("m", "challenger").version) == "2"
    assert not client.search_registered_models(f"name='m{LOCK_SUFFIX}'")  # lock released
    # the store recovers: the next registration promotes as usual
    with sqlite3.connect(db) as con:
        con.execute("DROP TRIGGER fail_insert")
        con.execute("DROP TRIGGER fail_update")
    again = register_challenger(uri_new, "m", "sharpe_ratio", 5.0, tracking_uri=uri, data_range=DR)
    assert again.promoted and champion(client) == again.version


def test_locked_sqlite_database_is_waited_out(store):
    """Another writer holds the SQLite database exclusively for 3 s ("database is locked")."""
    db, uri, client, model_uri = store
    uri_new = model_uri()
    locked = threading.Event()

    def hold() -> None:
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(3)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=hold)
    t.start()
    locked.wait(5)
    start = time.monotonic()
    promo = register_challenger(uri_new, "m", "sharpe_ratio", 1.5, tracking_uri=uri, data_range=DR)
    elapsed = time.monotonic() - start
    t.join()
    assert promo.promoted and promo.version == "2" and champion(client) == "2"
    assert elapsed >= 2, elapsed  # it waited for the lock instead of failing


def test_stale_promotion_lock_is_broken_and_a_live_one_is_waited_for(store):
    db, uri, client, model_uri = store
    lock = f"m{LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"kubetrade.lock_owner": "crashed-pod:1:x"})
    # a live lock (younger than lock_stale_s): wait, then one clear line, champion unchanged
    with pytest.raises(RegistryError, match="promotion lock 'm.promotion-lock'.*held by crashed"):
        register_challenger(model_uri(), "m", "sharpe_ratio", 5.0, tracking_uri=uri, data_range=DR,
                            lock_wait_s=1.0, lock_stale_s=60)  # fmt: skip
    assert champion(client) == "1"
    # the same lock, now treated as stale (its owner died): broken, registration proceeds
    promo = register_challenger(model_uri(), "m", "sharpe_ratio", 5.0, tracking_uri=uri, data_range=DR,
                                lock_stale_s=0.5)  # fmt: skip
    assert promo.promoted and champion(client) == promo.version
    assert not client.search_registered_models(f"name='{lock}'")


def test_refused_registration_is_not_retried(store):
    db, uri, client, _ = store
    start = time.monotonic()
    with pytest.raises(RegistryError, match="refused to register the model"):
        register_challenger("runs:/0123456789abcdef0123456789abcdef/model", "m", "sharpe_ratio",
                            5.0, tracking_uri=uri, data_range=DR)  # fmt: skip
    assert time.monotonic() - start < 3  # no backoff for a refusal
    assert champion(client) == "1"


def test_register_cli_needs_a_store(tmp_path, monkeypatch):
    from kubetrade.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["register", "--export-dir", str(tmp_path), "--results", "x.json"]) == 2
    path = Path(tmp_path)
    assert main(["register", "--export-dir", str(path), "--tracking-uri", "sqlite:///x.db"]) == 2
