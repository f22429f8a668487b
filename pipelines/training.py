"""The kubetrade training pipeline: one definition for the local runner and Kubeflow.

ingest -> validate -> features (Feast) -> split  (later issues add tune, train,
evaluate, export, RL agents, ensemble, backtest, register).
"""

from kfp import dsl

from kubetrade.components.data import features_op, ingest_op, split_op, validate_op

__all__ = ["PIPELINE_NAME", "training_pipeline"]

PIPELINE_NAME = "kubetrade-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="OHLCV -> quality gate -> causal features in Feast -> purged time splits.",
)
def training_pipeline(run_config: str) -> None:
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
    split_op(
        run_config=run_config,
        features=features.outputs["features"],
        feast_repo=features.outputs["feast_repo"],
    ).set_display_name("split")
