"""The pipeline's steps as plain functions (no kfp import).

Each KFP component in ``components/`` calls exactly one of these. A step takes
the resolved run configuration (:class:`RunConfig`, passed between components as
JSON) and file paths, writes its outputs atomically (temp file, then rename) and
returns a small JSON-able summary that the component logs as KFP ``Metrics``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from kubetrade.config import (
    PipelineConfig,
    StrictModel,
    TrainingConfig,
    load_pipeline_config,
    load_training_config,
)

__all__ = [
    "RunConfig",
    "load_run_config",
    "load_market_data",
    "ingest_step",
    "validate_step",
    "features_step",
    "split_step",
    "atomic_path",
]


class RunConfig(StrictModel):
    """Everything a run needs, resolved once and passed to every step as JSON."""

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    rl: dict[str, Any] = Field(default_factory=dict, description="trading_env + rl_training YAML")
    search_space: dict[str, Any] = Field(
        default_factory=dict, description="the tune step's tuning file, overrides applied"
    )

    def to_json(self) -> str:
        return self.model_dump_json()

    def agent_types(self) -> list[str]:
        """RL agent types to train (one pipeline task each)."""
        from kubetrade.rl.config import DEFAULT_AGENT_TYPES

        return list(self.rl.get("rl_training", {}).get("agent_types", DEFAULT_AGENT_TYPES))

    def fold_indices(self) -> list[int]:
        """Walk-forward folds to evaluate (one pipeline task each): ``validation.cv_folds``."""
        return list(range(self.training.validation.cv_folds))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.model_validate_json(text)

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """The ``run_config`` artifact the pipeline's resolve task writes."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def load_run_config(
    pipeline_path: str | Path | None = "config/pipeline.yaml",
    overrides: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> RunConfig:
    """Load pipeline.yaml and the files it points at into one :class:`RunConfig`.

    ``overrides`` are dotted keys into the pipeline config (``symbols``,
    ``source.type`` ...) applied before validation; ``params`` are run-form values
    (:class:`~kubetrade.pipeline.run_form.RunParams` names, e.g. ``{"epochs": 3}``) applied
    after it, as the pipeline's resolve task applies them.
    """
    if params:
        from kubetrade.pipeline.run_form import apply_run_params, params_from_run

        run = load_run_config(pipeline_path, overrides)
        return apply_run_params(run, {**params_from_run(run).model_dump(), **params})
    from kubetrade.config import apply_overrides, load_yaml_model

    if overrides:
        from kubetrade.config import read_yaml_file

        base: dict[str, Any] = {}
        if pipeline_path is not None:
            base = read_yaml_file(pipeline_path, "pipeline config") or {}
        pipe = load_yaml_model(PipelineConfig, data=apply_overrides(base, overrides))
    else:
        pipe = load_pipeline_config(pipeline_path)
    train = load_training_config(pipe.training_config, pipe.training_overrides)
    from kubetrade.rl.config import RLTrainingConfig, TradingEnvConfig

    rl: dict[str, Any] = {}
    for key, path, model in (
        ("trading_env", pipe.trading_env_config, TradingEnvConfig),
        ("rl_training", pipe.rl_training_config, RLTrainingConfig),
    ):
        # validated now (unknown keys, rainbow_dqn, ...) so a bad file fails before any run
        rl[key] = load_yaml_model(model, path).model_dump(mode="json", exclude_unset=True)
    return RunConfig(pipeline=pipe, training=train, rl=rl, search_space=_search_space(pipe, train))


def _search_space(pipe: PipelineConfig, train: TrainingConfig) -> dict[str, Any]:
    """The tune step's tuning file with ``tuning.overrides``, checked against the training
    config now (a bad range or a width the model cannot take fails before any run)."""
    if not pipe.tuning.enabled:
        return {}
    from kubetrade.config import read_yaml_file
    from kubetrade.tuning.spec import apply_spec_overrides, load_tuning_spec

    data = read_yaml_file(pipe.tuning.search_space, "search space") or {}
    spec = load_tuning_spec(apply_spec_overrides(data, pipe.tuning.overrides))
    spec.validate(train.model_dump(mode="json"))
    return spec.to_dict()


