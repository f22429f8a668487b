"""The windows the trainer consumes (re-exported from :mod:`kubetrade.data.windows`), and
the one home of synthetic bundles for tests and benchmarks (:func:`synthetic_bundle`,
:func:`make_demo_bundle`).

A :class:`WindowSet` is one split: ``X`` (N, L, F) float32 windows whose last bar is at
``timestamps[i]`` for ``symbols[i]``; ``y_cls`` (N,) int64 labels in
:data:`~kubetrade.models.CLASS_NAMES` order (0 buy, 1 hold, 2 sell); ``y_reg`` (N,) the
realised forward return over the prediction horizon (what a position taken at the last
bar earns). Any object with these attributes works wherever a WindowSet is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# one window format for the whole project: the split step writes it, the trainer reads it
from kubetrade.data.windows import DatasetBundle, WindowSet, save_bundle
from kubetrade.data.windows import load_bundle as _load_bundle
from kubetrade.errors import SplitError, TrainingError

__all__ = [
    "WindowSet",
    "DatasetBundle",
    "save_bundle",
    "load_bundle",
    "synthetic_bundle",
    "make_demo_bundle",
    "ensure_readable_snapshot",
    "ensure_same_data",
    "bundle_fingerprint",
]


def load_bundle(path: str | Path) -> DatasetBundle:
    """:func:`kubetrade.data.windows.load_bundle`, with a truncated or foreign file (not a
    zip, a missing array, a bad dtype) as one :class:`SplitError` line instead of a
    ``BadZipFile`` / ``KeyError`` traceback."""
    import zipfile

    try:
        return _load_bundle(path)
    except SplitError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as exc:
        what = exc.args[0] if isinstance(exc, KeyError) and exc.args else type(exc).__name__
        raise SplitError(
            f"{path} is not a readable dataset bundle ({str(what)[:80]}); it is truncated or "
            "not written by the split step: rerun the split step or pass the right --bundle"
        ) from None


def ensure_readable_snapshot(out_dir: str | Path) -> None:
    """Refuse, in one line, a ``snapshot.pt`` in ``out_dir`` that cannot be read back
    (truncated by a full disk or a kill during its write) before a resume tries it."""
    import torch

    from kubetrade.training.trainer import SNAPSHOT_NAME

    path = Path(out_dir) / SNAPSHOT_NAME
    if not path.is_file():
        return
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a broken file
        raise TrainingError(
            f"{path} cannot be read back ({type(exc).__name__}); it is truncated or corrupt: "
            "delete it (training restarts from epoch 1) or pass --no-resume"
        ) from None


_SPLITS = ("train", "val", "test")
_ARRAYS = ("X", "y_cls", "y_reg", "timestamps", "symbols")


def synthetic_bundle(
    n_timestamps: int = 400,
    n_symbols: int = 2,
    sequence_length: int = 16,
    n_features: int = 5,
    seed: int = 0,
    label_threshold: float = 0.005,
    signal: float = 0.01,
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> DatasetBundle:
    """Windows from a seeded toy market whose next return depends on the last bar's
    first feature (``signal * tanh(f0)`` plus noise), so a model can learn something.

    Splits are contiguous in time with a ``sequence_length + 1`` bar purge gap. For tests
    and benchmarks only.
    """
    rng = np.random.default_rng(seed)
    total = n_timestamps + sequence_length
    days = np.datetime64("2020-01-01", "D") + np.arange(total).astype("timedelta64[D]")
    per_split: dict[str, list[WindowSet]] = {s: [] for s in _SPLITS}
    gap = sequence_length + 1
    usable = n_timestamps - 2 * gap
    bounds = np.cumsum([0, *[int(usable * f) for f in splits]])
    bounds[-1] = usable
    for s_idx in range(n_symbols):
        feats = np.zeros((total, n_features), dtype=np.float64)
        noise = rng.standard_normal((total, n_features))
        for t in range(1, total):  # AR(1) features so windows carry temporal structure
            feats[t] = 0.7 * feats[t - 1] + noise[t]
        forward = signal * np.tanh(feats[:, 0]) + 0.5 * signal * rng.standard_normal(total)
        ends = np.arange(sequence_length - 1, total - 1)[:n_timestamps]
        X = np.stack([feats[e - sequence_length + 1 : e + 1] for e in ends]).astype(np.float32)
        y_reg = forward[ends].astype(np.float32)
        y_cls = np.where(y_reg > label_threshold, 0, np.where(y_reg < -label_threshold, 2, 1))
        windows = WindowSet(
            X=X,
            y_cls=y_cls.astype(np.int64),
            y_reg=y_reg,
            timestamps=days[ends].astype("datetime64[ns]"),
            symbols=np.full(len(ends), f"SYM{s_idx}"),
        )
        for i, split in enumerate(_SPLITS):
            start = bounds[i] + i * gap
            per_split[split].append(windows.take(slice(start, bounds[i + 1] + i * gap)))
    names = [f"f{i}" for i in range(n_features)]
    merged = {split: WindowSet.concat(parts, names) for split, parts in per_split.items()}
    return DatasetBundle(
        train=merged["train"], val=merged["val"], test=merged["test"], feature_names=names
    )


FINGERPRINT_NAME = "data_fingerprint.json"


def bundle_fingerprint(bundle: DatasetBundle) -> str:
    """SHA-256 over the bundle's arrays (windows, labels, timestamps, symbols of every
    split) and feature names: equal iff the training would see the same data."""
    import hashlib

    digest = hashlib.sha256()
    for split in (bundle.train, bundle.val, bundle.test):
        for name in _ARRAYS:
            arr = np.ascontiguousarray(np.asarray(getattr(split, name)))
            digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
            digest.update(arr.astype(str).tobytes() if arr.dtype == object else arr.tobytes())
    digest.update("\0".join(bundle.feature_names).encode())
    return digest.hexdigest()


def ensure_same_data(out_dir: str | Path, bundle: DatasetBundle) -> None:
    """Record the bundle's fingerprint in ``out_dir``; if a snapshot exists there from a
    training on different data, refuse to resume in one line (was: silently resumed)."""
    import json

    from kubetrade.training.trainer import SNAPSHOT_NAME

    out = Path(out_dir)
    path = out / FINGERPRINT_NAME
    current = bundle_fingerprint(bundle)
    if (out / SNAPSHOT_NAME).is_file() and path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != current:
            raise TrainingError(
                f"{out} holds a snapshot trained on different data (bundle SHA-256 "
                f"{str(recorded)[:12]}... vs {current[:12]}...); resuming would mix them: "
                "pass another --run-dir or --no-resume"
            )
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"sha256": current}), encoding="utf-8")
    tmp.replace(path)


def make_demo_bundle(
    n_symbols: int = 2, n_years: float = 3, seed: int = 0, cfg: Any = None
) -> DatasetBundle:
    """Synthetic GBM prices through the real path (indicators, then the project's time split
    and windowing, :func:`~kubetrade.data.splits.prepare_datasets`) into a bundle; for tests
    and benchmarks that need the pipeline's own windows. :func:`synthetic_bundle` is the
    faster toy: windows built directly, with a learnable signal."""
    from kubetrade.config import TrainingConfig
    from kubetrade.data.features import FeatureEngineer
    from kubetrade.data.sources import generate_synthetic
    from kubetrade.data.splits import prepare_datasets

    cfg = cfg or TrainingConfig()
    raw = generate_synthetic(n_symbols=n_symbols, n_years=n_years, seed=seed)
    feats = FeatureEngineer().add_technical_indicators(
        raw, indicators=["rsi", "macd", "bollinger_bands", "atr"]
    )
    return prepare_datasets(feats, cfg)
