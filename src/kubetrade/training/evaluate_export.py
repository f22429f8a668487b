"""Evaluate and export the trained hybrid model: the one implementation behind
:class:`~kubetrade.training.pipeline.TrainingPipeline` and the pipeline's ``evaluate`` and
``export`` steps.

:func:`evaluate_model` scores the model on the validation and test windows beside the naive
baselines, writes the HTML report and logs the metrics to the training's MLflow run.
:func:`export_and_log` exports TorchScript + ONNX behind the parity gate (an
:class:`~kubetrade.errors.ExportError` stops before anything is logged as a model), logs the
files and the pyfunc model, and records what ``kubetrade register`` checks later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetrade.training.evaluation import ModelEvaluator, flat_metrics
from kubetrade.training.export import ExportResult, export_model

if TYPE_CHECKING:
    from kubetrade.config import TrainingConfig
    from kubetrade.models import HybridCNNLSTM
    from kubetrade.training.bundle import DatasetBundle
    from kubetrade.training.tracking import MlflowTracker

__all__ = ["Evaluation", "evaluate_model", "Exported", "export_and_log"]


@dataclass
class Evaluation:
    """Results of :func:`evaluate_model` (``val``/``test`` as ``ModelEvaluator.evaluate``)."""

    val: dict[str, Any]
    test: dict[str, Any]
    metrics: dict[str, float]
    report_path: Path
    interpretability: dict[str, Any] | None = None


def evaluate_model(
    model: HybridCNNLSTM,
    bundle: DatasetBundle,
    tracker: MlflowTracker,
    report_path: str | Path,
    prediction_horizon: int,
    *,
    metrics: list[str] | None = None,
    interpretability: bool = False,
    extra_metrics: dict[str, float] | None = None,
) -> Evaluation:
    """Validation and test metrics of ``model`` beside the majority-class, logistic-regression
    and buy-and-hold baselines (fit on the train windows); the test report (HTML, written
    atomically) titled with the tracker's run; ``val_*``/``test_*`` metrics plus
    ``extra_metrics`` logged to that run.

    Args:
        prediction_horizon: bars per label; annualises with ``252 / prediction_horizon``.
        metrics: which metrics to compute (default: all).
        interpretability: add SHAP importances and attention maps to the report.
    """
    evaluator = ModelEvaluator(train_data=bundle.train, periods_per_year=252.0 / prediction_horizon)
    val = evaluator.evaluate(model, bundle.val, metrics=metrics)
    test = evaluator.evaluate(model, bundle.test, metrics=metrics)
    explained = None
    if interpretability:
        from kubetrade.training.evaluation import interpretability_summary

        explained = interpretability_summary(model, bundle.train, bundle.test, bundle.feature_names)
    report = Path(report_path)
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = report.with_name(f".{report.name}.tmp{os.getpid()}")
    evaluator.generate_report(
        test, tmp, title=f"kubetrade test evaluation (run {tracker.run_id})",
        interpretability=explained,
    )  # fmt: skip
    os.replace(tmp, report)
    flat = {**flat_metrics(val, "val_"), **flat_metrics(test, "test_")}
    tracker.log_metrics({**flat, **(extra_metrics or {})})
    return Evaluation(val, test, flat, report, explained)


@dataclass
class Exported:
    """Results of :func:`export_and_log`."""

    result: ExportResult
    parity: dict[str, float]
    model_uri: str


def export_and_log(
    model: HybridCNNLSTM,
    bundle: DatasetBundle,
    export_dir: str | Path,
    tracker: MlflowTracker,
    *,
    checkpoint: str | Path | None = None,
    serving_config: TrainingConfig | None = None,
) -> Exported:
    """Export ``model`` with the parity gate (max |diff| on real test windows), then log to
    the tracker's run: the parity metrics, the export folder, ``checkpoint`` and the pyfunc
    model over the TorchScript file (no pickle); ``export_info.json`` records the model URI
    and every file's SHA-256 for ``kubetrade register``.

    Args:
        serving_config: when given, the serving spec (scaler + features, for the model
            server) is written into the export folder before it is logged.
    """
    from kubetrade.registry import write_export_info
    from kubetrade.registry.hybrid_pyfunc import log_hybrid

    exported = export_model(model, export_dir, bundle.test)
    parity = {
        f"parity_{fmt}_{name}": diff
        for fmt, outs in exported.max_abs_diff.items()
        for name, diff in outs.items()
    }
    tracker.log_metrics(parity)
    if serving_config is not None:
        from kubetrade.serving.spec import write_serving_spec

        write_serving_spec(export_dir, bundle, serving_config)
    tracker.log_artifact(export_dir, "export")
    if checkpoint:
        tracker.log_artifact(checkpoint, "checkpoints")
    run_id = str(tracker.run_id)
    model_uri = log_hybrid(export_dir, exported.files(), tracker.tracking_uri, run_id,
                           input_shape=tuple(bundle.test.X.shape[1:]))  # fmt: skip
    write_export_info(export_dir, model_uri, run_id, exported.files())
    return Exported(exported, parity, model_uri)
