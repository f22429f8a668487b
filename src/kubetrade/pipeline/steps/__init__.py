"""The pipeline's steps as plain functions (no kfp import), one module per stage.

Each KFP component in ``components/`` calls exactly one of these. A step takes the resolved
run configuration (:class:`~kubetrade.config.run.RunConfig`, passed between components as
JSON) and file paths, reads its settings from that typed config, writes its outputs
atomically (temp file, then rename) and returns a small JSON-able summary that the component
logs as KFP ``Metrics``.

- :mod:`.resolve`: the run's config (files, ``--set`` overrides, the run form)
- :mod:`.data`: ingest, validate, features, split
- :mod:`.hybrid`: tune, train, evaluate, export of the hybrid CNN+LSTM
- :mod:`.rl`: one RL agent per task, the ensemble
- :mod:`.evaluation`: walk-forward folds and their aggregate, the evaluation gate
- :mod:`.backtest`: both strategies through one engine on the test period
- :mod:`.register`: the champion gate and registration
- :mod:`.summary`: the run's Markdown summary
- :mod:`.common`: atomic writes, JSON, the run's MLflow tracker
"""

from kubetrade.config.run import RunConfig
from kubetrade.data.sources import load_market_data
from kubetrade.pipeline.steps.backtest import backtest_step
from kubetrade.pipeline.steps.common import EXPERIMENT, atomic_path, run_tracker
from kubetrade.pipeline.steps.data import features_step, ingest_step, split_step, validate_step
from kubetrade.pipeline.steps.evaluation import (
    count_trials,
    evaluation_gate,
    fold_step,
    walk_forward_step,
)
from kubetrade.pipeline.steps.hybrid import evaluate_step, export_step, train_step, tune_step
from kubetrade.pipeline.steps.register import register_step
from kubetrade.pipeline.steps.resolve import load_run_config
from kubetrade.pipeline.steps.rl import ensemble_step, rl_agent_step, rl_configs
from kubetrade.pipeline.steps.summary import _walk_forward_lines as _walk_forward_lines
from kubetrade.pipeline.steps.summary import summary_step

__all__ = [
    "RunConfig",
    "load_run_config",
    "load_market_data",
    "ingest_step",
    "validate_step",
    "features_step",
    "split_step",
    "atomic_path",
    "rl_agent_step",
    "ensemble_step",
    "tune_step",
    "train_step",
    "evaluate_step",
    "export_step",
    "fold_step",
    "count_trials",
    "walk_forward_step",
    "evaluation_gate",
    "backtest_step",
    "register_step",
    "summary_step",
    "EXPERIMENT",
    "rl_configs",
    "run_tracker",
]
