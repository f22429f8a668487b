"""Significance: block bootstrap, PSR/DSR against the paper's worked example, and our trading
metrics cross-checked against empyrical-reloaded (a maintained library)."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pytest

from kubetrade.errors import TrainingError
from kubetrade.training import evaluation as ev
from kubetrade.training.significance import (
    accuracy_ci,
    block_bootstrap_ci,
    circular_block_indices,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    mean_ci,
    probabilistic_sharpe_ratio,
    sharpe_ci,
    sharpe_difference_ci,
)


def test_dsr_matches_bailey_lopez_de_prado_2014_worked_example() -> None:
    # "The Deflated Sharpe Ratio" (2014), section 5: N=100 trials, T=1250 daily returns,
    # annualised SR 2.5, variance of the trials' annualised SRs 0.5, skew -3, kurtosis 10
    # -> SR0 = 0.1132 (per day) and DSR = 0.9004.
    threshold = expected_max_sharpe(100, 0.5 / 250)
    assert threshold == pytest.approx(0.1132, abs=5e-5)
    dsr = probabilistic_sharpe_ratio(2.5 / math.sqrt(250), threshold, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_psr_properties() -> None:
    assert probabilistic_sharpe_ratio(0.1, 0.1, 500) == pytest.approx(0.5)
    # more data -> more confidence; negative skew / fat tails -> less
    assert probabilistic_sharpe_ratio(0.05, 0, 1000) > probabilistic_sharpe_ratio(0.05, 0, 100)
    assert probabilistic_sharpe_ratio(0.05, 0, 500, -2, 9) < probabilistic_sharpe_ratio(
        0.05, 0, 500
    )
    with pytest.raises(TrainingError, match=">= 2 returns"):
        probabilistic_sharpe_ratio(0.1, 0, 1)


def test_dsr_deflates_with_more_trials() -> None:
    r = np.random.default_rng(3).normal(0.001, 0.01, 750)
    one = deflated_sharpe_ratio(r, 1)
    many = deflated_sharpe_ratio(r, 50)
    assert one["dsr"] == pytest.approx(one["psr"])  # one trial: nothing to deflate
    assert many["sharpe_threshold"] > 0
    assert many["dsr"] < one["dsr"]
    with pytest.raises(TrainingError, match="n_trials"):
        deflated_sharpe_ratio(r, 0)


def test_dsr_of_a_lucky_best_of_many_is_low() -> None:
    # the best of 40 skill-less strategies looks good (PSR high) but its DSR is not
    rng = np.random.default_rng(11)
    trials = rng.normal(0.0, 0.01, size=(40, 500))
    best = trials[np.argmax(trials.mean(axis=1) / trials.std(axis=1, ddof=1))]
    out = deflated_sharpe_ratio(best, 40)
    assert out["psr"] > 0.9
    assert out["dsr"] < 0.9
    assert out["dsr"] < out["psr"] - 0.3


def test_circular_block_indices_keep_blocks() -> None:
    idx = circular_block_indices(10, 4, 3, np.random.default_rng(0))
    assert idx.shape == (3, 10)
    for row in idx:
        for start in (0, 4):  # inside a block, consecutive (mod n)
            assert all((row[start + j + 1] - row[start + j]) % 10 == 1 for j in range(3))


def test_bootstrap_is_seeded_and_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0.0004, 0.01, 400)
    a = sharpe_ci(r, seed=7, n_boot=300)
    b = sharpe_ci(r, seed=7, n_boot=300)
    assert a == b
    assert a["low"] < a["value"] < a["high"]
    # coverage: the true annualised Sharpe is inside most 90% intervals
    true = 0.0004 / 0.01 * math.sqrt(252)
    hits = 0
    for seed in range(30):
        series = np.random.default_rng(100 + seed).normal(0.0004, 0.01, 400)
        ci = sharpe_ci(series, seed=seed, n_boot=300, alpha=0.1)
        hits += ci["low"] <= true <= ci["high"]
    assert hits >= 21


def test_block_bootstrap_widens_for_dependent_data() -> None:
    rng = np.random.default_rng(5)
    e = rng.normal(0, 1, 600)
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, len(e)):
        x[t] = 0.8 * x[t - 1] + e[t]  # strongly autocorrelated
    iid = block_bootstrap_ci(np.mean, x, block=1, n_boot=400)
    blocks = block_bootstrap_ci(np.mean, x, block=20, n_boot=400)
    assert (blocks["high"] - blocks["low"]) > 1.8 * (iid["high"] - iid["low"])


def test_accuracy_and_difference_intervals() -> None:
    hits = np.r_[np.ones(60), np.zeros(40)]
    ci = accuracy_ci(np.random.default_rng(0).permutation(hits), n_boot=300)
    assert ci["value"] == pytest.approx(0.6)
    assert 0.45 < ci["low"] < 0.6 < ci["high"] < 0.75
    rng = np.random.default_rng(1)
    bench = rng.normal(0.0003, 0.01, 500)
    same = sharpe_difference_ci(bench, bench, n_boot=200)
    assert same["low"] == same["high"] == 0.0
    better = sharpe_difference_ci(bench + 0.003, bench, n_boot=200)
    assert better["low"] > 0
    with pytest.raises(TrainingError, match="lengths differ"):
        sharpe_difference_ci(bench, bench[:-1])


def test_mean_ci_over_folds() -> None:
    out = mean_ci([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0
    # t(0.975, 2) = 4.303; std 1 -> half width 4.303 / sqrt(3)
    assert out["high"] - 2.0 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    assert mean_ci([1.5])["low"] == 1.5
    assert math.isnan(mean_ci([])["mean"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trading_metrics_match_empyrical(seed: int) -> None:
    r = np.random.default_rng(seed).normal(0.0003, 0.012, 600)
    assert ev.sharpe_ratio(r) == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-9)
    assert ev.sortino_ratio(r) == pytest.approx(empyrical.sortino_ratio(r), rel=1e-9)
    assert ev.max_drawdown(r) == pytest.approx(empyrical.max_drawdown(r), rel=1e-9)
    assert ev.calmar_ratio(r) == pytest.approx(empyrical.calmar_ratio(r), rel=1e-9)
    # weekly-horizon annualisation (252 / 5) as the evaluator uses it
    assert ev.sharpe_ratio(r, 50.4) == pytest.approx(
        empyrical.sharpe_ratio(r, annualization=50.4), rel=1e-9
    )
