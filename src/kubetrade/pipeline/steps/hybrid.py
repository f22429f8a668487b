"""Hybrid CNN+LSTM steps: tune, train (torchrun or a PyTorchJob), evaluate, export."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from kubetrade.config.run import RunConfig
from kubetrade.pipeline.steps.common import (
    EXPERIMENT,
    atomic_path,
    load_trained,
    read_json,
    run_tracker,
    write_json,
)

__all__ = ["tune_step", "train_step", "evaluate_step", "export_step"]


def tune_step(
    run: RunConfig, bundle_path: str | Path, tuning_dir: str | Path, best_config_path: str | Path
) -> dict[str, Any]:
    """Tune the hybrid model on train + validation windows (the test split is dropped before
    the first trial) and write the best training config for ``train``.

    ``backend: local``: an Optuna study (TPE + pruning) in ``tuning_dir``, its first trial
    the configured values. ``backend: kubeflow``: a Katib Experiment of PyTorchJob trials.
    With ``tuning.enabled: false`` the configured training config is passed through.
    """
    import yaml

    out = Path(tuning_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not run.pipeline.tuning.enabled or not run.search_space:
        tmp = atomic_path(best_config_path)
        tmp.write_text(
            yaml.safe_dump(run.training.model_dump(mode="json"), sort_keys=False),
            encoding="utf-8",
        )
        os.replace(tmp, best_config_path)
        print("[kubetrade] tune: disabled, training with the configured values", flush=True)
        return {"tuned": 0}
    from kubetrade.data.splits import load_bundle
    from kubetrade.tuning.api import tune

    base = run.training.model_dump(mode="json")
    tracking_uri = run_tracker(run).tracking_uri
    common: dict[str, Any] = dict(
        run_dir=out, experiment_name=f"{EXPERIMENT}-tuning", tracking_uri=tracking_uri,
        threads_per_trial=run.pipeline.tuning.threads_per_trial,
    )  # fmt: skip
    if run.pipeline.backend == "kubeflow":
        import uuid

        from kubetrade.k8s.train_step import katib_options, resolve_profile

        options = katib_options(resolve_profile(), uuid.uuid4().hex, bundle_path, run.training)
        result = tune(base, run.search_space, backend="katib", katib=options, **common)
    else:
        result = tune(base, run.search_space, bundle=load_bundle(bundle_path), **common)
    from kubetrade.tuning.api import TuningResult

    assert isinstance(result, TuningResult)
    tmp = atomic_path(best_config_path)
    shutil.copyfile(result.best_config_path, tmp)
    os.replace(tmp, best_config_path)
    summary: dict[str, Any] = {"tuned": 1, f"best_{result.metric}": result.best_value}
    summary.update({f"best_{k}": v for k, v in result.best_params.items()})
    if result.study is not None:
        summary.update(
            trials_complete=result.study.n_complete,
            trials_pruned=result.study.n_pruned,
            trials_failed=result.study.n_failed,
            pruning_saving=result.study.pruning_saving,
        )
        default = _trial_zero_value(result.study.storage, result.study.study_name)
        if default is not None:
            summary[f"default_config_{result.metric}"] = default
            info = read_json(result.best_params_path)
            write_json({**info, "default_value": default}, result.best_params_path)
    print(
        f"[kubetrade] tune: best {result.metric}={result.best_value:.4g} with {result.best_params}",
        flush=True,
    )
    return summary


def _trial_zero_value(storage: str, study_name: str) -> float | None:
    """The value of the study's trial 0 (the configured values), if it completed."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = [t for t in study.trials if t.number == 0]
    if trials and trials[0].state == optuna.trial.TrialState.COMPLETE:
        return float(trials[0].value)  # type: ignore[arg-type]
    return None