def atomic_path(path: str | Path) -> Path:
    """A sibling temp path; write there, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    tmp = atomic_path(path)
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _write_json(obj: Any, path: str | Path) -> None:
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def load_market_data(cfg: PipelineConfig) -> pd.DataFrame:
    """Read the configured source and select the configured symbols and dates."""
    from kubetrade.data import sources

    src = cfg.source
    if src.type == "embedded":
        df = sources.load_embedded()
    elif src.type == "files":
        df = sources.load_files(src.paths, src.column_map)
    else:
        df = sources.generate_synthetic(
            n_symbols=src.synthetic_symbols, n_years=src.synthetic_years, seed=src.seed
        )
    symbols = cfg.symbols
    if src.type == "synthetic" and symbols == PipelineConfig().symbols:
        symbols = sorted(df["symbol"].unique())  # default symbols mean "all synthetic ones"
    return sources.select(df, symbols, cfg.start_date, cfg.end_date)


def ingest_step(run: RunConfig, out_path: str | Path) -> dict[str, Any]:
    """Load OHLCV into one canonical Parquet table."""
    df = load_market_data(run.pipeline)
    _write_parquet(df, out_path)
    return {
        "rows": len(df),
        "symbols": int(df["symbol"].nunique()),
        "start": f"{df['timestamp'].min():%Y-%m-%d}",
        "end": f"{df['timestamp'].max():%Y-%m-%d}",
    }


def validate_step(
    run: RunConfig,
    data_path: str | Path,
    docs_path: str | Path,
    report_path: str | Path | None = None,
) -> dict[str, Any]:
    """Great Expectations gate; raises QualityGateError (after writing Data Docs) on failure."""
    from kubetrade.data.quality import DataQualityValidator, write_data_docs

    df = pd.read_parquet(data_path)
    validator = DataQualityValidator.from_config(run.pipeline.quality)
    report = validator.validate_batch(df)
    # the full GE site goes beside the artifacts; the HTML artifact is its validation page
    site_dir = Path(docs_path).parent / "data_docs_site"
    page = write_data_docs(report, site_dir, page="validation")
    shutil.copyfile(page, docs_path)
    if report_path is not None:
        _write_json(report.to_dict(), report_path)
    if not report.passed:
        from kubetrade.data.quality import ensure_quality

        ensure_quality(df, validator, report=report)
    return {"overall_score": report.overall_score, "failed_checks": len(report.issues)}


def features_step(
    run: RunConfig,
    data_path: str | Path,
    features_path: str | Path,
    feast_repo: str | Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Engineer causal features, write them, and build + materialize the Feast repo."""
    from kubetrade.data.feature_store import build_feature_store
    from kubetrade.data.features import FeatureEngineer

    df = pd.read_parquet(data_path)
    fe = FeatureEngineer()
    feats = fe.build_all(
        df, indicators=run.pipeline.indicators, advanced=list(run.pipeline.advanced_features)
    )
    _write_parquet(feats, features_path)
    repo = Path(feast_repo)
    if repo.exists():
        shutil.rmtree(repo)  # rerun of the step: rebuild the store from scratch
    build_feature_store(feats, repo)
    return {"rows": len(feats), "feature_columns": len(feats.columns) - 7}


def split_step(
    run: RunConfig,
    features_path: str | Path,
    feast_repo: str | Path,
    bundle_path: str | Path,
) -> dict[str, Any]:
    """Read the training table from Feast (point-in-time join) and build windows."""
    from kubetrade.data.feature_store import FeatureStoreBuilder, training_table
    from kubetrade.data.splits import prepare_datasets, save_bundle

    feats = pd.read_parquet(features_path)
    store = FeatureStoreBuilder(Path(feast_repo))
    table = training_table(store, feats)
    # augmentation happens per batch in the trainer (train split only), not on disk
    bundle = prepare_datasets(table, run.training, augment_train=False)
    save_bundle(bundle, bundle_path)
    summary: dict[str, Any] = {
        f"{name}_windows": len(getattr(bundle, name)) for name in ("train", "val", "test")
    }
    for name, (a, b) in bundle.periods.items():
        summary[f"{name}_period"] = f"{a}..{b}"
    summary["n_features"] = len(bundle.feature_names)
    # every row that did not become a window, counted (warm-up, gaps, no forward label)
    for name, per_symbol in bundle.coverage.items():
        summary[f"{name}_bars_without_window"] = sum(
            c["bars"] - c["windows"] for c in per_symbol.values()
        )
    return summary


