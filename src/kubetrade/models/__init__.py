"""Price models: the guide's hybrid CNN+LSTM and its parts.

Names resolve lazily (as in ``kubetrade``): ``from kubetrade.models import CLASS_NAMES`` does
not import torch, so the model server (ONNX Runtime only) stays free of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetrade._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CLASS_NAMES": "kubetrade.models.labels",
    "CLASS_POSITIONS": "kubetrade.models.labels",
    "CNNFeatureExtractor": "kubetrade.models.hybrid",
    "ExportWrapper": "kubetrade.models.hybrid",
    "FeatureFusion": "kubetrade.models.hybrid",
    "HybridCNNLSTM": "kubetrade.models.hybrid",
    "LSTMTemporalProcessor": "kubetrade.models.hybrid",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from kubetrade.models.hybrid import (
        CNNFeatureExtractor,
        ExportWrapper,
        FeatureFusion,
        HybridCNNLSTM,
        LSTMTemporalProcessor,
    )
    from kubetrade.models.labels import CLASS_NAMES, CLASS_POSITIONS
