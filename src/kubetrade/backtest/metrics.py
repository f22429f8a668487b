"""Performance metrics on plain arrays of equity or per-period returns.

Pure numpy functions shared by the backtester, model evaluation and the RL
agents, so every part of kubetrade reports the same number under the same name.

Conventions (the same in every function):

* ``returns`` are simple per-period returns (``0.01`` is +1 %), ``equity`` is a
  value path (e.g. account equity in dollars); :func:`returns_from_equity` and
  :func:`equity_from_returns` convert between them.
* ``periods_per_year`` annualizes; 252 (trading days) by default.
* :func:`max_drawdown` is a **negative** fraction (``-0.25`` for a 25 % fall)
  or ``0.0``; ratios divide by its absolute value.
* Empty input gives ``nan``. A ratio whose denominator is zero (no volatility,
  no drawdown) is ``0.0`` when its numerator is zero too and ``+/-inf``
  otherwise, so a flat strategy scores 0 rather than ``nan``.
* NaN values are not skipped: clean the input first (a NaN return usually
  means a data problem that a metric should not hide).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "TRADING_DAYS_PER_YEAR",
    "returns_from_equity",
    "equity_from_returns",
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "drawdown_series",
    "max_drawdown",
    "max_drawdown_duration",
    "calmar_ratio",
]

TRADING_DAYS_PER_YEAR = 252

ArrayLike = Sequence[float] | np.ndarray


def _as_1d(values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(-1)


def _safe_ratio(numerator: float, denominator: float) -> float:
    # A zero denominator with a non-zero numerator is a genuinely infinite ratio;
    # 0/0 (a strategy that never moves) is reported as 0 so rankings still work.
    if denominator == 0.0 or not math.isfinite(denominator):
        if numerator == 0.0:
            return 0.0
        if math.isnan(numerator):
            return math.nan
        return math.copysign(math.inf, numerator)
    return float(numerator / denominator)


def returns_from_equity(equity: ArrayLike, initial: float | None = None) -> np.ndarray:
    """Simple per-period returns of an equity path.

    Args:
        equity: equity values, one per period.
        initial: value before the first period; when given, the first return is
            ``equity[0] / initial - 1`` and the output has ``len(equity)``
            elements, otherwise one fewer.
    """
    eq = _as_1d(equity)
    if initial is not None:
        eq = np.concatenate(([float(initial)], eq))
    if eq.size < 2:
        return np.empty(0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return eq[1:] / eq[:-1] - 1.0


def equity_from_returns(returns: ArrayLike, initial: float = 1.0) -> np.ndarray:
    """Compound per-period returns into an equity path starting from ``initial``.

    The output has ``len(returns) + 1`` elements; the first is ``initial``.
    """
    r = _as_1d(returns)
    return float(initial) * np.concatenate(([1.0], np.cumprod(1.0 + r)))


def total_return(equity: ArrayLike) -> float:
    """Return over the whole path: ``equity[-1] / equity[0] - 1``."""
    eq = _as_1d(equity)
    if eq.size == 0:
        return math.nan
    return float(eq[-1] / eq[0] - 1.0)


def cagr(equity: ArrayLike, periods_per_year: float = TRADING_DAYS_PER_YEAR) -> float:
    """Compound annual growth rate of an equity path.

    The path spans ``len(equity) - 1`` periods (its first value is the start),
    so 253 daily values are one year. A path that ends at or below zero gives
    ``-1.0``.
    """
    eq = _as_1d(equity)
    if eq.size < 2:
        return math.nan
    years = (eq.size - 1) / periods_per_year
    growth = eq[-1] / eq[0]
    if growth <= 0:
        return -1.0
    return float(growth ** (1.0 / years) - 1.0)


def annual_volatility(returns: ArrayLike, periods_per_year: float = TRADING_DAYS_PER_YEAR) -> float:
    """Annualized standard deviation of per-period returns (sample, ``ddof=1``)."""
    r = _as_1d(returns)
    if r.size < 2:
        return math.nan
    return float(np.std(r, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(
    returns: ArrayLike,
    risk_free_rate: float = 0.0,
    periods_per_year: float = TRADING_DAYS_PER_YEAR,
) -> float:
    """Annualized Sharpe ratio: ``mean(r - rf) / std(r) * sqrt(periods_per_year)``.

    Args:
        returns: per-period simple returns.
        risk_free_rate: annual risk-free rate, spread evenly over the periods.
        periods_per_year: periods in a year (252 for daily bars).
    """
    r = _as_1d(returns)
    if r.size < 2:
        return math.nan
    excess = r - risk_free_rate / periods_per_year
    return _safe_ratio(float(np.mean(excess)), float(np.std(r, ddof=1))) * math.sqrt(
        periods_per_year
    )


def sortino_ratio(
    returns: ArrayLike,
    risk_free_rate: float = 0.0,
    periods_per_year: float = TRADING_DAYS_PER_YEAR,
) -> float:
    """Annualized Sortino ratio: mean excess return over downside deviation.

    Downside deviation is ``sqrt(mean(min(r - rf, 0) ** 2))`` over *all*
    periods (the usual target-downside definition), so rare losses are not
    inflated by dividing by their count alone.
    """
    r = _as_1d(returns)
    if r.size < 2:
        return math.nan
    excess = r - risk_free_rate / periods_per_year
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    return _safe_ratio(float(np.mean(excess)), downside) * math.sqrt(periods_per_year)


def drawdown_series(equity: ArrayLike) -> np.ndarray:
    """Drawdown at each point: ``equity / running_peak - 1`` (``<= 0``)."""
    eq = _as_1d(equity)
    if eq.size == 0:
        return eq
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, eq / peak - 1.0, 0.0)


def max_drawdown(equity: ArrayLike) -> float:
    """Largest peak-to-trough fall as a negative fraction (``[100, 120, 90, 130]`` -> ``-0.25``)."""
    dd = drawdown_series(equity)
    if dd.size == 0:
        return math.nan
    return float(min(0.0, dd.min()))


def max_drawdown_duration(equity: ArrayLike) -> int:
    """Longest run of consecutive periods spent below the previous peak.

    A run that has not recovered by the end of the path counts up to the end.
    ``[100, 120, 90, 110, 130]`` has one run of 2 periods (90 and 110).
    """
    eq = _as_1d(equity)
    if eq.size == 0:
        return 0
    underwater = eq < np.maximum.accumulate(eq)
    if not underwater.any():
        return 0
    # Lengths of runs of True: split at the False positions.
    padded = np.concatenate(([0], underwater.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[0::2], edges[1::2]
    return int((ends - starts).max())


def calmar_ratio(equity: ArrayLike, periods_per_year: float = TRADING_DAYS_PER_YEAR) -> float:
    """CAGR divided by the absolute maximum drawdown of the same equity path."""
    eq = _as_1d(equity)
    if eq.size < 2:
        return math.nan
    return _safe_ratio(cagr(eq, periods_per_year), abs(max_drawdown(eq)))
