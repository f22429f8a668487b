"""The ``(n_symbols, n_steps)`` panel behind :class:`~kubetrade.data.features.FeatureEngineer`.

Each symbol's rows of the canonical long table become one row of the panel (left-aligned,
NaN-padded at the end), so every indicator runs once for all symbols; :func:`attach` writes
panel values back as columns in the input's row order. Cross-asset features, which need the
symbols aligned on their common timestamps rather than row by row, are
:func:`cross_asset_features`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kubetrade.data import indicators as ind
from kubetrade.errors import DataError

__all__ = ["Panel", "PanelInputs", "attach", "cross_asset_features"]


class Panel:
    """Maps a long table's rows to a ``(n_symbols, n_steps)`` panel and back."""

    def __init__(self, df: pd.DataFrame) -> None:
        for col in ("symbol", "timestamp"):
            if col not in df.columns:
                raise DataError(
                    f"feature input has no '{col}' column; pass the canonical OHLCV table "
                    "(columns symbol, timestamp, open, high, low, close, volume)"
                )
        if len(df) == 0:
            raise DataError("feature input has no rows; give at least one OHLCV row")
        codes, self.symbols = pd.factorize(df["symbol"], sort=False)
        ts = pd.to_datetime(df["timestamp"], utc=True)
        if ts.isna().any():
            raise DataError(
                f"feature input has {int(ts.isna().sum())} missing timestamp(s); "
                "drop or fix those rows first"
            )
        ts_ns = ts.to_numpy(dtype="datetime64[ns]").view(np.int64)
        sorted_already = bool(
            np.all(np.diff(codes) >= 0) and np.all((np.diff(ts_ns) > 0) | (np.diff(codes) != 0))
        )
        # stable sort by symbol then time; the canonical table skips it
        order = np.arange(len(df)) if sorted_already else np.lexsort((ts_ns, codes))
        code_s = codes[order]
        ts_s = ts_ns[order]
        dup = (np.diff(code_s) == 0) & (np.diff(ts_s) == 0)
        if dup.any():
            first = order[np.argmax(dup)]
            raise DataError(
                f"feature input has {int(dup.sum())} duplicate (symbol, timestamp) row(s), "
                f"e.g. {df['symbol'].iloc[first]!r} at {ts.iloc[first]}; "
                "keep one row per symbol and timestamp"
            )
        self.n_rows = len(df)
        self.order = order
        self.code = code_s
        self.lengths = np.bincount(code_s, minlength=len(self.symbols))
        starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.pos = np.arange(len(df)) - starts[code_s]
        self.ts_ns = ts_s
        self.shape = (len(self.symbols), int(self.lengths.max()))
        self._flat = self.code * self.shape[1] + self.pos
        # sorted input with equal-length symbols maps to the panel by a plain reshape
        self._identity = sorted_already
        self._dense = sorted_already and bool(np.all(self.lengths == self.shape[1]))

    def to_panel(self, values: np.ndarray) -> np.ndarray:
        if self._dense:
            return np.array(values, dtype=np.float64).reshape(self.shape)
        out = np.full(self.shape, np.nan)
        out.reshape(-1)[self._flat] = values if self._identity else values[self.order]
        return out

    def to_rows(self, panel: np.ndarray) -> np.ndarray:
        if self._dense:
            return panel.reshape(-1)
        rows = np.take(panel.reshape(-1), self._flat)
        if self._identity:
            return rows
        out = np.empty(self.n_rows)
        out[self.order] = rows
        return out


class PanelInputs:
    """The panel layout of one frame plus its price columns, converted once."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.panel = Panel(df)
        self._cache: dict[str, np.ndarray] = {}

    def prices(self, column: str, positive: bool = False) -> np.ndarray:
        """Column as a panel; checks finite (and > 0 when ``positive``)."""
        key = f"{column}>0" if positive else column
        if key not in self._cache:
            self._cache[key] = self._load(column, positive)
        return self._cache[key]

    def _load(self, column: str, positive: bool) -> np.ndarray:
        df = self.df
        if column not in df.columns:
            raise DataError(
                f"feature input has no '{column}' column; the canonical OHLCV table has "
                "open, high, low, close and volume"
            )
        try:
            values = np.asarray(df[column], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"column '{column}' is not numeric ({exc}); it must hold numbers"
            ) from exc
        bad = ~np.isfinite(values)
        if positive:
            bad |= values <= 0
        if bad.any():
            example = values[np.argmax(bad)]
            need = "finite and > 0" if positive else "finite"
            raise DataError(
                f"column '{column}' has {int(bad.sum())} value(s) that are not {need}, "
                f"e.g. {example!r}; drop or repair those rows (the data-quality gate flags them)"
            )
        return self.panel.to_panel(values)


def attach(df: pd.DataFrame, panel: Panel, new: dict[str, np.ndarray]) -> pd.DataFrame:
    """Copy ``df`` and add (or replace) columns from panels, in the input's row order."""
    cols = {name: panel.to_rows(values) for name, values in new.items()}
    keep = df.drop(columns=[c for c in cols if c in df.columns])
    return pd.concat([keep, pd.DataFrame(cols, index=df.index)], axis=1)


def cross_asset_features(inputs: PanelInputs, window: int) -> dict[str, np.ndarray]:
    """Market return of the other symbols, relative return, trailing correlation and beta.

    See :meth:`~kubetrade.data.features.FeatureEngineer.add_cross_asset_features`.
    """
    panel = inputs.panel
    close = inputs.prices("close", positive=True)
    rets = close / ind.shift(close) - 1.0

    # align symbols on the union of timestamps: grid (n_symbols, n_timestamps)
    ts_code, ts_unique = pd.factorize(panel.ts_ns, sort=True)
    grid = np.full((panel.shape[0], len(ts_unique)), np.nan)
    grid[panel.code, ts_code] = rets[panel.code, panel.pos]
    present = np.isfinite(grid)
    total = np.where(present, grid, 0.0).sum(axis=0)
    count = present.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_all = total / count
        others = (total[None, :] - grid) / (count[None, :] - 1)
    others = np.where(present & (count[None, :] > 1), others, np.nan)

    market = np.full(panel.shape, np.nan)
    market[panel.code, panel.pos] = others[panel.code, ts_code]
    cs_mean = np.full(panel.shape, np.nan)
    cs_mean[panel.code, panel.pos] = mean_all[ts_code]
    corr, beta = ind.rolling_corr_beta(rets, market, window)
    new = {
        "xa_market_return": market,
        "xa_rel_return": rets - cs_mean,
        "xa_corr": corr,
        "xa_beta": beta,
    }
    return new