# ------------------------------------------------------------------ RL steps
#: engineered, scale-free columns the trading env observes when present
RL_FEATURES = (
    "rsi", "macd_hist_norm", "bb_pct", "bb_width", "atr_pct",
    "wavelet_entropy", "fourier_entropy", "hurst", "xa_corr", "xa_rel_return",
)  # fmt: skip


def _rl_configs(run: RunConfig, bundle_path: str | Path, features: pd.DataFrame) -> tuple[Any, Any]:
    """Env + RL training configs for this run: the run's symbols and dates, the engineered
    features, and the supervised split's validation/test starts (one test period for all)."""
    import numpy as np

    from kubetrade.config import load_yaml_model
    from kubetrade.rl.config import RLTrainingConfig, TradingEnvConfig

    env_data = dict(run.rl.get("trading_env", {}))
    env_data.update(
        symbols=list(run.pipeline.symbols)
        if run.pipeline.source.type != "synthetic"
        else sorted(features["symbol"].unique()),
        start_date=run.pipeline.start_date,
        end_date=run.pipeline.end_date,
        features=[c for c in RL_FEATURES if c in features.columns] or [],
    )
    env_cfg = load_yaml_model(TradingEnvConfig, data=env_data)
    train_data = dict(run.rl.get("rl_training", {}))
    with np.load(bundle_path, allow_pickle=False) as z:
        periods = {str(r[0]): (str(r[1]), str(r[2])) for r in z["periods"]}
    split = dict(train_data.get("split", {}))
    split.update(validation_start=periods["val"][0], test_start=periods["test"][0])
    train_data["split"] = split
    return env_cfg, load_yaml_model(RLTrainingConfig, data=train_data)


