"""RL components: one task per agent type (ParallelFor), then the ensemble."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kubetrade.components.images import BASE_IMAGE

__all__ = ["rl_agent_op", "ensemble_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def rl_agent_op(
    run_config: Input[Artifact],
    agent_type: str,
    ohlcv: Input[Dataset],
    features: Input[Dataset],
    bundle: Input[Dataset],
    agent: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Train one SB3 agent on the train period; validation metrics only."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, rl_agent_step

    run_step(
        f"rl_agent[{agent_type}]",
        lambda: rl_agent_step(
            RunConfig.from_file(run_config.path),
            agent_type,
            ohlcv.path,
            features.path,
            bundle.path,
            agent.path,
        ),  # fmt: skip
        metrics=metrics,
    )
    agent.metadata["agent_type"] = agent_type


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ensemble_op(
    run_config: Input[Artifact],
    agents: Input[list[Model]],
    ohlcv: Input[Dataset],
    features: Input[Dataset],
    bundle: Input[Dataset],
    ensemble: Output[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Weighted voting (validation Sharpe) + Hedge + Thompson sampling; test-period metrics."""
    from kubetrade.pipeline.component_runtime import run_step
    from kubetrade.pipeline.steps import RunConfig, ensemble_step

    run_step(
        "ensemble",
        lambda: ensemble_step(
            RunConfig.from_file(run_config.path),
            [a.path for a in agents],
            ohlcv.path,
            features.path,
            bundle.path,
            ensemble.path,
            evaluation.path,
        ),  # fmt: skip
        metrics=metrics,
    )
