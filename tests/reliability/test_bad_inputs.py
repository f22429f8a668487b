"""Bad-input corpus: broken data files and configs through the real entry point, ``kubetrade run``.

Every case calls :func:`kubetrade.cli.main` in-process (one subprocess case checks the installed
console script) with a run root under ``tmp_path`` and ``MLFLOW_TRACKING_URI`` pointing at a
temporary SQLite store, and checks the contract for user mistakes:

* exit code 2 (input/config error) or 3 (failed quality gate);
* exactly one line on stderr, ``kubetrade: error: ...``, naming the problem and the fix;
* no traceback anywhere;
* nothing registered: the MLflow store was never even created;
* no run folder (data and config problems fail in the preflight, before the pipeline).

The data cases corrupt a small slice of the embedded real data (AAPL + IBM, 2011-2012) and feed
it through the ``files`` source, written into ``tmp_path`` at test time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kubetrade.cli import main
from kubetrade.data.sources import load_embedded, select

SYMBOLS = ["AAPL", "IBM"]
START, END = "2011-01-01", "2012-12-31"
FIX_WORDS = ("use ", "fix", "give", "write", "choose", "drop", "save", "widen", "rename",
             "must", "need", "allowed", "available", "expected", "see ", "every", "should",
             "lower", "convert", "delete", "re-export", "swap", "check")  # fmt: skip


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    """AAPL + IBM over 2011-2012 (about 500 bars each): the table every data case corrupts."""
    return select(load_embedded(), SYMBOLS, START, END)


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    return store


def pipeline_config(tmp_path: Path, **overrides: Any) -> Path:
    """A pipeline config on the ``files`` source with a tiny training setup."""
    data: dict[str, Any] = yaml.safe_load(Path("config/pipeline.yaml").read_text())
    data.update(
        symbols=SYMBOLS,
        start_date=START,
        end_date=END,
        source={"type": "files", "paths": [str(tmp_path / "prices.csv")]},
        run_root=str(tmp_path / "runs"),
        training_overrides={
            **data["training_overrides"],
            "data.sequence_length": 20,
            "training.num_epochs": 1,
        },
    )
    for key, value in overrides.items():
        if key == "training_overrides":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    capsys.readouterr()
    code = main(["run", *args])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_clean_failure(
    result: Outcome, code: int, phrases: tuple[str, ...], tmp_path: Path
) -> str:
    """The user-error contract; returns the error line."""
    assert "Traceback" not in result.out + result.err, result.err
    assert result.code == code, result.err
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("kubetrade: error: ")
    if os.environ.get("KUBETRADE_CORPUS_LOG"):  # collects the messages for docs/reliability.md
        with open(os.environ["KUBETRADE_CORPUS_LOG"], "a", encoding="utf-8") as log:
            log.write(
                f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{code}\t{line}\n"
            )
    for phrase in phrases:
        assert phrase in line, line
    assert any(word in line.lower() for word in FIX_WORDS), f"no fix named: {line}"
    # nothing registered: a preflight failure never opens the MLflow store
    assert not (tmp_path / "mlflow.db").exists()
    # no run folder at all (the preflight runs before run_local makes one)
    assert not (tmp_path / "runs").exists()
    return line


# ---------------------------------------------------------------- data corruptions
def _rows(df: pd.DataFrame, symbol: str = "IBM") -> pd.Index:
    return df.index[df["symbol"] == symbol]


def nan_close(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df)[[10, 50]], "close"] = np.nan
    return df


def inf_high(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df)[7], "high"] = np.inf
    return df


def negative_open(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df)[3], "open"] = -5.0
    return df


def zero_close(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df, "AAPL")[4], "close"] = 0.0
    return df


def high_below_low(df: pd.DataFrame) -> pd.DataFrame:
    i = _rows(df)[20]
    df.loc[i, ["high", "low"]] = df.loc[i, ["low", "high"]].to_numpy()
    return df


def negative_volume(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df)[9], "volume"] = -100.0
    return df


def duplicated_rows(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[30:33]], ignore_index=True)


def close_spike_only(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df)[100], "close"] *= 10  # close above high: OHLC-inconsistent
    return df


def mixed_timezones(df: pd.DataFrame) -> pd.DataFrame:
    out = df.astype({"timestamp": object})
    stamps = df["timestamp"].dt.strftime("%Y-%m-%d")
    ny = df["symbol"] == "IBM"
    out["timestamp"] = stamps.where(~ny, stamps + "T00:00:00-05:00")
    return out


def missing_volume(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns="volume")


def string_prices(df: pd.DataFrame) -> pd.DataFrame:
    out = df.astype({"close": object})
    out.loc[_rows(df)[5], "close"] = "twelve"
    return out


def epoch_timestamps(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(timestamp=df["timestamp"].astype("int64") // 10**9)


def garbage_dates(df: pd.DataFrame) -> pd.DataFrame:
    out = df.astype({"timestamp": object})
    out.loc[_rows(df)[2], "timestamp"] = "31/31/2011"
    return out


def empty_symbol(df: pd.DataFrame) -> pd.DataFrame:
    out = df.astype({"symbol": object})
    out.loc[_rows(df)[11], "symbol"] = None
    return out


def three_row_symbol(df: pd.DataFrame) -> pd.DataFrame:
    tiny = df[df["symbol"] == "AAPL"].head(3).assign(symbol="TINY")
    return pd.concat([df, tiny], ignore_index=True)


def ten_x_spike(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[_rows(df)[100], ["open", "high", "low", "close"]] *= 10  # OHLC-consistent bad tick
    return df


def unsorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sample(frac=1.0, random_state=0)


@dataclass
class DataCase:
    id: str
    corrupt: Callable[[pd.DataFrame], pd.DataFrame]
    code: int
    phrases: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    fmt: str = "csv"


DATA_CASES = [
    DataCase("nan_close", nan_close, 3, ("data quality gate failed", "null values in 'close'", "2 of")),
    DataCase("inf_high", inf_high, 3, ("infinite values in 'high'",)),
    DataCase("negative_price", negative_open, 3, ("non-positive prices in 'open'",)),
    DataCase("zero_price", zero_close, 3, ("non-positive prices in 'close'", "AAPL")),
    DataCase("high_below_low", high_below_low, 3, ("OHLC inconsistent: 'high' < 'low'", "IBM")),
    DataCase("negative_volume", negative_volume, 3, ("negative values in 'volume'",)),
    DataCase("duplicated_timestamps", duplicated_rows, 3, ("duplicate (symbol, timestamp) rows",)),
    DataCase("close_above_high", close_spike_only, 3, ("'high' < 'close'",)),
    DataCase("ten_x_spike_strict", ten_x_spike, 3, ("daily_return_outlier", "lower quality.min_score"),
             config={"quality": {"min_score": 1.0}}),
    DataCase("mixed_timezones", mixed_timezones, 2, ("mixes time zones", "-0500")),
    DataCase("missing_column", missing_volume, 2, ("missing column(s) ['volume']",)),
    DataCase("string_prices", string_prices, 2, ("column 'close'", "non-numeric", "'twelve'")),
    DataCase("epoch_timestamps", epoch_timestamps, 2, ("holds numbers", "not dates")),
    DataCase("garbage_dates", garbage_dates, 2, ("not dates", "31/31/2011")),
    DataCase("empty_symbol", empty_symbol, 2, ("column 'symbol' is empty in 1 row",)),
    DataCase("three_row_symbol", three_row_symbol, 2, ("too little history: TINY (3 rows)",),
             config={"symbols": ["AAPL", "IBM", "TINY"]}),
    DataCase("nan_close_parquet", nan_close, 3, ("null values in 'close'",), fmt="parquet"),
]  # fmt: skip


@pytest.mark.parametrize("case", DATA_CASES, ids=[c.id for c in DATA_CASES])
def test_broken_data_file(case: DataCase, clean, tmp_path, capsys):
    df = case.corrupt(clean.copy())
    path = tmp_path / f"prices.{case.fmt}"
    if case.fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    config = {"source": {"type": "files", "paths": [str(path)]}, **case.config}
    cfg = pipeline_config(tmp_path, **config)
    result = run_cli(["--config", str(cfg), "--run-root", str(tmp_path / "runs")], capsys)
    assert_clean_failure(result, case.code, case.phrases, tmp_path)


# ---------------------------------------------------------------- broken files
def _write_truncated_parquet(path: Path, df: pd.DataFrame) -> None:
    df.to_parquet(path, index=False)
    path.write_bytes(path.read_bytes()[:400])


FILE_CASES: list[tuple[str, str, Callable[[Path, pd.DataFrame], None], tuple[str, ...]]] = [
    ("empty_file", "prices.csv", lambda p, df: p.write_bytes(b""), ("the file is empty",)),
    ("header_only", "prices.csv",
     lambda p, df: p.write_text("symbol,timestamp,open,high,low,close,volume\n"), ("no rows",)),
    ("non_utf8", "prices.csv",
     lambda p, df: p.write_bytes(df.to_csv(index=False).replace("AAPL", "AAPL\u00e9").encode("utf-16")),
     ("not UTF-8", "save the CSV as UTF-8")),
    ("truncated_parquet", "prices.parquet", _write_truncated_parquet, ("truncated or corrupt",)),
    ("unsupported_type", "prices.xlsx", lambda p, df: p.write_bytes(b"PK\x03\x04"),
     ("unsupported file type",)),
    ("missing_file", "prices.csv", lambda p, df: None, ("data file not found", "source.paths")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "write", "phrases"), [c[1:] for c in FILE_CASES],
                         ids=[c[0] for c in FILE_CASES])  # fmt: skip
def test_broken_file(name, write, phrases, clean, tmp_path, capsys):
    path = tmp_path / name
    write(path, clean)
    cfg = pipeline_config(tmp_path, source={"type": "files", "paths": [str(path)]})
    result = run_cli(["--config", str(cfg), "--run-root", str(tmp_path / "runs")], capsys)
    assert_clean_failure(result, 2, phrases, tmp_path)


# ---------------------------------------------------------------- selection and configs
def _rl_file(tmp_path: Path, agent_types: list[str]) -> str:
    rl = yaml.safe_load(Path("config/rl_training.yaml").read_text())
    rl["agent_types"] = agent_types
    path = tmp_path / "rl_training.yaml"
    path.write_text(yaml.safe_dump(rl))
    return str(path)


CONFIG_CASES: list[tuple[str, dict[str, Any], list[str], tuple[str, ...]]] = [
    ("date_range_outside_data", {"start_date": "2015-01-01", "end_date": "2016-01-01"}, [],
     ("no rows between 2015-01-01 and 2016-01-01", "available: AAPL: 2011-01-03..2012-12-31")),
    ("unknown_symbol", {"symbols": ["AAPL", "TSLA"]}, [], ("unknown symbol(s) ['TSLA']", "'AAPL'")),
    ("too_short_for_split", {"start_date": "2012-11-01"}, [],
     ("bars are too few", "with a 21-bar gap")),
    ("unknown_config_key", {"sourse": {"type": "embedded"}}, [], ("sourse: unknown key",)),
    ("dropout_1_5", {"training_overrides": {"model.cnn.dropout": 1.5}}, [],
     ("model.cnn.dropout", "less than 1", "1.5")),
    ("learning_rate_negative", {"training_overrides": {"training.learning_rate": -1}}, [],
     ("training.learning_rate", "greater than 0")),
    ("batch_size_zero", {"training_overrides": {"training.batch_size": 0}}, [],
     ("training.batch_size", "greater than or equal to 1")),
    ("misspelled_override", {"training_overrides": {"training.lerning_rate": 0.01}}, [],
     ("training.lerning_rate: unknown key",)),
    ("unknown_feature", {"training_overrides": {"data.features": ["close", "moon_phase"]}}, [],
     ("unknown feature(s) ['moon_phase']",)),
    ("start_after_end", {"start_date": "2013-01-01", "end_date": "2012-01-01"}, [],
     ("start_date 2013-01-01 is after end_date 2012-01-01",)),
    ("start_not_a_date", {"start_date": "yesterday-ish"}, [], ("is not a date; use YYYY-MM-DD",)),
    ("files_without_paths", {"source": {"type": "files", "paths": []}}, [],
     ("needs at least one entry in paths",)),
    ("unknown_source_type", {"source": {"type": "yahoo"}}, [], ("source.type", "'embedded'")),
    ("empty_symbol_list", {}, ["--set", "symbols=[]"], ("symbols", "at least 1 item")),
    ("set_without_equals", {}, ["--set", "[/x]"], ("--set '[/x]': expected KEY=VALUE",)),
    ("unknown_cli_option", {}, ["--epochs", "3"], ("No such option: --epochs", "--help")),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "extra", "phrases"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])  # fmt: skip
def test_bad_selection_or_config(overrides, extra, phrases, clean, tmp_path, capsys):
    clean.to_csv(tmp_path / "prices.csv", index=False)
    cfg = pipeline_config(tmp_path, **overrides)
    result = run_cli(["--config", str(cfg), "--run-root", str(tmp_path / "runs"), *extra], capsys)
    assert_clean_failure(result, 2, phrases, tmp_path)


@pytest.mark.parametrize(
    ("agent", "phrase"),
    [("rainbow_dqn", "stable-baselines3 has no Rainbow DQN"), ("alphazero", "'alphazero'")],
)
def test_unknown_agent_type(agent, phrase, clean, tmp_path, capsys):
    clean.to_csv(tmp_path / "prices.csv", index=False)
    cfg = pipeline_config(tmp_path, rl_training_config=_rl_file(tmp_path, ["ppo", agent]))
    result = run_cli(["--config", str(cfg)], capsys)
    assert_clean_failure(result, 2, (phrase, "available: a2c, dqn"), tmp_path)


def test_missing_and_malformed_config_files(tmp_path, capsys):
    result = run_cli(["--config", str(tmp_path / "nope.yaml")], capsys)
    assert_clean_failure(result, 2, ("config file not found", "nope.yaml"), tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("symbols: [AAPL\nsource: {type: files\n")
    result = run_cli(["--config", str(bad)], capsys)
    assert_clean_failure(result, 2, ("not valid YAML",), tmp_path)
    training = tmp_path / "training.yaml"
    training.write_bytes("model:\n  type: h\u00e9brid\n".encode("latin-1"))
    cfg = pipeline_config(tmp_path, training_config=str(training))
    result = run_cli(["--config", str(cfg)], capsys)
    assert_clean_failure(result, 2, ("training.yaml", "not valid YAML"), tmp_path)


# ---------------------------------------------------------------- run folder problems
def test_run_root_under_a_regular_file(clean, tmp_path, capsys):
    """As root chmod does not bite, so an unusable run root is one below a regular file."""
    clean.to_csv(tmp_path / "prices.csv", index=False)
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    cfg = pipeline_config(tmp_path)
    result = run_cli(["--config", str(cfg), "--run-root", str(blocker / "sub")], capsys)
    assert "Traceback" not in result.err
    assert result.code == 2
    (line,) = result.err_lines
    assert "run_root" in line and "Not a directory" in line and "--run-root" in line
    assert blocker.read_text() == "not a folder"
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root (or no POSIX permissions): chmod 0o500 does not stop writes; "
    "test_run_root_under_a_regular_file covers this case",
)
def test_read_only_run_root(clean, tmp_path, capsys):
    clean.to_csv(tmp_path / "prices.csv", index=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        cfg = pipeline_config(tmp_path)
        result = run_cli(["--config", str(cfg), "--run-root", str(locked)], capsys)
    finally:
        locked.chmod(0o700)
    assert "Traceback" not in result.err
    assert result.code == 2
    (line,) = result.err_lines
    assert "not writable" in line and "--run-root" in line
    assert list(locked.iterdir()) == []


def test_disk_full_while_writing_the_run_folder(clean, tmp_path, capsys, monkeypatch):
    """ENOSPC on the first write inside the new run folder: one line, exit 2, no half run."""
    import errno

    clean.to_csv(tmp_path / "prices.csv", index=False)
    real_write_text = Path.write_text

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "run_config.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    cfg = pipeline_config(tmp_path)
    result = run_cli(["--config", str(cfg)], capsys)
    assert "Traceback" not in result.err
    assert result.code == 2
    line = result.err_lines[-1]
    assert line.startswith("kubetrade: error: cannot write ")
    assert "No space left on device" in line and "free disk space" in line
    assert len(result.err_lines) == 2  # the start line, then the error
    runs = tmp_path / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # the half-made run folder is gone
    assert not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------- accepted with a warning
@pytest.fixture
def no_pipeline(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace run_local by a recorder: proves the preflight let the run through."""
    from kubetrade.pipeline import runner

    calls: list[Any] = []

    def fake_run_local(cfg: Any, run_root: Any = None, verbose: bool = False) -> Any:
        calls.append((cfg, run_root))
        return runner.RunResult(run_dir=Path(run_root) / "fake", seconds=0.0)

    monkeypatch.setattr(runner, "run_local", fake_run_local)
    return calls


