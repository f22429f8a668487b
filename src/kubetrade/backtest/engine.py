"""Event-accurate, vectorized-across-assets backtester for target-position signals.

Timing and fills (no look-ahead):

* A signal is decided at bar ``t``'s close and executed at bar ``t + 1``'s
  **open**. A signal on the last bar is never executed. There is no same-bar
  ("trade on close") fill mode: nothing in kubetrade needs one, and it is the
  usual source of look-ahead.
* Fill price = open x (1 + slippage) when buying, x (1 - slippage) when
  selling. Transaction cost = traded notional (shares x fill price) x
  ``transaction_costs``, paid from cash on every fill (entries and exits).
* Sizing: at each rebalance, positions whose target is flat or on the other
  side are closed first; then every asset being (re)sized gets
  ``shares = weight x equity / (fill x (1 + transaction_costs))`` where
  ``equity`` is cash plus positions marked at the open, after those closes.
  Dividing by ``1 + transaction_costs`` makes an all-in position (weight 1)
  spend exactly the equity, cost included. With ``fractional_shares=False``
  the share count is truncated toward zero (whole shares, as backtesting.py).

Signals are target positions in [-1, 1] (``signal_mode="scaled"``: weight =
signal x ``max_position_size``) or raw weights (``signal_mode="weights"``:
weight = signal clipped to +/- ``max_position_size``); weights are fractions
of equity, negative is short. If the gross weight of a bar exceeds
``max_gross_exposure`` all weights of that bar are scaled down to it.

With ``rebalance="on_change"`` (default) an asset trades only when its target
weight changes, and holds its share count (weights drift) in between, which is
how event-driven backtesters (backtesting.py) behave. ``rebalance="every_bar"``
trades back to the target weight at every open.

Risk controls, per position and measured from its entry price (the average
fill price when a position is increased on the same side):

* stop-loss at entry x (1 - ``stop_loss_pct``) for longs, x (1 +
  ``stop_loss_pct``) for shorts; take-profit at entry x (1 +/- ``take_profit_pct``).
* Checked on every bar the position is held, including the bar it was entered
  at the open, against the bar's low/high. The fill is at the level, or at the
  open when the bar gaps through it; slippage and costs apply. When both levels
  lie inside one bar the stop-loss is assumed to come first (pessimistic).
* After a stop or take-profit the asset stays flat until its signal changes.

Equity is marked at each bar's close. Open positions at the end are not
closed (no exit cost), matching backtesting.py's ``finalize_trades=False``.
If equity falls to zero or below at a close, everything is liquidated there
and the backtest stops trading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from kubetrade.backtest import metrics as m
from kubetrade.data.sources import PRICE_COLUMNS, load_embedded
from kubetrade.errors import ConfigError, DataError

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba ships with shap; the fallback is slow but exact

    def njit(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        if args and callable(args[0]):
            return args[0]
        return lambda func: func


__all__ = [
    "BacktestResult",
    "BacktestingEngine",
    "SignalModel",
    "EXIT_REASONS",
    "METRIC_NAMES",
    "RESULT_NAMES",
]

SignalMode = Literal["scaled", "weights"]
Rebalance = Literal["on_change", "every_bar"]

EXIT_REASONS = ("signal", "stop_loss", "take_profit", "open", "ruin")
_REASON_SIGNAL, _REASON_STOP, _REASON_TAKE, _REASON_OPEN, _REASON_RUIN = range(5)

METRIC_NAMES = (
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "win_rate",
    "profit_factor",
    "num_trades",
    "turnover",
    "exposure",
    "average_gross_exposure",
    "total_costs",
    "final_equity",
    "buy_and_hold_return",
)


@runtime_checkable
class SignalModel(Protocol):
    """Anything with ``predict_signals(prices) -> signals`` can be backtested."""

    def predict_signals(self, prices: pd.DataFrame) -> Any:  # pragma: no cover - protocol
        ...


@dataclass(frozen=True)
class BacktestResult:
    """Outcome of one backtest; readable as attributes or as ``res["sharpe_ratio"]``.

    Conventions: returns are fractions (``0.12`` = +12 %); ``max_drawdown`` is
    negative (``-0.25``); ``max_drawdown_duration`` is in bars; ``turnover`` is
    annualized one-way traded notional over equity; ``exposure`` is the fraction
    of bars with any position at the close; ``win_rate`` and ``profit_factor``
    count closed trades only (``nan`` when there are none), ``num_trades``
    counts every trade including ones still open at the end.

    Attributes:
        equity: account equity at each bar's close.
        returns: per-bar returns (the first relative to ``initial_capital``).
        positions: signed weight of each asset at each close (fraction of equity).
        shares: signed share count of each asset at each close.
        trades: one row per round trip (see :data:`EXIT_REASONS`).
        buy_and_hold_equity: equal-weight buy & hold of the same assets, bought
            at the second bar's open (the first fill any signal can get) with the
            same costs, slippage and share rounding, never sold.
        buy_and_hold_metrics: the scalar metrics of that buy & hold curve.
        params: the settings the backtest ran with.
    """

    name: str
    total_return: float
    cagr: float
    annual_volatility: float
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    max_drawdown: float
    max_drawdown_duration: int
    win_rate: float
    profit_factor: float
    num_trades: int
    turnover: float
    exposure: float
    average_gross_exposure: float
    total_costs: float
    final_equity: float
    initial_capital: float
    buy_and_hold_return: float
    equity: pd.Series
    returns: pd.Series
    positions: pd.DataFrame
    shares: pd.DataFrame
    buy_and_hold_equity: pd.Series
    buy_and_hold_metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    # The trade table is built on first access: optimization loops that only
    # read metrics skip the DataFrame construction (a large share of a run).
    trades_source: Callable[[], pd.DataFrame] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def trades(self) -> pd.DataFrame:
        """One row per round trip: symbol, direction, entry/exit time and price,
        size (signed shares at entry), pnl (net of all costs), return_pct, costs,
        bars_held, exit_reason (one of :data:`EXIT_REASONS`)."""
        cached = self.__dict__.get("_trades")
        if cached is None:
            cached = (
                self.trades_source()
                if self.trades_source
                else _trades_frame(
                    np.empty((0, 4), dtype=np.int64), np.empty((0, 5)), self.equity.index, []
                )
            )
            object.__setattr__(self, "_trades", cached)
        return cached

    def __getitem__(self, key: str) -> Any:
        if key not in RESULT_NAMES:
            raise KeyError(f"{key!r} is not a backtest result; available: {list(RESULT_NAMES)}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in RESULT_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(RESULT_NAMES)

    def keys(self) -> list[str]:
        """All result names (metrics, series and tables), like ``dict.keys``."""
        return list(RESULT_NAMES)

    def get(self, key: str, default: Any = None) -> Any:
        """``res.get("sharpe_ratio")``, like ``dict.get``."""
        return getattr(self, key) if key in RESULT_NAMES else default

    def metrics(self) -> dict[str, float]:
        """The scalar metrics as plain floats (for MLflow, JSON and reports)."""
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}


RESULT_NAMES = (
    "name",
    *METRIC_NAMES,
    "initial_capital",
    "equity",
    "returns",
    "positions",
    "shares",
    "trades",
    "buy_and_hold_equity",
    "buy_and_hold_metrics",
    "params",
)


# --------------------------------------------------------------------------- kernel


# Rows of the per-asset open-trade state kept by the kernel.
_TRADE_ENTRY_BAR, _TRADE_ENTRY_PRICE, _TRADE_SIZE, _TRADE_FLOW, _TRADE_COSTS = range(5)


@njit(cache=True)
def _close_position(
    i: int,
    t: int,
    fill: float,
    reason: int,
    cost_rate: float,
    shares: np.ndarray,
    trade: np.ndarray,
    rec_int: np.ndarray,
    rec_float: np.ndarray,
    n_rec: int,
) -> tuple[float, float, float]:
    """Close asset ``i`` at ``fill``; record the trade; return (cash change, notional, cost)."""
    qty = shares[i]
    notional = abs(qty) * fill
    cost = notional * cost_rate
    cash_change = qty * fill - cost
    rec_int[n_rec, 0] = i
    rec_int[n_rec, 1] = int(trade[_TRADE_ENTRY_BAR, i])
    rec_int[n_rec, 2] = t
    rec_int[n_rec, 3] = reason
    rec_float[n_rec, 0] = trade[_TRADE_SIZE, i]
    rec_float[n_rec, 1] = trade[_TRADE_ENTRY_PRICE, i]
    rec_float[n_rec, 2] = fill
    rec_float[n_rec, 3] = trade[_TRADE_FLOW, i] + cash_change
    rec_float[n_rec, 4] = trade[_TRADE_COSTS, i] + cost
    shares[i] = 0.0
    trade[_TRADE_FLOW, i] = 0.0
    trade[_TRADE_COSTS, i] = 0.0
    return cash_change, notional, cost


@njit(cache=True)
def _simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    target: np.ndarray,
    initial_capital: float,
    cost_rate: float,
    slippage: float,
    stop_loss: float,
    take_profit: float,
    whole_shares: bool,
    every_bar: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Bar loop. Prices are (bars x assets) with NaN where an asset has no bar.

    Returns equity, shares, traded notional and costs per bar, and the trade
    records (int: asset, entry bar, exit bar, reason; float: entry size,
    entry price, exit price, pnl, costs) with their count.
    """
    n_bars, n_assets = open_.shape
    equity = np.empty(n_bars)
    shares_out = np.zeros((n_bars, n_assets))
    traded = np.zeros(n_bars)
    costs = np.zeros(n_bars)

    cash = initial_capital
    shares = np.zeros(n_assets)
    entry = np.zeros(n_assets)
    acted = np.zeros(n_assets)  # last target acted upon (also the one in force at a stop)
    stopped = np.zeros(n_assets, dtype=np.bool_)
    wanted = np.zeros(n_assets, dtype=np.bool_)
    last_price = np.empty(n_assets)
    for i in range(n_assets):
        last_price[i] = np.nan

    # Open trade per asset: entry bar, first fill price, size at entry, cash
    # flows so far (costs included) and costs so far.
    trade = np.zeros((5, n_assets))
    capacity = 4 * n_assets + 64
    rec_int = np.empty((capacity, 4), dtype=np.int64)
    rec_float = np.empty((capacity, 5))
    n_rec = 0

    use_stop = stop_loss > 0.0
    use_take = take_profit > 0.0
    ruined = False

    for t in range(n_bars):
        # Each asset closes at most twice per bar (rebalance, then stop or ruin).
        if n_rec + 2 * n_assets + 1 > capacity:
            capacity = 2 * capacity + 2 * n_assets
            grown_int = np.empty((capacity, 4), dtype=np.int64)
            grown_float = np.empty((capacity, 5))
            # Element loops, not slice assignment: numba compiles them far faster.
            for r in range(n_rec):
                for k in range(4):
                    grown_int[r, k] = rec_int[r, k]
                for k in range(5):
                    grown_float[r, k] = rec_float[r, k]
            rec_int = grown_int
            rec_float = grown_float

        if t > 0 and not ruined:
            any_wanted = False
            for i in range(n_assets):
                wanted[i] = False
                desired = target[t - 1, i]
                if stopped[i] and desired != acted[i]:
                    stopped[i] = False
                if stopped[i]:
                    continue
                if not every_bar and desired == acted[i]:
                    continue
                if math.isnan(open_[t, i]):
                    continue  # no bar for this asset: the order waits for its next bar
                wanted[i] = True
                any_wanted = True

            if any_wanted:
                # Phase 1: close positions that go flat or flip, so their proceeds
                # (net of costs) are part of the equity the new sizes are based on.
                for i in range(n_assets):
                    if not wanted[i] or shares[i] == 0.0:
                        continue
                    desired = target[t - 1, i]
                    if desired == 0.0 or (desired > 0.0) != (shares[i] > 0.0):
                        direction = -1.0 if shares[i] > 0.0 else 1.0
                        fill = open_[t, i] * (1.0 + direction * slippage)
                        cash_change, notional, cost = _close_position(
                            i,
                            t,
                            fill,
                            _REASON_SIGNAL,
                            cost_rate,
                            shares,
                            trade,
                            rec_int,
                            rec_float,
                            n_rec,
                        )
                        n_rec += 1
                        cash += cash_change
                        traded[t] += notional
                        costs[t] += cost

                equity_open = cash
                for i in range(n_assets):
                    if shares[i] != 0.0:
                        price = open_[t, i] if not math.isnan(open_[t, i]) else last_price[i]
                        equity_open += shares[i] * price

                # Phase 2: size new and resized positions from that equity.
                for i in range(n_assets):
                    if not wanted[i]:
                        continue
                    desired = target[t - 1, i]
                    acted[i] = desired
                    if desired == 0.0 or equity_open <= 0.0:
                        continue
                    price = open_[t, i]
                    estimate = desired * equity_open / (price * (1.0 + cost_rate))
                    direction = 1.0 if estimate > shares[i] else -1.0
                    fill = price * (1.0 + direction * slippage)
                    new_shares = desired * equity_open / (fill * (1.0 + cost_rate))
                    if whole_shares:
                        new_shares = float(math.trunc(new_shares))
                    delta = new_shares - shares[i]
                    if delta == 0.0:
                        continue
                    notional = abs(delta) * fill
                    cost = notional * cost_rate
                    cash -= delta * fill + cost
                    traded[t] += notional
                    costs[t] += cost
                    if shares[i] == 0.0:
                        trade[_TRADE_ENTRY_BAR, i] = t
                        trade[_TRADE_ENTRY_PRICE, i] = fill
                        trade[_TRADE_SIZE, i] = new_shares
                        entry[i] = fill
                    elif abs(new_shares) > abs(shares[i]):
                        entry[i] = (shares[i] * entry[i] + delta * fill) / new_shares
                    trade[_TRADE_FLOW, i] += -delta * fill - cost
                    trade[_TRADE_COSTS, i] += cost
                    shares[i] = new_shares

        if (use_stop or use_take) and not ruined:
            for i in range(n_assets):
                if shares[i] == 0.0 or math.isnan(open_[t, i]):
                    continue
                bar_open, bar_high, bar_low = open_[t, i], high[t, i], low[t, i]
                level = np.nan
                reason = -1
                if shares[i] > 0.0:
                    stop_level = entry[i] * (1.0 - stop_loss)
                    take_level = entry[i] * (1.0 + take_profit)
                    if use_stop and bar_open <= stop_level:
                        level, reason = bar_open, _REASON_STOP
                    elif use_take and bar_open >= take_level:
                        level, reason = bar_open, _REASON_TAKE
                    elif use_stop and bar_low <= stop_level:
                        level, reason = stop_level, _REASON_STOP
                    elif use_take and bar_high >= take_level:
                        level, reason = take_level, _REASON_TAKE
                    fill = level * (1.0 - slippage)
                else:
                    stop_level = entry[i] * (1.0 + stop_loss)
                    take_level = entry[i] * (1.0 - take_profit)
                    if use_stop and bar_open >= stop_level:
                        level, reason = bar_open, _REASON_STOP
                    elif use_take and bar_open <= take_level:
                        level, reason = bar_open, _REASON_TAKE
                    elif use_stop and bar_high >= stop_level:
                        level, reason = stop_level, _REASON_STOP
                    elif use_take and bar_low <= take_level:
                        level, reason = take_level, _REASON_TAKE
                    fill = level * (1.0 + slippage)
                if reason < 0:
                    continue
                cash_change, notional, cost = _close_position(
                    i, t, fill, reason, cost_rate, shares, trade, rec_int, rec_float, n_rec
                )
                n_rec += 1
                cash += cash_change
                traded[t] += notional
                costs[t] += cost
                stopped[i] = True

        value = cash
        for i in range(n_assets):
            if not math.isnan(close[t, i]):
                last_price[i] = close[t, i]
            if shares[i] != 0.0:
                value += shares[i] * last_price[i]
        if value <= 0.0 and not ruined:
            for i in range(n_assets):
                if shares[i] != 0.0:
                    cash_change, notional, cost = _close_position(
                        i,
                        t,
                        last_price[i],
                        _REASON_RUIN,
                        cost_rate,
                        shares,
                        trade,
                        rec_int,
                        rec_float,
                        n_rec,
                    )
                    n_rec += 1
                    cash += cash_change
                    traded[t] += notional
                    costs[t] += cost
            value = cash
            ruined = True
        equity[t] = value
        for i in range(n_assets):
            shares_out[t, i] = shares[i]

    # Trades still open are reported marked to the last close, without exit cost.
    for i in range(n_assets):
        if shares[i] != 0.0:
            rec_int[n_rec, 0] = i
            rec_int[n_rec, 1] = int(trade[_TRADE_ENTRY_BAR, i])
            rec_int[n_rec, 2] = n_bars - 1
            rec_int[n_rec, 3] = _REASON_OPEN
            rec_float[n_rec, 0] = trade[_TRADE_SIZE, i]
            rec_float[n_rec, 1] = trade[_TRADE_ENTRY_PRICE, i]
            rec_float[n_rec, 2] = last_price[i]
            rec_float[n_rec, 3] = trade[_TRADE_FLOW, i] + shares[i] * last_price[i]
            rec_float[n_rec, 4] = trade[_TRADE_COSTS, i]
            n_rec += 1
    return equity, shares_out, traded, costs, rec_int, rec_float, n_rec


