"""The guide's ``AdvancedTrainingPipeline.optimize_hyperparameters``, and :func:`tune`.

::

    pipeline = AdvancedTrainingPipeline("config/training.yaml", experiment_name="hybrid_model_v2",
                                        run_dir="runs/tune", bundle=bundle)
    result = pipeline.optimize_hyperparameters(
        "config/search_space.yaml", metric="val_sharpe_ratio", mode="max",
        max_concurrent_trials=4)
    result.config              # TrainingConfig with the best values
    result.best_config_path    # runs/tune/tuning/best_config.yaml -> `train --config ...`

Tuning sees train and validation windows only:
:func:`~kubetrade.tuning.data.as_tuning_bundle` copies those two splits and replaces the
test split with an empty one before any trial starts.

Outputs in ``<run_dir>/tuning/``: ``optuna.db`` (the study; rerun to resume),
``best_config.yaml`` (the training config with the best values, loadable by
:func:`~kubetrade.config.load_training_config`), ``best_params.json``, ``trials.csv``, and for
Katib ``katib_experiment.yaml``. The MLflow parent run (experiment ``experiment_name``) holds
them as artifacts; each trial is a child run.

Why this module is long: most of it is one class, :class:`AdvancedTrainingPipeline`, the
guide's API with its option checks, the local and Katib paths and the outputs both write
(best config, best params, trials table, MLflow parent run). The study machinery
(:mod:`~kubetrade.tuning.optuna_backend`), the trial (:mod:`~kubetrade.tuning.objective`),
the Katib Experiment (:mod:`~kubetrade.tuning.katib_backend`) and the data
(:mod:`~kubetrade.tuning.data`) already live elsewhere; splitting the class's methods across
modules would only scatter one object.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kubetrade.config import TrainingConfig, apply_overrides
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.tuning.data import as_tuning_bundle
from kubetrade.tuning.katib_backend import (
    KatibOptions,
    build_tuning_experiment,
    experiment_yaml,
    run_katib,
)
from kubetrade.tuning.optuna_backend import (
    StudyReport,
    TrialSetup,
    open_study,
    run_study,
    storage_url,
    study_parent_run,
)
from kubetrade.tuning.space import SearchSpace
from kubetrade.tuning.spec import TuningSpec, build_config, load_tuning_spec, metric_direction

__all__ = [
    "AdvancedTrainingPipeline",
    "TuningResult",
    "KatibDryRun",
    "tune",
    "BEST_CONFIG_NAME",
    "BEST_PARAMS_NAME",
]

log = logging.getLogger("kubetrade.tuning")

BEST_CONFIG_NAME = "best_config.yaml"
BEST_PARAMS_NAME = "best_params.json"
TUNING_DIR = "tuning"


@dataclass
class TuningResult:
    """The outcome of a tuning run (local study or Katib experiment)."""

    backend: str
    metric: str
    mode: str
    best_value: float
    best_params: dict[str, Any]
    best_overrides: dict[str, Any]
    config: TrainingConfig
    best_config_path: Path
    best_params_path: Path
    study: StudyReport | None = None
    katib_trial: str | None = None
    mlflow_run_id: str | None = None


@dataclass
class KatibDryRun:
    """A Katib Experiment that was built but not submitted."""

    experiment: dict[str, Any]
    yaml: str
    path: Path


# ---------------------------------------------------------------- pipeline
def _check_guide_options(
    use_distributed: bool,
    num_gpus: int | None,
    checkpoint_every: int | None,
    save_best_only: bool,
    use_wandb: bool,
) -> None:
    """Refuse, in one line each, the guide's options that kubetrade's tuner cannot honour."""
    if use_distributed:
        raise ConfigError(
            "use_distributed=True: tuning trials are single-process (max_concurrent_trials run "
            "side by side); train the chosen config distributed with `kubetrade train --nproc N`"
        )
    if num_gpus is not None:
        if num_gpus < 0:
            raise ConfigError(f"num_gpus must be >= 0, got {num_gpus}")
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if num_gpus > visible:
            raise ConfigError(
                f"num_gpus={num_gpus} but {visible} CUDA device(s) are visible; use num_gpus="
                f"{visible} (0 = CPU)"
            )
    if checkpoint_every is not None:
        raise ConfigError(
            f"checkpoint_every={checkpoint_every}: trials snapshot every epoch (resumable) and "
            "keep their best epoch's weights; leave checkpoint_every unset"
        )
    if not save_best_only:
        raise ConfigError("save_best_only=False: trials keep only their best epoch's weights")
    if use_wandb:
        raise ConfigError(
            "use_wandb=True: kubetrade tracks with MLflow (tracking_uri=..., "
            "MLFLOW_TRACKING_URI); Weights & Biases is not used"
        )


class AdvancedTrainingPipeline:
    """Hyper-parameter optimisation over the training config (the guide's class).

    Args:
        model_config: the guide's ``config/training.yaml`` (or a dict of it).
        experiment_name: Optuna study name, MLflow experiment, Katib experiment (sanitised).
        run_dir: run folder; tuning outputs go to ``<run_dir>/tuning`` (default
            ``runs/tune-<timestamp>``). Reuse it to resume a study.
        config_overrides: dotted overrides applied to ``model_config`` before tuning (the
            pipeline's ``training_overrides``); they are part of ``best_config.yaml``.
        bundle: windows to tune on (or pass it to :meth:`optimize_hyperparameters`).
        num_trials: default trial budget (else the search-space file's).
        tracking_uri: MLflow URI (default ``MLFLOW_TRACKING_URI``, else SQLite in ``run_dir``).
        track: log the parent and child MLflow runs.
        threads_per_trial: torch threads in each trial.
        keep_trial_files: keep each trial's snapshot and final weights.
        katib: where Katib trials run (``backend="katib"``).
        use_ray_tune: the guide's flag; Ray is not used, so only False is accepted.

    The guide's other keyword arguments, each honoured or refused with one line:

    * ``use_distributed``: only False; trials are single-process (``max_concurrent_trials``
      run side by side). Train the chosen config with ``kubetrade train --nproc N``.
    * ``num_gpus``: ``0`` runs trials on the CPU, ``n >= 1`` on CUDA (``hardware.device:
      cuda``, one GPU per trial); refused when fewer than ``n`` GPUs are visible.
    * ``checkpoint_every``: only None; every trial snapshots each epoch (resumable) and
      keeps its best epoch's weights.
    * ``save_best_only``: only True (what the trials do).
    * ``use_wandb``: only False; tracking is MLflow.
    * ``log_gradients``: accepted; each epoch's gradient norm (``grad_norm``,
      ``grad_norm_max``) is logged to the trial's MLflow run, True or False.
    * ``log_model_graph``: True writes ``model_graph.txt`` (the best config's module tree and
      parameter counts) to the tuning folder and the parent MLflow run.
    """

    def __init__(
        self,
        model_config: str | Path | dict[str, Any] = "config/training.yaml",
        experiment_name: str = "kubetrade-tuning",
        *,
        run_dir: str | Path | None = None,
        config_overrides: dict[str, Any] | None = None,
        bundle: Any = None,
        num_trials: int | None = None,
        tracking_uri: str | None = None,
        track: bool = True,
        threads_per_trial: int = 1,
        keep_trial_files: bool = False,
        katib: KatibOptions | None = None,
        use_ray_tune: bool = False,
        use_distributed: bool = False,
        num_gpus: int | None = None,
        checkpoint_every: int | None = None,
        save_best_only: bool = True,
        use_wandb: bool = False,
        log_gradients: bool = True,
        log_model_graph: bool = False,
    ) -> None:
        _check_guide_options(use_distributed, num_gpus, checkpoint_every, save_best_only,
                             use_wandb)  # fmt: skip
        self.num_gpus = num_gpus
        self.log_gradients = log_gradients
        self.log_model_graph = log_model_graph
        if use_ray_tune:
            raise ConfigError(
                "use_ray_tune=True: kubetrade does not use Ray Tune; optimize_hyperparameters "
                "runs Optuna (TPE + ASHA pruning) locally or a Katib Experiment on the cluster"
            )
        if not experiment_name or not experiment_name.strip():
            raise ConfigError("experiment_name must not be empty")
        if threads_per_trial < 1:
            raise ConfigError(f"threads_per_trial must be >= 1, got {threads_per_trial}")
        self.base_config = _read_training_dict(model_config)
        if num_gpus is not None:
            self.base_config.setdefault("hardware", {})["device"] = "cuda" if num_gpus else "cpu"
        self.config_overrides = dict(config_overrides or {})
        apply_overrides(self.base_config, self.config_overrides)
        self.config = build_config(self.base_config, {}, str(model_config))
        self.model_config = model_config
        self.experiment_name = experiment_name
        self.run_dir = Path(run_dir or Path("runs") / time.strftime("tune-%Y%m%d-%H%M%S"))
        self.bundle = bundle
        self.num_trials = num_trials
        self.tracking_uri = tracking_uri
        self.track = track
        self.threads_per_trial = threads_per_trial
        self.keep_trial_files = keep_trial_files
        self.katib = katib

    @property
    def tuning_dir(self) -> Path:
        return self.run_dir / TUNING_DIR

    def optimize_hyperparameters(
        self,
        search_space: str | Path | dict[str, Any] | SearchSpace | TuningSpec = (
            "config/search_space.yaml"
        ),
        metric: str | None = None,
        mode: Literal["max", "min"] | None = None,
        num_trials: int | None = None,
        max_concurrent_trials: int | None = None,
        backend: Literal["local", "katib"] = "local",
        *,
        bundle: Any = None,
        dry_run: bool = False,
        launcher: Any = None,
    ) -> TuningResult | KatibDryRun:
        """Search ``search_space`` and write the best training config.

        Args:
            search_space: the tuning file, its dict form, or a bare search space.
            metric, mode: the objective (a validation metric; default from the file; ``mode``
                defaults to the metric's direction).
            num_trials: trials in the study, counting finished ones of a resumed study.
            max_concurrent_trials: parallel trials (processes locally, pods on Katib).
            backend: ``local`` (Optuna) or ``katib``.
            bundle: windows to tune on (local backend); overrides the constructor's.
            dry_run: Katib only: build and write the Experiment YAML, submit nothing.
            launcher: Katib only: a :class:`~kubetrade.k8s.launcher.CustomResourceLauncher`
                (default: from the kubeconfig or the in-cluster account).

        Returns:
            :class:`TuningResult`, or :class:`KatibDryRun` for ``dry_run=True``.

        Raises:
            ConfigError: bad search space, objective or a value the model cannot take.
            TrainingError: no trial completed, or the Katib experiment failed.
        """
        if metric is not None and mode is None:
            mode = metric_direction(metric)  # val_loss alone means minimise it
        spec = load_tuning_spec(search_space).with_objective(
            metric=metric,
            mode=mode,
            num_trials=num_trials or self.num_trials,
            max_concurrent_trials=max_concurrent_trials,
        )
        spec.validate(self.base_config)
        if backend == "katib":
            return self._katib(spec, dry_run, launcher)
        if backend != "local":
            raise ConfigError(f"backend {backend!r} is not supported; use 'local' or 'katib'")
        if dry_run:
            raise ConfigError("dry_run is for backend='katib'; a local study has nothing to print")
        data = bundle if bundle is not None else self.bundle
        if data is None:
            raise TrainingError("no data to tune on: pass bundle=... (a DatasetBundle or .npz)")
        tuning_bundle = as_tuning_bundle(data)
        result = self._local(spec, tuning_bundle)
        if self.log_model_graph:
            self._write_model_graph(result, int(tuning_bundle.train.X.shape[-1]))
        return result

    def _write_model_graph(self, result: TuningResult, n_features: int) -> Path:
        """``model_graph.txt``: the best config's module tree and parameter counts."""
        from kubetrade.training.trainer import build_model

        model = build_model(result.config, n_features)
        counts = sum(p.numel() for p in model.parameters())
        path = self.tuning_dir / "model_graph.txt"
        path.write_text(
            f"HybridCNNLSTM, {counts:,} parameters, {n_features} input features\n\n{model}\n",
            encoding="utf-8",
        )
        if result.mlflow_run_id is not None:
            from kubetrade.training.tracking import MlflowTracker

            tracker = MlflowTracker(self.run_dir, self.experiment_name, self.tracking_uri,
                                    run_id=result.mlflow_run_id)  # fmt: skip
            tracker.log_artifact(path)
        return path

    # ------------------------------------------------------------ local
    def _local(self, spec: TuningSpec, bundle: Any) -> TuningResult:
        _check_batch_sizes(spec, self.base_config, bundle)
        self.tuning_dir.mkdir(parents=True, exist_ok=True)
        (self.tuning_dir / "search_space.yaml").write_text(
            yaml.safe_dump(spec.to_dict(), sort_keys=False), encoding="utf-8"
        )
        parent = self._parent_run(spec) if self.track else None
        setup = TrialSetup(
            base_config=self.base_config,
            spec=spec.to_dict(),
            tuning_dir=str(self.tuning_dir),
            study_name=self.experiment_name,
            tracking_uri=parent.tracking_uri if parent is not None else None,
            experiment_name=self.experiment_name,
            parent_run_id=parent.run_id if parent is not None else None,
            threads_per_trial=self.threads_per_trial,
            keep_trial_files=self.keep_trial_files,
        )
        study = open_study(spec, self.experiment_name, storage_url(self.tuning_dir))
        if not study.trials:  # a new study: the configured values are trial 0
            base = spec.base_params(self.base_config)
            if base:
                study.enqueue_trial(base, skip_if_exists=True)
        try:
            report = run_study(spec, setup, bundle)
            result = self._write_best(
                spec, "local", report.best_params, report.best_value, study=report
            )
            self._write_trials_csv()
        except BaseException as exc:
            if parent is not None:
                parent.client.set_terminated(
                    parent.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
                )
            raise
        if parent is not None:
            self._log_parent(parent, spec, result)
            result.mlflow_run_id = parent.run_id
        return result

    def _parent_run(self, spec: TuningSpec) -> Any:
        """The study's MLflow parent run: reattached on resume, created otherwise."""
        study = open_study(spec, self.experiment_name, storage_url(self.tuning_dir))
        objective = spec.objective
        return study_parent_run(
            study,
            self.run_dir,
            self.experiment_name,
            self.tracking_uri,
            step="tune",
            params={
                "metric": objective.metric,
                "mode": objective.mode,
                "max_t": objective.max_t,
                "max_concurrent_trials": objective.max_concurrent_trials,
                "sampler": spec.sampler.type,
                "seed": spec.sampler.seed,
                "pruner": spec.pruner.type,
                "grace_period": spec.pruner.grace_period,
                "reduction_factor": spec.pruner.reduction_factor,
                "search_space": json.dumps(spec.space.to_dict()),
            },
        )

    def _log_parent(self, parent: Any, spec: TuningSpec, result: TuningResult) -> None:
        report = result.study
        assert report is not None
        parent.log_metrics(
            {
                f"best_{spec.objective.metric}": result.best_value,
                "n_trials": report.n_trials,
                "n_complete": report.n_complete,
                "n_pruned": report.n_pruned,
                "n_failed": report.n_failed,
                "epochs_run": report.epochs_run,
                "epochs_possible": report.epochs_possible,
                "pruning_saving": report.pruning_saving,
            }
        )
        parent.set_tags({"best_trial": report.best_trial_number})
        for name in (BEST_CONFIG_NAME, BEST_PARAMS_NAME, "trials.csv", "search_space.yaml"):
            parent.log_artifact(self.tuning_dir / name, "tuning")
        parent.client.set_terminated(parent.run_id, "FINISHED")

    def _write_trials_csv(self) -> None:
        import optuna

        study = optuna.load_study(
            study_name=self.experiment_name, storage=storage_url(self.tuning_dir)
        )
        frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
        frame.to_csv(self.tuning_dir / "trials.csv", index=False)

    # ------------------------------------------------------------ katib
    def _katib(self, spec: TuningSpec, dry_run: bool, launcher: Any) -> TuningResult | KatibDryRun:
        options = self.katib or KatibOptions()
        experiment = build_tuning_experiment(
            spec, options, name=self.experiment_name, base_overrides=self.config_overrides
        )
        text = experiment_yaml(experiment)
        self.tuning_dir.mkdir(parents=True, exist_ok=True)
        path = self.tuning_dir / "katib_experiment.yaml"
        path.write_text(text, encoding="utf-8")
        if dry_run:
            return KatibDryRun(experiment=experiment, yaml=text, path=path)
        best = run_katib(experiment, spec, options, launcher=launcher)
        value = best.value(spec.objective.metric, spec.objective.mode)
        result = self._write_best(spec, "katib", best.parameters, value)
        result.katib_trial = best.name
        return result

    # ------------------------------------------------------------ outputs
    def _write_best(
        self,
        spec: TuningSpec,
        backend: str,
        params: dict[str, Any],
        value: float,
        study: StudyReport | None = None,
    ) -> TuningResult:
        overrides = spec.final_overrides(params)
        config = build_config(self.base_config, overrides, "best parameters")
        data = copy.deepcopy(self.base_config)
        apply_overrides(data, overrides)
        self.tuning_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.tuning_dir / BEST_CONFIG_NAME
        source = "config" if isinstance(self.model_config, dict) else str(self.model_config)
        header = (
            f"# Best training config from tuning ({backend}, {spec.objective.metric}="
            f"{value:.6g}, mode {spec.objective.mode}).\n"
            f"# {source} + config_overrides {json.dumps(self.config_overrides, sort_keys=True)}\n"
            f"# + best values {json.dumps(overrides, sort_keys=True)}\n"
        )
        config_path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        params_path = self.tuning_dir / BEST_PARAMS_NAME
        payload = {
            "backend": backend,
            "study_name": self.experiment_name,
            "metric": spec.objective.metric,
            "mode": spec.objective.mode,
            "value": value if math.isfinite(value) else None,
            "params": params,
            "overrides": overrides,
            "best_trial": study.best_trial_number if study else None,
            "study": study.as_dict() if study else None,
        }
        params_path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        log.info("best %s=%.6g with %s -> %s", spec.objective.metric, value, params, config_path)
        return TuningResult(
            backend=backend,
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            best_value=value,
            best_params=dict(params),
            best_overrides=overrides,
            config=config,
            best_config_path=config_path,
            best_params_path=params_path,
            study=study,
        )


def _read_training_dict(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _check_batch_sizes(spec: TuningSpec, base: dict[str, Any], bundle: Any) -> None:
    """Every batch size the study may try must fit the (capped) training windows."""
    n_train = len(bundle.train)
    sizes: list[int] = []
    for name in spec.space:
        if "training.batch_size" in spec.targets(name):
            sizes += [int(v) for v in spec.probe_values(name)]
    cfg = build_config(base, spec.fixed, "fixed")
    cap = cfg.training.max_train_windows
    available = min(n_train, cap) if cap else n_train
    too_big = sorted({s for s in sizes or [cfg.training.batch_size] if s > available})
    if too_big:
        raise ConfigError(
            f"batch size(s) {too_big} exceed the {available} training windows; "
            "lower the choices or provide more data"
        )


def tune(
    training_config: str | Path | dict[str, Any] = "config/training.yaml",
    search_space: str | Path | dict[str, Any] | TuningSpec = "config/search_space.yaml",
    *,
    bundle: Any = None,
    run_dir: str | Path | None = None,
    experiment_name: str = "kubetrade-tuning",
    overrides: dict[str, Any] | None = None,
    backend: Literal["local", "katib"] = "local",
    num_trials: int | None = None,
    max_concurrent_trials: int | None = None,
    dry_run: bool = False,
    katib: KatibOptions | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    launcher: Any = None,
    threads_per_trial: int = 1,
) -> TuningResult | KatibDryRun:
    """One call for the CLI and the pipeline step; see :class:`AdvancedTrainingPipeline`."""
    pipeline = AdvancedTrainingPipeline(
        training_config,
        experiment_name,
        run_dir=run_dir,
        config_overrides=overrides,
        bundle=bundle,
        tracking_uri=tracking_uri,
        track=track,
        katib=katib,
        threads_per_trial=threads_per_trial,
    )
    return pipeline.optimize_hyperparameters(
        search_space,
        num_trials=num_trials,
        max_concurrent_trials=max_concurrent_trials,
        backend=backend,
        dry_run=dry_run,
        launcher=launcher,
    )
