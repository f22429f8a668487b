"""Sliding windows and the dataset bundle the trainer consumes.

* :class:`WindowSet`: ``X`` float32 (N, L, F), ``y_cls`` int64 (N,) 0=buy 1=hold 2=sell,
  ``y_reg`` float32 (N,) forward simple return, ``timestamps`` datetime64[ns] (N,) (decision
  bar, UTC, tz-naive numpy), ``symbols`` str (N,), ``feature_names``.
* :class:`DatasetBundle`: train, val, test WindowSets + feature names + scaler stats;
  :func:`save_bundle` / :func:`load_bundle` write and read it as one ``.npz`` (no pickle).
* :func:`make_windows` cuts a feature table into windows (causal: a window's inputs end at
  its decision bar, its label is ``close[t+h] / close[t] - 1``); :class:`RobustScaler` and
  :func:`augment` act on training windows only.

How the table is split in time first is :mod:`kubetrade.data.splits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kubetrade.config import AugmentationConfig
from kubetrade.errors import SplitError

__all__ = [
    "BUY",
    "HOLD",
    "SELL",
    "DatasetBundle",
    "RobustScaler",
    "WindowSet",
    "augment",
    "label_returns",
    "load_bundle",
    "make_windows",
    "save_bundle",
]

# class indices, in the order of kubetrade.models.CLASS_NAMES ("buy", "hold", "sell")
BUY, HOLD, SELL = 0, 1, 2


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

    @classmethod
    def concat(cls, parts: Sequence[WindowSet], feature_names: list[str]) -> WindowSet:
        """The rows of ``parts``, one part after the other."""
        return cls(
            X=np.concatenate([p.X for p in parts]),
            y_cls=np.concatenate([p.y_cls for p in parts]),
            y_reg=np.concatenate([p.y_reg for p in parts]),
            timestamps=np.concatenate([p.timestamps for p in parts]),
            symbols=np.concatenate([p.symbols for p in parts]),
            feature_names=feature_names,
        )

    def take(self, idx: np.ndarray | slice) -> WindowSet:
        """Rows ``idx`` as a new WindowSet."""
        return WindowSet(
            self.X[idx], self.y_cls[idx], self.y_reg[idx], self.timestamps[idx],
            self.symbols[idx], self.feature_names,
        )  # fmt: skip


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

    def without_test(self) -> DatasetBundle:
        """Train + val with an empty test split (e.g. for tuning workers, which must never
        receive test windows); the scaler, periods and coverage are not carried over."""
        return DatasetBundle(
            train=self.train,
            val=self.val,
            test=self.val.take(slice(0, 0)),
            feature_names=list(self.feature_names),
        )


def label_returns(df: pd.DataFrame, horizon: int) -> np.ndarray:
    """Forward simple return ``close[t+h]/close[t]-1`` per symbol (NaN for the last h bars)."""
    close = df["close"].to_numpy(dtype=np.float64)
    future = df.groupby("symbol", sort=False)["close"].shift(-horizon).to_numpy(dtype=np.float64)
    return future / close - 1.0


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
