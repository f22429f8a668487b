"""``kubetrade monitor``: Evidently drift reports over a real Feast repo, realized performance
of a real predictions log (written by the serving Predictor over a registered model), MLflow
metrics in a SQLite store, and the retraining trigger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kubetrade.cli import main
from kubetrade.serving.demo import Demo, build_demo, register_demo_model

N_BARS = 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from kubetrade.serving.config import ServingConfig
    from kubetrade.serving.predictor import Predictor

    demo: Demo = build_demo(tmp_path_factory.mktemp("monitoring"))
    register_demo_model(demo, seed=1, value=1.0)
    log = demo.root / "predictions.jsonl"
    predictor = Predictor(ServingConfig(tracking_uri=demo.tracking_uri,
                                        feast_repo=str(demo.feast_repo), predictions_log=str(log)))  # fmt: skip
    stamps = sorted(set(demo.bundle.test.timestamps))[-N_BARS:]
    for stamp in stamps:
        predictor.predict([{"symbol": s, "as_of": str(stamp)[:10]} for s in ("SYN000", "SYN001")])
    base = ["monitor", "--set", f"feast_repo={demo.feast_repo}", "--set", f"predictions_log={log}",
            "--set", f"reference_end={demo.bundle.periods['train'][1][:10]}",
            "--set", f"report_dir={demo.root / 'report'}", "--set", f"tracking_uri={demo.tracking_uri}",
            "--set", "recent_predictions=40"]  # fmt: skip
    return {"demo": demo, "log": log, "base": base}


def _lenient() -> list[str]:
    return ["--set", "thresholds.max_drifted_share=1.0", "--set", "thresholds.prediction_drift_p=0",
            "--set", "thresholds.min_hit_rate=0"]  # fmt: skip


def test_report_metrics_and_online_comparison(setup: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    demo = setup["demo"]
    assert main([*setup["base"], *_lenient()]) == 0
    summary = json.loads((demo.root / "report" / "summary.json").read_text())
    assert (demo.root / "report" / "report.html").stat().st_size > 10_000
    perf = summary["performance"]["champion_v1"]
    # recompute the realized outcome of every logged answer from the raw bars
    logged = pd.DataFrame([json.loads(x) for x in setup["log"].read_text().splitlines()])
    frame = demo.features.sort_values(["symbol", "timestamp"])
    frame["ret"] = frame.groupby("symbol")["close"].shift(-1) / frame["close"] - 1
    frame["bar_timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    joined = logged.merge(frame[["symbol", "bar_timestamp", "ret"]], on=["symbol", "bar_timestamp"])
    assert perf["outcomes"] == len(joined) == 2 * N_BARS
    assert perf["mean_signal_return"] == pytest.approx((joined["signal"] * joined["ret"]).mean())
    active = joined[joined["signal"] != 0]
    if len(active):
        assert perf["hit_rate"] == pytest.approx(
            float((np.sign(active["signal"]) == np.sign(active["ret"])).mean())
        )
    assert 0.0 <= summary["drifted_share"] <= 1.0 and summary["prediction_drift_p"] is not None
    from mlflow import MlflowClient

    client = MlflowClient(demo.tracking_uri)
    exp = client.get_experiment_by_name("kubetrade-monitoring")
    run = client.search_runs([exp.experiment_id])[0]
    assert run.data.metrics["drifted_share"] == pytest.approx(summary["drifted_share"])
    assert run.data.metrics["champion_v1_outcomes"] == 2 * N_BARS


def test_drifted_features_exit_4_in_one_line(setup: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from kubetrade.data.feature_store import FeatureStoreBuilder

    demo = setup["demo"]
    drifted = demo.features.copy()
    recent = drifted["timestamp"] > drifted["timestamp"].max() - pd.Timedelta(days=60)
    drifted.loc[recent, "rsi"] = drifted.loc[recent, "rsi"] + 40.0  # a broken upstream feed
    FeatureStoreBuilder(tmp_path / "repo").generate(drifted)
    args = [*setup["base"], *_lenient(), "--set", f"feast_repo={tmp_path / 'repo'}",
            "--set", "thresholds.max_drifted_share=0.1"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "feature drift" in err and "rsi" in err
    summary = json.loads((setup["demo"].root / "report" / "summary.json").read_text())
    assert "rsi" in summary["drifted_features"] and summary["drifted_share"] > 0.1


def test_decay_triggers_retraining_through_the_pipeline_command(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubetrade.monitoring.retraining as retrain_module

    started: list[list[str]] = []
    # the pipeline itself is tested elsewhere; here: that the trigger starts it, and only then
    monkeypatch.setattr(retrain_module, "_execute", lambda argv: started.append(argv) or 0)
    strict = [*_lenient(), "--set", "thresholds.min_hit_rate=1.0",
              "--set", "thresholds.min_outcomes=1", "--set", "retrain.set=[tuning.enabled=false]"]  # fmt: skip
    assert main([*setup["base"], *_lenient(), "--retrain"]) == 0 and started == []
    assert main([*setup["base"], *strict]) == 4 and started == []
    assert main([*setup["base"], *strict, "--retrain"]) == 0
    assert started[0][-5:] == ["run", "--config", "config/pipeline.yaml", "--set",
                               "tuning.enabled=false"]  # fmt: skip
    monkeypatch.setattr(retrain_module, "_execute", lambda argv: 3)
    assert main([*setup["base"], *strict, "--retrain"]) == 2  # a failed retrain is an error
