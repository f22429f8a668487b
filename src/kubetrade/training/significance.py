"""How much of a score is skill: block-bootstrap intervals, PSR and the deflated Sharpe ratio.

* :func:`block_bootstrap_ci` resamples a return series (or several aligned series) with the
  circular block bootstrap (Politis & Romano 1992): blocks of ``block`` consecutive periods,
  wrapped around the end, so the serial dependence inside a block is kept. Seeded, so a rerun
  gives the same interval.
* :func:`probabilistic_sharpe_ratio` (Bailey & López de Prado 2012): the probability that the
  true Sharpe ratio exceeds a benchmark, given the estimate's length, skewness and kurtosis.
* :func:`deflated_sharpe_ratio` (Bailey & López de Prado 2014): the PSR against the Sharpe
  ratio that the best of ``n_trials`` skill-less configurations would show by luck
  (:func:`expected_max_sharpe`). ``n_trials`` must count every configuration tried: tuning
  trials, RL agents, model variants.

Sharpe ratios inside PSR/DSR are per period (not annualised), as in the papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kubetrade.errors import TrainingError

__all__ = [
    "EULER_GAMMA",
    "default_block_length",
    "circular_block_indices",
    "block_bootstrap_ci",
    "sharpe_ci",
    "accuracy_ci",
    "sharpe_difference_ci",
    "per_period_sharpe",
    "probabilistic_sharpe_ratio",
    "expected_max_sharpe",
    "deflated_sharpe_ratio",
    "mean_ci",
]

EULER_GAMMA = 0.5772156649015329


def default_block_length(n: int) -> int:
    """``n ** (1/3)`` rounded, at least 1 (the usual rate for block bootstraps)."""
    return max(1, int(round(n ** (1.0 / 3.0))))


def circular_block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` indices of circular block bootstrap resamples of a length-``n`` series."""
    if n < 1:
        raise TrainingError("cannot bootstrap an empty series")
    block = max(1, min(int(block), n))
    n_blocks = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    return idx.reshape(n_boot, -1)[:, :n]


def block_bootstrap_ci(
    statistic: Callable[..., float],
    *series: np.ndarray,
    block: int | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile interval of ``statistic(*series)`` under the circular block bootstrap.

    The series are resampled with the same indices (paired), so a statistic of two aligned
    return series (a Sharpe difference) keeps their correlation.

    Returns:
        ``{"value", "low", "high", "std", "block", "n_boot", "alpha"}``
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in series]
    if not arrays:
        raise TrainingError("block_bootstrap_ci needs at least one series")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise TrainingError(f"series lengths differ: {[len(a) for a in arrays]}")
    if not 0 < alpha < 1:
        raise TrainingError(f"alpha must be in (0, 1), got {alpha}")
    block = default_block_length(n) if block is None else int(block)
    value = float(statistic(*arrays))
    if n < 2:
        return {"value": value, "low": value, "high": value, "std": 0.0,
                "block": float(block), "n_boot": 0.0, "alpha": alpha}  # fmt: skip
    idx = circular_block_indices(n, block, n_boot, np.random.default_rng(seed))
    stats = np.array([statistic(*(a[i] for a in arrays)) for i in idx], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2]) if len(stats) else (value, value)
    return {
        "value": value, "low": float(low), "high": float(high),
        "std": float(stats.std(ddof=1)) if len(stats) > 1 else 0.0,
        "block": float(block), "n_boot": float(n_boot), "alpha": alpha,
    }  # fmt: skip


def _annual_sharpe(periods_per_year: float) -> Callable[[np.ndarray], float]:
    def stat(r: np.ndarray) -> float:
        sd = r.std(ddof=1)
        return float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 1e-12 else 0.0

    return stat


def sharpe_ci(
    returns: np.ndarray, periods_per_year: float = 252.0, **kwargs: Any
) -> dict[str, float]:
    """Block-bootstrap interval of the annualised Sharpe ratio of ``returns``."""
    return block_bootstrap_ci(_annual_sharpe(periods_per_year), returns, **kwargs)


