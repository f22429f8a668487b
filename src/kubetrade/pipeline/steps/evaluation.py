"""Walk-forward steps (one fold per task, then the aggregate) and the evaluation gate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from kubetrade.config.pipeline import RegistryGateConfig
from kubetrade.config.run import RunConfig
from kubetrade.pipeline.steps.common import (
    atomic_path,
    load_trained,
    read_json,
    run_tracker,
    write_json,
)

__all__ = ["fold_step", "count_trials", "walk_forward_step", "evaluation_gate"]

#: ``registry.evaluation_tolerance``'s default (config/pipeline.yaml sets it per run)
DEFAULT_TOLERANCE: float = RegistryGateConfig.model_fields["evaluation_tolerance"].default


def fold_step(
    run: RunConfig,
    fold_index: int,
    ohlcv_path: str | Path,
    bundle_path: str | Path,
    model_dir: str | Path,
    ensemble_eval_path: str | Path | None,
    out_path: str | Path,
) -> dict[str, Any]:
    """One walk-forward fold (a ParallelFor task): the test period cut into
    ``validation.cv_folds`` blocks; the trained hybrid and RL ensemble scored on block
    ``fold_index``, the baselines refit on everything up to the purge gap before it
    (:mod:`kubetrade.training.walk_forward` says who trained on what)."""
    from kubetrade.data.splits import TimeSeriesSplitter, load_bundle
    from kubetrade.errors import ConfigError
    from kubetrade.training.walk_forward import evaluate_fold, walk_forward_folds

    n_folds = run.training.validation.cv_folds
    if not 0 <= int(fold_index) < n_folds:
        raise ConfigError(f"fold {fold_index} is outside validation.cv_folds={n_folds}")
    bundle = load_bundle(bundle_path)
    calendar = pd.read_parquet(ohlcv_path, columns=["timestamp"])["timestamp"].unique()
    gap = TimeSeriesSplitter.from_config(run.training).gap
    fold = walk_forward_folds(calendar, bundle.periods["test"], n_folds, gap)[int(fold_index)]
    model, _ = load_trained(model_dir)
    ensemble = read_json(ensemble_eval_path) if ensemble_eval_path else None
    ppy = 252.0 / run.training.data.prediction_horizon
    result = evaluate_fold(fold, bundle, model, ppy, ensemble)
    write_json(result, out_path)
    summary: dict[str, Any] = {"fold": int(fold_index), "windows": result["n_windows"]}
    for name, values in result["metrics"].items():
        for key in ("accuracy", "sharpe_ratio"):
            if key in values:
                summary[f"{name}_{key}"] = values[key]
    return summary


def count_trials(tuning_dir: str | Path | None, ensemble_eval: dict[str, Any] | None) -> int:
    """Every configuration tried in a run, for the deflated Sharpe ratio: the tuning study's
    trials (pruned and failed ones too; 1 without tuning), each RL agent, and the ensemble."""
    n_tuning = 1
    best = Path(tuning_dir) / "tuning" / "best_params.json" if tuning_dir else None
    if best is not None and best.is_file():
        study = read_json(best).get("study") or {}
        n_tuning = max(1, int(study.get("n_trials", 1)))
    n_agents = len((ensemble_eval or {}).get("weights", {}))
    return n_tuning + n_agents + (1 if n_agents else 0)


def walk_forward_step(
    run: RunConfig,
    fold_paths: list[str],
    tuning_dir: str | Path | None,
    ensemble_eval_path: str | Path | None,
    model_dir: str | Path | None,
    out_path: str | Path,
    report_path: str | Path,
    extra_artifacts: dict[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Aggregate the fold results: fold means with intervals, block-bootstrap intervals,
    Sharpe difference to buy-and-hold and the deflated Sharpe ratio (counting every
    configuration tried); write JSON + HTML and log both, with ``extra_artifacts`` (the
    backtest's after-cost report and results, the Data Docs), to the training's MLflow run."""
    from kubetrade.backtest.report import write_walk_forward_report
    from kubetrade.training.walk_forward import aggregate_folds

    folds = []
    for p in fold_paths:
        folds.append(read_json(p))
    ensemble = read_json(ensemble_eval_path) if ensemble_eval_path else None
    n_trials = count_trials(tuning_dir, ensemble)
    agg = aggregate_folds(
        folds,
        n_trials,
        252.0 / run.training.data.prediction_horizon,
        seed=run.training.training.seed,
    )
    write_json(agg, out_path)
    tmp = atomic_path(report_path)
    write_walk_forward_report(agg, folds, tmp)
    os.replace(tmp, report_path)
    summary: dict[str, Any] = {"folds": agg["n_folds"], "trials_counted": n_trials}
    for name, stats in agg["fold_mean"].items():
        for key in ("sharpe_ratio", "accuracy"):
            if key in stats:
                ci = stats[key]
                summary[f"{name}_fold_mean_{key}"] = ci["mean"]
                summary[f"{name}_fold_mean_{key}_low"] = ci["low"]
                summary[f"{name}_fold_mean_{key}_high"] = ci["high"]
        dsr = agg["whole_period"][name].get("deflated_sharpe")
        if dsr is not None:
            summary[f"{name}_deflated_sharpe"] = dsr["dsr"]
    summary["beats_buy_and_hold_significantly"] = len(agg["beats_buy_and_hold"])
    if model_dir is not None:
        info = read_json(Path(model_dir) / "train_result.json")
        tracker = run_tracker(run, run_id=info["run_id"])
        tracker.start()
        tracker.log_metrics({f"wf_{k}": v for k, v in summary.items()})
        # MLflow previews by file extension: stage named copies in this step's own folder
        staging = Path(out_path).parent / "mlflow_reports"
        staging.mkdir(parents=True, exist_ok=True)
        files: dict[str, str | Path] = {
            "walk_forward.html": report_path,
            "walk_forward.json": out_path,
        }
        for name, path in {**files, **(extra_artifacts or {})}.items():
            src = Path(path)
            if src.is_file():
                shutil.copyfile(src, staging / name)
                tracker.log_artifact(staging / name, "reports")
            elif src.is_dir():
                tracker.log_artifact(src, f"reports/{name}")
        tracker.set_tags({"walk_forward_verdict": agg["verdict"]})
    print(f"[kubetrade] walk-forward: {agg['verdict']}", flush=True)
    return summary


def evaluation_gate(results_path: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """``"pass"`` when the model's test metrics are finite and its accuracy is at least
    the majority-class baseline's minus ``tolerance``; otherwise ``"fail"`` (no registration).
    A results file that cannot be read, or lacks those metrics, is ``"fail"`` too."""
    import math

    try:
        test = read_json(results_path)["test"]
        model, majority = test["model"], test["baselines"]["majority_class"]
        finite = all(math.isfinite(float(v)) for v in model.values())
        ok = finite and float(model["accuracy"]) >= float(majority["accuracy"]) - tolerance
    except (OSError, ValueError, KeyError, TypeError):
        return "fail"
    return "pass" if ok else "fail"
