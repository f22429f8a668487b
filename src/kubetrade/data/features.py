"""Causal, vectorized feature engineering on the canonical long OHLCV table.

:class:`FeatureEngineer` adds float64 columns to a copy of the input frame (same rows,
same order). Every value at time ``t`` uses only rows of its symbol at or before ``t``
(cross-asset features: rows of all symbols at or before ``t``); warm-up rows are NaN and
nothing is back-filled or normalised over the full sample.

Internally each symbol's rows become one row of a ``(n_symbols, n_steps)`` panel
(left-aligned, NaN-padded at the end; :mod:`kubetrade.data.panel`), so every indicator runs
once for all symbols; see :mod:`kubetrade.data.indicators` for the kernels and their
conventions.

Scale-free variants intended as model inputs: ``rsi``, ``macd*_norm`` (MACD / close),
``bb_pct``, ``bb_width``, ``atr_pct``, ``sma_*_ratio``/``ema_*_ratio`` (close / average - 1),
``stoch_*``, ``obv_flow``, all wavelet/Fourier/fractal columns and the cross-asset
columns. Raw levels (``macd``, ``bb_upper``, ``atr``, ``obv`` ...) are kept for
inspection and to match the ``ta`` package.

Why this module is long: :class:`FeatureEngineer` is the guide's API, one ``add_*`` method
per feature group plus the column bookkeeping (:meth:`FeatureEngineer.feature_groups`,
:meth:`FeatureEngineer.warmup_rows`) that must agree with what those methods produce; the
numeric kernels are :mod:`kubetrade.data.indicators` and the panel layout
:mod:`kubetrade.data.panel`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kubetrade.data import indicators as ind
from kubetrade.data.panel import PanelInputs, attach, cross_asset_features
from kubetrade.errors import ConfigError, DataError, KubetradeError

__all__ = [
    "INDICATORS",
    "ADVANCED",
    "RAW_COLUMNS",
    "FEATURE_GROUPS",
    "FeatureEngineer",
    "is_scale_free",
]

INDICATORS = (
    "returns",
    "log_returns",
    "rsi",
    "macd",
    "bollinger_bands",
    "atr",
    "sma",
    "ema",
    "stochastic",
    "obv",
)
ADVANCED = ("wavelet", "fourier", "fractal", "cross_asset")
RAW_COLUMNS = ("open", "high", "low", "close", "volume")
FEATURE_GROUPS = (*RAW_COLUMNS, *INDICATORS, *ADVANCED)

_REQUIRED = {
    "returns": ("close",),
    "log_returns": ("close",),
    "rsi": ("close",),
    "macd": ("close",),
    "bollinger_bands": ("close",),
    "atr": ("high", "low", "close"),
    "sma": ("close",),
    "ema": ("close",),
    "stochastic": ("high", "low", "close"),
    "obv": ("close", "volume"),
}


# columns in price (or cumulative volume) units; everything else is a ratio, a share,
# a bounded oscillator or a return
_SCALE_DEPENDENT = re.compile(
    r"macd|macd_signal|macd_hist|bb_upper|bb_middle|bb_lower|atr|sma_\d+|ema_\d+|obv"
)


def _names(value: str | Iterable[str] | None, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [value]
    return list(value)


@dataclass
class FeatureEngineer:
    """Adds causal technical, spectral, fractal and cross-asset features.

    Defaults reproduce the ``ta`` package's RSI, MACD, Bollinger Bands and ATR.
    Method arguments override the window settings for one call; :meth:`columns_for`
    reports the columns actually produced (or, before a call, those the defaults give).
    """

    rsi_window: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_window: int = 20
    bb_std: float = 2.0
    atr_window: int = 14
    sma_windows: tuple[int, ...] = (10, 20, 50)
    ema_windows: tuple[int, ...] = (12, 26)
    stoch_window: int = 14
    stoch_smooth: int = 3
    obv_flow_window: int = 20
    wavelet_window: int = 32
    wavelet: str = "db4"
    wavelet_level: int = 3
    fourier_window: int = 64
    fourier_components: int = 5
    fractal_window: int = 100
    higuchi_k_max: int = 8
    correlation_window: int = 30
    _produced: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        minimum = {
            "rsi_window": 1, "macd_fast": 1, "macd_slow": 1, "macd_signal": 1,
            "bb_window": 2, "atr_window": 1, "stoch_window": 1, "stoch_smooth": 1,
            "obv_flow_window": 1, "wavelet_window": 2, "wavelet_level": 1,
            "fourier_window": 4, "fourier_components": 1, "fractal_window": 16,
            "higuchi_k_max": 2, "correlation_window": 2,
        }  # fmt: skip
        for name, low in minimum.items():
            _check_int(name, getattr(self, name), low, error=ConfigError)
        for name in ("sma_windows", "ema_windows"):
            for n in getattr(self, name):
                _check_int(name, n, 1, error=ConfigError)
        if not self.bb_std > 0:
            raise ConfigError(f"bb_std must be > 0, got {self.bb_std!r}")

    # ------------------------------------------------------------------ groups
    def feature_groups(self, scale_free: bool = False) -> dict[str, list[str]]:
        """Map every group name of the guide's ``data.features`` list to its columns.

        Args:
            scale_free: drop price/volume-level columns (``macd``, ``bb_upper``, ``atr``,
                ``sma_20``, ``obv``, ...; see :func:`is_scale_free`) from the indicator
                groups, keeping what is comparable across symbols and years. Raw
                OHLCV groups are returned unchanged.
        """
        groups: dict[str, list[str]] = {name: [name] for name in RAW_COLUMNS}
        groups.update(
            {
                "returns": ["returns"],
                "log_returns": ["log_returns"],
                "rsi": ["rsi"],
                "macd": [
                    "macd",
                    "macd_signal",
                    "macd_hist",
                    "macd_norm",
                    "macd_signal_norm",
                    "macd_hist_norm",
                ],
                "bollinger_bands": ["bb_upper", "bb_middle", "bb_lower", "bb_width", "bb_pct"],
                "atr": ["atr", "atr_pct"],
                "sma": [c for n in self.sma_windows for c in (f"sma_{n}", f"sma_{n}_ratio")],
                "ema": [c for n in self.ema_windows for c in (f"ema_{n}", f"ema_{n}_ratio")],
                "stochastic": ["stoch_k", "stoch_d"],
                "obv": ["obv", "obv_flow"],
                "wavelet": self._wavelet_columns(self.wavelet_level),
                "fourier": self._fourier_columns(self.fourier_components),
                "fractal": ["hurst", "fractal_dimension"],
                "cross_asset": ["xa_market_return", "xa_rel_return", "xa_corr", "xa_beta"],
            }
        )
        groups.update(self._produced)
        if scale_free:
            groups = {
                g: cols if g in RAW_COLUMNS else [c for c in cols if is_scale_free(c)]
                for g, cols in groups.items()
            }
        return groups

    def columns_for(self, name: str | Iterable[str]) -> list[str]:
        """Columns produced for one group name or several (in order, without repeats).

        Raises:
            DataError: a name is not a feature group.
        """
        groups = self.feature_groups()
        out: list[str] = []
        for n in _names(name, ()):
            if n not in groups:
                raise DataError(
                    f"unknown feature group {n!r}; valid groups are {list(FEATURE_GROUPS)}"
                )
            out.extend(c for c in groups[n] if c not in out)
        return out

    def warmup_rows(self, groups: str | Iterable[str] | None = None) -> int:
        """Leading rows per symbol in which some column of ``groups`` is NaN.

        Uses the instance's settings (not per-call overrides); ``groups`` defaults to
        every group. With the defaults: 100 overall (the fractal window).

        Raises:
            DataError: a name is not a feature group.
        """
        names = _names(groups, FEATURE_GROUPS)
        table = {
            **{name: 0 for name in RAW_COLUMNS},
            "returns": 1,
            "log_returns": 1,
            "rsi": self.rsi_window - 1,
            "macd": self.macd_slow + self.macd_signal - 2,
            "bollinger_bands": self.bb_window - 1,
            "atr": self.atr_window - 1,
            "sma": max(self.sma_windows, default=1) - 1,
            "ema": max(self.ema_windows, default=1) - 1,
            "stochastic": self.stoch_window + self.stoch_smooth - 2,
            "obv": self.obv_flow_window - 1,
            "wavelet": self.wavelet_window,
            "fourier": self.fourier_window,
            "fractal": self.fractal_window,
            "cross_asset": self.correlation_window,
        }
        unknown = [n for n in names if n not in table]
        if unknown:
            raise DataError(
                f"unknown feature group(s) {unknown}; valid groups are {list(FEATURE_GROUPS)}"
            )
        return max((table[n] for n in names), default=0)

    @staticmethod
    def _wavelet_columns(level: int) -> list[str]:
        return [
            f"wavelet_a{level}",
            *(f"wavelet_d{j}" for j in range(level, 0, -1)),
            "wavelet_entropy",
        ]

    @staticmethod
    def _fourier_columns(n_components: int) -> list[str]:
        return [
            *(f"fourier_p{k}" for k in range(1, n_components + 1)),
            "fourier_period",
            "fourier_entropy",
        ]

    # -------------------------------------------------------------- indicators
    def add_technical_indicators(
        self, df: pd.DataFrame, indicators: str | Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Return a copy of ``df`` with the named indicators' columns added.

        Args:
            df: long OHLCV table (extra columns are kept).
            indicators: names from :data:`INDICATORS` (default: all). Raw column names
                (``open`` ... ``volume``) are accepted and add nothing.

        Raises:
            DataError: unknown indicator name, missing column, or non-finite prices.
        """
        names = self._check_indicators(indicators)
        inputs = PanelInputs(df)
        return attach(df, inputs.panel, self._technical(inputs, names))

    @staticmethod
    def _check_indicators(indicators: str | Iterable[str] | None) -> list[str]:
        names = _names(indicators, INDICATORS)
        unknown = [n for n in names if n not in INDICATORS and n not in RAW_COLUMNS]
        if unknown:
            hint = (
                f" ({unknown[0]!r} is an advanced group: use add_{unknown[0]}_features "
                "or build_all)"
                if unknown[0] in ADVANCED
                else ""
            )
            raise DataError(
                f"unknown indicator(s) {unknown}; valid indicators are {list(INDICATORS)}{hint}"
            )
        return [n for n in dict.fromkeys(names) if n in INDICATORS]

    def _technical(self, inputs: PanelInputs, names: list[str]) -> dict[str, np.ndarray]:
        prices = {c: inputs.prices(c, positive=(c == "close")) for n in names for c in _REQUIRED[n]}
        new: dict[str, np.ndarray] = {}
        for name in names:
            columns = self._indicator(name, prices)
            self._produced[name] = list(columns)
            new.update(columns)
        return new

    def _indicator(self, name: str, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        close = p["close"]
        if name == "returns":
            return {"returns": close / ind.shift(close) - 1.0}
        if name == "log_returns":
            return {"log_returns": _log_returns(close)}
        if name == "rsi":
            return {"rsi": ind.rsi(close, self.rsi_window)}
        if name == "macd":
            line, sig, hist = ind.macd(close, self.macd_fast, self.macd_slow, self.macd_signal)
            return {
                "macd": line,
                "macd_signal": sig,
                "macd_hist": hist,
                "macd_norm": line / close,
                "macd_signal_norm": sig / close,
                "macd_hist_norm": hist / close,
            }
        if name == "bollinger_bands":
            upper, middle, lower, width, pct = ind.bollinger(close, self.bb_window, self.bb_std)
            return {
                "bb_upper": upper,
                "bb_middle": middle,
                "bb_lower": lower,
                "bb_width": width,
                "bb_pct": pct,
            }
        if name == "atr":
            value = ind.atr(p["high"], p["low"], close, self.atr_window)
            return {"atr": value, "atr_pct": value / close}
        if name == "sma":
            out = {}
            for n in self.sma_windows:
                avg = ind.rolling_mean(close, n)
                out[f"sma_{n}"] = avg
                out[f"sma_{n}_ratio"] = close / avg - 1.0
            return out
        if name == "ema":
            out = {}
            for n in self.ema_windows:
                avg = ind.ewm_mean(close, 2.0 / (n + 1), min_periods=n)
                out[f"ema_{n}"] = avg
                out[f"ema_{n}_ratio"] = close / avg - 1.0
            return out
        if name == "stochastic":
            k, d = ind.stochastic(p["high"], p["low"], close, self.stoch_window, self.stoch_smooth)
            return {"stoch_k": k, "stoch_d": d}
        if name == "obv":
            level, flow = ind.obv(close, p["volume"], self.obv_flow_window)
            return {"obv": level, "obv_flow": flow}
        raise AssertionError(name)  # pragma: no cover - names are validated above

    # --------------------------------------------------------------- advanced
    def add_wavelet_features(
        self,
        df: pd.DataFrame,
        window: int | None = None,
        wavelet: str | None = None,
        level: int | None = None,
        column: str = "close",
    ) -> pd.DataFrame:
        """Add relative wavelet-band energies of trailing windows of log returns.

        Columns ``wavelet_a{level}``, ``wavelet_d{level}`` .. ``wavelet_d1`` (shares of
        the window's energy, summing to 1; ``d1`` is the finest scale) and
        ``wavelet_entropy`` (0 = one band, 1 = evenly spread). Orthogonal
        ``periodization`` mode, so the shares are exact even for short windows.
        First value at a symbol's row ``window`` (defaults 32, ``db4``, level 3).
        """
        inputs = PanelInputs(df)
        return attach(df, inputs.panel, self._wavelet(inputs, window, wavelet, level, column))

    def _wavelet(
        self,
        inputs: PanelInputs,
        window: int | None,
        wavelet: str | None,
        level: int | None,
        column: str,
    ) -> dict[str, np.ndarray]:
        import pywt

        window = window or self.wavelet_window
        wavelet = wavelet or self.wavelet
        level = level or self.wavelet_level
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise DataError(
                f"unknown wavelet {wavelet!r}; use a discrete PyWavelets name such as "
                "'db4', 'haar', 'sym5' (see pywt.wavelist(kind='discrete'))"
            )
        _check_int("wavelet level", level, minimum=1)
        _check_int("wavelet window", window, minimum=2**level)
        rets = _log_returns(inputs.prices(column, positive=True))
        names = self._wavelet_columns(level)
        values = ind.apply_windows(
            rets, window, lambda w: ind.wavelet_energies(w, wavelet, level), len(names)
        )
        self._produced["wavelet"] = names
        return {n: values[..., j] for j, n in enumerate(names)}

    def add_fourier_features(
        self,
        df: pd.DataFrame,
        window: int | None = None,
        n_components: int | None = None,
        column: str = "close",
    ) -> pd.DataFrame:
        """Add spectral features of trailing windows of linearly detrended log returns.

        Columns ``fourier_p1`` .. ``fourier_p{n}`` (share of non-DC power at the n lowest
        frequencies; bin k has period ``window / k`` rows), ``fourier_period`` (period in
        rows of the strongest frequency) and ``fourier_entropy`` (normalised spectral
        entropy: 1 = white noise). First value at a symbol's row ``window`` (default 64).
        """
        inputs = PanelInputs(df)
        return attach(df, inputs.panel, self._fourier(inputs, window, n_components, column))

    def _fourier(
        self, inputs: PanelInputs, window: int | None, n_components: int | None, column: str
    ) -> dict[str, np.ndarray]:
        window = window or self.fourier_window
        n_components = n_components or self.fourier_components
        _check_int("fourier window", window, minimum=4)
        if not 1 <= n_components <= window // 2:
            raise DataError(
                f"fourier n_components={n_components} must be between 1 and window/2 "
                f"= {window // 2}"
            )
        rets = _log_returns(inputs.prices(column, positive=True))
        names = self._fourier_columns(n_components)
        values = ind.apply_windows(
            rets, window, lambda w: ind.fourier_spectrum(w, n_components), len(names)
        )
        self._produced["fourier"] = names
        return {n: values[..., j] for j, n in enumerate(names)}

    def add_fractal_features(
        self, df: pd.DataFrame, window: int | None = None, column: str = "close"
    ) -> pd.DataFrame:
        """Add a trailing Hurst exponent and Higuchi fractal dimension.

        ``hurst``: corrected rescaled range (Anis-Lloyd-Peters) over the last ``window``
        log returns, sub-window sizes ``window / 2**k`` down to 8; about 0.5 for a random
        walk. ``fractal_dimension``: Higuchi dimension (k = 1..8) of the same
        ``window + 1`` log prices, measured directly rather than as 2 - H; about 1.5
        for a random walk. First value at a symbol's row ``window`` (default 100).
        """
        inputs = PanelInputs(df)
        return attach(df, inputs.panel, self._fractal(inputs, window, column))

    def _fractal(
        self, inputs: PanelInputs, window: int | None, column: str
    ) -> dict[str, np.ndarray]:
        window = window or self.fractal_window
        _check_int("fractal window", window, minimum=16)
        log_close = np.log(inputs.prices(column, positive=True))
        k_max = self.higuchi_k_max
        # both measures read the same window + 1 log prices (= window returns)
        values = ind.apply_windows(
            log_close,
            window + 1,
            lambda path: np.column_stack([ind.hurst_rs(path), ind.higuchi_dimension(path, k_max)]),
            2,
            time_major=True,
        )
        self._produced["fractal"] = ["hurst", "fractal_dimension"]
        return {"hurst": values[..., 0], "fractal_dimension": values[..., 1]}

    def add_cross_asset_features(
        self, df: pd.DataFrame, correlation_window: int | None = None
    ) -> pd.DataFrame:
        """Add features relating each symbol to the equal-weight market of the others.

        Returns are close-to-close over a symbol's own previous row. At each timestamp
        the market return is the mean return of the *other* symbols with a return then
        (``xa_market_return``); ``xa_corr``/``xa_beta`` are the trailing correlation and
        beta of the symbol's returns on it over ``correlation_window`` rows (default 30);
        ``xa_rel_return`` is the return minus the mean of all symbols at that timestamp.
        With one symbol, market, correlation and beta are NaN and the relative return 0.
        """
        inputs = PanelInputs(df)
        return attach(df, inputs.panel, self._cross_asset(inputs, correlation_window))

    def _cross_asset(
        self, inputs: PanelInputs, correlation_window: int | None
    ) -> dict[str, np.ndarray]:
        window = correlation_window or self.correlation_window
        _check_int("correlation_window", window, minimum=2)
        new = cross_asset_features(inputs, window)
        self._produced["cross_asset"] = list(new)
        return new

    # -------------------------------------------------------------- shortcuts
    def build_all(
        self,
        df: pd.DataFrame,
        indicators: str | Iterable[str] | None = None,
        advanced: str | Iterable[str] | None = ADVANCED,
    ) -> pd.DataFrame:
        """Technical indicators (default all) plus advanced groups, attached in one copy.

        Same values as calling the ``add_*`` methods in turn with their defaults.

        Raises:
            DataError: an unknown indicator or advanced group name.
        """
        names = self._check_indicators(indicators)
        adv = _names(advanced, ())
        unknown = [a for a in adv if a not in ADVANCED]
        if unknown:
            raise DataError(
                f"unknown advanced feature group(s) {unknown}; valid are {list(ADVANCED)}"
            )
        inputs = PanelInputs(df)
        new = self._technical(inputs, names)
        if "wavelet" in adv:
            new.update(self._wavelet(inputs, None, None, None, "close"))
        if "fourier" in adv:
            new.update(self._fourier(inputs, None, None, "close"))
        if "fractal" in adv:
            new.update(self._fractal(inputs, None, "close"))
        if "cross_asset" in adv:
            new.update(self._cross_asset(inputs, None))
        return attach(df, inputs.panel, new)

    def build_groups(self, df: pd.DataFrame, groups: Iterable[str]) -> pd.DataFrame:
        """Build what a ``data.features`` list names (raw columns, indicators, advanced).

        Raises:
            DataError: a name is not in :data:`FEATURE_GROUPS`.
        """
        names = _names(groups, ())
        unknown = [g for g in names if g not in FEATURE_GROUPS]
        if unknown:
            raise DataError(
                f"unknown feature group(s) {unknown}; valid groups are {list(FEATURE_GROUPS)}"
            )
        return self.build_all(
            df,
            indicators=[g for g in names if g in INDICATORS],
            advanced=[g for g in names if g in ADVANCED],
        )


def is_scale_free(column: str) -> bool:
    """Whether a produced feature column is free of the price/volume scale."""
    return not _SCALE_DEPENDENT.fullmatch(column)


def _check_int(
    what: str, value: object, minimum: int, error: type[KubetradeError] = DataError
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise error(f"{what} must be an integer >= {minimum}, got {value!r}")


def _log_returns(close: np.ndarray) -> np.ndarray:
    return np.log(close / ind.shift(close))
