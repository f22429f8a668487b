"""``kubetrade train`` and ``TrainingPipeline``'s default data loader.

Real parts only: the CLI in-process (``kubetrade.cli.main``), torchrun with 2 gloo processes,
a SQLite MLflow store under the test's folder, the embedded dataset and a real Feast repo for
the loader-vs-split-step check. Tiny model, so the file runs in about a minute on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from kubetrade.cli import main
from kubetrade.config import TrainingConfig
from kubetrade.errors import ConfigError, DataSourceError
from kubetrade.training import (
    TrainingPipeline,
    model_from_checkpoint,
    save_bundle,
    synthetic_bundle,
)
from kubetrade.training.pipeline import pipeline_data_loader

TINY: dict[str, Any] = {
    "model": {
        "cnn": {"hidden_dim": 8, "filter_sizes": [2, 3], "num_heads": 2, "dropout": 0.1},
        "lstm": {"hidden_dim": 4, "num_layers": 1, "dropout": 0.0},
        "fusion": {"output_dim": 8, "num_heads": 2},
    },
    "training": {"batch_size": 16, "num_epochs": 2, "scheduler": {"T_max": 2}},
    "data": {"sequence_length": 12},
    "hardware": {"mixed_precision": False, "device": "cpu", "nproc_per_node": 1},
}


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    # 2 symbols x 146 bars -> 144 train windows, divisible by the global batch 16
    bundle = synthetic_bundle(n_timestamps=146, n_symbols=2, sequence_length=12, n_features=4)
    return {
        "config": config,
        "bundle": save_bundle(bundle, tmp_path / "bundle.npz"),
        "root": tmp_path / "runs",
    }


def _train(setup: dict[str, Path], *args: str) -> int:
    return main(
        ["train", "--set", f"run_root={setup['root']}", "--training-config",
         str(setup["config"]), "--quiet", *args]
    )  # fmt: skip


def _client(root: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root.resolve() / 'mlflow.db'}")


def test_train_one_process_prints_baselines_and_resumes(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = setup["root"] / "first"
    args = ["--bundle", str(setup["bundle"]), "--nproc", "1", "--run-dir", str(run_dir)]
    assert _train(setup, *args) == 0
    printed = capsys.readouterr().out
    for text in ("best epoch", "hybrid CNN+LSTM", "majority class", "logistic regression"):
        assert text in printed
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs_run"] == 2 and results["best_epoch"] in (1, 2)
    assert 0.0 <= results["metrics"]["test"]["accuracy"] <= 1.0
    assert {"majority_class", "logistic_regression"} <= set(results["metrics"]["test_baselines"])
    for key in ("torchscript_path", "onnx_path", "onnx_serving_path"):
        assert Path(results["export"][key]).is_file()
    assert results["model_version"] is None  # --register is opt-in

    client = _client(setup["root"])  # the store under run_root, shared with `kubetrade run`
    run = client.get_run(results["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["nproc_per_node"] == "1"
    assert run.data.tags["bundle"] == str(setup["bundle"])
    assert run.data.params["model.cnn.hidden_dim"] == "8"
    assert client.search_registered_models() == []

    # the run folder is what the gated `kubetrade register` reads: the first version becomes
    # champion if it beats its naive baselines' test Sharpe (else only with --force --reason)
    uri = f"sqlite:///{setup['root'].resolve() / 'mlflow.db'}"
    register = ["register", "--export-dir", str(run_dir / "export"), "--results",
                str(run_dir / "metrics.json"), "--tracking-uri", uri]  # fmt: skip
    assert main(register) == 0
    promotion = json.loads(capsys.readouterr().out)
    sharpe = results["metrics"]["test"]["sharpe_ratio"]
    bases = [b["sharpe_ratio"] for b in results["metrics"]["test_baselines"].values()
             if "sharpe_ratio" in b]  # fmt: skip
    assert promotion["promoted"] is all(sharpe > b for b in bases), promotion["reason"]
    if not promotion["promoted"]:
        assert main([*register, "--force", "--reason", "first model of the test"]) == 0
        assert json.loads(capsys.readouterr().out)["promoted"] is True
    champion = client.get_model_version_by_alias("kubetrade-hybrid", "champion")
    assert champion.run_id == results["run_id"]
    assert champion.tags["sha256_onnx_serving"]

    # the same folder again: resumes from the finished snapshot, trains no further epoch
    before = model_from_checkpoint(results["final_model_path"]).state_dict()
    assert _train(setup, *args) == 0
    again = json.loads((run_dir / "results.json").read_text())
    assert again["run_id"] != results["run_id"] and again["epochs_run"] == 2
    assert len(client.get_metric_history(results["run_id"], "val_loss")) == 2
    assert client.get_metric_history(again["run_id"], "val_loss") == []  # no epoch retrained
    after = model_from_checkpoint(again["final_model_path"]).state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_train_torchrun_two_processes_and_register(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = setup["root"] / "ddp"
    code = _train(setup, "--bundle", str(setup["bundle"]), "--nproc", "2",
                  "--run-dir", str(run_dir), "--register", "--hparam", "training.num_epochs=1")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs_run"] == 1  # --hparam applied on top of --training-config
    client = _client(setup["root"])
    run = client.get_run(results["run_id"])
    assert run.data.tags["nproc_per_node"] == "2"
    # rank 0 of the torchrun job logged its epochs into the CLI's run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    (version,) = client.search_model_versions(f"name='{results['registered_model_name']}'")
    assert version.run_id == results["run_id"] and not version.aliases  # no champion alias
    assert "model version" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bundle", "missing.npz"], "dataset bundle not found: missing.npz"),
        (["--hparam", "training.lerning_rate=0.1"], "training.lerning_rate: unknown key"),
        (["--hparam", "training.learning_rate"], "expected KEY=VALUE, e.g. --hparam"),
        (["--nproc", "3"], "batch_size 16 is the global batch and must be divisible"),
        (["--nproc", "0"], "--nproc 0: use 1"),
        (["--set", "symbols=[TSLA]"], "unknown symbol(s) ['TSLA']; this data has"),
        (["--set", "start_date=2013-01-01"], "use a longer date range"),
    ],
)
def test_train_bad_input_is_one_line_and_writes_nothing(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _train(setup, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubetrade: error:") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not setup["root"].exists()  # no run folder, no MLflow store, no run


def test_default_loader_matches_the_split_step_and_trains(tmp_path: Path) -> None:
    """``TrainingPipeline(...).train(symbols, start, end)`` works as the guide writes it (no
    data_loader argument) and builds exactly the windows the pipeline's split step builds
    through Feast."""
    from kubetrade.config import PipelineConfig
    from kubetrade.data.splits import load_bundle
    from kubetrade.pipeline.steps import RunConfig, features_step, ingest_step, split_step

    cfg = TrainingConfig.model_validate(TINY)
    pipe = PipelineConfig(symbols=["AAPL", "IBM"], start_date="2010-01-01", end_date="2013-03-01")
    run = RunConfig(pipeline=pipe, training=cfg)
    ingest_step(run, tmp_path / "raw.parquet")
    features_step(run, tmp_path / "raw.parquet", tmp_path / "features.parquet", tmp_path / "feast")
    split_step(run, tmp_path / "features.parquet", tmp_path / "feast", tmp_path / "bundle.npz")
    via_feast = load_bundle(tmp_path / "bundle.npz")

    direct = pipeline_data_loader()(["AAPL", "IBM"], "2010-01-01", "2013-03-01", cfg)
    assert direct.feature_names == via_feast.feature_names
    for name in ("train", "val", "test"):
        a, b = getattr(direct, name), getattr(via_feast, name)
        assert len(a) > 0
        np.testing.assert_allclose(a.X, b.X, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(a.y_cls, b.y_cls)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)

    pipeline = TrainingPipeline(config=cfg, run_dir=tmp_path / "run", register=False,
                                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", verbose=False)  # fmt: skip
    results = pipeline.train(["AAPL", "IBM"], "2010-01-01", "2013-03-01")
    assert results["run_id"] and results["best_epoch"] in (1, 2)
    assert results["metrics"]["test"]["accuracy"] > 0


@pytest.mark.parametrize(
    ("symbols", "start", "end", "error", "message"),
    [
        (["AAPL"], "yesterday-ish", None, ConfigError, "is not a date"),
        (["AAPL"], "2013-01-01", "2012-01-01", ConfigError, "is after end_date"),
        ([], None, None, ConfigError, "at least 1 item"),
        (["TSLA"], None, None, DataSourceError, "unknown symbol(s) ['TSLA']"),
    ],
)
def test_default_loader_rejects_a_bad_selection_before_writing(
    tmp_path: Path, symbols: list[str], start: str | None, end: str | None,
    error: type[Exception], message: str,
) -> None:  # fmt: skip
    pipeline = TrainingPipeline(config=TrainingConfig.model_validate(TINY),
                                run_dir=tmp_path / "run", verbose=False)  # fmt: skip
    with pytest.raises(error) as info:
        pipeline.train(symbols, start, end)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()
