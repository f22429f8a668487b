"""The walk-forward pipeline steps on a real (tiny) model, real bundle and real MLflow store:
fold tasks, the aggregate with its HTML report logged to the training's MLflow run, and the
summary's verdict sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kubetrade.config import PipelineConfig, TrainingConfig
from kubetrade.data.sources import generate_synthetic
from kubetrade.data.splits import save_bundle
from kubetrade.errors import ConfigError
from kubetrade.models import HybridCNNLSTM
from kubetrade.pipeline.steps import (
    RunConfig,
    _walk_forward_lines,
    count_trials,
    fold_step,
    walk_forward_step,
)
from kubetrade.training.bundle import make_demo_bundle
from kubetrade.training.callbacks import CHECKPOINT_FORMAT
from kubetrade.training.tracking import MlflowTracker

TINY = dict(
    cnn_hidden_dim=16, cnn_num_heads=2, lstm_hidden_dim=8, fusion_dim=16, fusion_num_heads=2
)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    cfg = TrainingConfig.model_validate(
        {"data": {"sequence_length": 10}, "validation": {"cv_folds": 3}}
    )
    run = RunConfig(pipeline=PipelineConfig(run_root=str(tmp / "runs")), training=cfg)
    bundle = make_demo_bundle(n_symbols=2, n_years=3, seed=1, cfg=cfg)
    save_bundle(bundle, tmp / "bundle.npz")
    generate_synthetic(n_symbols=2, n_years=3, seed=1).to_parquet(tmp / "ohlcv.parquet")
    model = HybridCNNLSTM(bundle.n_features, **TINY)
    model_dir = tmp / "model"
    model_dir.mkdir()
    torch.save(
        {"format": CHECKPOINT_FORMAT, "model_config": model.config,
         "model_state_dict": model.state_dict()},
        model_dir / "final.pt",
    )  # fmt: skip
    tracker = MlflowTracker(run.pipeline.run_root, experiment_name="kubetrade")
    run_id = tracker.start()
    (model_dir / "train_result.json").write_text(
        json.dumps({"run_id": run_id, "final_model_path": str(model_dir / "final.pt")})
    )
    return run, tmp, model_dir, run_id, tracker


def test_fold_steps_and_aggregate(run_files) -> None:
    run, tmp, model_dir, run_id, tracker = run_files
    assert run.fold_indices() == [0, 1, 2]
    paths = []
    for k in run.fold_indices():
        out = tmp / f"fold{k}.json"
        summary = fold_step(run, k, tmp / "ohlcv.parquet", tmp / "bundle.npz", model_dir, None,
                            out)  # fmt: skip
        assert summary["fold"] == k and summary["windows"] > 0
        paths.append(str(out))
    with pytest.raises(ConfigError, match="outside validation.cv_folds=3"):
        fold_step(run, 3, tmp / "ohlcv.parquet", tmp / "bundle.npz", model_dir, None,
                  tmp / "x.json")  # fmt: skip
    backtest = tmp / "bt_report"
    backtest.write_text("<html>after costs</html>")
    out = tmp / "wf" / "results"
    summary = walk_forward_step(
        run, paths, None, None, model_dir, out, tmp / "wf" / "report",
        extra_artifacts={"backtest_report.html": backtest},
    )  # fmt: skip
    assert summary["folds"] == 3 and summary["trials_counted"] == 1
    for name in ("hybrid_cnn_lstm", "logistic_regression", "majority_class", "buy_and_hold"):
        low = summary[f"{name}_fold_mean_sharpe_ratio_low"]
        assert low <= summary[f"{name}_fold_mean_sharpe_ratio"]
        assert 0 <= summary[f"{name}_deflated_sharpe"] <= 1
    agg = json.loads(out.read_text())
    report = (tmp / "wf" / "report").read_text()
    assert agg["verdict"] in report and "<img" in report
    # the reports reach the training's MLflow run with .html names (so MLflow previews them)
    logged = {a.path for a in tracker.client.list_artifacts(run_id, "reports")}
    assert {"reports/walk_forward.html", "reports/walk_forward.json",
            "reports/backtest_report.html"} <= logged  # fmt: skip
    tags = tracker.client.get_run(run_id).data.tags
    assert tags["walk_forward_verdict"] == agg["verdict"]
    lines = "\n".join(_walk_forward_lines(agg))
    assert agg["verdict"] in lines and "DSR" in lines and "buy_and_hold" in lines


def test_count_trials_reads_the_run_artifacts(tmp_path: Path) -> None:
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "best_params.json").write_text(json.dumps({"study": {"n_trials": 5}}))
    ensemble = {"weights": {"ppo": 0.5, "sac": 0.2, "td3": 0.2, "dqn": 0.1}}
    assert count_trials(tmp_path, ensemble) == 5 + 4 + 1
    assert count_trials(None, None) == 1
