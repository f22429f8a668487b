"""Walk-forward components: one task per fold (ParallelFor), then the aggregate."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from kubetrade.components.images import BASE_IMAGE

__all__ = ["fold_op", "walk_forward_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fold_op(
    run_config: Input[Artifact],
    fold: int,
    ohlcv: Input[Dataset],
    bundle: Input[Dataset],
    model: Input[Model],
    ensemble_evaluation: Input[Artifact],
    result: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Score the trained hybrid, the RL ensemble and refit baselines on one fold's test block."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, fold_step

    run_step(
        f"fold[{fold}]",
        lambda: fold_step(
            RunConfig.from_file(run_config.path),
            fold,
            ohlcv.path,
            bundle.path,
            model.path,
            ensemble_evaluation.path,
            result.path,
        ),  # fmt: skip
        metrics=metrics,
    )
    result.metadata["fold"] = fold


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def walk_forward_op(
    run_config: Input[Artifact],
    folds: Input[list[Artifact]],
    tuning: Input[Artifact],
    model: Input[Model],
    ensemble_evaluation: Input[Artifact],
    backtest_report: Input[HTML],
    backtest: Input[Artifact],
    data_docs: Input[HTML],
    results: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Fold means with intervals, bootstrap intervals, deflated Sharpe; logs the HTML reports
    (walk-forward, after-cost backtest, Data Docs) to the training's MLflow run."""
    from kubetrade.pipeline.component_runtime import named_file, run_step
    from kubetrade.pipeline.steps import RunConfig, walk_forward_step

    report_path = named_file(report, ".html")
    run_step(
        "walk_forward",
        lambda: walk_forward_step(
            RunConfig.from_file(run_config.path),
            [f.path for f in folds],
            tuning.path,
            ensemble_evaluation.path,
            model.path,
            results.path,
            report_path,
            extra_artifacts={
                "backtest_report.html": backtest_report.path,
                "backtest_results.json": backtest.path,
                "data_docs.html": data_docs.path,
            },
        ),
        metrics=metrics,
    )
