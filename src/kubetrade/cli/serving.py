"""``kubetrade serve`` (KServe model server over the registered champion) and
``kubetrade monitor`` (drift and realized performance; retraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubetrade.cli.common import console, merged_config, out


def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="serving config")] = Path(
        "config/serving.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="override a key, e.g. --set port=9000 --set ab.challenger_weight=0.1"
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="load and verify the served versions, print them, exit")
    ] = False,
) -> None:
    """Serve the registered model (alias champion) with KServe's model server: v1 :predict and
    v2 infer, by symbol from Feast or by raw window; A/B split with the challenger."""
    from kubetrade.serving.config import ServingConfig

    cfg = merged_config(ServingConfig, config, set_, "port=9000")
    if check:
        import json

        from kubetrade.serving.predictor import Predictor

        predictor = Predictor(cfg)
        out.print_json(json.dumps({"served": predictor.served(), "model": cfg.model_name}))
        return
    from kubetrade.serving.server import serve as run_server

    run_server(cfg)


def monitor(
    config: Annotated[Path, typer.Option("--config", "-c", help="monitoring config")] = Path(
        "config/monitoring.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a key, e.g. --set thresholds.min_hit_rate=0.5"),
    ] = None,
    retrain: Annotated[
        bool, typer.Option(help="start the pipeline (champion gate) when a threshold is crossed")
    ] = False,
) -> None:
    """Feature/prediction drift (Evidently) and realized performance per served version;
    HTML report + MLflow metrics; exit 4 when a threshold is crossed (--retrain: retrain)."""
    import json

    from kubetrade.monitoring import MonitoringAlert, MonitoringConfig, retrain_command, run_monitor
    from kubetrade.monitoring import retrain as start_retraining

    cfg = merged_config(MonitoringConfig, config, set_, "current_days=30")
    result = run_monitor(cfg)
    out.print_json(json.dumps(result.as_dict(), default=str))
    if not result.alerts:
        return
    if retrain:
        console.print(f"kubetrade monitor: retraining: {' '.join(retrain_command(cfg.retrain))}")
        start_retraining(cfg.retrain)
        return
    raise MonitoringAlert("; ".join(result.alerts) + " (rerun with --retrain to retrain)")
