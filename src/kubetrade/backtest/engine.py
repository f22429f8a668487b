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

The engine is :class:`BacktestingEngine` here; the bar loop is :mod:`kubetrade.backtest.kernel`,
input parsing :mod:`kubetrade.backtest.inputs` and the result types
:mod:`kubetrade.backtest.result`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.backtest import metrics as m
from kubetrade.backtest.inputs import (
    PriceTable,
    Rebalance,
    SignalMode,
    SignalModel,
    call_model,
    check_params,
    day_nanos,
    ffill_rows,
    parse_signals,
    target_weights,
)
from kubetrade.backtest.kernel import simulate
from kubetrade.backtest.result import (
    EXIT_REASONS,
    METRIC_NAMES,
    REASON_OPEN,
    RESULT_NAMES,
    BacktestResult,
    curve_metrics,
    trades_frame,
)
from kubetrade.data.sources import load_embedded
from kubetrade.errors import ConfigError, DataError

__all__ = [
    "BacktestResult",
    "BacktestingEngine",
    "SignalModel",
    "EXIT_REASONS",
    "METRIC_NAMES",
    "RESULT_NAMES",
]


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
        check_params(
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
        table = PriceTable.from_frame(load_embedded() if prices is None else prices)
        start_ns = None if start_date is None else day_nanos(start_date, "start_date")
        end_ns = None if end_date is None else day_nanos(end_date, "end_date", end_of_day=True)
        if start_ns is not None and end_ns is not None and start_ns > end_ns:
            raise ConfigError(f"backtest: start_date {start_date} is after end_date {end_date}")

        wanted = [str(s) for s in symbols] if symbols else None
        if wanted:
            table.check_symbols(wanted, "symbols")
        if isinstance(source, pd.DataFrame | pd.Series):
            parsed = parse_signals(source)
        else:
            history = table.history(wanted, end_ns)
            parsed = parse_signals(call_model(source, history))
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

        target = target_weights(
            parsed, bar_times, wanted, signal_mode, max_position_size, max_gross_exposure
        )
        whole = not fractional_shares
        equity, shares, traded, costs, rec_int, rec_float, n_rec = simulate(
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
        curve = curve_metrics(equity, capital, ppy, self.risk_free_rate)
        bh = curve_metrics(bh_equity, capital, ppy, self.risk_free_rate)

        marks = np.nan_to_num(ffill_rows(ohlc[3]))
        held_value = np.where(shares != 0.0, shares * marks, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.where(equity[:, None] > 0, held_value / equity[:, None], 0.0)
        prev_equity = np.concatenate(([capital], equity[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            traded_frac = np.where(prev_equity > 0, traded / prev_equity, 0.0)

        closed_pnl = rec_float[rec_int[:, 3] != REASON_OPEN, 3]
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
            trades_source=partial(trades_frame, rec_int, rec_float, index, symbols),
        )


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
    marks = np.nan_to_num(ffill_rows(close))
    value = np.where(held, qty * marks, 0.0).sum(axis=1)
    cash = initial_capital - (held * spent).sum(axis=1)
    return cash + value