# --------------------------------------------------------------------------- inputs


def _check_params(
    initial_capital: float,
    transaction_costs: float,
    slippage: float,
    max_position_size: float,
    max_gross_exposure: float,
    stop_loss_pct: float | None,
    take_profit_pct: float | None,
    signal_mode: str,
    rebalance: str,
) -> None:
    def bad(name: str, value: Any, valid: str) -> ConfigError:
        return ConfigError(f"backtest: {name}={value!r} is invalid; it must be {valid}")

    if not (math.isfinite(initial_capital) and initial_capital > 0):
        raise bad("initial_capital", initial_capital, "a positive amount, e.g. 100000")
    if not (0.0 <= transaction_costs < 0.1):
        raise bad("transaction_costs", transaction_costs, "a fraction in [0, 0.1), e.g. 0.001")
    if not (0.0 <= slippage < 0.1):
        raise bad("slippage", slippage, "a fraction of price in [0, 0.1), e.g. 0.0005")
    if not (0.0 < max_position_size <= 10.0):
        raise bad("max_position_size", max_position_size, "a fraction of equity in (0, 10]")
    if not (0.0 < max_gross_exposure <= 10.0):
        raise bad("max_gross_exposure", max_gross_exposure, "a multiple of equity in (0, 10]")
    if stop_loss_pct is not None and not (0.0 < stop_loss_pct < 1.0):
        raise bad("stop_loss_pct", stop_loss_pct, "None or a fraction in (0, 1), e.g. 0.05")
    if take_profit_pct is not None and not (0.0 < take_profit_pct <= 100.0):
        raise bad("take_profit_pct", take_profit_pct, "None or a positive fraction, e.g. 0.15")
    if signal_mode not in ("scaled", "weights"):
        raise bad("signal_mode", signal_mode, "'scaled' or 'weights'")
    if rebalance not in ("on_change", "every_bar"):
        raise bad("rebalance", rebalance, "'on_change' or 'every_bar'")


