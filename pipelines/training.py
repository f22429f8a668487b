"""The kubetrade training pipeline: one definition for the local runner and Kubeflow.

ingest -> validate -> features (Feast) -> split  (later issues add tune, train,
evaluate, export, RL agents, ensemble, backtest, register).
"""

from kfp import dsl

from kubetrade.components.data import features_op, ingest_op, split_op, validate_op
from kubetrade.components.model import evaluate_op, export_op, train_op
from kubetrade.components.rl import ensemble_op, rl_agent_op

__all__ = ["PIPELINE_NAME", "training_pipeline"]

PIPELINE_NAME = "kubetrade-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="OHLCV -> quality gate -> causal features in Feast -> purged time splits.",
)
def training_pipeline(run_config: str, agent_types: list = ["ppo", "sac", "td3", "dqn"]) -> None:  # noqa: B006
    """Args:
    run_config: the resolved RunConfig as JSON (``kubetrade compile`` embeds the
        defaults; ``kubetrade run`` passes the local config).
    """
    ingest = ingest_op(run_config=run_config).set_display_name("ingest")
    validate = validate_op(run_config=run_config, ohlcv=ingest.outputs["ohlcv"]).set_display_name(
        "validate (Great Expectations)"
    )
    features = (
        features_op(run_config=run_config, ohlcv=ingest.outputs["ohlcv"])
        .after(validate)
        .set_display_name("features (Feast)")
    )
    split = split_op(
        run_config=run_config,
        features=features.outputs["features"],
        feast_repo=features.outputs["feast_repo"],
    ).set_display_name("split")

    train = train_op(run_config=run_config, bundle=split.outputs["bundle"]).set_display_name(
        "train (torchrun)"
    )
    evaluate = evaluate_op(
        run_config=run_config, bundle=split.outputs["bundle"], model=train.outputs["model"]
    ).set_display_name("evaluate")
    export_op(
        run_config=run_config, bundle=split.outputs["bundle"], model=train.outputs["model"]
    ).after(evaluate).set_display_name("export (TorchScript + ONNX)")

    with dsl.ParallelFor(items=agent_types, name="rl-agents") as agent_type:
        agent = rl_agent_op(
            run_config=run_config,
            agent_type=agent_type,
            ohlcv=ingest.outputs["ohlcv"],
            features=features.outputs["features"],
            bundle=split.outputs["bundle"],
        ).set_display_name("rl agent")
    ensemble_op(
        run_config=run_config,
        agents=dsl.Collected(agent.outputs["agent"]),
        ohlcv=ingest.outputs["ohlcv"],
        features=features.outputs["features"],
        bundle=split.outputs["bundle"],
    ).set_display_name("rl ensemble")
