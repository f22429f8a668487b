"""Price models: the guide's hybrid CNN+LSTM and its parts."""

from kubetrade.models.hybrid import (
    CLASS_NAMES,
    CLASS_POSITIONS,
    CNNFeatureExtractor,
    ExportWrapper,
    FeatureFusion,
    HybridCNNLSTM,
    LSTMTemporalProcessor,
)

__all__ = [
    "CLASS_NAMES",
    "CLASS_POSITIONS",
    "CNNFeatureExtractor",
    "ExportWrapper",
    "FeatureFusion",
    "HybridCNNLSTM",
    "LSTMTemporalProcessor",
]
