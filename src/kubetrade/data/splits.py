"""Time splits with a purge gap, walk-forward folds, and the dataset they feed.

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

Data interface consumed by the trainer (the window types and bundle files are
:mod:`kubetrade.data.windows`, re-exported here)::

    WindowSet: X float32 (N, L, F), y_cls int64 (N,) 0=buy 1=hold 2=sell,
               y_reg float32 (N,) forward simple return, timestamps datetime64[ns] (N,)
               (decision bar, UTC, tz-naive numpy), symbols str (N,), feature_names
    DatasetBundle: train, val, test WindowSets + feature_names + scaler stats
    prepare_datasets(features_df, cfg) -> DatasetBundle
    save_bundle(bundle, path.npz) / load_bundle(path.npz)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.config import TrainingConfig
from kubetrade.data.windows import (
    BUY,
    HOLD,
    SELL,
    DatasetBundle,
    RobustScaler,
    WindowSet,
    augment,
    label_returns,
    load_bundle,
    make_windows,
    save_bundle,
)
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
    "augment",
    "save_bundle",
    "load_bundle",
    "resolve_feature_columns",
]


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
        train = train.take(np.sort(keep))
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
