"""Metric names with units (issue #20): what the KFP Metrics artifacts show in the UI, while
the steps' return values, MLflow and the local runner's metrics keep the step names."""

import math

import pytest
from kfp.dsl import Metrics

from kubetrade.pipeline.component_runtime import (
    METRIC_UNITS,
    run_step,
    step_metrics,
    ui_metric,
)

#: One key of each kind the steps return (rl_agent, ensemble, evaluate, backtest, fold,
#: walk_forward, tune, validate), and what the UI shows.
EXPECTED = {
    "val_total_return": ("val_total_return_pct", 3.1),
    "val_max_drawdown": ("val_max_drawdown_pct", -20.0),
    "val_sharpe_ratio": ("val_sharpe_ratio_annualized", 0.031),
    "val_costs_paid": ("val_costs_paid_usd", 0.031),
    "ppo_test_sharpe_ratio": ("ppo_test_sharpe_ratio_annualized", 0.031),
    "test_sortino_ratio": ("test_sortino_ratio_annualized", 0.031),
    "rl_ensemble_num_trades": ("rl_ensemble_trades_count", 0.031),
    "hybrid_cnn_lstm_total_costs": ("hybrid_cnn_lstm_total_costs_usd", 0.031),
    "buy_and_hold_total_return": ("buy_and_hold_total_return_pct", 3.1),
    "best_val_fold_mean_sharpe_ratio": ("best_val_fold_mean_sharpe_ratio_annualized", 0.031),
    "hybrid_cnn_lstm_fold_mean_sharpe_ratio_low": (
        "hybrid_cnn_lstm_fold_mean_sharpe_ratio_annualized_low",
        0.031,
    ),
    "rl_ensemble_fold_mean_total_return_high": ("rl_ensemble_fold_mean_total_return_pct_high", 3.1),
    # unchanged: counts, fractions, unitless scores
    "hybrid_cnn_lstm_deflated_sharpe": ("hybrid_cnn_lstm_deflated_sharpe", 0.031),
    "max_drawdown_duration": ("max_drawdown_duration", 0.031),
    "test_accuracy": ("test_accuracy", 0.031),
    "overall_score": ("overall_score", 0.031),
    "rows": ("rows", 0.031),
    "weight_ppo": ("weight_ppo", 0.031),
}


@pytest.mark.parametrize(("key", "expected"), EXPECTED.items())
def test_ui_names_carry_units(key, expected):
    value = -0.2 if key.endswith("max_drawdown") else 0.031
    name, shown = ui_metric(key, value)
    assert name == expected[0]
    want = -20.0 if key.endswith("max_drawdown") else expected[1]
    assert shown == pytest.approx(want)
    # and back to the step's name and value (the local runner's table)
    assert step_metrics({name: shown}) == {key: pytest.approx(value)}


def test_every_unit_is_a_distinct_name_and_no_step_key_looks_like_a_ui_name():
    endings = [ui for ui, _ in METRIC_UNITS.values()]
    assert len(set(endings)) == len(endings)
    for key in EXPECTED:  # a step key is never mistaken for a UI name on the way back
        assert step_metrics({key: 1.0}) == {key: 1.0}, key


def test_run_step_logs_ui_names_and_returns_the_step_summary(capsys):
    summary = {
        "hybrid_cnn_lstm_total_return": 0.05,
        "hybrid_cnn_lstm_sharpe_ratio": 1.25,
        "hybrid_cnn_lstm_num_trades": 7,
        "test_period": "2012-01-01..2013-01-01",  # not a number: not logged
        "rows": 10,
        "gate_passed": True,
    }
    metrics = Metrics(uri="/tmp/unused-metrics")
    returned = run_step("backtest", lambda: dict(summary), metrics=metrics)
    assert returned == summary  # the step's values as they were (MLflow logs these)
    assert metrics.metadata == {
        "hybrid_cnn_lstm_total_return_pct": pytest.approx(5.0),
        "hybrid_cnn_lstm_sharpe_ratio_annualized": 1.25,
        "hybrid_cnn_lstm_trades_count": 7,
        "rows": 10,
        "gate_passed": True,
    }
    back = step_metrics(metrics.metadata)
    assert set(back) == set(summary) - {"test_period"}
    assert back["hybrid_cnn_lstm_total_return"] == pytest.approx(0.05)
    assert "hybrid_cnn_lstm_total_return" in capsys.readouterr().out  # the log line: step names


def test_non_finite_values_pass_through():
    name, value = ui_metric("test_total_return", float("nan"))
    assert name == "test_total_return_pct" and math.isnan(value)
