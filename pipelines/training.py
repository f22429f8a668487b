"""The kubetrade training pipeline: one definition for the local runner and Kubeflow.

ingest -> validate -> features (Feast) -> split -+-> train (torchrun) -> evaluate -> export -+
                                                 +-> RL agents (ParallelFor) -> ensemble ------+
    -> backtest (test period, beside buy-and-hold) -> [If evaluation gate] register (MLflow)
"""

from kfp import dsl

from kubetrade.components.data import features_op, ingest_op, split_op, validate_op
from kubetrade.components.model import backtest_op, evaluate_op, export_op, register_op, train_op
from kubetrade.components.rl import ensemble_op, rl_agent_op

__all__ = ["PIPELINE_NAME", "training_pipeline"]

PIPELINE_NAME = "kubetrade-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="OHLCV -> quality gate -> causal features (Feast) -> purged splits -> hybrid "
    "CNN+LSTM (torchrun) and RL ensemble -> backtest -> MLflow champion/challenger.",
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
    export = (
        export_op(
            run_config=run_config, bundle=split.outputs["bundle"], model=train.outputs["model"]
        )
        .after(evaluate)
        .set_display_name("export (TorchScript + ONNX)")
    )

    with dsl.ParallelFor(items=agent_types, name="rl-agents") as agent_type:
        agent = rl_agent_op(
            run_config=run_config,
            agent_type=agent_type,
            ohlcv=ingest.outputs["ohlcv"],
            features=features.outputs["features"],
            bundle=split.outputs["bundle"],
        ).set_display_name("rl agent")
    ensemble = ensemble_op(
        run_config=run_config,
        agents=dsl.Collected(agent.outputs["agent"]),
        ohlcv=ingest.outputs["ohlcv"],
        features=features.outputs["features"],
        bundle=split.outputs["bundle"],
    ).set_display_name("rl ensemble")
    backtest = backtest_op(
        run_config=run_config,
        ohlcv=ingest.outputs["ohlcv"],
        bundle=split.outputs["bundle"],
        model=train.outputs["model"],
        ensemble_evaluation=ensemble.outputs["evaluation"],
    ).set_display_name("backtest")
    with dsl.If(evaluate.outputs["Output"] == "pass", name="evaluation-gate"):
        register_op(
            run_config=run_config,
            exported=export.outputs["exported"],
            evaluation=evaluate.outputs["results"],
        ).after(backtest).set_display_name("register (MLflow champion/challenger)")
