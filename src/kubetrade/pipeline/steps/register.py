"""The register step: the hybrid model and the RL ensemble into the MLflow registry, each
through the champion gate (``pipeline.registry``), after checking every file's SHA-256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubetrade.config.run import RunConfig
from kubetrade.pipeline.steps.common import read_json, run_tracker

__all__ = ["register_step"]


def register_step(
    run: RunConfig,
    export_dir: str | Path,
    results_path: str | Path,
    model_name: str = "kubetrade-hybrid",
    *,
    ensemble_dir: str | Path | None = None,
    ensemble_eval_path: str | Path | None = None,
) -> dict[str, Any]:
    """Register the hybrid model (a pyfunc over its TorchScript file, no pickle) and, when
    given, the RL ensemble (pyfunc); each new version gets alias ``challenger`` and moves
    ``champion`` only through the gate (``pipeline.registry``): same test period and symbols
    as the champion, better by more than the margin, and (hybrid) better than its naive
    baselines / (RL) better than buy-and-hold after costs. Every file's SHA-256 is checked
    against the one recorded when it was made, for both models, before either is
    registered; the reason of each decision is in the summary and the version's tags."""
    import hashlib

    from kubetrade.errors import RegistryError
    from kubetrade.registry import (
        ensemble_sha256,
        read_oos_metric,
        register_export,
        register_rl_ensemble,
    )
    from kubetrade.registry.hybrid import read_results, results_baselines, verify_export
    from kubetrade.registry.rl_pyfunc import report_baselines, report_data_range

    gate = run.pipeline.registry
    verify_export(export_dir)
    ensemble_report: dict[str, Any] | None = None
    if ensemble_dir is not None and ensemble_eval_path is not None:
        ensemble_report = read_json(ensemble_eval_path)
        recorded = ensemble_report.get("sha256")
        if not recorded or ensemble_sha256(ensemble_dir) != recorded:
            raise RegistryError(
                f"RL ensemble files in {ensemble_dir} changed since they were evaluated "
                "(SHA-256 mismatch or none recorded); rerun the pipeline from the ensemble step"
            )
    tracking_uri = run_tracker(run).tracking_uri
    config_hash = hashlib.sha256(run.training.model_dump_json().encode()).hexdigest()
    tags = {
        "data_range": f"{run.pipeline.start_date}..{run.pipeline.end_date}",
        "symbols": ",".join(run.pipeline.symbols),
        "config_sha256": config_hash,
    }
    results = read_results(results_path)
    baselines = results_baselines(results, gate.metric) if gate.require_beat_baselines else {}
    hybrid = register_export(
        export_dir, read_oos_metric(results_path, gate.metric), model_name=model_name,
        metric=gate.metric, tags=tags, tracking_uri=tracking_uri, margin=gate.margin,
        baselines=baselines,
    )  # fmt: skip
    summary: dict[str, Any] = {
        "model_version": int(hybrid.version),
        "promoted_to_champion": int(hybrid.promoted),
        f"oos_{gate.metric}": hybrid.value,
        "gate_reason": hybrid.reason,
    }
    if ensemble_report is not None:
        assert ensemble_dir is not None
        rl_json = json.dumps(run.rl.model_dump(mode="json"), sort_keys=True)
        rl_hash = hashlib.sha256(rl_json.encode()).hexdigest()
        rl_base = report_baselines(ensemble_report, gate.metric)
        rl = register_rl_ensemble(
            ensemble_dir, float(ensemble_report[gate.metric]), tracking_uri=tracking_uri,
            metric=gate.metric, tags={**tags, "config_sha256": rl_hash},
            symbols=ensemble_report.get("symbols"), expected_sha256=ensemble_report.get("sha256"),
            margin=gate.rl_margin, data_range=report_data_range(ensemble_report),
            baselines=rl_base if gate.require_beat_baselines else {},
        )  # fmt: skip
        summary.update(
            rl_ensemble_version=int(rl.version),
            rl_ensemble_promoted_to_champion=int(rl.promoted),
            **{f"rl_ensemble_oos_{gate.metric}": rl.value},
            rl_ensemble_gate_reason=rl.reason,
        )
    return summary
