"""Causal array kernels behind :mod:`kubetrade.data.features`.

Every function takes a *panel*: a float64 array of shape ``(n_symbols, n_steps)`` where
row ``s`` holds one symbol's values in time order, left-aligned and padded with NaN at the
end (symbols have different lengths). Every output at step ``t`` depends only on steps
``<= t`` of the same row (the cross-asset kernels take rows already aligned by the
caller). Work is vectorized across symbols; the only Python loops run over window lags,
window lengths or fixed-size chunks of windows, never over time steps.

Conventions follow the ``ta`` package where it defines the indicator (RSI, MACD,
Bollinger Bands, ATR, stochastic, SMA/EMA), so values match ``ta`` after warm-up.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pywt
from scipy.signal import lfilter
from scipy.special import gammaln

__all__ = [
    "ewm_mean",
    "wilder_mean",
    "rolling_sum",
    "rolling_mean",
    "rolling_mean_std",
    "rolling_max",
    "rolling_min",
    "rolling_corr_beta",
    "shift",
    "rsi",
    "macd",
    "bollinger",
    "true_range",
    "atr",
    "stochastic",
    "obv",
    "apply_windows",
    "wavelet_energies",
    "fourier_spectrum",
    "rs_sizes",
    "hurst_rs",
    "higuchi_dimension",
]

# Windows copied per chunk in apply_windows: bounds temporary memory to ~tens of MB
# regardless of panel size.
_CHUNK_VALUES = 1 << 16


def shift(x: np.ndarray, periods: int = 1) -> np.ndarray:
    """Shift each row right by ``periods`` steps (NaN fill), i.e. the value ``periods`` ago."""
    out = np.full_like(x, np.nan)
    if periods < x.shape[1]:
        out[:, periods:] = x[:, : x.shape[1] - periods]
    return out


def _first_valid(x: np.ndarray) -> np.ndarray:
    """Index of each row's first finite value (``n_steps`` when none)."""
    finite = np.isfinite(x)
    return np.where(finite.any(axis=1), finite.argmax(axis=1), x.shape[1])


def _recursive_filter(seed: np.ndarray, tail: np.ndarray, alpha: float) -> np.ndarray:
    """``y_t = (1 - alpha) * y_{t-1} + alpha * tail_t`` from ``y_{-1} = seed``, along rows."""
    if tail.shape[1] == 0:
        return tail.copy()
    # lfilter runs the recursion in C along the time axis for all rows at once
    zi = ((1.0 - alpha) * seed)[:, None]
    out, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], tail, axis=1, zi=zi)
    return out


def ewm_mean(x: np.ndarray, alpha: float, min_periods: int = 1) -> np.ndarray:
    """Exponential moving average, ``pandas.ewm(alpha=..., adjust=False).mean()`` per row.

    Rows may start with NaN (warm-up of an upstream indicator); each row is seeded
    with its first finite value, and outputs with fewer than ``min_periods``
    observations are NaN. Interior NaN are not supported (they propagate).
    """
    n_sym, n_steps = x.shape
    first = _first_valid(x)
    if np.all(first == 0):
        aligned = x
    else:
        # move each row's first finite value to column 0 so one filter call serves all rows
        cols = first[:, None] + np.arange(n_steps)[None, :]
        inside = cols < n_steps
        aligned = np.full_like(x, np.nan)
        aligned[inside] = x[np.nonzero(inside)[0], cols[inside]]
    out_aligned = np.empty_like(aligned)
    if n_steps:
        out_aligned[:, 0] = aligned[:, 0]
        out_aligned[:, 1:] = _recursive_filter(aligned[:, 0], aligned[:, 1:], alpha)
    out_aligned[:, : max(min_periods - 1, 0)] = np.nan
    if aligned is x:
        return out_aligned
    out = np.full_like(x, np.nan)
    out[np.nonzero(inside)[0], cols[inside]] = out_aligned[inside]
    return out


def wilder_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Wilder smoothing seeded with the simple mean of the first ``window`` values (``ta`` ATR)."""
    out = np.full_like(x, np.nan)
    if x.shape[1] < window:
        return out
    seed = x[:, :window].mean(axis=1)
    out[:, window - 1] = seed
    out[:, window:] = _recursive_filter(seed, x[:, window:], 1.0 / window)
    return out


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum over ``window`` steps; NaN until ``window`` values are available."""
    return _rolling_reduce(x, window, np.add)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing simple moving average (``pandas.rolling(window).mean()``)."""
    return rolling_sum(x, window) / window


def rolling_mean_std(x: np.ndarray, window: int, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean and standard deviation, two-pass for accuracy on price levels."""
    mean = rolling_mean(x, window)
    out = np.full_like(x, np.nan)
    n_steps = x.shape[1]
    if window > n_steps:
        return mean, out
    m = mean[:, window - 1 :]
    acc = np.zeros_like(m)
    for lag in range(window):
        dev = x[:, lag : n_steps - window + 1 + lag] - m
        acc += dev * dev
    out[:, window - 1 :] = np.sqrt(acc / (window - ddof))
    return mean, out


