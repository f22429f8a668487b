"""Backtest inputs: settings checks, signal and price parsing, target weights per bar.

Everything here turns what a user passes to
:meth:`~kubetrade.backtest.engine.BacktestingEngine.run_backtest` into the plain arrays the
kernel (:mod:`kubetrade.backtest.kernel`) runs on, and raises ``ConfigError``/``DataError``
naming the bad value on the way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from kubetrade.data.sources import PRICE_COLUMNS
from kubetrade.errors import ConfigError, DataError

__all__ = [
    "PriceTable",
    "Rebalance",
    "SignalMode",
    "SignalModel",
    "Signals",
    "call_model",
    "check_params",
    "day_nanos",
    "ffill_rows",
    "parse_signals",
    "target_weights",
]

SignalMode = Literal["scaled", "weights"]
Rebalance = Literal["on_change", "every_bar"]


@runtime_checkable
class SignalModel(Protocol):
    """Anything with ``predict_signals(prices) -> signals`` can be backtested."""

    def predict_signals(self, prices: pd.DataFrame) -> Any:  # pragma: no cover - protocol
        ...


def check_params(
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
    """Raise ``ConfigError`` naming the first setting of ``run_backtest`` that is out of range."""

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


def ffill_rows(values: np.ndarray) -> np.ndarray:
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
class Signals:
    """Target positions as arrays: one row per signal time, one column per symbol."""

    times: np.ndarray  # int64 epoch ns, strictly increasing
    symbols: list[str]
    values: np.ndarray  # (times x symbols); NaN keeps the previous target


def parse_signals(signals: Any) -> Signals:
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
    return Signals(times, [str(c) for c in frame.columns], values)


def call_model(model: Any, prices: pd.DataFrame) -> Any:
    """Signals of a :class:`SignalModel` or a plain callable for ``prices``."""
    if isinstance(model, SignalModel):
        return model.predict_signals(prices)
    if hasattr(model, "forward") or not callable(model):
        raise ConfigError(
            f"backtest: {type(model).__name__} has no predict_signals(prices) method; give the "
            "model one (returning target positions in [-1, 1]) or pass precomputed signals"
        )
    return model(prices)


@dataclass(frozen=True)
class PriceTable:
    """Column arrays of the canonical long table, read once."""

    frame: pd.DataFrame
    codes: np.ndarray  # per row: position of its symbol in ``names``
    names: list[str]  # distinct symbols, in order of appearance
    times: np.ndarray  # per row: int64 epoch ns (UTC)

    @classmethod
    def from_frame(cls, prices: pd.DataFrame) -> PriceTable:
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


def day_nanos(day: str | pd.Timestamp, what: str, end_of_day: bool = False) -> int:
    """Epoch ns of a date; an end date without a time covers that whole day."""
    try:
        stamp = pd.Timestamp(day)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backtest: {what}={day!r} is not a date; use e.g. '2012-01-31'") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
    if end_of_day and stamp == stamp.normalize():
        stamp = stamp + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    return int(stamp.as_unit("ns").value)


def target_weights(
    signals: Signals,
    bar_times: np.ndarray,
    symbols: list[str],
    signal_mode: str,
    max_position_size: float,
    max_gross_exposure: float,
) -> np.ndarray:
    """(bars x assets) target weights in force after each bar's close."""
    # The latest signal at or before each bar applies, so a signal stamped
    # between bars acts from the next bar on and nothing can look ahead.
    filled = ffill_rows(signals.values)
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