def accuracy_ci(correct: np.ndarray, **kwargs: Any) -> dict[str, float]:
    """Block-bootstrap interval of an accuracy from per-window 0/1 hits in time order."""
    return block_bootstrap_ci(lambda c: float(np.mean(c)), np.asarray(correct, float), **kwargs)


def sharpe_difference_ci(
    returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float = 252.0, **kwargs: Any
) -> dict[str, float]:
    """Interval of Sharpe(returns) - Sharpe(benchmark), resampled in pairs (same dates).
    ``low > 0`` means the strategy beats the benchmark at level ``alpha``."""
    sharpe = _annual_sharpe(periods_per_year)
    return block_bootstrap_ci(lambda a, b: sharpe(a) - sharpe(b), returns, benchmark, **kwargs)


def mean_ci(values: Sequence[float], alpha: float = 0.05) -> dict[str, float]:
    """Mean and Student-t interval over fold values (``low == high == mean`` with one fold)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0.0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": float(len(v))}
    half = float(stats.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": float(len(v))}


# ------------------------------------------------------------------ PSR / DSR
def per_period_sharpe(returns: np.ndarray) -> float:
    """Mean / standard deviation (ddof=1) of per-period returns, not annualised."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2 or r.std(ddof=1) <= 1e-12:
        return 0.0
    return float(r.mean() / r.std(ddof=1))


def probabilistic_sharpe_ratio(
    sharpe: float,
    benchmark: float,
    n: int,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """P[true Sharpe > ``benchmark``] (Bailey & López de Prado 2012, eq. 11).

    ``sharpe`` and ``benchmark`` per period; ``kurtosis`` is the plain (not excess) kurtosis,
    3 for normal returns; ``n`` the number of returns.
    """
    from scipy.stats import norm

    if n < 2:
        raise TrainingError(f"the probabilistic Sharpe ratio needs >= 2 returns, got {n}")
    var = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if var <= 0:
        var = 1e-12
    return float(norm.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` skill-less Sharpe estimates with variance
    ``sharpe_variance`` (Bailey & López de Prado 2014, eq. 6; per period)."""
    from scipy.stats import norm

    if n_trials < 1:
        raise TrainingError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials == 1:
        return 0.0
    z1 = norm.ppf(1.0 - 1.0 / n_trials)
    z2 = norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sharpe_variance) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe_ratio(
    returns: np.ndarray,
    n_trials: int,
    sharpe_variance: float | None = None,
) -> dict[str, float]:
    """The deflated Sharpe ratio of ``returns`` after ``n_trials`` configurations were tried.

    Args:
        returns: per-period returns of the selected strategy, out of sample.
        n_trials: every configuration tried (tuning trials + agents + model variants).
        sharpe_variance: variance of the per-period Sharpe ratios across the trials; default
            the variance of a skill-less Sharpe estimate on ``len(returns)`` periods,
            ``1 / (n - 1)`` (what the trials' spread would be by luck alone).

    Returns:
        ``{"dsr", "psr", "sharpe", "sharpe_threshold", "n_trials", "n", "skewness",
        "kurtosis"}`` with per-period Sharpe ratios; ``psr`` is against 0.
    """
    from scipy import stats

    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    if n < 3:
        raise TrainingError(f"the deflated Sharpe ratio needs >= 3 returns, got {n}")
    sr = per_period_sharpe(r)
    skew = float(stats.skew(r)) if r.std() > 1e-12 else 0.0
    kurt = float(stats.kurtosis(r, fisher=False)) if r.std() > 1e-12 else 3.0
    var = 1.0 / (n - 1) if sharpe_variance is None else float(sharpe_variance)
    threshold = expected_max_sharpe(n_trials, var)
    return {
        "dsr": probabilistic_sharpe_ratio(sr, threshold, n, skew, kurt),
        "psr": probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt),
        "sharpe": sr, "sharpe_threshold": threshold, "n_trials": float(n_trials),
        "n": float(n), "skewness": skew, "kurtosis": kurt,
    }  # fmt: skip