def _rolling_reduce(x: np.ndarray, window: int, op: np.ufunc) -> np.ndarray:
    """``op`` (add, maximum, minimum) over each trailing window; NaN until it is full."""
    out = np.full_like(x, np.nan)
    n_steps = x.shape[1]
    if window > n_steps:
        return out
    acc = x[:, : n_steps - window + 1].copy()
    # reducing shifted views keeps each output a function of its own window only
    for lag in range(1, window):
        op(acc, x[:, lag : n_steps - window + 1 + lag], out=acc)
    out[:, window - 1 :] = acc
    return out


def rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing maximum over ``window`` steps."""
    return _rolling_reduce(x, window, np.maximum)


def rolling_min(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing minimum over ``window`` steps."""
    return _rolling_reduce(x, window, np.minimum)


def rolling_corr_beta(y: np.ndarray, x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing correlation of ``y`` with ``x`` and beta of ``y`` on ``x`` (two-pass)."""
    mean_y = rolling_mean(y, window)
    mean_x = rolling_mean(x, window)
    corr = np.full_like(y, np.nan)
    beta = np.full_like(y, np.nan)
    n_steps = y.shape[1]
    if window > n_steps:
        return corr, beta
    my, mx = mean_y[:, window - 1 :], mean_x[:, window - 1 :]
    sxy = np.zeros_like(my)
    sxx = np.zeros_like(my)
    syy = np.zeros_like(my)
    for lag in range(window):
        dy = y[:, lag : n_steps - window + 1 + lag] - my
        dx = x[:, lag : n_steps - window + 1 + lag] - mx
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    with np.errstate(divide="ignore", invalid="ignore"):
        c = sxy / np.sqrt(sxx * syy)
        b = sxy / sxx
    # a flat series has no defined correlation or beta
    corr[:, window - 1 :] = np.where((sxx > 0) & (syy > 0), c, np.nan)
    beta[:, window - 1 :] = np.where(sxx > 0, b, np.nan)
    return corr, beta


def rsi(close: np.ndarray, window: int = 14) -> np.ndarray:
    """Relative Strength Index as ``ta.momentum.RSIIndicator`` (Wilder EMA, alpha=1/window).

    Like ``ta``, the first step's undefined change counts as 0 (the EMA seed), and
    RSI is 100 where the average loss is 0.
    """
    diff = close - shift(close)
    up = np.where(diff > 0, diff, 0.0)
    down = np.where(diff < 0, -diff, 0.0)
    # keep the trailing padding NaN so it does not look like data
    pad = np.isnan(close)
    up[pad] = np.nan
    down[pad] = np.nan
    ema_up = ewm_mean(up, 1.0 / window, min_periods=window)
    ema_down = ewm_mean(down, 1.0 / window, min_periods=window)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + ema_up / ema_down)
    return np.where(ema_down == 0, 100.0, value)


def macd(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line, signal and histogram as ``ta.trend.MACD`` (EMA span, adjust=False)."""
    ema_fast = ewm_mean(close, 2.0 / (fast + 1), min_periods=fast)
    ema_slow = ewm_mean(close, 2.0 / (slow + 1), min_periods=slow)
    line = ema_fast - ema_slow
    sig = ewm_mean(line, 2.0 / (signal + 1), min_periods=signal)
    return line, sig, line - sig


def bollinger(
    close: np.ndarray, window: int = 20, n_std: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger upper, middle, lower, width and %B as ``ta.volatility.BollingerBands``.

    Population std (ddof=0); width is ``100 * (upper - lower) / middle`` (``ta``'s
    ``bollinger_wband``); %B is ``(close - lower) / (upper - lower)``.
    """
    middle, std = rolling_mean_std(close, window, ddof=0)
    upper = middle + n_std * std
    lower = middle - n_std * std
    with np.errstate(divide="ignore", invalid="ignore"):
        width = (upper - lower) / middle * 100.0
        pct = (close - lower) / (upper - lower)
    return upper, middle, lower, width, pct


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range; on a symbol's first step (no previous close) it is ``high - low``."""
    prev = shift(close)
    tr = np.fmax(np.fmax(high - low, np.abs(high - prev)), np.abs(low - prev))
    return np.where(np.isnan(close), np.nan, tr)


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14) -> np.ndarray:
    """Average True Range as ``ta.volatility.AverageTrueRange``.

    Seeded at step ``window - 1`` with the mean of the first ``window`` true ranges,
    then Wilder-smoothed. (``ta`` writes 0 before the seed; this writes NaN.)
    """
    return wilder_mean(true_range(high, low, close), window)


def stochastic(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14, smooth: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic %K and %D (SMA of %K) as ``ta.momentum.StochasticOscillator``."""
    lowest = rolling_min(low, window)
    highest = rolling_max(high, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 100.0 * (close - lowest) / (highest - lowest)
    return k, rolling_mean(k, smooth)


def obv(close: np.ndarray, volume: np.ndarray, flow_window: int = 20) -> tuple[np.ndarray, ...]:
    """On-balance volume and its scale-free flow.

    OBV adds volume on up closes, subtracts it on down closes and is unchanged on
    equal closes, starting at 0 on each symbol's first step (the usual definition;
    ``ta`` instead counts ties and the first step as up). ``flow`` is the OBV change
    over ``flow_window`` steps divided by the volume traded in them, in [-1, 1].
    """
    direction = np.sign(close - shift(close))
    direction[:, :1] = 0.0
    signed = direction * volume
    level = np.cumsum(signed, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        flow = rolling_sum(signed, flow_window) / rolling_sum(volume, flow_window)
    return level, flow


def apply_windows(
    x: np.ndarray,
    window: int,
    func: Callable[[np.ndarray], np.ndarray],
    n_out: int,
    time_major: bool = False,
    chunk_values: int = _CHUNK_VALUES,
) -> np.ndarray:
    """Apply ``func`` to every complete trailing window of each row, in batches.

    Args:
        x: panel ``(n_symbols, n_steps)``.
        window: window length; the output at step ``t`` sees ``x[:, t - window + 1 : t + 1]``.
        func: maps a batch of windows to ``(n_windows, n_out)``.
        n_out: number of outputs per window.
        time_major: pass batches as ``(window, n_windows)`` instead of
            ``(n_windows, window)``; faster for kernels that reduce over time.
        chunk_values: about how many values one batch holds (memory/speed trade-off).

    Returns:
        ``(n_symbols, n_steps, n_out)``; NaN where the window is not all finite.
    """
    n_sym, n_steps = x.shape
    out = np.full((n_sym, n_steps, n_out), np.nan)
    if window > n_steps:
        return out
    finite = np.isfinite(x)
    count = np.cumsum(finite, axis=1, dtype=np.int64)
    full = count[:, window - 1 :].copy()
    full[:, 1:] -= count[:, : n_steps - window]
    sym_idx, start_idx = np.nonzero(full == window)
    flat = np.ascontiguousarray(x).ravel()
    starts = sym_idx * n_steps + start_idx
    lags = np.arange(window)
    # small batches stay in cache; one gather builds each batch in the layout func wants
    chunk = max(1, chunk_values // window)
    for lo in range(0, len(starts), chunk):
        base = starts[lo : lo + chunk]
        if time_major:
            batch = flat[lags[:, None] + base[None, :]]
        else:
            batch = flat[base[:, None] + lags[None, :]]
        out[sym_idx[lo : lo + chunk], start_idx[lo : lo + chunk] + window - 1] = func(batch)
    return out


def wavelet_energies(windows: np.ndarray, wavelet: str = "db4", level: int = 3) -> np.ndarray:
    """Relative energy of each wavelet band and their Shannon entropy, per window.

    Uses ``mode="periodization"``, an orthogonal transform, so the band energies sum
    to the window's energy exactly. Columns: approximation ``a{level}``, details
    ``d{level} .. d1``, then entropy normalised to [0, 1].
    """
    with warnings.catch_warnings():
        # short windows exceed pywt's "useful" level; periodization stays exact anyway
        warnings.filterwarnings("ignore", message="Level value", category=UserWarning)
        coeffs = pywt.wavedec(windows, wavelet, mode="periodization", level=level, axis=-1)
    energy = np.stack([np.einsum("ij,ij->i", c, c) for c in coeffs], axis=1)
    total = energy.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = energy / total
        plogp = np.where(rel > 0, rel * np.log(rel), 0.0)
    entropy = -plogp.sum(axis=1) / np.log(rel.shape[1])
    entropy = np.where(np.isfinite(rel).all(axis=1), entropy, np.nan)
    return np.column_stack([rel, entropy])


def fourier_spectrum(windows: np.ndarray, n_components: int = 5) -> np.ndarray:
    """Spectral shape of linearly detrended windows.

    Columns: relative power of the ``n_components`` lowest non-zero frequencies
    (share of total non-DC power), dominant period in steps, and spectral entropy
    normalised to [0, 1].
    """
    n = windows.shape[1]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    slope = windows @ t / (t @ t)
    detrended = windows - windows.mean(axis=1, keepdims=True) - slope[:, None] * t[None, :]
    power = np.abs(np.fft.rfft(detrended, axis=1)[:, 1:]) ** 2
    total = power.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = power / total
        plogp = np.where(rel > 0, rel * np.log(rel), 0.0)
    valid = total[:, 0] > 0
    entropy = np.where(valid, -plogp.sum(axis=1) / np.log(power.shape[1]), np.nan)
    period = np.where(valid, n / (np.argmax(power, axis=1) + 1.0), np.nan)
    low = rel[:, :n_components]
    if low.shape[1] < n_components:
        low = np.pad(low, ((0, 0), (0, n_components - low.shape[1])), constant_values=np.nan)
    return np.column_stack([low, period, entropy])


@lru_cache(maxsize=64)
def _expected_rs(n: int) -> float:
    """Anis-Lloyd-Peters expected R/S of ``n`` i.i.d. normal values."""
    i = np.arange(1, n)
    gamma_ratio = np.exp(gammaln((n - 1) / 2.0) - gammaln(n / 2.0)) / np.sqrt(np.pi)
    return float((n - 0.5) / n * gamma_ratio * np.sqrt((n - i) / i).sum())


def rs_sizes(window: int) -> list[int]:
    """Sub-window sizes used by :func:`hurst_rs`: ``window / 2**k`` down to 8."""
    sizes: list[int] = []
    size = window
    while size >= 8 and len(sizes) < 5:
        sizes.append(size)
        size //= 2
    return sizes[::-1]


def hurst_rs(path: np.ndarray) -> np.ndarray:
    """Hurst exponent by corrected rescaled range, from windows of a log-price path.

    ``path`` is time-major, ``(window + 1, n_windows)`` (``apply_windows(time_major=True)``);
    its ``window`` differences are the returns analysed. For sizes ``n`` from
    :func:`rs_sizes`, the most recent ``n``-blocks of returns give a mean R/S, and
    ``H = 0.5 + slope(log(R/S) - log(E[R/S]))`` against ``log n`` with the
    Anis-Lloyd-Peters expectation, so i.i.d. returns give H near 0.5.
    """
    width = path.shape[0] - 1
    n_win = path.shape[1]
    sizes = rs_sizes(width)
    if len(sizes) < 2:
        return np.full((n_win, 1), np.nan)
    logs = []
    for n in sizes:
        blocks = width // n
        start = width - blocks * n
        steps = np.arange(n + 1)
        rows = start + np.arange(blocks)[:, None] * n + steps[None, :]
        level = path[rows]  # (blocks, n + 1, n_win); time-major keeps reductions elementwise
        drift = (level[:, -1] - level[:, 0]) / n
        # the cumulative demeaned return of a block is the path minus its straight line,
        # so no cumulative sum is needed
        detrended = level - steps[None, :, None] * drift[:, None, :]
        spread = detrended.max(axis=1) - detrended.min(axis=1)
        dev = np.diff(level, axis=1) - drift[:, None, :]
        std = np.sqrt((dev * dev).mean(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            rs = np.where(std > 0, spread / std, np.nan).mean(axis=0)
            logs.append(np.log(rs) - np.log(_expected_rs(n)))
    y = np.stack(logs, axis=1)
    x = np.log(np.asarray(sizes, dtype=np.float64))
    x = x - x.mean()
    slope = (y - y.mean(axis=1, keepdims=True)) @ x / (x @ x)
    return (0.5 + slope)[:, None]


@lru_cache(maxsize=256)
def _higuchi_weights(n: int, k: int) -> np.ndarray:
    """Weights turning lag-``k`` absolute differences into Higuchi's mean curve length."""
    j = np.arange(n - k)
    # difference j belongs to sub-series m = j % k, which has (n - 1 - m) // k steps
    steps = (n - 1 - j % k) // k
    weights = (n - 1) / (steps * k * k) / k
    weights.flags.writeable = False  # cached and shared between calls
    return weights


def higuchi_dimension(by_time: np.ndarray, k_max: int = 8) -> np.ndarray:
    """Higuchi fractal dimension of each window of a path (e.g. log prices).

    ``by_time`` is time-major, ``(window, n_windows)`` (``apply_windows(time_major=True)``).

    ``D = -slope(log L(k), log k)`` for ``k = 1..k_max``; about 1.5 for a random walk,
    towards 1 for trending and towards 2 for mean-reverting paths. Scale-free.
    """
    n, n_win = by_time.shape
    k_max = max(2, min(k_max, (n - 1) // 2))
    log_len = np.empty((n_win, k_max))
    for k in range(1, k_max + 1):
        diffs = np.abs(by_time[k:] - by_time[:-k])
        with np.errstate(divide="ignore"):
            log_len[:, k - 1] = np.log(_higuchi_weights(n, k) @ diffs)
    x = np.log(np.arange(1, k_max + 1, dtype=np.float64))
    x = x - x.mean()
    slope = (log_len - log_len.mean(axis=1, keepdims=True)) @ x / (x @ x)
    return np.where(np.isfinite(slope), -slope, np.nan)[:, None]