def rl_agent_step(
    run: RunConfig,
    agent_type: str,
    ohlcv_path: str | Path,
    features_path: str | Path,
    bundle_path: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Train one RL agent on the train period, score it on validation (never on test)."""
    from kubetrade.rl.pipeline import train_single_agent

    prices = pd.read_parquet(ohlcv_path)
    features = pd.read_parquet(features_path)
    env_cfg, train_cfg = _rl_configs(run, bundle_path, features)
    result = train_single_agent(agent_type, env_cfg, train_cfg, prices, features, out_dir)
    return {f"val_{k}": v for k, v in result.validation.items() if isinstance(v, int | float)}


def ensemble_step(
    run: RunConfig,
    agent_dirs: list[str],
    ohlcv_path: str | Path,
    features_path: str | Path,
    bundle_path: str | Path,
    ensemble_dir: str | Path,
    report_path: str | Path,
) -> dict[str, Any]:
    """Combine the trained agents by validation-Sharpe weights; evaluate on the test period."""
    from kubetrade.rl.pipeline import build_ensemble, evaluate_ensemble

    prices = pd.read_parquet(ohlcv_path)
    features = pd.read_parquet(features_path)
    env_cfg, train_cfg = _rl_configs(run, bundle_path, features)
    paths: dict[str, str] = {}
    for d in agent_dirs:
        for sub in sorted(Path(d).iterdir()):
            if (sub / "model.zip").is_file():
                paths[sub.name] = str(sub)
    if not paths:
        from kubetrade.errors import TrainingError

        raise TrainingError(
            f"no trained agents found in {agent_dirs}; did every rl_agent task fail?"
        )
    ensemble = build_ensemble(paths, None, env_cfg, train_cfg, prices=prices, features=features)
    Path(ensemble_dir).mkdir(parents=True, exist_ok=True)
    ensemble.save(ensemble_dir)
    result = evaluate_ensemble(ensemble, env_cfg, train_cfg, prices, features)
    from kubetrade.registry import ensemble_sha256

    result["sha256"] = ensemble_sha256(ensemble_dir)  # checked again before registration
    _write_json(result, report_path)
    summary = {f"test_{k}": result[k] for k in ("sharpe_ratio", "total_return", "max_drawdown")}
    bh = result["buy_and_hold"]
    summary.update(
        {f"buy_and_hold_{k}": bh[k] for k in ("sharpe_ratio", "total_return") if k in bh}
    )
    for name, metrics in result["agents"].items():
        summary[f"{name}_test_sharpe_ratio"] = metrics.get("sharpe_ratio", float("nan"))
    for name, weight in result["weights"].items():
        summary[f"weight_{name}"] = weight
    return summary


# ------------------------------------------------------------- hybrid model steps
EXPERIMENT = "kubetrade"


def _tracker(run: RunConfig, run_id: str | None = None) -> Any:
    """The run's MLflow tracker: ``MLFLOW_TRACKING_URI`` if set, else one SQLite store and
    artifact folder under ``run_root`` shared by all runs (the registry spans runs)."""
    from kubetrade.training.tracking import MlflowTracker

    return MlflowTracker(run.pipeline.run_root, experiment_name=EXPERIMENT, run_id=run_id)


def _read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
    tracking_uri = _tracker(run).tracking_uri
    common: dict[str, Any] = dict(
        run_dir=out, experiment_name=f"{EXPERIMENT}-tuning", tracking_uri=tracking_uri,
        threads_per_trial=run.pipeline.tuning.threads_per_trial,
    )  # fmt: skip
    if run.pipeline.backend == "kubeflow":
        import uuid

        from kubetrade.pipeline.cluster import katib_options, resolve_profile

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
            info = _read_json(result.best_params_path)
            _write_json({**info, "default_value": default}, result.best_params_path)
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
    ``backend: kubeflow``: a PyTorchJob (:func:`kubetrade.pipeline.cluster.train_on_cluster`).
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
    tracker = _tracker(run)
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
            from kubetrade.pipeline.cluster import train_on_cluster

            result = train_on_cluster(training, bundle_path, out, run_id, tracker.tracking_uri)
        else:
            pipe = TrainingPipeline(config=training, run_dir=out, register=False, verbose=True)
            _, result = pipe.train_model(bundle, tracker)
    except BaseException:
        tracker.end("FAILED")
        raise
    from dataclasses import asdict

    _write_json({"run_id": run_id, **asdict(result)}, out / "train_result.json")
    return {
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
    }


def _load_trained(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    from kubetrade.training.callbacks import model_from_checkpoint

    info = _read_json(Path(model_dir) / "train_result.json")
    return model_from_checkpoint(info["final_model_path"]), info


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
    from kubetrade.training.evaluation import ModelEvaluator, flat_metrics

    bundle = load_bundle(bundle_path)
    model, info = _load_trained(model_dir)
    tracker = _tracker(run, run_id=info["run_id"])
    tracker.start()
    evaluator = ModelEvaluator(
        train_data=bundle.train, periods_per_year=252.0 / run.training.data.prediction_horizon
    )
    # validation.metrics chooses what is computed, logged and reported; accuracy and
    # sharpe_ratio are always kept (the registration gate and the summary read them)
    wanted = list(dict.fromkeys([*run.training.validation.metrics, "accuracy", "sharpe_ratio"]))
    val = evaluator.evaluate(model, bundle.val, metrics=wanted)
    test = evaluator.evaluate(model, bundle.test, metrics=wanted)
    from kubetrade.training.evaluation import interpretability_summary

    explained = interpretability_summary(model, bundle.train, bundle.test, bundle.feature_names)
    tmp = atomic_path(report_path)
    evaluator.generate_report(
        test, tmp, title=f"kubetrade test evaluation (run {info['run_id']})",
        interpretability=explained,
    )  # fmt: skip
    os.replace(tmp, report_path)
    metrics = {**flat_metrics(val, "val_"), **flat_metrics(test, "test_")}
    tracker.log_metrics(metrics)
    # MLflow previews a file by its extension: log the report as evaluation_report.html
    staging = Path(results_path).parent / "mlflow_reports"
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report_path, staging / "evaluation_report.html")
    tracker.log_artifact(staging / "evaluation_report.html", "reports")
    _write_json(
        {k: v for k, v in explained.items() if k != "attention_png"},
        staging / "shap_importance.json",
    )
    tracker.log_artifact(staging / "shap_importance.json", "reports")
    test.pop("series", None)
    _write_json(
        {"val": {k: v for k, v in val.items() if k != "series"}, "test": test}, results_path
    )
    summary = {f"test_{k}": v for k, v in test["model"].items()}
    for name, values in test["baselines"].items():
        for key in ("accuracy", "sharpe_ratio"):
            if key in values:
                summary[f"test_{name}_{key}"] = values[key]
    return summary


# ------------------------------------------------------------ walk-forward folds
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
    model, _ = _load_trained(model_dir)
    ensemble = _read_json(ensemble_eval_path) if ensemble_eval_path else None
    ppy = 252.0 / run.training.data.prediction_horizon
    result = evaluate_fold(fold, bundle, model, ppy, ensemble)
    _write_json(result, out_path)
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
        study = _read_json(best).get("study") or {}
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
        folds.append(_read_json(p))
    ensemble = _read_json(ensemble_eval_path) if ensemble_eval_path else None
    n_trials = count_trials(tuning_dir, ensemble)
    agg = aggregate_folds(
        folds,
        n_trials,
        252.0 / run.training.data.prediction_horizon,
        seed=run.training.training.seed,
    )
    _write_json(agg, out_path)
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
        info = _read_json(Path(model_dir) / "train_result.json")
        tracker = _tracker(run, run_id=info["run_id"])
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


def export_step(
    run: RunConfig, bundle_path: str | Path, model_dir: str | Path, export_dir: str | Path
) -> dict[str, Any]:
    """TorchScript + ONNX (+ the ONNX serving graph) export with a parity gate (max |diff|
    <= 1e-4 on real test windows); only then is the model logged and the MLflow run finished."""
    from kubetrade.data.splits import load_bundle
    from kubetrade.training.export import export_model

    bundle = load_bundle(bundle_path)
    model, info = _load_trained(model_dir)
    tracker = _tracker(run, run_id=info["run_id"])
    tracker.start()
    try:
        exported = export_model(model, export_dir, bundle.test)
    except BaseException:
        tracker.client.set_terminated(info["run_id"], status="FAILED")
        raise
    diffs = {
        f"parity_{fmt}_{name}": diff
        for fmt, outs in exported.max_abs_diff.items()
        for name, diff in outs.items()
    }
    tracker.log_metrics(diffs)
    from kubetrade.serving.spec import write_serving_spec  # scaler + features for the server

    write_serving_spec(export_dir, bundle, run.training)
    tracker.log_artifact(export_dir, "export")
    tracker.log_artifact(info["final_model_path"], "checkpoints")
    from kubetrade.registry.hybrid_pyfunc import log_hybrid

    model_uri = log_hybrid(export_dir, exported.files(), tracker.tracking_uri, info["run_id"],
                           input_shape=tuple(bundle.test.X.shape[1:]))  # fmt: skip
    tracker.client.set_terminated(info["run_id"], status="FINISHED")
    from kubetrade.registry import write_export_info

    write_export_info(export_dir, model_uri, info["run_id"], exported.files())
    return {**diffs, "parity_windows": exported.n_windows}


# ------------------------------------------------------------------ backtest
def backtest_step(
    run: RunConfig,
    ohlcv_path: str | Path,
    bundle_path: str | Path,
    model_dir: str | Path,
    ensemble_eval_path: str | Path,
    report_path: str | Path,
    results_path: str | Path,
) -> dict[str, Any]:
    """Backtest on the held-out test period: the hybrid model's signals and the RL
    ensemble's target weights through one engine (next-open fills, costs, risk
    controls), beside equal-weight buy-and-hold."""
    import numpy as np

    from kubetrade.backtest import BacktestingEngine, write_backtest_report
    from kubetrade.data.splits import load_bundle
    from kubetrade.models import CLASS_POSITIONS
    from kubetrade.training.evaluation import predict

    prices = pd.read_parquet(ohlcv_path)
    bundle = load_bundle(bundle_path)
    start, end = bundle.periods["test"]
    model, _ = _load_trained(model_dir)
    probs, _ = predict(model, bundle.test.X, 512, "cpu")
    signal = np.asarray(CLASS_POSITIONS, dtype=float)[probs.argmax(axis=1)]
    hybrid_signals = pd.DataFrame(
        {
            "symbol": bundle.test.symbols,
            "timestamp": pd.to_datetime(bundle.test.timestamps).tz_localize("UTC"),
            "signal": signal,
        }
    )
    engine = BacktestingEngine()
    n_symbols = prices["symbol"].nunique()
    common = dict(
        prices=prices, start_date=start, end_date=end, initial_capital=100_000,
        transaction_costs=0.001, slippage=0.0005,
    )  # fmt: skip
    results = {
        "hybrid_cnn_lstm": engine.run_backtest(
            hybrid_signals,
            **common,
            max_position_size=1.0 / n_symbols,
            stop_loss_pct=0.05,
            take_profit_pct=0.15,
            name="hybrid_cnn_lstm",
        ),  # fmt: skip
    }
    rl = _read_json(ensemble_eval_path)
    stamps = pd.to_datetime(rl["timestamps"][: len(rl["target_weights"])]).tz_localize("UTC")
    weights = pd.DataFrame(rl["target_weights"], index=stamps, columns=rl["symbols"])
    results["rl_ensemble"] = engine.run_backtest(
        weights, **common, signal_mode="weights", rebalance="every_bar", name="rl_ensemble"
    )
    tmp = atomic_path(report_path)
    write_backtest_report(results, tmp, title=f"kubetrade backtest, test period {start}..{end}")
    os.replace(tmp, report_path)
    summary: dict[str, Any] = {}
    for name, res in results.items():
        m = res.metrics()
        for key in ("total_return", "sharpe_ratio", "max_drawdown", "num_trades"):
            summary[f"{name}_{key}"] = float(m[key])
    bh = results["hybrid_cnn_lstm"]
    summary["buy_and_hold_total_return"] = float(bh["buy_and_hold_return"])
    summary["buy_and_hold_sharpe_ratio"] = float(bh.buy_and_hold_metrics["sharpe_ratio"])
    _write_json({name: res.metrics() for name, res in results.items()}, results_path)
    return summary


# ------------------------------------------------------------------ gate + registry
def evaluation_gate(results_path: str | Path, tolerance: float = 0.02) -> str:
    """``"pass"`` when the model's test metrics are finite and its accuracy is at least
    the majority-class baseline's minus ``tolerance``; otherwise ``"fail"`` (no registration).
    A results file that cannot be read, or lacks those metrics, is ``"fail"`` too."""
    import math

    try:
        test = _read_json(results_path)["test"]
        model, majority = test["model"], test["baselines"]["majority_class"]
        finite = all(math.isfinite(float(v)) for v in model.values())
        ok = finite and float(model["accuracy"]) >= float(majority["accuracy"]) - tolerance
    except (OSError, ValueError, KeyError, TypeError):
        return "fail"
    return "pass" if ok else "fail"


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
        ensemble_report = _read_json(ensemble_eval_path)
        recorded = ensemble_report.get("sha256")
        if not recorded or ensemble_sha256(ensemble_dir) != recorded:
            raise RegistryError(
                f"RL ensemble files in {ensemble_dir} changed since they were evaluated "
                "(SHA-256 mismatch or none recorded); rerun the pipeline from the ensemble step"
            )
    tracking_uri = _tracker(run).tracking_uri
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
        rl_hash = hashlib.sha256(json.dumps(run.rl, sort_keys=True).encode()).hexdigest()
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


# ------------------------------------------------------------------ run summary
def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e9:
            return f"{int(value):,}"  # counts (trades) arrive as floats from JSON metrics
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def summary_step(
    run: RunConfig,
    tuning_dir: str | Path,
    evaluation_path: str | Path,
    backtest_path: str | Path,
    ensemble_eval_path: str | Path,
    gate: str,
    out_path: str | Path,
    walk_forward_path: str | Path | None = None,
) -> dict[str, Any]:
    """A Markdown run summary (the KFP UI renders it): what was trained on which data, the
    tuning outcome, test-split metrics beside the naive baselines, the walk-forward fold means
    with intervals and the deflated Sharpe ratio, one sentence on whether anything beats
    buy-and-hold with significance, the backtest beside buy-and-hold, the RL ensemble's
    weights, and whether the registration gate passed."""
    p = run.pipeline
    evaluation = _read_json(evaluation_path)
    test = evaluation["test"]
    lines = [
        f"# kubetrade run summary — {p.name}",
        "",
        f"- data: {', '.join(p.symbols)} ({p.source.type}), {p.start_date} .. {p.end_date}",
        f"- backend: {p.backend}; test windows: {test.get('n_windows', '?')}",
        f"- evaluation gate: **{gate}** (model accuracy vs majority class on the test split); "
        "on pass the register step applies the champion gate (beat every naive baseline, same "
        "test period and symbols as the champion, registry.margin) and tags each version with "
        "its reason (tag kubetrade.gate_decision; gate_reason in the register step's output)",
        "",
        "All metrics below are out-of-sample (the test period, never seen by training, tuning "
        "or ensemble weighting).",
        "",
    ]
    best = Path(tuning_dir) / "tuning" / "best_params.json"
    if best.is_file():
        info = _read_json(best)
        lines += ["## Tuning (validation split only)", ""]
        study = info.get("study") or {}
        lines += _table(
            ["metric", "best trial", "configured values (trial 0)", "trials", "pruned", "best"],
            [[
                info.get("metric", "?"), info.get("value"), info.get("default_value", "—"),
                study.get("n_trials", "—"), study.get("n_pruned", "—"),
                json.dumps(info.get("params", {})),
            ]],
        )  # fmt: skip
    metric_keys = ["accuracy", "f1_score", "sharpe_ratio", "max_drawdown", "total_return"]
    rows = [["hybrid_cnn_lstm", *(test["model"].get(k, "—") for k in metric_keys)]]
    for name, values in test["baselines"].items():
        rows.append([name, *(values.get(k, "—") for k in metric_keys)])
    lines += ["## Hybrid CNN+LSTM, test split, beside naive baselines", ""]
    lines += _table(["model", *metric_keys], rows)
    result: dict[str, Any] = {"gate_passed": int(gate == "pass")}
    if walk_forward_path is not None and Path(walk_forward_path).is_file():
        wf = _read_json(walk_forward_path)
        lines += _walk_forward_lines(wf)
        result["beats_buy_and_hold_significantly"] = len(wf["beats_buy_and_hold"])
    backtest = _read_json(backtest_path)
    bt_keys = ["total_return", "sharpe_ratio", "max_drawdown", "num_trades", "total_costs"]
    rows = [[name, *(m.get(k) for k in bt_keys)] for name, m in backtest.items()]
    first: dict[str, Any] = next(iter(backtest.values()), {})
    if "buy_and_hold_return" in first:
        rows.append(["buy_and_hold (equal weight)", first["buy_and_hold_return"], "—", "—", 0, 0.0])
    lines += ["## Backtest, test period (next-open fills, costs, risk controls)", ""]
    lines += _table(["strategy", *bt_keys], rows)
    ens = _read_json(ensemble_eval_path)
    combination = ens.get("combination") or {}
    chosen = combination.get("chosen") or combination.get("method")
    lines += [f"## RL ensemble (combination: {chosen or 'weighted voting'})", ""]
    candidates = combination.get("validation") or {}
    if candidates:  # ensemble_method auto: every candidate scored on validation only
        lines += [
            "Chosen on the validation split only: "
            + ", ".join(
                f"{k} {v.get('sharpe_ratio', float('nan')):.3f}" for k, v in candidates.items()
            )
            + " (validation Sharpe).",
            "",
        ]
    lines += _table(
        ["agent", "weight", "validation sharpe", "test sharpe"],
        [
            [a, w, ens.get("validation_sharpe", {}).get(a, "—"),
             ens.get("agents", {}).get(a, {}).get("sharpe_ratio", "—")]
            for a, w in ens.get("weights", {}).items()
        ],
    )  # fmt: skip
    tmp = atomic_path(out_path)
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out_path)
    return result


def _ci(ci: dict[str, float] | None) -> str:
    if not ci:
        return "—"
    mid = ci.get("mean", ci.get("value", float("nan")))
    return f"{mid:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _walk_forward_lines(wf: dict[str, Any]) -> list[str]:
    """The summary's walk-forward section: the verdict sentence first, then the table."""
    pct = f"{100 * (1 - float(wf['alpha'])):g}%"
    lines = [
        f"## Walk-forward: {wf['n_folds']} folds over the test period",
        "",
        f"**{wf['verdict']}**",
        "",
        f"Fold means with {pct} t-intervals; whole-period {pct} block-bootstrap intervals; "
        f"the deflated Sharpe ratio counts {wf['n_trials']} configurations tried (tuning "
        "trials, RL agents, ensemble). Hybrid and baselines are signal returns before costs, "
        "the RL ensemble is after costs. Who trained on what: "
        + "; ".join(f"{k}: {v}" for k, v in wf.get("trained_on", {}).items())
        + ".",
        "",
    ]
    rows = []
    for name, fm in wf["fold_mean"].items():
        whole = wf["whole_period"].get(name, {})
        dsr = whole.get("deflated_sharpe") or {}
        rows.append([
            name, _ci(fm.get("sharpe_ratio")), _ci(fm.get("accuracy")),
            _ci(whole.get("sharpe_ci")), _ci(whole.get("sharpe_minus_buy_and_hold_ci")),
            dsr.get("psr", "—"), dsr.get("dsr", "—"),
        ])  # fmt: skip
    header = ["model", "fold-mean Sharpe", "fold-mean accuracy", "Sharpe (bootstrap)",
              "Sharpe − buy-and-hold", "PSR", "DSR"]  # fmt: skip
    return lines + _table(header, rows)
