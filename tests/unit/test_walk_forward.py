"""Walk-forward folds: rolling origin with the purge gap, causal baselines, aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubetrade.config import TrainingConfig
from kubetrade.data.splits import TimeSeriesSplitter
from kubetrade.errors import SplitError
from kubetrade.models import HybridCNNLSTM
from kubetrade.training.bundle import make_demo_bundle
from kubetrade.training.walk_forward import (
    aggregate_folds,
    ensemble_returns,
    evaluate_fold,
    walk_forward_folds,
)

TINY = dict(
    cnn_hidden_dim=16, cnn_num_heads=2, lstm_hidden_dim=8, fusion_dim=16, fusion_num_heads=2
)


@pytest.fixture(scope="module")
def demo():
    cfg = TrainingConfig.model_validate(
        {"data": {"sequence_length": 10}, "validation": {"cv_folds": 3}}
    )
    bundle = make_demo_bundle(n_symbols=2, n_years=3, seed=1, cfg=cfg)
    return cfg, bundle


def _calendar(n: int = 300) -> pd.DatetimeIndex:
    return pd.bdate_range("2020-01-01", periods=n)


def test_folds_tile_the_test_period_with_the_purge_gap() -> None:
    cal = _calendar()
    folds = walk_forward_folds(cal, (cal[240], cal[-1]), n_folds=4, gap=11)
    assert [f.index for f in folds] == [0, 1, 2, 3]
    assert folds[0].test_period[0] == cal[240] and folds[-1].test_period[1] == cal[-1]
    for a, b in zip(folds, folds[1:], strict=False):  # contiguous, no overlap
        assert cal.get_loc(b.test_period[0]) == cal.get_loc(a.test_period[1]) + 1
    for f in folds:
        first_test = cal.get_loc(f.test_period[0])
        assert cal.get_loc(f.train_period[1]) == first_test - 11 - 1  # exactly gap bars apart
        assert f.train_period[0] == cal[0]  # expanding origin
    sizes = [cal.get_loc(f.test_period[1]) - cal.get_loc(f.test_period[0]) + 1 for f in folds]
    assert sum(sizes) == 60 and max(sizes) - min(sizes) <= 1


def test_folds_refuse_too_short_a_test_period() -> None:
    cal = _calendar(50)
    with pytest.raises(SplitError, match="lower validation.cv_folds"):
        walk_forward_folds(cal, (cal[45], cal[-1]), n_folds=5, gap=3)
    with pytest.raises(SplitError, match=">= 1"):
        walk_forward_folds(cal, (cal[10], cal[-1]), n_folds=0, gap=3)


def test_evaluate_fold_is_causal_and_complete(demo) -> None:
    cfg, bundle = demo
    splitter = TimeSeriesSplitter.from_config(cfg)
    cal = np.unique(np.concatenate([bundle.train.timestamps, bundle.val.timestamps,
                                    bundle.test.timestamps]))  # fmt: skip
    test = bundle.periods["test"]
    folds = walk_forward_folds(cal, test, cfg.validation.cv_folds, splitter.gap)
    assert len(folds) == 3  # validation.cv_folds honoured
    model = HybridCNNLSTM(bundle.n_features, **TINY)
    results = [evaluate_fold(f, bundle, model) for f in folds]
    assert sum(r["n_windows"] for r in results) == len(bundle.test)
    for r in results:
        assert set(r["metrics"]) == {
            "hybrid_cnn_lstm", "logistic_regression", "majority_class", "buy_and_hold",
        }  # fmt: skip
        assert 0 <= r["metrics"]["hybrid_cnn_lstm"]["accuracy"] <= 1
        stamps = pd.to_datetime(r["series"]["timestamps"])
        assert stamps.min() >= pd.Timestamp(r["test_period"][0])
        assert stamps.max() <= pd.Timestamp(r["test_period"][1])
    # rolling origin: later folds' baselines see more (earlier test blocks included)
    counts = [r["n_train_windows_baselines"] for r in results]
    assert counts == sorted(counts) and counts[-1] > counts[0]

    # causality: garbage after the last fold's train end must not change its baselines
    last = folds[-1]
    poisoned = make_demo_bundle(n_symbols=2, n_years=3, seed=1, cfg=cfg)
    for ws in (poisoned.val, poisoned.test):
        late = pd.DatetimeIndex(ws.timestamps) > last.train_period[1]
        # the fold's own test inputs stay; only labels of windows no baseline may train on
        if ws is poisoned.val:
            ws.y_cls[late] = 2
            ws.y_reg[late] = -1.0
    before = evaluate_fold(last, bundle, model)
    after = evaluate_fold(last, poisoned, model)
    assert before["metrics"]["logistic_regression"] == after["metrics"]["logistic_regression"]
    assert before["metrics"]["majority_class"] == after["metrics"]["majority_class"]


def test_ensemble_returns_are_keyed_by_decision_bar() -> None:
    ev = {"equity": [100.0, 110.0, 99.0], "timestamps": ["2020-01-02", "2020-01-03", "2020-01-06"]}
    r = ensemble_returns(ev)
    assert list(r.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03"]
    assert r.iloc[0] == pytest.approx(0.1) and r.iloc[1] == pytest.approx(-0.1)


def _fake_fold(k: int, rng: np.random.Generator, edge: float) -> dict:
    n = 120
    stamps = pd.bdate_range("2020-01-01", periods=3 * n)[k * n : (k + 1) * n]
    bh = rng.normal(0.0002, 0.01, n)
    strat = rng.normal(edge, 0.01, n)
    return {
        "fold": k,
        "train_period": ["2019-01-01", "2019-12-01"],
        "test_period": [f"{stamps[0]:%Y-%m-%d}", f"{stamps[-1]:%Y-%m-%d}"],
        "n_windows": n,
        "trained_on": {},
        "metrics": {
            "hybrid_cnn_lstm": {"sharpe_ratio": float(k), "accuracy": 0.5},
            "buy_and_hold": {"sharpe_ratio": 1.0},
        },
        "series": {
            "timestamps": [f"{t:%Y-%m-%d}" for t in stamps],
            "hybrid_cnn_lstm": strat.tolist(),
            "buy_and_hold": bh.tolist(),
        },  # fmt: skip
        "hits": {"hybrid_cnn_lstm": rng.integers(0, 2, n).tolist()},
    }


def test_aggregate_states_whether_anything_beats_buy_and_hold() -> None:
    rng = np.random.default_rng(0)
    strong = aggregate_folds([_fake_fold(k, rng, 0.004) for k in range(3)], n_trials=10,
                             n_boot=300)  # fmt: skip
    assert strong["beats_buy_and_hold"] == ["hybrid_cnn_lstm"]
    assert strong["verdict"].startswith("hybrid_cnn_lstm beats buy-and-hold with significance")
    fm = strong["fold_mean"]["hybrid_cnn_lstm"]["sharpe_ratio"]
    assert fm["mean"] == pytest.approx(1.0) and fm["low"] < 1.0 < fm["high"]
    dsr = strong["whole_period"]["hybrid_cnn_lstm"]["deflated_sharpe"]
    assert dsr["n_trials"] == 10 and 0 <= dsr["dsr"] <= dsr["psr"] <= 1
    assert "accuracy_ci" in strong["whole_period"]["hybrid_cnn_lstm"]

    rng = np.random.default_rng(0)
    none = aggregate_folds([_fake_fold(k, rng, 0.0002) for k in range(3)], n_trials=10,
                           n_boot=300)  # fmt: skip
    assert none["beats_buy_and_hold"] == []
    assert none["verdict"].startswith("Nothing beats buy-and-hold with significance")


def test_fold_mean_sharpe_is_the_mean_over_blocks() -> None:
    from kubetrade.training.evaluation import sharpe_ratio
    from kubetrade.training.walk_forward import fold_mean_sharpe

    rng = np.random.default_rng(2)
    r = np.concatenate([rng.normal(0.01, 0.01, 50), rng.normal(-0.001, 0.03, 50)])
    blocks = [sharpe_ratio(r[:50]), sharpe_ratio(r[50:])]
    assert fold_mean_sharpe(r, 2) == pytest.approx(np.mean(blocks))
    # one fold: the whole-series Sharpe
    assert fold_mean_sharpe(r, 1) == pytest.approx(sharpe_ratio(r))
    assert fold_mean_sharpe(r[:1], 5) == 0.0


def test_fold_mean_objective_is_a_tuning_and_monitor_choice() -> None:
    from kubetrade.tuning.spec import MONITOR_METRICS, metric_direction

    assert "val_fold_mean_sharpe_ratio" in MONITOR_METRICS
    assert metric_direction("val_fold_mean_sharpe_ratio") == "max"
    cfg = TrainingConfig.model_validate({"training": {"monitor": "val_fold_mean_sharpe_ratio"}})
    assert cfg.training.monitor == "val_fold_mean_sharpe_ratio"
