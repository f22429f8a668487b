"""The backtest's bar loop: one numba kernel over (bars x assets) price arrays.

Fill, sizing, stop and ruin rules are those of :mod:`kubetrade.backtest.engine`'s docstring;
this module only simulates them. Trades are recorded as int rows (asset, entry bar, exit bar,
reason code of :data:`~kubetrade.backtest.result.EXIT_REASONS`) and float rows (entry size,
entry price, exit price, pnl, costs).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kubetrade.backtest.result import (
    REASON_OPEN,
    REASON_RUIN,
    REASON_SIGNAL,
    REASON_STOP,
    REASON_TAKE,
)

__all__ = ["simulate"]

# Rows of the per-asset open-trade state kept by the kernel.
_TRADE_ENTRY_BAR, _TRADE_ENTRY_PRICE, _TRADE_SIZE, _TRADE_FLOW, _TRADE_COSTS = range(5)


@njit(cache=True)
def _record_trade(
    i: int,
    t: int,
    reason: int,
    exit_price: float,
    pnl: float,
    costs: float,
    trade: np.ndarray,
    rec_int: np.ndarray,
    rec_float: np.ndarray,
    n_rec: int,
) -> None:
    """Write asset ``i``'s open trade, ending at bar ``t``, as record ``n_rec``."""
    rec_int[n_rec, 0] = i
    rec_int[n_rec, 1] = int(trade[_TRADE_ENTRY_BAR, i])
    rec_int[n_rec, 2] = t
    rec_int[n_rec, 3] = reason
    rec_float[n_rec, 0] = trade[_TRADE_SIZE, i]
    rec_float[n_rec, 1] = trade[_TRADE_ENTRY_PRICE, i]
    rec_float[n_rec, 2] = exit_price
    rec_float[n_rec, 3] = pnl
    rec_float[n_rec, 4] = costs


@njit(cache=True)
def _close_position(
    i: int,
    t: int,
    fill: float,
    reason: int,
    cost_rate: float,
    shares: np.ndarray,
    trade: np.ndarray,
    traded: np.ndarray,
    costs: np.ndarray,
    rec_int: np.ndarray,
    rec_float: np.ndarray,
    n_rec: int,
) -> float:
    """Close asset ``i`` at ``fill``, book bar ``t``'s traded notional and cost, record the
    trade as record ``n_rec``; return the cash change."""
    qty = shares[i]
    notional = abs(qty) * fill
    cost = notional * cost_rate
    cash_change = qty * fill - cost
    _record_trade(
        i,
        t,
        reason,
        fill,
        trade[_TRADE_FLOW, i] + cash_change,
        trade[_TRADE_COSTS, i] + cost,
        trade,
        rec_int,
        rec_float,
        n_rec,
    )
    shares[i] = 0.0
    trade[_TRADE_FLOW, i] = 0.0
    trade[_TRADE_COSTS, i] = 0.0
    traded[t] += notional
    costs[t] += cost
    return cash_change


@njit(cache=True)
def _exit_level(
    side: float,
    entry: float,
    bar_open: float,
    bar_high: float,
    bar_low: float,
    stop_loss: float,
    take_profit: float,
    use_stop: bool,
    use_take: bool,
) -> tuple[float, int]:
    """Stop-loss or take-profit exit of a position (``side`` +1 long, -1 short) in one bar.

    Returns ``(level, reason)``, ``reason`` -1 when neither is hit. A gap through a level
    exits at the open; when both levels lie inside the bar the stop comes first.
    """
    stop_level = entry * (1.0 - side * stop_loss)
    take_level = entry * (1.0 + side * take_profit)
    adverse = bar_low if side > 0.0 else bar_high  # the bar's worst price for the position
    favourable = bar_high if side > 0.0 else bar_low
    # side * (price - level) <= 0: the price is at or beyond the level against the position
    if use_stop and side * (bar_open - stop_level) <= 0.0:
        return bar_open, REASON_STOP
    if use_take and side * (bar_open - take_level) >= 0.0:
        return bar_open, REASON_TAKE
    if use_stop and side * (adverse - stop_level) <= 0.0:
        return stop_level, REASON_STOP
    if use_take and side * (favourable - take_level) >= 0.0:
        return take_level, REASON_TAKE
    return np.nan, -1


@njit(cache=True)
def simulate(
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
                        cash += _close_position(
                            i, t, fill, REASON_SIGNAL, cost_rate, shares, trade, traded, costs,
                            rec_int, rec_float, n_rec,
                        )  # fmt: skip
                        n_rec += 1

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
                side = 1.0 if shares[i] > 0.0 else -1.0
                level, reason = _exit_level(
                    side, entry[i], open_[t, i], high[t, i], low[t, i], stop_loss, take_profit,
                    use_stop, use_take,
                )  # fmt: skip
                if reason < 0:
                    continue
                fill = level * (1.0 - side * slippage)
                cash += _close_position(
                    i, t, fill, reason, cost_rate, shares, trade, traded, costs,
                    rec_int, rec_float, n_rec,
                )  # fmt: skip
                n_rec += 1
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
                    cash += _close_position(
                        i, t, last_price[i], REASON_RUIN, cost_rate, shares, trade, traded,
                        costs, rec_int, rec_float, n_rec,
                    )  # fmt: skip
                    n_rec += 1
            value = cash
            ruined = True
        equity[t] = value
        for i in range(n_assets):
            shares_out[t, i] = shares[i]

    # Trades still open are reported marked to the last close, without exit cost.
    for i in range(n_assets):
        if shares[i] != 0.0:
            _record_trade(
                i, n_bars - 1, REASON_OPEN, last_price[i],
                trade[_TRADE_FLOW, i] + shares[i] * last_price[i], trade[_TRADE_COSTS, i],
                trade, rec_int, rec_float, n_rec,
            )  # fmt: skip
            n_rec += 1
    return equity, shares_out, traded, costs, rec_int, rec_float, n_rec
