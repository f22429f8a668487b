"""Hybrid CNN+LSTM components: tune -> train (torchrun / PyTorchJob) -> evaluate -> export."""

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from kubetrade.components.images import BASE_IMAGE

__all__ = [
    "tune_op",
    "train_op",
    "evaluate_op",
    "export_op",
    "backtest_op",
    "summary_op",
    "register_op",
]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def tune_op(
    run_config: Input[Artifact],
    bundle: Input[Dataset],
    tuning: Output[Artifact],
    best_config: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Optuna study (local) or Katib Experiment (kubeflow) on train + validation only;
    writes the best training config for train."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, tune_step

    run_step(
        "tune",
        lambda: tune_step(
            RunConfig.from_file(run_config.path), bundle.path, tuning.path, best_config.path
        ),
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_op(
    run_config: Input[Artifact],
    bundle: Input[Dataset],
    best_config: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Train with the tuned config: torchrun here (local) or a PyTorchJob (kubeflow)."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, train_step

    run_step(
        "train",
        lambda: train_step(
            RunConfig.from_file(run_config.path), bundle.path, model.path, best_config.path
        ),
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_op(
    run_config: Input[Artifact],
    bundle: Input[Dataset],
    model: Input[Model],
    report: Output[HTML],
    results: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Test metrics beside naive baselines; returns the registration gate, "pass" or "fail"."""
    import json

    from kubetrade.pipeline.component_runtime import named_file, run_step
    from kubetrade.pipeline.steps import RunConfig, evaluate_step, evaluation_gate

    report_path = named_file(report, ".html")
    run = RunConfig.from_file(run_config.path)
    run_step(
        "evaluate",
        lambda: evaluate_step(run, bundle.path, model.path, report_path, results.path),
        metrics=metrics,
    )
    with open(results.path, encoding="utf-8") as fh:
        test = json.load(fh)["test"]
    confusion.log_confusion_matrix(test["class_names"], test["confusion_matrix"])
    gate = evaluation_gate(results.path, run.pipeline.registry.evaluation_tolerance)
    print(f"[kubetrade] evaluate: registration gate {gate}", flush=True)
    return gate


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export_op(
    run_config: Input[Artifact],
    bundle: Input[Dataset],
    model: Input[Model],
    exported: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """TorchScript + ONNX with a parity gate; the model is logged to MLflow only after it."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, export_step

    run_step(
        "export",
        lambda: export_step(
            RunConfig.from_file(run_config.path), bundle.path, model.path, exported.path
        ),
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def backtest_op(
    run_config: Input[Artifact],
    ohlcv: Input[Dataset],
    bundle: Input[Dataset],
    model: Input[Model],
    ensemble_evaluation: Input[Artifact],
    report: Output[HTML],
    results: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Hybrid signals and the RL ensemble on the test period, beside buy-and-hold."""
    from kubetrade.pipeline.component_runtime import named_file, run_step
    from kubetrade.pipeline.steps import RunConfig, backtest_step

    report_path = named_file(report, ".html")
    run_step(
        "backtest",
        lambda: backtest_step(
            RunConfig.from_file(run_config.path),
            ohlcv.path,
            bundle.path,
            model.path,
            ensemble_evaluation.path,
            report_path,
            results.path,
        ),  # fmt: skip
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_op(
    run_config: Input[Artifact],
    exported: Input[Model],
    evaluation: Input[Artifact],
    ensemble: Input[Model],
    ensemble_evaluation: Input[Artifact],
    metrics: Output[Metrics],
) -> None:
    """MLflow: the hybrid model and the RL ensemble (pyfunc), each a new version aliased
    challenger; champion moves only if it is beaten out of sample."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, register_step

    run_step(
        "register",
        lambda: register_step(
            RunConfig.from_file(run_config.path),
            exported.path,
            evaluation.path,
            ensemble_dir=ensemble.path,
            ensemble_eval_path=ensemble_evaluation.path,
        ),
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def summary_op(
    run_config: Input[Artifact],
    tuning: Input[Artifact],
    evaluation: Input[Artifact],
    backtest: Input[Artifact],
    ensemble_evaluation: Input[Artifact],
    gate: str,
    walk_forward: Input[Artifact],
    model: Input[Model],
    summary: Output[Markdown],
) -> None:
    """Markdown run summary for the KFP UI: tuning, test metrics beside baselines, backtest,
    walk-forward significance, and a link to the training's MLflow run."""
    from kubetrade.pipeline.component_runtime import named_file, run_step
    from kubetrade.pipeline.steps import RunConfig, summary_step
    from kubetrade.pipeline.ui import append_mlflow_link

    run = RunConfig.from_file(run_config.path)
    summary_path = named_file(summary, ".md")
    run_step(
        "summary",
        lambda: summary_step(
            run,
            tuning.path,
            evaluation.path,
            backtest.path,
            ensemble_evaluation.path,
            gate,
            summary_path,
            walk_forward.path,
        ),  # fmt: skip
    )
    run_step("summary (MLflow link)", lambda: append_mlflow_link(run, model.path, summary_path))