def _ffill_rows(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down each column of a 2-D array (leading NaN stay NaN)."""
    missing = np.isnan(values)
    if not missing.any():
        return values
    rows = np.where(missing, 0, np.arange(values.shape[0])[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    return values[rows, np.arange(values.shape[1])[None, :]]


def _utc_nanos(index: pd.Index, what: str) -> np.ndarray:
    """Epoch nanoseconds (UTC) of a time index; naive times are taken as UTC."""
    try:
        idx = pd.DatetimeIndex(index)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what}: the time index holds values that are not timestamps ({exc}); "
            "index them by the bars' timestamps"
        ) from exc
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return np.asarray(idx.as_unit("ns").asi8)


@dataclass(frozen=True)
class _Signals:
    times: np.ndarray  # int64 epoch ns, strictly increasing
    symbols: list[str]
    values: np.ndarray  # (times x symbols); NaN keeps the previous target


def _parse_signals(signals: Any) -> _Signals:
    """Normalize long, wide or Series signals; each value holds until the next one."""
    if isinstance(signals, pd.Series):
        if signals.name is None:
            raise DataError(
                "signals: a Series needs its symbol as name (e.g. signals.rename('GOOG')); "
                "or pass a wide frame with one column per symbol"
            )
        frame = signals.to_frame()
    elif isinstance(signals, pd.DataFrame):
        frame = signals
    else:
        raise DataError(
            f"signals: got {type(signals).__name__}; pass a DataFrame (long: symbol, timestamp, "
            "signal; or wide: timestamp index x symbol columns), a Series named by its symbol, "
            "or a model with predict_signals(prices)"
        )
    if {"symbol", "timestamp", "signal"}.issubset(frame.columns):
        duplicated = frame.duplicated(["symbol", "timestamp"])
        if duplicated.any():
            first = frame.loc[duplicated, ["symbol", "timestamp"]].iloc[0]
            raise DataError(
                f"signals: duplicate (symbol, timestamp) rows, e.g. {tuple(first)}; "
                "give one signal per symbol and bar"
            )
        frame = frame.pivot(index="timestamp", columns="symbol", values="signal")
    elif "signal" in frame.columns or "symbol" in frame.columns:
        raise DataError(
            "signals: a long frame needs columns ['symbol', 'timestamp', 'signal'], got "
            f"{list(frame.columns)}"
        )
    if frame.shape[1] == 0:
        raise DataError("signals: no symbol columns; give at least one symbol's signals")
    times = _utc_nanos(frame.index, "signals")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"signals: values must be numbers ({exc})") from exc
    if times.size > 1 and not (np.diff(times) > 0).all():
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        repeated = np.flatnonzero(np.diff(times) == 0)
        if repeated.size:
            when = pd.Timestamp(int(times[repeated[0]]), tz="UTC")
            raise DataError(f"signals: duplicate timestamp {when}; give one row per bar")
    return _Signals(times, [str(c) for c in frame.columns], values)


def _call_model(model: Any, prices: pd.DataFrame) -> Any:
    if isinstance(model, SignalModel):
        return model.predict_signals(prices)
    if hasattr(model, "forward") or not callable(model):
        raise ConfigError(
            f"backtest: {type(model).__name__} has no predict_signals(prices) method; give the "
            "model one (returning target positions in [-1, 1]) or pass precomputed signals"
        )
    return model(prices)


@dataclass(frozen=True)
class _PriceTable:
    """Column arrays of the canonical long table, read once."""

    frame: pd.DataFrame
    codes: np.ndarray  # per row: position of its symbol in ``names``
    names: list[str]  # distinct symbols, in order of appearance
    times: np.ndarray  # per row: int64 epoch ns (UTC)

    @classmethod
    def from_frame(cls, prices: pd.DataFrame) -> _PriceTable:
        missing = [c for c in ("symbol", "timestamp", *PRICE_COLUMNS) if c not in prices.columns]
        if missing:
            raise DataError(
                f"prices: missing column(s) {missing}; pass the canonical OHLCV table "
                "(kubetrade.data.sources.to_canonical)"
            )
        if prices.empty:
            raise DataError("prices: no rows; pass a non-empty OHLCV table")
        stamps = prices["timestamp"]
        if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
            try:
                stamps = pd.to_datetime(stamps, utc=True)
            except (TypeError, ValueError) as exc:
                raise DataError(f"prices: column 'timestamp' is not dates ({exc})") from exc
        times = np.asarray(stamps.array.as_unit("ns").asi8)
        codes, uniques = pd.factorize(prices["symbol"])
        return cls(prices, codes, [str(u) for u in uniques], times)

    def position(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.names)}

    def check_symbols(self, wanted: Sequence[str], what: str) -> None:
        known = self.position()
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise DataError(
                f"{what} name symbol(s) {unknown} that the prices lack; prices have "
                f"{sorted(self.names)}"
            )

    def history(self, symbols: Sequence[str] | None, end_ns: int | None) -> pd.DataFrame:
        """Rows of ``symbols`` (all when None) up to ``end_ns``: what a model may see."""
        keep = np.ones(self.times.size, dtype=bool)
        if symbols:
            position = self.position()
            keep &= np.isin(self.codes, [position[s] for s in symbols])
        if end_ns is not None:
            keep &= self.times <= end_ns
        return self.frame.iloc[np.flatnonzero(keep)].reset_index(drop=True)

    def window(
        self, symbols: list[str], start_ns: int | None, end_ns: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bar times and (4 x bars x assets) OHLC with NaN where a bar is missing or incomplete."""
        n_assets = len(symbols)
        column_of_code = np.full(len(self.names), -1, dtype=np.int64)
        position = self.position()
        for j, sym in enumerate(symbols):
            column_of_code[position[sym]] = j
        columns = column_of_code[self.codes]
        keep = columns >= 0
        if start_ns is not None:
            keep &= self.times >= start_ns
        if end_ns is not None:
            keep &= self.times <= end_ns
        rows = np.flatnonzero(keep)
        columns = columns[rows]
        counts = np.bincount(columns, minlength=n_assets)
        if (counts == 0).any():
            empty = [s for s, c in zip(symbols, counts, strict=True) if c == 0]
            first = (
                "the start" if start_ns is None else f"{pd.Timestamp(start_ns, tz='UTC'):%Y-%m-%d}"
            )
            last = "the end" if end_ns is None else f"{pd.Timestamp(end_ns, tz='UTC'):%Y-%m-%d}"
            raise DataError(
                f"prices: no bars between {first} and {last} for {empty}; choose dates inside "
                "the data or other symbols"
            )
        row_times = self.times[rows]
        if n_assets == 1 and (np.diff(row_times) > 0).all():
            # One asset already in time order (the usual case): no sort needed.
            bar_times, bar_pos = row_times, np.arange(rows.size)
        else:
            # Sort-based unique: numpy's hash-based np.unique is far slower here.
            order = np.argsort(row_times, kind="stable")
            ordered = row_times[order]
            is_new = np.empty(ordered.size, dtype=bool)
            is_new[:1] = True
            np.not_equal(ordered[1:], ordered[:-1], out=is_new[1:])
            bar_times = ordered[is_new]
            bar_pos = np.empty(order.size, dtype=np.int64)
            bar_pos[order] = np.cumsum(is_new) - 1
            cell = np.sort(bar_pos * n_assets + columns)
            if (cell[1:] == cell[:-1]).any():
                raise DataError("prices: duplicate (symbol, timestamp) rows; keep one row per bar")
        ohlc = np.full((4, bar_times.size, n_assets), np.nan)
        for k, col in enumerate(PRICE_COLUMNS):
            ohlc[k, bar_pos, columns] = self.frame[col].to_numpy(dtype=np.float64)[rows]
        invalid = ~np.isfinite(ohlc).all(axis=0)
        ohlc[:, invalid] = np.nan
        if (ohlc[:, ~invalid] <= 0).any():
            raise DataError("prices: open/high/low/close must be positive; found a value <= 0")
        return bar_times, ohlc


def _buy_and_hold(
    ohlc: np.ndarray,
    initial_capital: float,
    cost_rate: float,
    slippage: float,
    whole_shares: bool,
) -> np.ndarray:
    """Equal-weight buy & hold: 1/n of capital per asset, never sold.

    Each asset is bought at its first open from bar 1 on -- the earliest fill a
    signal can get -- so an always-long equal-weight strategy equals it exactly.
    """
    open_, close = ohlc[0], ohlc[3]
    n_bars, _ = open_.shape
    valid = ~np.isnan(open_)
    valid[0] = False
    has_bar = valid.any(axis=0)
    first = np.argmax(valid, axis=0)
    n_held = int(has_bar.sum())
    if n_held == 0:
        return np.full(n_bars, initial_capital)
    allocation = initial_capital / n_held
    fill = open_[first, np.arange(open_.shape[1])] * (1.0 + slippage)
    fill = np.where(has_bar, fill, 1.0)
    qty = np.where(has_bar, allocation / (fill * (1.0 + cost_rate)), 0.0)
    if whole_shares:
        qty = np.trunc(qty)
    spent = qty * fill * (1.0 + cost_rate)
    held = (np.arange(n_bars)[:, None] >= first[None, :]) & has_bar[None, :]
    marks = np.nan_to_num(_ffill_rows(close))
    value = np.where(held, qty * marks, 0.0).sum(axis=1)
    cash = initial_capital - (held * spent).sum(axis=1)
    return cash + value


def _curve_metrics(
    equity: np.ndarray, initial_capital: float, periods_per_year: float, risk_free_rate: float
) -> dict[str, float]:
    path = np.concatenate(([initial_capital], equity))
    rets = m.returns_from_equity(path)
    return {
        "total_return": m.total_return(path),
        "cagr": m.cagr(path, periods_per_year),
        "annual_volatility": m.annual_volatility(rets, periods_per_year),
        "sharpe_ratio": m.sharpe_ratio(rets, risk_free_rate, periods_per_year),
        "sortino_ratio": m.sortino_ratio(rets, risk_free_rate, periods_per_year),
        "calmar_ratio": m.calmar_ratio(path, periods_per_year),
        "max_drawdown": m.max_drawdown(path),
        "max_drawdown_duration": float(m.max_drawdown_duration(path)),
        "final_equity": float(path[-1]),
    }


# --------------------------------------------------------------------------- engine


class BacktestingEngine:
    """Backtest signals or a signal model on a canonical OHLCV table.

    Args:
        periods_per_year: bars per year for annualized metrics (252 for daily bars).
        risk_free_rate: annual risk-free rate used by Sharpe and Sortino.
    """

    def __init__(self, periods_per_year: float = 252, risk_free_rate: float = 0.0) -> None:
        if not periods_per_year > 0:
            raise ConfigError(
                f"backtest: periods_per_year={periods_per_year!r} must be positive (252 for daily)"
            )
        self.periods_per_year = float(periods_per_year)
        self.risk_free_rate = float(risk_free_rate)

    def run_backtest(
        self,
        signals_or_model: Any = None,
        *,
        model: SignalModel | Callable[[pd.DataFrame], Any] | None = None,
        prices: pd.DataFrame | None = None,
        start_date: str | pd.Timestamp | None = None,
        end_date: str | pd.Timestamp | None = None,
        symbols: Sequence[str] | None = None,
        initial_capital: float = 100_000.0,
        transaction_costs: float = 0.001,
        slippage: float = 0.0,
        max_position_size: float = 1.0,
        max_gross_exposure: float = 1.0,
        stop_loss_pct: float | None = None,
        take_profit_pct: float | None = None,
        signal_mode: SignalMode = "scaled",
        rebalance: Rebalance = "on_change",
        fractional_shares: bool = True,
        name: str = "strategy",
    ) -> BacktestResult:
        """Run one backtest (see the module docstring for fill and sizing rules).

        Args:
            signals_or_model: target positions -- a long frame (``symbol``,
                ``timestamp``, ``signal``), a wide frame (timestamp index x symbol
                columns) or a Series named by its symbol -- or a model with
                ``predict_signals(prices)`` / a callable ``f(prices)`` returning
                such signals. A signal holds until the next one for that symbol;
                missing values keep the previous target (flat before the first).
            model: the same as ``signals_or_model`` (the guide's keyword).
            prices: canonical long OHLCV table; the embedded real data when None.
                A model receives every row up to ``end_date`` (history before
                ``start_date`` included, for warm-up), never later rows.
            start_date, end_date: inclusive window of bars that are traded.
            symbols: assets to trade; by default every symbol in the signals.
            initial_capital: starting cash.
            transaction_costs: cost per fill as a fraction of traded notional.
            slippage: fraction of price lost on every fill, against the trader.
            max_position_size: cap on |weight| per asset (fraction of equity).
            max_gross_exposure: cap on the sum of |weights| of a bar.
            stop_loss_pct, take_profit_pct: per-position exits, None to disable.
            signal_mode: ``"scaled"`` (signal in [-1, 1] x max_position_size) or
                ``"weights"`` (signal is the weight, clipped to the cap).
            rebalance: ``"on_change"`` or ``"every_bar"``.
            fractional_shares: False trades whole shares only.
            name: label used in reports.

        Raises:
            ConfigError: a setting is out of range or the model has no
                ``predict_signals``.
            DataError: signals or prices are unusable (the message says why).
        """
        if model is not None and signals_or_model is not None:
            raise ConfigError("backtest: pass either signals_or_model or model=, not both")
        source = model if model is not None else signals_or_model
        if source is None:
            raise ConfigError(
                "backtest: nothing to test; pass signals (DataFrame/Series) or model=<object "
                "with predict_signals(prices)>"
            )
        _check_params(
            initial_capital,
            transaction_costs,
            slippage,
            max_position_size,
            max_gross_exposure,
            stop_loss_pct,
            take_profit_pct,
            signal_mode,
            rebalance,
        )
        table = _PriceTable.from_frame(load_embedded() if prices is None else prices)
        start_ns = None if start_date is None else _day_nanos(start_date, "start_date")
        end_ns = None if end_date is None else _day_nanos(end_date, "end_date", end_of_day=True)
        if start_ns is not None and end_ns is not None and start_ns > end_ns:
            raise ConfigError(f"backtest: start_date {start_date} is after end_date {end_date}")

        wanted = [str(s) for s in symbols] if symbols else None
        if wanted:
            table.check_symbols(wanted, "symbols")
        if isinstance(source, pd.DataFrame | pd.Series):
            parsed = _parse_signals(source)
        else:
            history = table.history(wanted, end_ns)
            parsed = _parse_signals(_call_model(source, history))
        if not wanted:
            wanted = list(parsed.symbols)
            table.check_symbols(wanted, "signals")
        bar_times, ohlc = table.window(wanted, start_ns, end_ns)
        if bar_times.size < 2:
            raise DataError(
                f"backtest: only {bar_times.size} bar in the window; need at least 2 "
                "(a signal fills at the next bar's open)"
            )
        index = pd.DatetimeIndex(bar_times.view("datetime64[ns]")).tz_localize("UTC")

        target = _target_weights(
            parsed, bar_times, wanted, signal_mode, max_position_size, max_gross_exposure
        )
        whole = not fractional_shares
        equity, shares, traded, costs, rec_int, rec_float, n_rec = _simulate(
            ohlc[0],
            ohlc[1],
            ohlc[2],
            ohlc[3],
            target,
            float(initial_capital),
            float(transaction_costs),
            float(slippage),
            float(stop_loss_pct or 0.0),
            float(take_profit_pct or 0.0),
            whole,
            rebalance == "every_bar",
        )
        params = {
            "start_date": str(index[0].date()),
            "end_date": str(index[-1].date()),
            "symbols": list(wanted),
            "initial_capital": float(initial_capital),
            "transaction_costs": float(transaction_costs),
            "slippage": float(slippage),
            "max_position_size": float(max_position_size),
            "max_gross_exposure": float(max_gross_exposure),
            "stop_loss_pct": stop_loss_pct,
            "take_profit_pct": take_profit_pct,
            "signal_mode": signal_mode,
            "rebalance": rebalance,
            "fractional_shares": bool(fractional_shares),
        }
        bh_equity = _buy_and_hold(ohlc, float(initial_capital), transaction_costs, slippage, whole)
        return self._result(
            name,
            index,
            wanted,
            ohlc,
            equity,
            shares,
            traded,
            costs,
            rec_int[:n_rec],
            rec_float[:n_rec],
            bh_equity,
            params,
        )

    def _result(
        self,
        name: str,
        index: pd.DatetimeIndex,
        symbols: list[str],
        ohlc: np.ndarray,
        equity: np.ndarray,
        shares: np.ndarray,
        traded: np.ndarray,
        costs: np.ndarray,
        rec_int: np.ndarray,
        rec_float: np.ndarray,
        bh_equity: np.ndarray,
        params: dict[str, Any],
    ) -> BacktestResult:
        capital = params["initial_capital"]
        ppy = self.periods_per_year
        curve = _curve_metrics(equity, capital, ppy, self.risk_free_rate)
        bh = _curve_metrics(bh_equity, capital, ppy, self.risk_free_rate)

        marks = np.nan_to_num(_ffill_rows(ohlc[3]))
        held_value = np.where(shares != 0.0, shares * marks, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.where(equity[:, None] > 0, held_value / equity[:, None], 0.0)
        prev_equity = np.concatenate(([capital], equity[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            traded_frac = np.where(prev_equity > 0, traded / prev_equity, 0.0)

        closed_pnl = rec_float[rec_int[:, 3] != _REASON_OPEN, 3]
        gross_profit = float(closed_pnl[closed_pnl > 0].sum())
        gross_loss = float(-closed_pnl[closed_pnl <= 0].sum())
        if closed_pnl.size == 0:
            win_rate = profit_factor = math.nan
        else:
            win_rate = float((closed_pnl > 0).mean())
            profit_factor = (
                gross_profit / gross_loss
                if gross_loss > 0
                else (math.inf if gross_profit > 0 else 0.0)
            )
        rets = m.returns_from_equity(equity, initial=capital)
        return BacktestResult(
            name=name,
            total_return=curve["total_return"],
            cagr=curve["cagr"],
            annual_volatility=curve["annual_volatility"],
            sharpe_ratio=curve["sharpe_ratio"],
            sortino_ratio=curve["sortino_ratio"],
            calmar_ratio=curve["calmar_ratio"],
            max_drawdown=curve["max_drawdown"],
            max_drawdown_duration=int(curve["max_drawdown_duration"]),
            win_rate=win_rate,
            profit_factor=float(profit_factor),
            num_trades=int(rec_int.shape[0]),
            turnover=float(traded_frac.sum() * ppy / len(index)),
            exposure=float((shares != 0.0).any(axis=1).mean()),
            average_gross_exposure=float(np.abs(weights).sum(axis=1).mean()),
            total_costs=float(costs.sum()),
            final_equity=float(equity[-1]),
            initial_capital=capital,
            buy_and_hold_return=bh["total_return"],
            equity=pd.Series(equity, index=index, name=name),
            returns=pd.Series(rets, index=index, name=name),
            positions=pd.DataFrame(weights, index=index, columns=symbols),
            shares=pd.DataFrame(shares, index=index, columns=symbols),
            buy_and_hold_equity=pd.Series(bh_equity, index=index, name="buy_and_hold"),
            buy_and_hold_metrics=bh,
            params=params,
            trades_source=partial(_trades_frame, rec_int, rec_float, index, symbols),
        )


def _day_nanos(day: str | pd.Timestamp, what: str, end_of_day: bool = False) -> int:
    """Epoch ns of a date; an end date without a time covers that whole day."""
    try:
        stamp = pd.Timestamp(day)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backtest: {what}={day!r} is not a date; use e.g. '2012-01-31'") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
    if end_of_day and stamp == stamp.normalize():
        stamp = stamp + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    return int(stamp.as_unit("ns").value)


def _target_weights(
    signals: _Signals,
    bar_times: np.ndarray,
    symbols: list[str],
    signal_mode: str,
    max_position_size: float,
    max_gross_exposure: float,
) -> np.ndarray:
    """(bars x assets) target weights in force after each bar's close."""
    # The latest signal at or before each bar applies, so a signal stamped
    # between bars acts from the next bar on and nothing can look ahead.
    filled = _ffill_rows(signals.values)
    row = np.searchsorted(signals.times, bar_times, side="right") - 1
    column = pd.Index(signals.symbols).get_indexer(symbols)
    values = np.zeros((bar_times.size, len(symbols)))
    have_row = row >= 0
    for j, col in enumerate(column):
        if col >= 0:
            values[have_row, j] = filled[row[have_row], col]
    values = np.where(np.isnan(values), 0.0, values)
    if np.isinf(values).any():
        raise DataError("signals: contain +/-inf; give finite target positions")
    if signal_mode == "scaled":
        worst = float(np.abs(values).max(initial=0.0))
        if worst > 1.0 + 1e-9:
            raise DataError(
                f"signals: |signal| up to {worst:.4g} but signal_mode='scaled' expects values "
                "in [-1, 1] (fractions of max_position_size); clip them or use "
                "signal_mode='weights'"
            )
        weights = np.clip(values, -1.0, 1.0) * max_position_size
    else:
        weights = np.clip(values, -max_position_size, max_position_size)
    gross = np.abs(weights).sum(axis=1)
    over = gross > max_gross_exposure
    if over.any():
        weights[over] *= (max_gross_exposure / gross[over])[:, None]
    return np.ascontiguousarray(weights)


def _trades_frame(
    rec_int: np.ndarray, rec_float: np.ndarray, index: pd.DatetimeIndex, symbols: list[str]
) -> pd.DataFrame:
    order = np.lexsort((rec_int[:, 0], rec_int[:, 1]))
    rec_int, rec_float = rec_int[order], rec_float[order]
    size = rec_float[:, 0]
    entry_price = rec_float[:, 1]
    reason = rec_int[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return_pct = rec_float[:, 3] / (np.abs(size) * entry_price)
    # copy=False: the record arrays are fresh, and copying them doubles the build time.
    return pd.DataFrame(
        {
            "symbol": np.asarray(symbols, dtype=object)[rec_int[:, 0]],
            "direction": np.asarray(["short", "long"], dtype=object)[(size > 0).astype(np.int64)],
            "entry_time": index[rec_int[:, 1]],
            "exit_time": index[rec_int[:, 2]].where(reason != _REASON_OPEN),
            "entry_price": entry_price,
            "exit_price": rec_float[:, 2],
            "size": size,
            "pnl": rec_float[:, 3],
            "return_pct": return_pct,
            "costs": rec_float[:, 4],
            "bars_held": rec_int[:, 2] - rec_int[:, 1],
            "exit_reason": np.asarray(EXIT_REASONS, dtype=object)[reason],
        },
        copy=False,
    )
