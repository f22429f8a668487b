"""kubetrade: Kubernetes-native MLOps for trading models.

The public API is importable from here, named as in the model training guide::

    from kubetrade import FeatureEngineer, DataQualityValidator, TimeSeriesSplitter

Names are resolved lazily so ``import kubetrade`` (and the CLI) stays fast and
does not import torch, Feast or Great Expectations until they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetrade._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data
    "FeatureEngineer": "kubetrade.data.features",
    "DataQualityValidator": "kubetrade.data.quality",
    "QualityReport": "kubetrade.data.quality",
    "TimeSeriesSplitter": "kubetrade.data.splits",
    "WindowSet": "kubetrade.data.splits",
    "DatasetBundle": "kubetrade.data.splits",
    "prepare_datasets": "kubetrade.data.splits",
    "FeatureStoreBuilder": "kubetrade.data.feature_store",
    "load_embedded": "kubetrade.data.sources",
    "load_files": "kubetrade.data.sources",
    "generate_synthetic": "kubetrade.data.sources",
    # config and errors
    "TrainingConfig": "kubetrade.config",
    "PipelineConfig": "kubetrade.config",
    "load_training_config": "kubetrade.config",
    "KubetradeError": "kubetrade.errors",
    # model, training, tuning
    "HybridCNNLSTM": "kubetrade.models",
    "TrainingPipeline": "kubetrade.training",
    "ModelEvaluator": "kubetrade.training",
    "AdvancedTrainingPipeline": "kubetrade.tuning",
    # RL and backtesting
    "TradingEnvironment": "kubetrade.rl",
    "PPOAgent": "kubetrade.rl",
    "SACAgent": "kubetrade.rl",
    "RLTrainingPipeline": "kubetrade.rl",
    "BacktestingEngine": "kubetrade.backtest",
    # pipeline
    "RunConfig": "kubetrade.config.run",
    "run_local": "kubetrade.pipeline.runner",
    "compile_pipeline": "kubetrade.pipeline.runner",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from kubetrade.config import PipelineConfig, TrainingConfig, load_training_config
    from kubetrade.config.run import RunConfig
    from kubetrade.data.feature_store import FeatureStoreBuilder
    from kubetrade.data.features import FeatureEngineer
    from kubetrade.data.quality import DataQualityValidator, QualityReport
    from kubetrade.data.sources import generate_synthetic, load_embedded, load_files
    from kubetrade.data.splits import DatasetBundle, TimeSeriesSplitter, WindowSet, prepare_datasets
    from kubetrade.errors import KubetradeError
    from kubetrade.pipeline.runner import compile_pipeline, run_local
