"""What a served model needs besides its graph: feature order, train-fitted scaler, window.

The split step scales windows with a :class:`~kubetrade.data.splits.RobustScaler` fitted on
train and the model graph takes those scaled windows. A server that builds windows from the
feature store must apply the same transform, so the export step writes
``<export_dir>/serving_spec.json`` next to the ONNX files (logged with them under the run's
``export/`` artifacts).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kubetrade.errors import KubetradeError

__all__ = ["SPEC_FILE", "ServingError", "ServingSpec", "write_serving_spec", "read_serving_spec"]

SPEC_FILE = "serving_spec.json"
_NO_CLIP = 1e30  # JSON has no infinity


class ServingError(KubetradeError):
    """The model server cannot start or cannot serve as configured."""


@dataclass(frozen=True)
class ServingSpec:
    """Feature order, scaler and window geometry of one exported model."""

    feature_names: list[str]
    center: list[float]
    scale: list[float]
    clip: float
    sequence_length: int
    prediction_horizon: int
    label_threshold: float

    @cached_property
    def _center_scale(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.center, dtype=np.float64), np.asarray(self.scale, dtype=np.float64)

    def transform(self, window: np.ndarray) -> np.ndarray:
        """Raw feature window(s) ``(..., L, F)`` -> the model's scaled float32 input."""
        center, scale = self._center_scale  # built once: this runs on every request
        out = np.subtract(window, center, dtype=np.float64)
        out /= scale
        return np.clip(out, -self.clip, self.clip, out=out).astype(np.float32)


def write_serving_spec(export_dir: str | Path, bundle: Any, training: Any) -> Path:
    """Write ``serving_spec.json`` for ``bundle`` (a DatasetBundle with its scaler) and
    ``training`` (the TrainingConfig it was built with)."""
    scaler = bundle.scaler
    n = len(bundle.feature_names)
    # a bundle without a scaler holds unscaled windows: the identity transform
    center = np.zeros(n) if scaler is None else np.ravel(scaler.center)
    scale = np.ones(n) if scaler is None else np.ravel(scaler.scale)
    spec = ServingSpec(
        feature_names=list(bundle.feature_names),
        center=[float(v) for v in center],
        scale=[float(v) for v in scale],
        clip=_NO_CLIP if scaler is None else float(scaler.clip),
        sequence_length=int(training.data.sequence_length),
        prediction_horizon=int(training.data.prediction_horizon),
        label_threshold=float(training.data.label_threshold),
    )
    path = Path(export_dir) / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(spec), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def read_serving_spec(path: str | Path) -> ServingSpec:
    """Parse ``serving_spec.json`` (ServingError naming the file when missing or broken)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        spec = ServingSpec(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise ServingError(f"cannot read the serving spec {p}: {exc}") from exc
    n = len(spec.feature_names)
    if len(spec.center) != n or len(spec.scale) != n or spec.sequence_length < 1:
        raise ServingError(f"{p}: {n} features but {len(spec.center)} scaler values")
    return spec
