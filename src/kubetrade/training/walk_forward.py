"""Walk-forward evaluation: rolling-origin folds over the held-out test period.

The folds' test blocks tile the test period into ``validation.cv_folds`` contiguous blocks
(by bars of the calendar). What each model was trained on, per fold:

* **hybrid CNN+LSTM** and **RL ensemble**: trained once, on the train split (the ensemble's
  weights and the hybrid's early stopping / tuning on the validation split), so every fold's
  test block lies after their training data by at least the split's purge gap. They are
  *evaluated* per fold, not retrained (retraining per fold would multiply ``make run``'s
  time by the number of folds).
* **majority class** and **logistic regression**: refit per fold on every window whose
  decision bar lies at least ``gap`` bars before the fold's first test bar (expanding,
  rolling-origin training: train + validation + earlier test blocks). The gap is the split's
  purge gap (:meth:`TimeSeriesSplitter.from_config`), at least ``sequence_length +
  prediction_horizon``, so no label or input of a training window reaches the test block.
* **buy-and-hold**: always long, equal weight; nothing to fit.

:func:`aggregate_folds` turns the per-fold results into fold means with t-intervals, and
block-bootstrap intervals, the Sharpe difference to buy-and-hold and the deflated Sharpe
ratio on the whole test period's concatenated series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.errors import SplitError, TrainingError

__all__ = [
    "Fold",
    "walk_forward_folds",
    "evaluate_fold",
    "aggregate_folds",
    "ensemble_returns",
    "FOLD_MODELS",
    "fold_mean_sharpe",
]

#: per-fold models, in the order the reports list them
FOLD_MODELS = (
    "hybrid_cnn_lstm", "logistic_regression", "majority_class", "rl_ensemble", "buy_and_hold",
)  # fmt: skip


@dataclass(frozen=True)
class Fold:
    """One rolling-origin fold: baselines train on ``train_period``, all models are scored on
    ``test_period`` (inclusive dates, UTC, tz-naive)."""

    index: int
    train_period: tuple[pd.Timestamp, pd.Timestamp]
    test_period: tuple[pd.Timestamp, pd.Timestamp]

    def as_dict(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "train_period": [f"{t:%Y-%m-%d}" for t in self.train_period],
            "test_period": [f"{t:%Y-%m-%d}" for t in self.test_period],
        }


def _naive(stamps: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(np.asarray(stamps)))
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


def walk_forward_folds(
    calendar: Sequence[Any] | pd.DatetimeIndex,
    test_period: tuple[Any, Any],
    n_folds: int,
    gap: int,
) -> list[Fold]:
    """Cut ``test_period`` into ``n_folds`` contiguous blocks of bars of ``calendar``; fold
    ``k`` trains on every bar up to ``gap + 1`` bars before its block (rolling origin)."""
    cal = pd.DatetimeIndex(np.sort(_naive(calendar).unique()))
    lo, hi = (_naive([t])[0] for t in test_period)
    test_bars = cal[(cal >= lo) & (cal <= hi)]
    if n_folds < 1:
        raise SplitError(f"validation.cv_folds must be >= 1, got {n_folds}")
    if len(test_bars) < 2 * n_folds:
        raise SplitError(
            f"the test period {lo:%Y-%m-%d}..{hi:%Y-%m-%d} has {len(test_bars)} bars, too few "
            f"for {n_folds} walk-forward folds; lower validation.cv_folds"
        )
    edges = np.linspace(0, len(test_bars), n_folds + 1).round().astype(int)
    folds = []
    for k in range(n_folds):
        block = test_bars[edges[k] : edges[k + 1]]
        first = int(cal.searchsorted(block[0]))
        train_end = first - gap - 1
        if train_end < 1:
            raise SplitError(f"fold {k}: no bars before its {gap}-bar purge gap")
        folds.append(Fold(k, (cal[0], cal[train_end]), (block[0], block[-1])))
    return folds


def fold_mean_sharpe(returns: np.ndarray, n_folds: int, periods_per_year: float = 252.0) -> float:
    """Mean annualised Sharpe ratio over ``n_folds`` contiguous blocks of a time-ordered
    return series: a selection objective that one lucky stretch moves less than the whole
    series' Sharpe does (each block counts once, whatever its volatility)."""
    from kubetrade.training.evaluation import sharpe_ratio

    r = np.asarray(returns, dtype=np.float64)
    k = max(1, min(int(n_folds), len(r) // 2))
    if len(r) < 2:
        return 0.0
    return float(np.mean([sharpe_ratio(b, periods_per_year) for b in np.array_split(r, k)]))


def ensemble_returns(ensemble_eval: dict[str, Any]) -> pd.Series:
    """The RL ensemble's per-bar after-cost returns on the test period, keyed by the decision
    bar (the return of bar t -> t+1 is keyed t, like the windows' forward returns)."""
    equity = np.asarray(ensemble_eval["equity"], dtype=np.float64)
    stamps = _naive(ensemble_eval["timestamps"][: len(equity)])
    returns = equity[1:] / equity[:-1] - 1.0
    return pd.Series(returns, index=stamps[:-1])


def _trading(returns: np.ndarray, ppy: float) -> dict[str, float]:
    from kubetrade.training.evaluation import financial_metrics

    m = financial_metrics(returns, ppy)
    return {k: m[k] for k in ("sharpe_ratio", "total_return", "max_drawdown")}


def evaluate_fold(
    fold: Fold,
    bundle: Any,
    model: Any,
    periods_per_year: float = 252.0,
    ensemble_eval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every model on ``fold``'s test block (see the module doc for who trained on what).

    Returns a JSON-able dict: the fold's periods, per-model metrics and the per-timestamp
    return series and per-window hits that :func:`aggregate_folds` bootstraps.
    """
    from kubetrade.data.windows import WindowSet
    from kubetrade.training.evaluation import ModelEvaluator, predict, signal_returns

    lo, hi = fold.test_period
    test_stamps = _naive(bundle.test.timestamps)
    in_fold = np.asarray((test_stamps >= lo) & (test_stamps <= hi))
    order = np.argsort(np.asarray(test_stamps)[in_fold], kind="stable")
    test = bundle.test.take(np.flatnonzero(in_fold)[order])
    if len(test) == 0:
        raise TrainingError(f"fold {fold.index}: no test windows in {lo:%Y-%m-%d}..{hi:%Y-%m-%d}")
    # rolling-origin training windows for the baselines: any split, decision bar <= train end
    pool = [bundle.train, bundle.val, bundle.test]
    parts = [ws.take(np.flatnonzero(_naive(ws.timestamps) <= fold.train_period[1])) for ws in pool]
    train = WindowSet.concat(parts, bundle.test.feature_names)
    if len(train) == 0:
        raise TrainingError(f"fold {fold.index}: no training windows before its purge gap")
    hybrid_end = _naive(bundle.train.timestamps).max()
    if hybrid_end >= lo:  # cannot happen with prepare_datasets' periods; guard the contract
        raise TrainingError(f"fold {fold.index}: the hybrid model's training reaches its test")

    y_cls = np.asarray(test.y_cls, dtype=np.int64)
    y_reg = np.asarray(test.y_reg, dtype=np.float64)
    stamps = np.asarray(test.timestamps)
    probs, _ = predict(model, test.X)
    preds = {
        "hybrid_cnn_lstm": probs.argmax(axis=1).astype(np.int64),
        "logistic_regression": ModelEvaluator._linear_baselines(train, test)[0],
        "majority_class": np.full(
            len(y_cls), int(np.bincount(train.y_cls.astype(np.int64), minlength=3).argmax())
        ),
        "buy_and_hold": np.zeros(len(y_cls), dtype=np.int64),  # class 0 = buy = long
    }
    times: np.ndarray = np.array([])
    series: dict[str, list[float | None]] = {}
    metrics: dict[str, dict[str, float]] = {}
    hits: dict[str, list[int]] = {}
    for name, pred in preds.items():
        times, rets = signal_returns(pred, y_reg, stamps)
        series[name] = rets.tolist()
        metrics[name] = _trading(rets, periods_per_year)
        if name != "buy_and_hold":
            hit = (pred == y_cls).astype(int)
            hits[name] = hit.tolist()
            metrics[name]["accuracy"] = float(hit.mean())
    keys = _naive(times)
    if ensemble_eval is not None:
        rl = ensemble_returns(ensemble_eval)
        rl = rl[(rl.index >= lo) & (rl.index <= hi)]
        aligned = rl.reindex(keys)
        series["rl_ensemble"] = [None if math.isnan(v) else float(v) for v in aligned]
        metrics["rl_ensemble"] = _trading(rl.to_numpy(), 252.0)
    return {
        **fold.as_dict(),
        "n_windows": int(len(test)),
        "n_train_windows_baselines": int(len(train)),
        "trained_on": {
            "hybrid_cnn_lstm": "train split (early stopping/tuning on validation); not refit",
            "rl_ensemble": "train split (weights from validation Sharpe); not refit",
            "logistic_regression": f"refit on windows up to {fold.train_period[1]:%Y-%m-%d}",
            "majority_class": f"refit on windows up to {fold.train_period[1]:%Y-%m-%d}",
            "buy_and_hold": "nothing to fit",
        },
        "metrics": metrics,
        "series": {"timestamps": [f"{t:%Y-%m-%d}" for t in keys], **series},
        "hits": hits,
    }


def aggregate_folds(
    folds: Sequence[dict[str, Any]],
    n_trials: int,
    periods_per_year: float = 252.0,
    seed: int = 0,
    n_boot: int = 2000,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Fold means with t-intervals, and on the concatenated test period: block-bootstrap
    intervals of Sharpe and accuracy, the Sharpe difference to buy-and-hold, PSR and DSR.

    ``n_trials``: every configuration tried in the run (tuning trials + RL agents + model
    variants); it sets the deflated Sharpe ratio's bar.
    """
    from kubetrade.training.significance import (
        accuracy_ci,
        deflated_sharpe_ratio,
        mean_ci,
        sharpe_ci,
        sharpe_difference_ci,
    )

    if not folds:
        raise TrainingError("no fold results to aggregate")
    folds = sorted(folds, key=lambda f: f["fold"])
    names = [n for n in FOLD_MODELS if all(n in f["metrics"] for f in folds)]
    fold_means: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        keys = folds[0]["metrics"][name].keys()
        fold_means[name] = {k: mean_ci([f["metrics"][name][k] for f in folds], alpha) for k in keys}
    stamps = [t for f in folds for t in f["series"]["timestamps"]]
    bh = np.asarray([v for f in folds for v in f["series"]["buy_and_hold"]], dtype=np.float64)
    whole: dict[str, dict[str, Any]] = {}
    boot = dict(seed=seed, n_boot=n_boot, alpha=alpha)
    for name in names:
        raw = [v for f in folds for v in f["series"][name]]
        mask = np.array([v is not None for v in raw])
        r = np.asarray([v if v is not None else np.nan for v in raw], dtype=np.float64)
        # the RL ensemble trades daily: its own annualisation; paired with B&H on shared dates
        ppy = 252.0 if name == "rl_ensemble" else periods_per_year
        entry: dict[str, Any] = {"sharpe_ci": sharpe_ci(r[mask], ppy, **boot)}
        if name != "buy_and_hold":
            entry["sharpe_minus_buy_and_hold_ci"] = sharpe_difference_ci(
                r[mask], bh[mask], ppy, **boot
            )
            entry["beats_buy_and_hold"] = bool(entry["sharpe_minus_buy_and_hold_ci"]["low"] > 0)
        hit_lists = [f["hits"].get(name) for f in folds]
        if all(h is not None for h in hit_lists):
            entry["accuracy_ci"] = accuracy_ci(
                np.concatenate([np.asarray(h) for h in hit_lists]), **boot
            )
        if mask.sum() >= 3:
            entry["deflated_sharpe"] = deflated_sharpe_ratio(r[mask], n_trials)
        whole[name] = entry
    significant = [n for n in names if whole[n].get("beats_buy_and_hold")]
    sentence = (
        f"{', '.join(significant)} beat{'s' if len(significant) == 1 else ''} buy-and-hold "
        f"with significance (the {100 * (1 - alpha):g}% block-bootstrap interval of the "
        "Sharpe difference is above 0)."
        if significant
        else "Nothing beats buy-and-hold with significance on this test period (every "
        f"{100 * (1 - alpha):g}% block-bootstrap interval of the Sharpe difference "
        "to buy-and-hold includes or is below 0)."
    )
    return {
        "n_folds": len(folds),
        "n_trials": n_trials,
        "alpha": alpha,
        "period": [stamps[0], stamps[-1]] if stamps else [],
        "folds": [
            {k: f[k] for k in ("fold", "train_period", "test_period", "n_windows", "metrics")}
            for f in folds
        ],
        "trained_on": folds[0]["trained_on"],
        "fold_mean": fold_means,
        "whole_period": whole,
        "beats_buy_and_hold": significant,
        "verdict": sentence,
    }
