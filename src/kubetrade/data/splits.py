"""Time splits with a purge gap, walk-forward folds, sliding windows and scaling.

Everything here is causal:

* :class:`TimeSeriesSplitter` cuts the calendar (not rows) into train / val /
  test periods, leaving ``gap`` bars between them. With a gap of at least
  ``sequence_length + prediction_horizon`` no window -- inputs *or* label --
  straddles two splits.
* Windows end at a decision bar ``t``; inputs are bars ``t-L+1..t``; labels use
  ``close[t+h] / close[t] - 1``. A window is kept in a split only when every
  input bar and the label bar lie inside that split's period.
* The scaler (robust median/IQR per feature) is fitted on training windows
  only; augmentation touches training windows only.

Data interface consumed by the trainer::

    WindowSet: X float32 (N, L, F), y_cls int64 (N,) 0=buy 1=hold 2=sell,
               y_reg float32 (N,) forward simple return, timestamps datetime64[ns] (N,)
               (decision bar, UTC, tz-naive numpy), symbols str (N,), feature_names
    DatasetBundle: train, val, test WindowSets + feature_names + scaler stats
    prepare_datasets(features_df, cfg) -> DatasetBundle
    make_demo_bundle(n_symbols=2, n_years=3, seed=0, cfg=None) -> DatasetBundle
    save_bundle(bundle, path.npz) / load_bundle(path.npz)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.config import AugmentationConfig, TrainingConfig
from kubetrade.errors import SplitError

__all__ = [
    "SELL",
    "HOLD",
    "BUY",
    "TimeSeriesSplitter",
    "SplitPeriods",
    "WindowSet",
    "DatasetBundle",
    "RobustScaler",
    "label_returns",
    "make_windows",
    "prepare_datasets",
    "make_demo_bundle",
    "augment",
    "save_bundle",
    "load_bundle",
    "resolve_feature_columns",
]

# class indices, in the order of kubetrade.models.CLASS_NAMES ("buy", "hold", "sell")
BUY, HOLD, SELL = 0, 1, 2


@dataclass(frozen=True)
class SplitPeriods:
    """Inclusive [start, end] timestamps of each split (UTC)."""

    train: tuple[pd.Timestamp, pd.Timestamp]
    val: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp]

    def as_dict(self) -> dict[str, tuple[str, str]]:
        return {
            name: (f"{a:%Y-%m-%d}", f"{b:%Y-%m-%d}")
            for name, (a, b) in (("train", self.train), ("val", self.val), ("test", self.test))
        }


class TimeSeriesSplitter:
    """Chronological train/val/test split over the union calendar, with a purge gap.

    Args:
        train_ratio, val_ratio, test_ratio: fractions of the calendar's bars; must sum to 1.
        gap_days: bars left out between consecutive splits (the guide's name; on
            daily data a bar is a trading day). Use at least
            ``sequence_length + prediction_horizon``.
        cv_folds: number of walk-forward folds for :meth:`walk_forward_splits`.
    """

    def __init__(
        self,
        train_ratio: float = 0.7,
        val_ratio: float = 0.15,
        test_ratio: float = 0.15,
        gap_days: int = 5,
        cv_folds: int = 5,
    ) -> None:
        ratios = (train_ratio, val_ratio, test_ratio)
        if any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise SplitError(
                f"split ratios must be positive and sum to 1, got {ratios} (sum {sum(ratios):g})"
            )
        if gap_days < 0:
            raise SplitError(f"gap_days must be >= 0, got {gap_days}")
        self.train_ratio, self.val_ratio, self.test_ratio = ratios
        self.gap = int(gap_days)
        self.cv_folds = int(cv_folds)

    @classmethod
    def from_config(cls, cfg: TrainingConfig) -> TimeSeriesSplitter:
        d = cfg.data
        return cls(d.train_split, d.val_split, d.test_split, d.purge_gap, cfg.validation.cv_folds)

    @staticmethod
    def _calendar(df: pd.DataFrame) -> pd.DatetimeIndex:
        if df.empty:
            raise SplitError("cannot split an empty table")
        return pd.DatetimeIndex(np.sort(df["timestamp"].unique()))

    def periods(self, df: pd.DataFrame) -> SplitPeriods:
        """Compute the split periods on the table's calendar."""
        cal = self._calendar(df)
        usable = len(cal) - 2 * self.gap
        n_train = int(usable * self.train_ratio)
        n_val = int(usable * self.val_ratio)
        n_test = usable - n_train - n_val
        if min(n_train, n_val, n_test) < 1:
            raise SplitError(
                f"{len(cal)} bars are too few for a {self.train_ratio:g}/{self.val_ratio:g}/"
                f"{self.test_ratio:g} split with a {self.gap}-bar gap; use a longer date range "
                "or a shorter sequence_length"
            )
        t0, t1 = 0, n_train - 1
        v0 = t1 + 1 + self.gap
        v1 = v0 + n_val - 1
        s0 = v1 + 1 + self.gap
        return SplitPeriods(
            train=(cal[t0], cal[t1]), val=(cal[v0], cal[v1]), test=(cal[s0], cal[-1])
        )

    def split(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Return (train, val, test) row subsets of ``df`` (the guide's API)."""
        p = self.periods(df)
        ts = df["timestamp"]
        return tuple(  # type: ignore[return-value]
            df[(ts >= a) & (ts <= b)].reset_index(drop=True) for a, b in (p.train, p.val, p.test)
        )

    def walk_forward_splits(
        self, df: pd.DataFrame, n_folds: int | None = None
    ) -> Iterator[tuple[tuple[pd.Timestamp, pd.Timestamp], tuple[pd.Timestamp, pd.Timestamp]]]:
        """Expanding-window folds over the train+val part (the test period is never touched).

        Yields ``(train_period, val_period)`` pairs; each validation block follows
        its training block after the purge gap.
        """
        n_folds = n_folds or self.cv_folds
        p = self.periods(df)
        cal = self._calendar(df)
        cal = cal[cal <= p.val[1]]
        block = (len(cal) - n_folds * self.gap) // (n_folds + 1)
        if block < 2:
            raise SplitError(
                f"{len(cal)} bars before the test period are too few for {n_folds} folds "
                f"with a {self.gap}-bar gap; lower validation.cv_folds"
            )
        for k in range(1, n_folds + 1):
            train_end = k * block - 1 + (k - 1) * self.gap
            val_start = train_end + 1 + self.gap
            val_end = min(val_start + block - 1, len(cal) - 1)
            yield (cal[0], cal[train_end]), (cal[val_start], cal[val_end])


@dataclass
class WindowSet:
    """Sliding windows of one split.

    ``X`` (N, L, F) float32 windows whose last bar is the decision bar
    ``timestamps[i]`` of ``symbols[i]``; ``y_cls`` (N,) int64 labels (0 buy,
    1 hold, 2 sell); ``y_reg`` (N,) the realised forward return over the
    prediction horizon (what a position taken at the decision bar earns).
    """

    X: np.ndarray
    y_cls: np.ndarray
    y_reg: np.ndarray
    timestamps: np.ndarray
    symbols: np.ndarray
    feature_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if np.ndim(self.X) != 3:
            raise SplitError(f"windows X must be (N, L, F), got shape {np.shape(self.X)}")
        n = len(self.X)
        for name in ("y_cls", "y_reg", "timestamps", "symbols"):
            if len(getattr(self, name)) != n:
                raise SplitError(
                    f"WindowSet.{name} has {len(getattr(self, name))} rows but X has {n}"
                )

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, idx: np.ndarray | slice) -> WindowSet:
        """Rows ``idx`` as a new WindowSet."""
        return WindowSet(
            self.X[idx], self.y_cls[idx], self.y_reg[idx], self.timestamps[idx],
            self.symbols[idx], self.feature_names,
        )  # fmt: skip

    subset = take


@dataclass
class RobustScaler:
    """Per-feature median / IQR scaling, fitted on training windows only; clipped to +-10."""

    center: np.ndarray
    scale: np.ndarray
    clip: float = 10.0

    @classmethod
    def fit(cls, X: np.ndarray) -> RobustScaler:
        flat = X.reshape(-1, X.shape[-1]).astype(np.float64)
        q25, med, q75 = np.nanpercentile(flat, [25, 50, 75], axis=0)
        scale = q75 - q25
        std = np.nanstd(flat, axis=0)
        scale = np.where(scale > 1e-12, scale, np.where(std > 1e-12, std, 1.0))
        return cls(center=med, scale=scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        out = (X - self.center) / self.scale
        return np.clip(out, -self.clip, self.clip).astype(np.float32)


@dataclass
class DatasetBundle:
    """Train/val/test windows plus what is needed to reproduce them."""

    train: WindowSet
    val: WindowSet
    test: WindowSet
    feature_names: list[str] = field(default_factory=list)
    scaler: RobustScaler | None = None
    periods: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: split -> symbol -> {"bars", "windows"} (:func:`window_coverage`); not saved with the bundle
    coverage: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.train.X.shape[-1])


def label_returns(df: pd.DataFrame, horizon: int) -> np.ndarray:
    """Forward simple return ``close[t+h]/close[t]-1`` per symbol (NaN for the last h bars)."""
    close = df["close"].to_numpy(dtype=np.float64)
    future = df.groupby("symbol", sort=False)["close"].shift(-horizon).to_numpy(dtype=np.float64)
    return future / close - 1.0


def resolve_feature_columns(df: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """Map the config's feature names (``rsi``, ``bollinger_bands``, ...) to frame columns.

    A name is either a column itself or a group known to :class:`FeatureEngineer`;
    raw price levels are replaced by scale-free versions so windows of different
    symbols and years are comparable.
    """
    # indicator columns in price units are not comparable across symbols and years,
    # so model inputs use their normalised siblings
    from kubetrade.data.features import FeatureEngineer, is_scale_free

    groups = FeatureEngineer().feature_groups()
    cols: list[str] = []
    for name in names:
        if name in ("open", "high", "low", "close"):
            col = f"{name}_rel"
        elif name == "volume":
            col = "volume_rel"
        else:
            candidates = groups.get(name, [name])
            if len(candidates) > 1:  # a group: keep its scale-free members
                candidates = [c for c in candidates if is_scale_free(c)]
            present = [c for c in candidates if c in df.columns]
            if not present:
                raise SplitError(
                    f"feature '{name}' is not in the feature table (have: "
                    f"{sorted(c for c in df.columns if c not in ('symbol', 'timestamp'))}); "
                    "add it to the feature step or drop it from data.features"
                )
            cols.extend(c for c in present if c not in cols)
            continue
        if col not in cols:
            cols.append(col)
    return cols


def add_relative_price_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Scale-free OHLCV: log(price / previous close) and log(volume / 20-bar mean volume)."""
    out = df.copy()
    prev_close = out.groupby("symbol", sort=False)["close"].shift(1)
    for col in ("open", "high", "low", "close"):
        out[f"{col}_rel"] = np.log(out[col] / prev_close)
    vol_mean = out.groupby("symbol", sort=False)["volume"].transform(
        lambda s: s.rolling(20, min_periods=20).mean()
    )
    out["volume_rel"] = np.log1p(out["volume"]) - np.log1p(vol_mean)
    return out


def make_windows(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    sequence_length: int,
    horizon: int,
    threshold: float,
    period: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    lookback_from: pd.Timestamp | None = None,
) -> WindowSet:
    """Windows whose decision bar and label bar lie within ``period`` (whole table if None).

    Input bars may reach back to ``lookback_from`` (the start of the purge gap
    before the period) but never further, so a window never touches another
    split. Rows with a NaN feature (indicator warm-up) cannot be inside a window.
    """
    first_decision = None
    if period is not None:
        lo = lookback_from if lookback_from is not None else period[0]
        df = df[(df["timestamp"] >= lo) & (df["timestamp"] <= period[1])]
        first_decision = period[0]
    feats = df[list(feature_cols)].to_numpy(dtype=np.float32)
    fwd = label_returns(df, horizon)
    symbols = df["symbol"].to_numpy()
    stamps = df["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    # position of each row inside its symbol's block (within the period)
    pos = df.groupby("symbol", sort=False).cumcount().to_numpy()
    row_ok = np.isfinite(feats).all(axis=1)
    # a window ending at row i needs L consecutive finite rows of the same symbol
    bad_cum = np.cumsum(~row_ok)
    L = sequence_length
    idx = np.arange(len(df))
    has_history = pos >= L - 1
    start = np.clip(idx - L + 1, 0, None)
    bad_in_window = bad_cum - np.where(start > 0, bad_cum[start - 1], 0)
    valid = has_history & (bad_in_window == 0) & np.isfinite(fwd)
    if first_decision is not None:
        valid &= (df["timestamp"] >= first_decision).to_numpy()
    ends = idx[valid]
    n_feat = len(feature_cols)
    if len(ends) == 0:
        X = np.zeros((0, L, n_feat), np.float32)
    else:
        view = np.lib.stride_tricks.sliding_window_view(feats, L, axis=0)  # (N-L+1, F, L)
        X = np.ascontiguousarray(view[ends - L + 1].transpose(0, 2, 1))
    r = fwd[ends]
    y_cls = np.full(len(ends), HOLD, dtype=np.int64)
    y_cls[r > threshold] = BUY
    y_cls[r < -threshold] = SELL
    return WindowSet(
        X=X.astype(np.float32, copy=False),
        y_cls=y_cls,
        y_reg=r.astype(np.float32),
        timestamps=stamps[ends],
        symbols=symbols[ends].astype(str),
        feature_names=list(feature_cols),
    )


def augment(ws: WindowSet, cfg: AugmentationConfig, seed: int = 0) -> WindowSet:
    """Train-only augmentation: Gaussian noise, random time shift, magnitude warp.

    Returns the original windows plus one augmented copy of each. A time shift
    rolls the inputs by up to ``time_shift_max`` bars *backwards* (repeating the
    first bar), so no augmented window sees a bar later than its decision time.
    """
    if len(ws) == 0:
        return ws
    rng = np.random.default_rng(seed)
    X = ws.X.copy()
    n, L, _ = X.shape
    if cfg.time_shift_max > 0:
        shifts = np.asarray(rng.integers(0, cfg.time_shift_max + 1, size=n))
        src = np.clip(np.arange(L)[None, :] - shifts[:, None], 0, L - 1)
        X = np.take_along_axis(X, src[:, :, None], axis=1)
    if cfg.magnitude_warp:
        knots = rng.normal(1.0, 0.1, size=(n, 4))
        curve = np.stack([np.interp(np.linspace(0, 3, L), np.arange(4), k) for k in knots])
        X = X * curve[:, :, None].astype(np.float32)
    if cfg.noise_std > 0:
        X = X + rng.normal(0.0, cfg.noise_std, size=X.shape).astype(np.float32)
    return WindowSet(
        X=np.concatenate([ws.X, X.astype(np.float32)]),
        y_cls=np.concatenate([ws.y_cls, ws.y_cls]),
        y_reg=np.concatenate([ws.y_reg, ws.y_reg]),
        timestamps=np.concatenate([ws.timestamps, ws.timestamps]),
        symbols=np.concatenate([ws.symbols, ws.symbols]),
        feature_names=ws.feature_names,
    )


def prepare_datasets(
    features: pd.DataFrame, cfg: TrainingConfig, augment_train: bool = True
) -> DatasetBundle:
    """Split a feature table by time, window it, scale on train, augment train."""
    d = cfg.data
    frame = add_relative_price_columns(features)
    cols = resolve_feature_columns(frame, d.features)
    splitter = TimeSeriesSplitter.from_config(cfg)
    periods = splitter.periods(frame)
    calendar = pd.DatetimeIndex(np.sort(frame["timestamp"].unique()))
    sets = {}
    for name in ("train", "val", "test"):
        period = getattr(periods, name)
        # inputs may look back into the purge gap before the period, never past it
        start_idx = int(calendar.searchsorted(period[0]))
        lookback = calendar[max(0, start_idx - splitter.gap)] if name != "train" else None
        sets[name] = make_windows(frame, cols, d.sequence_length, d.prediction_horizon,
                                  d.label_threshold, period, lookback)  # fmt: skip
    for name, ws in sets.items():
        if len(ws) == 0:
            raise SplitError(
                f"the {name} split {getattr(periods, name)[0]:%Y-%m-%d}.."
                f"{getattr(periods, name)[1]:%Y-%m-%d} has no complete window of "
                f"{d.sequence_length} bars; use a longer date range or a shorter sequence_length"
            )
    coverage = window_coverage(frame, sets, {name: getattr(periods, name) for name in sets})
    for name, per_symbol in coverage.items():
        lost = sorted(sym for sym, c in per_symbol.items() if c["bars"] and not c["windows"])
        if lost:  # a symbol silently missing from a split would skew every metric of it
            a, b = getattr(periods, name)
            raise SplitError(
                f"symbol(s) {lost} have bars but no complete window in the {name} split "
                f"{a:%Y-%m-%d}..{b:%Y-%m-%d} (missing or non-finite features there); drop them "
                "from symbols or fix their data"
            )
    train = sets["train"]
    if cfg.training.max_train_windows and len(train) > cfg.training.max_train_windows:
        keep = np.argsort(train.timestamps, kind="stable")[-cfg.training.max_train_windows :]
        train = train.subset(np.sort(keep))
    scaler = RobustScaler.fit(train.X)
    for ws in (train, sets["val"], sets["test"]):
        ws.X = scaler.transform(ws.X)
    if augment_train:
        aug = d.augmentation
        if aug.noise_std > 0 or aug.time_shift_max > 0 or aug.magnitude_warp:
            train = augment(train, aug, seed=cfg.training.seed)
    return DatasetBundle(
        train=train, val=sets["val"], test=sets["test"], feature_names=cols,
        scaler=scaler, periods=periods.as_dict(), coverage=coverage,
    )  # fmt: skip


def window_coverage(
    frame: pd.DataFrame, sets: dict[str, WindowSet], periods: dict[str, tuple[Any, Any]]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per split and symbol: decision bars in the split's period and windows made from them.

    ``bars - windows`` are the rows dropped for that split (indicator warm-up, a non-finite
    feature inside the window, no forward label at the period's end); the split step reports
    them, and :func:`prepare_datasets` refuses a symbol left with none."""
    stamps = frame["timestamp"]
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, ws in sets.items():
        lo, hi = periods[name]  # the split's own period bounds (same time zone as the frame)
        in_period = frame.loc[(stamps >= lo) & (stamps <= hi), "symbol"]
        bars = in_period.astype(str).value_counts()
        made = pd.Series(np.asarray(ws.symbols).astype(str)).value_counts()
        out[name] = {
            str(sym): {"bars": int(bars.get(sym, 0)), "windows": int(made.get(sym, 0))}
            for sym in sorted(set(bars.index) | set(made.index))
        }
    return out


def make_demo_bundle(
    n_symbols: int = 2, n_years: float = 3, seed: int = 0, cfg: TrainingConfig | None = None
) -> DatasetBundle:
    """Synthetic data -> features -> bundle; for tests and benchmarks."""
    from kubetrade.data.features import FeatureEngineer
    from kubetrade.data.sources import generate_synthetic

    cfg = cfg or TrainingConfig()
    raw = generate_synthetic(n_symbols=n_symbols, n_years=n_years, seed=seed)
    feats = FeatureEngineer().add_technical_indicators(
        raw, indicators=["rsi", "macd", "bollinger_bands", "atr"]
    )
    return prepare_datasets(feats, cfg)


def save_bundle(bundle: DatasetBundle, path: str | Path) -> Path:
    """Write a bundle to one ``.npz`` (no pickle) so torchrun workers can load it."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name in ("train", "val", "test"):
        ws: WindowSet = getattr(bundle, name)
        arrays[f"{name}_X"] = ws.X
        arrays[f"{name}_y_cls"] = ws.y_cls
        arrays[f"{name}_y_reg"] = ws.y_reg
        arrays[f"{name}_timestamps"] = (
            np.asarray(ws.timestamps).astype("datetime64[ns]").astype(np.int64)
        )
        arrays[f"{name}_symbols"] = np.asarray(ws.symbols).astype(str)
    arrays["feature_names"] = np.array(bundle.feature_names, dtype=str)
    if bundle.scaler is not None:
        arrays["scaler_center"] = bundle.scaler.center
        arrays["scaler_scale"] = bundle.scaler.scale
    arrays["periods"] = np.array([[k, *v] for k, v in bundle.periods.items()], dtype=str).reshape(
        -1, 3
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return path


def load_bundle(path: str | Path) -> DatasetBundle:
    """Inverse of :func:`save_bundle` (``allow_pickle=False``)."""
    if not Path(path).is_file():
        raise SplitError(f"dataset bundle not found: {path} (the split step writes it)")
    with np.load(path, allow_pickle=False) as z:
        if "train_X" not in z:
            raise SplitError(f"{path} is not a dataset bundle (no train_X array)")
        names = [str(s) for s in z["feature_names"]]

        def ws(name: str) -> WindowSet:
            return WindowSet(
                X=z[f"{name}_X"], y_cls=z[f"{name}_y_cls"], y_reg=z[f"{name}_y_reg"],
                timestamps=z[f"{name}_timestamps"].astype("datetime64[ns]"),
                symbols=z[f"{name}_symbols"], feature_names=names,
            )  # fmt: skip

        scaler = (
            RobustScaler(center=z["scaler_center"], scale=z["scaler_scale"])
            if "scaler_center" in z
            else None
        )
        periods = (
            {str(r[0]): (str(r[1]), str(r[2])) for r in z["periods"]} if "periods" in z else {}
        )
        return DatasetBundle(ws("train"), ws("val"), ws("test"), names, scaler, periods)
