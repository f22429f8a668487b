"""``kubetrade register``: a model version through the champion gate (hybrid export or RL
ensemble)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubetrade.cli.common import out
from kubetrade.errors import KubetradeError


def register(
    export_dir: Annotated[
        Path | None, typer.Option(help="hybrid model: export folder with model_uri.json")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="hybrid model: evaluation results JSON (test.model.*)")
    ] = None,
    ensemble_dir: Annotated[
        Path | None, typer.Option(help="RL ensemble: folder EnsembleAgent.save wrote")
    ] = None,
    ensemble_report: Annotated[
        Path | None, typer.Option(help="RL ensemble: its test-period report JSON")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="registered model name")] = None,
    metric: Annotated[
        str, typer.Option(help="out-of-sample metric that decides (its direction is known)")
    ] = "sharpe_ratio",
    margin: Annotated[
        float | None,
        typer.Option(
            help="improvement over the champion needed (default: pipeline config's "
            "registry.margin / rl_margin)"
        ),
    ] = None,  # fmt: skip
    force: Annotated[
        bool, typer.Option("--force", help="promote even if the gate says no (needs --reason)")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="why --force (recorded as a tag)")] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: env)"),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="extra version tag KEY=VALUE")] = None,
) -> None:
    """Register a model version (alias challenger); promote it to champion only through the
    gate: the results must be the export's own, scored on the champion's test period and
    symbols, better than the baselines and than the champion by more than the margin.
    Prints the outcome (with the gate's reason) as JSON."""
    import json
    import math

    from kubetrade.config import RegistryGateConfig, split_key_value
    from kubetrade.registry import read_oos_metric, register_export
    from kubetrade.registry.champion import metric_direction

    if not tracking_uri:
        raise KubetradeError("no MLflow store: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    if force and not (reason and reason.strip()):
        raise KubetradeError("--force needs --reason '...' (it is recorded on the version)")
    if reason and not force:
        raise KubetradeError("--reason is only used with --force")
    if margin is not None and not (math.isfinite(margin) and margin >= 0):
        raise KubetradeError(f"--margin {margin}: expected a number >= 0")
    metric_direction(metric)  # an unknown metric is refused before anything is read
    defaults = RegistryGateConfig()
    tags: dict[str, str] = {}
    for item in tag or []:
        key, value = split_key_value(item, "--tag", "data_range=a..b")
        if key.startswith(("kubetrade.", "oos_", "sha256_")):
            raise KubetradeError(f"--tag {key!r}: that tag is set by the gate itself")
        tags[key] = value
    force_reason = reason.strip() if force and reason else None
    if export_dir is not None and results is not None and ensemble_dir is None:
        from kubetrade.registry.hybrid import read_results, results_baselines

        promotion = register_export(
            export_dir, read_oos_metric(results, metric), model_name=model_name or
            "kubetrade-hybrid", metric=metric, tags=tags, tracking_uri=tracking_uri,
            margin=defaults.margin if margin is None else margin, force_reason=force_reason,
            baselines=results_baselines(read_results(results), metric),
        )  # fmt: skip
    elif ensemble_dir is not None and ensemble_report is not None and export_dir is None:
        from kubetrade.registry.hybrid import read_results
        from kubetrade.registry.rl_pyfunc import (
            ensemble_sha256,
            register_rl_ensemble,
            report_baselines,
            report_data_range,
        )

        report = read_results(ensemble_report)
        recorded = report.get("sha256")
        if not isinstance(recorded, dict) or not recorded:
            raise KubetradeError(
                f"{ensemble_report} records no SHA-256 of the ensemble files; pass the report "
                "the ensemble step wrote"
            )
        # before anything loads the agents: the report must be this ensemble's
        if ensemble_sha256(ensemble_dir) != recorded:
            raise KubetradeError(
                f"{ensemble_dir} is not the ensemble {ensemble_report} evaluated (SHA-256 "
                "mismatch); nothing registered"
            )
        rl_value = report.get(metric)
        if not isinstance(rl_value, int | float):
            raise KubetradeError(f"{ensemble_report} has no {metric!r}; pass the ensemble report")
        promotion = register_rl_ensemble(
            ensemble_dir, float(rl_value), tracking_uri=tracking_uri, metric=metric,
            model_name=model_name or "kubetrade-rl-ensemble", tags=tags,
            symbols=report.get("symbols"), expected_sha256=recorded,
            margin=defaults.rl_margin if margin is None else margin,
            data_range=report_data_range(report), force_reason=force_reason,
            baselines=report_baselines(report, metric),
        )  # fmt: skip
    else:
        raise KubetradeError(
            "pass either --export-dir and --results (hybrid model) or --ensemble-dir and "
            "--ensemble-report (RL ensemble)"
        )
    out.print_json(json.dumps(promotion.as_dict()))
