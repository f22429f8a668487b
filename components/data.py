"""Data components: resolve -> ingest -> validate -> features (Feast) -> split.

Thin KFP wrappers: each declares typed artifacts and calls one function of
:mod:`kubetrade.pipeline.steps`. They are lightweight Python components whose
``base_image`` is our image (kubetrade baked in, ``install_kfp_package=False``),
so the same component runs under ``kfp.local.SubprocessRunner`` here and in a pod
on Kubeflow.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from kubetrade.components.images import BASE_IMAGE

__all__ = ["resolve_op", "ingest_op", "validate_op", "features_op", "split_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def resolve_op(
    symbols: list,
    start_date: str,
    end_date: str,
    data_source: str,
    epochs: int,
    model_size: str,
    rl_agents: list,
    rl_timesteps: int,
    tuning_trials: int,
    walk_forward_folds: int,
    backend: str,
    run_config: Output[Artifact],
) -> list:
    """Load the config files baked into the image, apply this run's form and write the
    resolved run config (JSON) every later step reads; returns the walk-forward fold indices."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.run_form import resolve_step

    form = {
        "symbols": symbols, "start_date": start_date, "end_date": end_date,
        "data_source": data_source, "epochs": epochs, "model_size": model_size,
        "rl_agents": rl_agents, "rl_timesteps": rl_timesteps, "tuning_trials": tuning_trials,
        "walk_forward_folds": walk_forward_folds, "backend": backend,
    }  # fmt: skip
    return run_step("resolve", lambda: resolve_step(form, run_config.path))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_op(
    run_config: Input[Artifact], ohlcv: Output[Dataset], metrics: Output[Metrics]
) -> None:
    """Load OHLCV (embedded, files or synthetic) into the canonical Parquet table."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, ingest_step

    summary = run_step(
        "ingest",
        lambda: ingest_step(RunConfig.from_file(run_config.path), ohlcv.path),
        metrics=metrics,
    )
    ohlcv.metadata.update(summary)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate_op(
    run_config: Input[Artifact],
    ohlcv: Input[Dataset],
    data_docs: Output[HTML],
    quality_report: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Great Expectations quality gate; fails the run below the score threshold."""
    from kubetrade.pipeline.component_runtime import named_file, run_step
    from kubetrade.pipeline.steps import RunConfig, validate_step

    docs_path = named_file(data_docs, ".html")
    run_step(
        "validate",
        lambda: validate_step(
            RunConfig.from_file(run_config.path), ohlcv.path, docs_path, quality_report.path
        ),
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def features_op(
    run_config: Input[Artifact],
    ohlcv: Input[Dataset],
    features: Output[Dataset],
    feast_repo: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Causal feature engineering, then a Feast repo (apply + materialize)."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, features_step

    run_step(
        "features",
        lambda: features_step(
            RunConfig.from_file(run_config.path), ohlcv.path, features.path, feast_repo.path
        ),
        metrics=metrics,
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split_op(
    run_config: Input[Artifact],
    features: Input[Dataset],
    feast_repo: Input[Artifact],
    bundle: Output[Dataset],
    metrics: Output[Metrics],
) -> None:
    """Point-in-time training table from Feast -> purged time splits -> windows."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, split_step

    summary = run_step(
        "split",
        lambda: split_step(
            RunConfig.from_file(run_config.path), features.path, feast_repo.path, bundle.path
        ),
        metrics=metrics,
    )
    bundle.metadata.update(summary)