def test_ten_x_spike_passes_with_a_warning_by_default(clean, tmp_path, capsys, no_pipeline):
    ten_x_spike(clean.copy()).to_csv(tmp_path / "prices.csv", index=False)
    result = run_cli(["--config", str(pipeline_config(tmp_path))], capsys)
    assert result.code == 0, result.err
    assert len(no_pipeline) == 1
    warnings = [ln for ln in result.err_lines if ln.startswith("kubetrade: warning:")]
    assert len(warnings) == 1 and "daily_return_outlier" in warnings[0] and "IBM" in warnings[0]
    assert "Traceback" not in result.err


def test_unsorted_rows_are_sorted_on_load_and_pass(clean, tmp_path, capsys, no_pipeline):
    unsorted(clean.copy()).to_csv(tmp_path / "prices.csv", index=False)
    result = run_cli(["--config", str(pipeline_config(tmp_path))], capsys)
    assert result.code == 0, result.err
    assert len(no_pipeline) == 1
    assert not [ln for ln in result.err_lines if "warning" in ln or "error" in ln]
    assert "quality 1.00" in result.err


# ---------------------------------------------------------------- the console script
def test_console_script_subprocess_one_line(clean, tmp_path):
    """The installed ``kubetrade`` script, not main(): same contract, through a real process."""
    high_below_low(clean.copy()).to_csv(tmp_path / "prices.csv", index=False)
    cfg = pipeline_config(tmp_path)
    script = Path(sys.executable).with_name("kubetrade")
    proc = subprocess.run([str(script), "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 3
    assert len(lines) == 1 and "'high' < 'low'" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- through the whole pipeline
def _seed_champion(tracking_uri: str, source: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    client.create_registered_model("kubetrade-hybrid")
    version = client.create_model_version("kubetrade-hybrid", str(source.resolve()))
    client.set_registered_model_alias("kubetrade-hybrid", "champion", version.version)
    return str(version.version)


def test_file_corrupted_after_the_preflight_fails_the_ingest_step_and_keeps_the_champion(
    clean, tmp_path, capsys, monkeypatch
):
    """One case through kfp's local runner: the data passes the preflight, then the file is
    truncated before the ingest task reads it (a file changing under a run). The ingest step
    fails with the same one-line message, the run folder keeps only what explains the failure,
    nothing is registered and the seeded champion keeps its alias."""
    import json

    from mlflow import MlflowClient

    from kubetrade.pipeline import runner

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("seeded champion\n")
    champion = _seed_champion(uri, tmp_path / "model")

    path = tmp_path / "prices.parquet"
    clean.to_parquet(path, index=False)
    real_preflight = runner.preflight_data

    def preflight_then_truncate(cfg: Any) -> Any:
        report = real_preflight(cfg)
        path.write_bytes(path.read_bytes()[:300])
        return report

    monkeypatch.setattr(runner, "preflight_data", preflight_then_truncate)
    cfg = pipeline_config(tmp_path, source={"type": "files", "paths": [str(path)]})
    result = run_cli(["--config", str(cfg)], capsys)

    assert "Traceback" not in result.out + result.err
    assert result.code == 2, result.err
    errors = [ln for ln in result.err_lines if ln.startswith("kubetrade: error:")]
    assert len(errors) == 1, result.err
    assert "step 'ingest' failed" in errors[0] and "truncated or corrupt" in errors[0]
    # the other stderr lines are the run's progress (task started / failed), not errors
    assert all(ln.startswith(("kubetrade", " ", "▶")) for ln in result.err_lines), result.err
    (run_dir,) = (tmp_path / "runs").iterdir()
    left = sorted(p.name for p in run_dir.iterdir())
    # run_config.json is the run's input, kept beside FAILED.json (see docs/reliability.md)
    assert set(left) <= {"FAILED.json", "pipeline.log", "run_config.json"}, left
    assert {"FAILED.json", "pipeline.log"} <= set(left)
    assert json.loads((run_dir / "FAILED.json").read_text())["step"] == "ingest"
    client = MlflowClient(uri)
    versions = client.search_model_versions("name='kubetrade-hybrid'")
    assert [str(v.version) for v in versions] == [champion]
    assert (
        str(client.get_model_version_by_alias("kubetrade-hybrid", "champion").version) == champion
    )
