"""Issue #14's probes 4-8 outside the registry proper: each ends in one line, exit != 0,
nothing half-written, no secret or file content echoed.

In-process through :func:`kubetrade.cli.main` (the console script's code path) with a real
SQLite store, real files and real processes; fast enough for ``make test``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kubetrade.cli import main
from kubetrade.data.sources import load_embedded, load_files, select

SECRET = "hunter2-s3cr3t"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def cli(capsys, *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(list(args))
    # MLflow's own INFO lines when it creates a fresh store are not errors
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and " INFO mlflow." not in line]  # fmt: skip
    return rc, err


def one_line(rc: int, err: list[str], *needles: str) -> str:
    assert rc != 0, err
    assert len(err) == 1 and err[0].startswith("kubetrade: error:"), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def repo_config(tmp_path: Path, **changes) -> Path:
    root = Path(__file__).parents[2]
    data = yaml.safe_load((root / "config" / "pipeline.yaml").read_text())
    for key in ("training_config", "trading_env_config", "rl_training_config"):
        data[key] = str(root / data[key])
    data["tuning"]["search_space"] = str(root / data["tuning"]["search_space"])
    data.update(changes)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ config and --set
def test_set_with_unclosed_list_is_one_line(tmp_path, capsys):
    cfg = repo_config(tmp_path)
    rc, err = cli(capsys, "validate", "--config", str(cfg), "--set", "symbols=[AAPL")
    one_line(rc, err, "--set symbols=...", "quote lists")


def test_set_with_an_impossible_date_is_one_line(tmp_path, capsys):
    cfg = repo_config(tmp_path)
    rc, err = cli(capsys, "validate", "--config", str(cfg), "--set", "start_date=2020-13-01")
    one_line(rc, err, "start_date", "not a date")


def test_a_secret_file_passed_as_a_config_is_not_echoed(tmp_path, capsys):
    shadow = tmp_path / "shadow"
    shadow.write_text(
        f"root:$6${SECRET}$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\napi_key: {SECRET}\n"
    )
    cfg = repo_config(tmp_path)
    rc, err = cli(capsys, "validate", "--config", str(cfg), "--set",
                  f"training_config={shadow}")  # fmt: skip
    line = one_line(rc, err)
    assert SECRET not in line and "root:" not in line and "daemon" not in line


def test_billion_laughs_config_fails_fast_in_one_line(tmp_path, capsys):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("name: *a8")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    rc, err = cli(capsys, "check-config", "--config", str(bomb))
    assert time.monotonic() - start < 30
    line = one_line(rc, err)
    assert "lol" not in line and len(line) < 2000


# ------------------------------------------------------------------ secrets, stores
def _genuine_looking_export(tmp_path: Path) -> tuple[Path, Path]:
    from kubetrade.registry import sha256_file

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.pt").write_bytes(b"torchscript")
    (export / "model_uri.json").write_text(json.dumps({
        "model_uri": "models:/m-0123456789abcdef0123456789abcdef", "run_id": "r",
        "sha256": {"torchscript": sha256_file(export / "model.pt")},
        "files": {"torchscript": "model.pt"},
    }))  # fmt: skip
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"test": {"model": {"sharpe_ratio": 1.0}}}))
    return export, results


def test_tracking_uri_password_is_never_printed(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    export, results = _genuine_looking_export(tmp_path)
    uri = f"http://bob:{SECRET}@127.0.0.1:{port}"
    rc, err = cli(capsys, "register", "--export-dir", str(export), "--results", str(results),
                  "--tracking-uri", uri)  # fmt: skip
    line = one_line(rc, err, "bob:***@127.0.0.1")
    assert SECRET not in line


@pytest.mark.parametrize("uri", ["bogus://x", "corrupt"])
def test_bogus_or_corrupt_store_is_one_line(uri, tmp_path, capsys):
    export, results = _genuine_looking_export(tmp_path)
    if uri == "corrupt":
        (tmp_path / "mlflow.db").write_bytes(b"this is not a sqlite database" * 100)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc, err = cli(capsys, "register", "--export-dir", str(export), "--results", str(results),
                  "--tracking-uri", uri)  # fmt: skip
    one_line(rc, err)


def test_export_registered_from_another_directory_by_relative_path(tmp_path, capsys):
    export, results = _genuine_looking_export(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    rc, err = cli(capsys, "register", "--export-dir", "../export", "--results", "../results.json")
    # the files are found relative to the folder given; the (fake) logged model is then not
    # in the store: one line, not a traceback
    one_line(rc, err)


# ------------------------------------------------------------------ data gate
def test_constant_price_symbol_fails_the_quality_gate_naming_it(tmp_path, capsys):
    df = select(load_embedded(), ["AAPL", "IBM"], "2011-01-01", "2012-12-31")
    ibm = df["symbol"] == "IBM"
    for col in ("open", "high", "low", "close"):
        df.loc[ibm, col] = 150.0
    df.to_csv(tmp_path / "prices.csv", index=False)
    cfg = repo_config(tmp_path, symbols=["AAPL", "IBM"], start_date="2011-01-01",
                      end_date="2012-12-31",
                      source={"type": "files", "paths": [str(tmp_path / "prices.csv")]})  # fmt: skip
    rc, err = cli(capsys, "validate", "--config", str(cfg))
    assert rc == 3
    assert any("price_varies" in line and "IBM (close always 150)" in line for line in err), err


def test_astronomic_prices_fail_the_quality_gate(tmp_path):
    from kubetrade.data.quality import DataQualityValidator

    df = select(load_embedded(), ["AAPL"], "2011-01-01", "2011-12-31")
    for col in ("open", "high", "low", "close"):
        df[col] = df[col] * 1e300
    report = DataQualityValidator().validate_batch(df)
    assert not report.passed
    assert any(i.startswith("price_magnitude") for i in report.issues), report.issues


def test_ticker_na_and_tokyo_dates_survive_loading(tmp_path):
    days = pd.date_range("2020-01-06", periods=5, freq="B", tz="Asia/Tokyo")
    frame = pd.DataFrame({"symbol": "NA", "timestamp": days, "open": 1.0, "high": 2.0,
                          "low": 0.5, "close": 1.5, "volume": 10.0})  # fmt: skip
    frame.to_parquet(tmp_path / "na.parquet")
    frame.assign(timestamp=days.strftime("%Y-%m-%dT%H:%M:%S+09:00")).to_csv(
        tmp_path / "na.csv", index=False
    )
    for name in ("na.parquet", "na.csv"):
        out = load_files([tmp_path / name])
        assert out["symbol"].tolist() == ["NA"] * 5, name
        assert out["timestamp"].dt.strftime("%Y-%m-%d").tolist() == [
            "2020-01-06", "2020-01-07", "2020-01-08", "2020-01-09", "2020-01-10"
        ], name  # fmt: skip
        assert str(out["timestamp"].dt.tz) == "UTC"


def test_missing_prices_are_still_missing_after_the_ticker_fix(tmp_path):
    pd.DataFrame({"symbol": ["X", "X"], "timestamp": ["2020-01-06", "2020-01-07"],
                  "open": [1.0, "NA"], "high": [2.0, 2.0], "low": [0.5, 0.5],
                  "close": [1.5, "n/a"], "volume": [1, 1]}).to_csv(
        tmp_path / "p.csv", index=False)  # fmt: skip
    out = load_files([tmp_path / "p.csv"])
    assert out["open"].isna().tolist() == [False, True]
    assert out["close"].isna().tolist() == [False, True]


# ------------------------------------------------------------------ runs and processes
def test_twenty_runs_started_in_the_same_second_get_twenty_folders(tmp_path):
    from kubetrade.pipeline.runner import _new_run_dir

    made: list[Path] = []
    barrier = threading.Barrier(20)

    def claim() -> None:
        barrier.wait()
        made.append(_new_run_dir(tmp_path / "runs"))

    threads = [threading.Thread(target=claim) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 20 and len(set(made)) == 20


def test_run_root_option_moves_the_mlflow_store(tmp_path, monkeypatch, capsys):
    from kubetrade.pipeline import runner

    seen = []

    def fake_run_local(cfg, run_root=None, verbose=False):
        seen.append(cfg.pipeline.run_root)
        return runner.RunResult(run_dir=Path(run_root) / "fake", seconds=0.0)

    monkeypatch.setattr(runner, "run_local", fake_run_local)
    monkeypatch.setattr("kubetrade.cli.pipeline.print_summary", lambda result: None)
    monkeypatch.setattr(runner, "preflight_data", lambda cfg: _Report())
    cfg = repo_config(tmp_path)
    rc, err = cli(capsys, "run", "--config", str(cfg), "--run-root", str(tmp_path / "X"))
    assert rc == 0, err
    assert seen == [str(tmp_path / "X")]
    from kubetrade.config.run import RunConfig
    from kubetrade.pipeline.steps import run_tracker

    run = RunConfig.model_validate({"pipeline": {"run_root": seen[0]}})
    os.environ.pop("MLFLOW_TRACKING_URI")
    assert run_tracker(run).tracking_uri.startswith(f"sqlite:///{tmp_path / 'X'}")


class _Report:
    overall_score = 1.0
    issues: list[str] = []


def test_os_error_mid_run_leaves_failed_json_and_no_outputs(tmp_path):
    from kubetrade.pipeline.runner import PipelineRunError, _fail_os

    run_dir = tmp_path / "run"
    (run_dir / "training-pipeline" / "train").mkdir(parents=True)
    (run_dir / "training-pipeline" / "train" / "model.pt").write_bytes(b"half")
    err = OSError(28, "No space left on device")  # from a log write: no filename
    with pytest.raises(PipelineRunError, match="No space left on device") as info:
        _fail_os(run_dir, run_dir / ".error.json", err)
    assert "\n" not in str(info.value)
    assert json.loads((run_dir / "FAILED.json").read_text())["step"] == "pipeline"
    assert not (run_dir / "training-pipeline").exists()


def test_second_train_on_the_same_run_dir_is_refused_and_a_stale_lock_broken(tmp_path, capsys):
    from kubetrade.errors import TrainingError
    from kubetrade.training.pipeline import LOCK_NAME, run_dir_lock

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: S603
    try:
        (tmp_path / LOCK_NAME).write_text(str(sleeper.pid))
        with (
            pytest.raises(
                TrainingError, match=f"in use by another kubetrade train .*{sleeper.pid}"
            ),
            run_dir_lock(tmp_path),
        ):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_dir_lock(tmp_path):  # its process is gone: broken with a message
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    assert "breaking the stale lock" in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_sigterm_is_forwarded_to_the_whole_torchrun_group(tmp_path):
    from kubetrade.errors import TrainingError
    from kubetrade.training.pipeline import _run_forwarding_signals

    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])"
        " for _ in range(2)]\n"
        f"open({str(pids)!r}, 'w').write(' '.join(str(k.pid) for k in kids))\n"
        "time.sleep(120)\n"
    )
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM))

    def wait_then_term() -> None:
        deadline = time.monotonic() + 30
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        timer.start()

    threading.Thread(target=wait_then_term).start()
    start = time.monotonic()
    with pytest.raises(TrainingError, match="stopped by SIGTERM"):
        _run_forwarding_signals([sys.executable, "-c", script], dict(os.environ), capture=True)
    assert time.monotonic() - start < 60
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # reap if it is our grandchild turned zombie under init: just wait
            time.sleep(0.1)
        else:
            pytest.fail(f"worker {pid} still running after SIGTERM")


# ------------------------------------------------------------------ truncated files
def _bundle(tmp_path: Path) -> Path:
    from kubetrade.training.bundle import save_bundle, synthetic_bundle

    return save_bundle(synthetic_bundle(n_timestamps=120, sequence_length=10), tmp_path / "b.npz")


def test_truncated_or_foreign_bundle_is_one_line(tmp_path, capsys):
    import zipfile

    good = _bundle(tmp_path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.npz"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("train_X.npy", b"not an array")
    cfg = repo_config(tmp_path)
    for path in (truncated, foreign):
        rc, err = cli(capsys, "train", "--config", str(cfg), "--bundle", str(path),
                      "--run-dir", str(tmp_path / "run"))  # fmt: skip
        one_line(rc, err, str(path))
        assert not (tmp_path / "run").exists()


def test_truncated_snapshot_is_one_line_before_resuming(tmp_path):
    import torch

    from kubetrade.errors import TrainingError
    from kubetrade.training.bundle import ensure_readable_snapshot

    torch.save({"epoch": 3, "weights": torch.zeros(1000)}, tmp_path / "snapshot.pt")
    ensure_readable_snapshot(tmp_path)  # a whole one is fine
    data = (tmp_path / "snapshot.pt").read_bytes()
    (tmp_path / "snapshot.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(TrainingError, match="truncated or corrupt") as info:
        ensure_readable_snapshot(tmp_path)
    assert "\n" not in str(info.value)


def test_resuming_on_different_data_is_refused(tmp_path):
    from kubetrade.errors import TrainingError
    from kubetrade.training.bundle import ensure_same_data, synthetic_bundle
    from kubetrade.training.trainer import SNAPSHOT_NAME

    first = synthetic_bundle(n_timestamps=120, sequence_length=10, seed=0)
    ensure_same_data(tmp_path, first)
    (tmp_path / SNAPSHOT_NAME).write_bytes(b"a snapshot")
    ensure_same_data(tmp_path, synthetic_bundle(n_timestamps=120, sequence_length=10, seed=0))
    other = synthetic_bundle(n_timestamps=120, sequence_length=10, seed=1)
    with pytest.raises(TrainingError, match="trained on different data"):
        ensure_same_data(tmp_path, other)


def test_disk_full_while_training_is_one_line_and_leaves_no_temp_bundle(tmp_path, monkeypatch):
    """ENOSPC injected into the bundle write of a 2-process training (the file system here
    cannot be filled safely): one line, the MLflow run FAILED, no ``bundle.npz.tmp.npz``."""
    import errno

    import mlflow

    from kubetrade.config import TrainingConfig
    from kubetrade.errors import TrainingError
    from kubetrade.training import pipeline as tp
    from kubetrade.training.bundle import synthetic_bundle

    def full_disk(bundle, path):
        Path(str(path) + ".tmp.npz").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tp, "save_bundle", full_disk)
    cfg = TrainingConfig.model_validate({"training": {"batch_size": 8}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipe = tp.TrainingPipeline(config=cfg, run_dir=tmp_path / "run", tracking_uri=uri,
                               nproc_per_node=2, verbose=False)  # fmt: skip
    bundle = synthetic_bundle(n_timestamps=120, sequence_length=10)
    with pytest.raises(TrainingError, match="No space left on device") as info:
        pipe.train_on_bundle(bundle)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "run").glob("*.tmp*"))
    (run,) = mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()]
    )
    assert run.info.status == "FAILED"


def test_train_hparam_with_unclosed_list_is_one_line(tmp_path, capsys):
    cfg = repo_config(tmp_path)
    rc, err = cli(capsys, "train", "--config", str(cfg), "--hparam",
                  "model.cnn.kernel_sizes=[3,5", "--run-dir", str(tmp_path / "run"))  # fmt: skip
    one_line(rc, err, "--hparam model.cnn.kernel_sizes=...")
    assert not (tmp_path / "run").exists()


def test_compile_to_a_device_or_fifo_is_one_line_and_leaves_it_alone(tmp_path, capsys):
    # `compile -o /dev/full` used to *replace the device node* with the YAML (atomic rename
    # as root) and report success; a FIFO stands in for the device here (harmless if broken)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    rc, err = cli(capsys, "compile", "-o", str(fifo))
    one_line(rc, err, "not a regular file", str(fifo))
    assert fifo.is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["pipe.yaml"]  # no temp file left
    folder = tmp_path / "out"
    folder.mkdir()
    rc, err = cli(capsys, "compile", "-o", str(folder))
    one_line(rc, err, "not a regular file")
    assert folder.is_dir() and not any(folder.iterdir())