def train_step(
    run: RunConfig,
    bundle_path: str | Path,
    model_dir: str | Path,
    best_config_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train the hybrid CNN+LSTM with the tune step's best config (when given).

    ``backend: local``: torchrun with ``hardware.nproc_per_node`` processes in this task.
    ``backend: kubeflow``: a PyTorchJob (:func:`kubetrade.k8s.train_step.train_on_cluster`).
    Opens the MLflow run that evaluate and export add to; ``model_dir`` gets the
    checkpoints, ``train_result.json`` (with the MLflow run id) and the resolved config.
    """
    import yaml

    from kubetrade.config import flatten, load_training_config
    from kubetrade.data.splits import load_bundle
    from kubetrade.training.pipeline import TrainingPipeline

    training = load_training_config(best_config_path) if best_config_path else run.training
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(bundle_path)
    (out / "training_config.yaml").write_text(
        yaml.safe_dump(training.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    tracker = run_tracker(run)
    run_id = tracker.start()
    try:
        tracker.log_params(flatten(training))
        tracker.set_tags(
            {
                "symbols": ",".join(run.pipeline.symbols),
                "data_range": f"{run.pipeline.start_date}..{run.pipeline.end_date}",
                "nproc_per_node": training.hardware.nproc_per_node,
                "backend": run.pipeline.backend,
                "tuned": str(bool(best_config_path) and run.pipeline.tuning.enabled).lower(),
                **{f"period_{k}": f"{a}..{b}" for k, (a, b) in bundle.periods.items()},
            }
        )
        tracker.log_artifact(out / "training_config.yaml", "config")
        if run.pipeline.backend == "kubeflow":
            from kubetrade.k8s.train_step import train_on_cluster

            result = train_on_cluster(training, bundle_path, out, run_id, tracker.tracking_uri)
        else:
            pipe = TrainingPipeline(config=training, run_dir=out, register=False, verbose=True)
            _, result = pipe.train_model(bundle, tracker)
    except BaseException:
        tracker.end("FAILED")
        raise
    from dataclasses import asdict

    write_json({"run_id": run_id, **asdict(result)}, out / "train_result.json")
    return {
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
    }


def evaluate_step(
    run: RunConfig,
    bundle_path: str | Path,
    model_dir: str | Path,
    report_path: str | Path,
    results_path: str | Path,
) -> dict[str, Any]:
    """Test-split metrics of the model beside majority-class, logistic-regression and
    buy-and-hold baselines; HTML report; everything logged to the training's MLflow run."""
    from kubetrade.data.splits import load_bundle
    from kubetrade.training.evaluate_export import evaluate_model

    bundle = load_bundle(bundle_path)
    model, info = load_trained(model_dir)
    tracker = run_tracker(run, run_id=info["run_id"])
    tracker.start()
    # validation.metrics chooses what is computed, logged and reported; accuracy and
    # sharpe_ratio are always kept (the registration gate and the summary read them)
    wanted = list(dict.fromkeys([*run.training.validation.metrics, "accuracy", "sharpe_ratio"]))
    evaluation = evaluate_model(
        model, bundle, tracker, report_path, run.training.data.prediction_horizon,
        metrics=wanted, interpretability=True,
    )  # fmt: skip
    val, test, explained = evaluation.val, evaluation.test, evaluation.interpretability or {}
    # MLflow previews a file by its extension: log the report as evaluation_report.html
    staging = Path(results_path).parent / "mlflow_reports"
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report_path, staging / "evaluation_report.html")
    tracker.log_artifact(staging / "evaluation_report.html", "reports")
    write_json(
        {k: v for k, v in explained.items() if k != "attention_png"},
        staging / "shap_importance.json",
    )
    tracker.log_artifact(staging / "shap_importance.json", "reports")
    test.pop("series", None)
    write_json({"val": {k: v for k, v in val.items() if k != "series"}, "test": test}, results_path)
    summary = {f"test_{k}": v for k, v in test["model"].items()}
    for name, values in test["baselines"].items():
        for key in ("accuracy", "sharpe_ratio"):
            if key in values:
                summary[f"test_{name}_{key}"] = values[key]
    return summary


def export_step(
    run: RunConfig, bundle_path: str | Path, model_dir: str | Path, export_dir: str | Path
) -> dict[str, Any]:
    """TorchScript + ONNX (+ the ONNX serving graph) export with a parity gate (max |diff|
    <= 1e-4 on real test windows); only then is the model logged and the MLflow run finished."""
    from kubetrade.data.splits import load_bundle
    from kubetrade.training.evaluate_export import export_and_log

    bundle = load_bundle(bundle_path)
    model, info = load_trained(model_dir)
    tracker = run_tracker(run, run_id=info["run_id"])
    tracker.start()
    try:
        exported = export_and_log(
            model, bundle, export_dir, tracker,
            checkpoint=info["final_model_path"], serving_config=run.training,
        )  # fmt: skip
    except BaseException:
        tracker.client.set_terminated(info["run_id"], status="FAILED")
        raise
    tracker.client.set_terminated(info["run_id"], status="FINISHED")
    return {**exported.parity, "parity_windows": exported.result.n_windows}
