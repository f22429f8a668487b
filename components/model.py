"""Hybrid CNN+LSTM components: train (torchrun) -> evaluate -> export."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kubetrade.components.images import BASE_IMAGE

__all__ = ["train_op", "evaluate_op", "export_op", "backtest_op", "register_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_op(
    run_config: str, bundle: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
) -> None:
    """Train with torchrun (nproc from hardware.nproc_per_node); MLflow run opened here."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, train_step

    summary = run_step(
        "train", lambda: train_step(RunConfig.from_json(run_config), bundle.path, model.path)
    )
    for key, value in summary.items():
        metrics.log_metric(key, value)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_op(
    run_config: str,
    bundle: Input[Dataset],
    model: Input[Model],
    report: Output[HTML],
    results: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Test metrics beside naive baselines; returns the registration gate, "pass" or "fail"."""
    import json

    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, evaluate_step, evaluation_gate

    summary = run_step(
        "evaluate",
        lambda: evaluate_step(
            RunConfig.from_json(run_config), bundle.path, model.path, report.path, results.path
        ),
    )
    for key, value in summary.items():
        metrics.log_metric(key, value)
    with open(results.path, encoding="utf-8") as fh:
        test = json.load(fh)["test"]
    confusion.log_confusion_matrix(test["class_names"], test["confusion_matrix"])
    gate = evaluation_gate(results.path)
    print(f"[kubetrade] evaluate: registration gate {gate}", flush=True)
    return gate


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export_op(
    run_config: str,
    bundle: Input[Dataset],
    model: Input[Model],
    exported: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """TorchScript + ONNX with a parity gate; the model is logged to MLflow only after it."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, export_step

    summary = run_step(
        "export",
        lambda: export_step(
            RunConfig.from_json(run_config), bundle.path, model.path, exported.path
        ),
    )
    for key, value in summary.items():
        metrics.log_metric(key, value)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def backtest_op(
    run_config: str,
    ohlcv: Input[Dataset],
    bundle: Input[Dataset],
    model: Input[Model],
    ensemble_evaluation: Input[Artifact],
    report: Output[HTML],
    results: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Hybrid signals and the RL ensemble on the test period, beside buy-and-hold."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, backtest_step

    summary = run_step(
        "backtest",
        lambda: backtest_step(
            RunConfig.from_json(run_config),
            ohlcv.path,
            bundle.path,
            model.path,
            ensemble_evaluation.path,
            report.path,
            results.path,
        ),  # fmt: skip
    )
    for key, value in summary.items():
        metrics.log_metric(key, value)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_op(
    run_config: str,
    exported: Input[Model],
    evaluation: Input[Artifact],
    metrics: Output[Metrics],
) -> None:
    """MLflow: new version aliased challenger; champion moves only if it is beaten."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, register_step

    summary = run_step(
        "register",
        lambda: register_step(RunConfig.from_json(run_config), exported.path, evaluation.path),
    )
    for key, value in summary.items():
        metrics.log_metric(key, value)
