"""Training: torchrun-ready trainer, callbacks, evaluation, export, tracking, interpretability."""

from kubetrade.training.bundle import (
    DatasetBundle,
    WindowSet,
    load_bundle,
    save_bundle,
    synthetic_bundle,
)
from kubetrade.training.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    load_checkpoint,
    model_from_checkpoint,
)
from kubetrade.training.distributed import (
    DistributedContext,
    destroy_distributed,
    init_distributed,
)
from kubetrade.training.evaluation import ModelEvaluator
from kubetrade.training.export import (
    ExportResult,
    export_model,
    export_onnx,
    export_torchscript,
    verify_parity,
)
from kubetrade.training.interpretability import AttentionVisualizer, SHAPExplainer
from kubetrade.training.pipeline import TrainingPipeline, pipeline_data_loader
from kubetrade.training.tracking import MLflowEpochLogger, MlflowTracker
from kubetrade.training.trainer import Trainer, TrainResult, build_model, fit

__all__ = [
    "AttentionVisualizer",
    "Callback",
    "DatasetBundle",
    "DistributedContext",
    "EarlyStopping",
    "ExportResult",
    "MLflowEpochLogger",
    "MlflowTracker",
    "ModelCheckpoint",
    "ModelEvaluator",
    "SHAPExplainer",
    "TrainResult",
    "Trainer",
    "TrainingPipeline",
    "WindowSet",
    "build_model",
    "destroy_distributed",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "fit",
    "init_distributed",
    "load_bundle",
    "load_checkpoint",
    "model_from_checkpoint",
    "pipeline_data_loader",
    "save_bundle",
    "synthetic_bundle",
    "verify_parity",
]
