"""RL agents through the tuning machinery: an Optuna study whose objective is validation Sharpe.

::

    result = tune_rl_agent("ppo", "config/trading_env.yaml", "config/rl_training.yaml",
                           prices, features, "config/rl_search_space.yaml", "runs/tune-rl")
    result.best_config_path    # runs/tune-rl/tuning/best_rl_training_ppo.yaml

* **Same study plumbing** as the hybrid model (:func:`~kubetrade.tuning.optuna_backend.run_study`,
  :func:`~kubetrade.tuning.optuna_backend.open_study`): the study lives in
  ``<run_dir>/tuning/optuna.db`` under the name ``kubetrade-rl-<agent>``, so a rerun resumes it
  and runs only the missing trials. Trial 0 is the configured ``rl_training.yaml`` values.
* **Objective** (:class:`RLObjective`, named by ``TrialSetup.objective``): sample the search
  space (dotted :class:`~kubetrade.rl.config.RLTrainingConfig` paths such as
  ``agents.ppo.learning_rate``), train one agent with
  :func:`~kubetrade.rl.pipeline.train_single_agent` on the train period and return its
  validation-period Sharpe ratio (``val_sharpe_ratio``).
* **No pruning**: ``train_single_agent`` trains in one ``model.learn`` call and exposes no
  callback hook, so a trial reports nothing before it ends; ``pruner.type`` must be ``none``.
* **The test period is never read**: before any trial, every bar from the test start on is
  overwritten (prices flat at the last validation close, features 0), so a trial could not
  use test data even by mistake; the split is pinned and may not be tuned.
* One trial at a time (``max_concurrent_trials`` is forced to 1): the hybrid path's worker
  processes exchange a ``DatasetBundle``, not price frames. RL trials are single-threaded.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from kubetrade.config import apply_overrides, load_yaml_model
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.rl.config import RLTrainingConfig, TradingEnvConfig, check_agent_type
from kubetrade.tuning.data import RLTuningData, mask_test_period
from kubetrade.tuning.objective import HybridObjective
from kubetrade.tuning.optuna_backend import (
    TRIALS_DIR,
    StudyReport,
    TrialSetup,
    open_study,
    run_study,
    storage_url,
    study_parent_run,
)
from kubetrade.tuning.spec import TuningSpec, build_model_config, load_tuning_spec

__all__ = [
    "RL_OBJECTIVE",
    "RL_METRIC",
    "RLObjective",
    "RLTuningResult",
    "build_rl_config",
    "validate_rl_spec",
    "rl_base_params",
    "tune_rl_agent",
]

log = logging.getLogger("kubetrade.tuning")

RL_OBJECTIVE = "kubetrade.tuning.rl_objective:RLObjective"
#: The objective of an RL study: ``sharpe_ratio`` of the deterministic validation episode.
RL_METRIC = "val_sharpe_ratio"
#: rl_training.yaml paths a study may not set: they move the periods or change what is trained.
_FROZEN = ("split", "agent_types", "output_dir")


# ---------------------------------------------------------------- configs
def build_rl_config(
    base: Mapping[str, Any], overrides: Mapping[str, Any], where: str
) -> RLTrainingConfig:
    """``base`` (rl_training dict) with dotted ``overrides``, validated; errors name ``where``."""
    return build_model_config(RLTrainingConfig, base, overrides, where, "rl_training")


def validate_rl_spec(
    spec: TuningSpec, base: Mapping[str, Any], agent_type: str
) -> RLTrainingConfig:
    """The RL counterpart of :meth:`TuningSpec.validate`.

    Checks the objective (``val_sharpe_ratio``, no pruner), that every parameter and fixed
    path is an ``RLTrainingConfig`` path that changes the tuned agent's training (not
    ``split``, ``agent_types``, ``output_dir`` or another agent's section), and builds the
    config for every choice and both ends of every range.

    Returns:
        The base config with the fixed overrides.

    Raises:
        ConfigError: naming the parameter, the value and why.
    """
    agent_type = check_agent_type(agent_type)
    if spec.objective.metric != RL_METRIC:
        raise ConfigError(
            f"RL tuning optimises {RL_METRIC} (validation Sharpe of the agent), "
            f"not {spec.objective.metric!r}"
        )
    if spec.pruner.type != "none":
        raise ConfigError(
            f"pruner {spec.pruner.type!r}: RL trials report no intermediate values "
            "(train_single_agent trains in one call); use pruner.type: none"
        )
    paths = {t: name for name in spec.space for t in spec.targets(name)}
    paths.update({p: "fixed" for p in spec.fixed})
    for dotted, source in paths.items():
        head = dotted.split(".")[0]
        where = f"search space {source!r}"
        if head in _FROZEN:
            raise ConfigError(
                f"{where}: {dotted!r} cannot be tuned (it moves the train/validation/test "
                "periods or changes what is trained)"
            )
        parts = dotted.split(".")
        if head == "agents" and len(parts) > 1 and parts[1] != agent_type:
            raise ConfigError(
                f"{where}: {dotted!r} belongs to another agent; this study trains {agent_type} "
                f"(use agents.{agent_type}.<param>)"
            )
    reference = build_rl_config(base, spec.fixed, "fixed")
    for name in spec.space:
        for value in spec.space.probe_values(name):
            overrides = {**spec.fixed, **{t: value for t in spec.targets(name)}}
            build_rl_config(base, overrides, f"search space parameter {name!r} = {value!r}")
    return reference


def rl_base_params(spec: TuningSpec, base: Mapping[str, Any]) -> dict[str, Any]:
    """The configured values of the search-space parameters (trial 0), where in range."""
    cfg = build_rl_config(base, spec.fixed, "fixed").model_dump(mode="json")
    return spec.values_in_space(cfg)


# ---------------------------------------------------------------- one trial
class RLObjective(HybridObjective):
    """Optuna objective: sample ``rl_training`` values, train one agent, return validation Sharpe.

    ``setup.base_config`` is the rl_training dict; ``bundle`` is an :class:`RLTuningData`.
    Each trial is a child MLflow run when ``setup.parent_run_id`` is set.
    """

    def __init__(self, setup: TrialSetup, bundle: Any) -> None:
        super().__init__(setup, bundle)
        if not isinstance(bundle, RLTuningData):
            raise TrainingError(f"RLObjective needs RLTuningData, got {type(bundle).__name__}")
        self.data = bundle

    def __call__(self, trial: optuna.Trial) -> float:
        import torch

        from kubetrade.rl.pipeline import train_single_agent

        spec, setup, data = self.spec, self.setup, self.data
        params = spec.space.suggest(trial)
        overrides = {**spec.fixed, **spec.overrides(params)}
        trial.set_user_attr("overrides", overrides)
        trial_dir = Path(setup.tuning_dir) / TRIALS_DIR / f"{trial.number:04d}"
        tracker = self._start_run(trial, params, overrides, trial_dir)
        threads = torch.get_num_threads()
        torch.set_num_threads(setup.threads_per_trial)
        started = time.perf_counter()
        state, value = "FAIL", math.nan
        validation: dict[str, float] = {}
        try:
            cfg = build_rl_config(setup.base_config, overrides, f"trial {trial.number}")
            result = train_single_agent(
                data.agent_type, data.env_config, cfg, data.prices, data.features, trial_dir
            )
            if result.periods != data.periods:
                raise TrainingError(f"trial periods {result.periods} != study's {data.periods}")
            validation = dict(result.validation)
            value = float(validation.get("sharpe_ratio", math.nan))
            if not math.isfinite(value):
                raise TrainingError("validation sharpe_ratio is not finite")
            state = "COMPLETE"
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            torch.set_num_threads(threads)
            seconds = time.perf_counter() - started
            trial.set_user_attr("validation", validation)
            self._finish_trial(
                trial,
                trial_dir,
                tracker,
                state=state,
                epochs=1,  # one training run; StudyReport accounting
                seconds=seconds,
                metrics={f"val_{k}": v for k, v in validation.items()},
            )
        return value


# ---------------------------------------------------------------- the study
@dataclass
class RLTuningResult:
    """The outcome of :func:`tune_rl_agent`."""

    agent_type: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    best_overrides: dict[str, Any]
    config: RLTrainingConfig
    best_config_path: Path
    best_params_path: Path
    study: StudyReport
    mlflow_run_id: str | None = None


def _load(model: Any, value: Any) -> Any:
    return value if isinstance(value, model) else load_yaml_model(model, value)


def tune_rl_agent(
    agent_type: str,
    env_cfg: TradingEnvConfig | str | Path | None,
    rl_cfg: RLTrainingConfig | str | Path | None,
    prices: pd.DataFrame | None,
    features: pd.DataFrame | None,
    search_space: str | Path | Mapping[str, Any] | TuningSpec,
    run_dir: str | Path,
    num_trials: int | None = None,
    tracking_uri: str | None = None,
    *,
    study_name: str | None = None,
    keep_trial_files: bool = False,
) -> RLTuningResult:
    """Tune one agent type's ``rl_training`` values on validation Sharpe (resumable study).

    Args:
        agent_type: the agent every trial trains (``ppo``, ``a2c``, ``sac``, ...).
        env_cfg, rl_cfg: configs or YAML paths (``None`` = defaults), as for
            :func:`~kubetrade.rl.pipeline.train_single_agent`.
        prices, features: as for ``train_single_agent`` (``None`` = embedded data, basic
            features). The test period is blanked before any trial (:func:`mask_test_period`).
        search_space: tuning file (``config/rl_search_space.yaml`` format) or its dict.
        run_dir: the study is ``<run_dir>/tuning/optuna.db``; calling again resumes it.
        num_trials: overrides ``objective.num_trials`` (finished trials count toward it).
        tracking_uri: MLflow store; given, the study is a parent run and each trial a child.
        study_name: default ``kubetrade-rl-<agent_type>`` (also the MLflow experiment).
        keep_trial_files: keep each trial's ``model.zip`` under ``tuning/trials/``.

    Returns:
        :class:`RLTuningResult`; ``best_config_path`` is ``rl_cfg`` with the best values,
        loadable by :func:`~kubetrade.rl.config.load_rl_training_config`.

    Raises:
        ConfigError: bad search space or a value the agent cannot take.
        TrainingError: no trial completed.
    """
    agent_type = check_agent_type(agent_type)
    env = _load(TradingEnvConfig, env_cfg)
    rl = _load(RLTrainingConfig, rl_cfg)
    spec = load_tuning_spec(
        dict(search_space) if isinstance(search_space, Mapping) else search_space
    )
    if spec.objective.max_concurrent_trials > 1:
        log.info("RL tuning runs one trial at a time (max_concurrent_trials -> 1)")
    spec = spec.with_objective(num_trials=num_trials, max_concurrent_trials=1)
    base = rl.model_dump(mode="json")
    validate_rl_spec(spec, base, agent_type)
    masked_prices, masked_features, periods = mask_test_period(env, rl, prices, features)
    data = RLTuningData(agent_type, env, masked_prices, masked_features, periods)

    name = study_name or f"kubetrade-rl-{agent_type}"
    tuning_dir = Path(run_dir) / "tuning"
    tuning_dir.mkdir(parents=True, exist_ok=True)
    (tuning_dir / f"rl_search_space_{agent_type}.yaml").write_text(
        yaml.safe_dump(spec.to_dict(), sort_keys=False), encoding="utf-8"
    )
    url = storage_url(tuning_dir)
    study = open_study(spec, name, url)
    parent = _parent_run(study, run_dir, name, tracking_uri, spec, agent_type)
    setup = TrialSetup(
        base_config=base,
        spec=spec.to_dict(),
        tuning_dir=str(tuning_dir),
        study_name=name,
        tracking_uri=tracking_uri,
        experiment_name=name,
        parent_run_id=parent.run_id if parent is not None else None,
        keep_trial_files=keep_trial_files,
        objective=RL_OBJECTIVE,
    )
    if not study.trials:  # a new study: the configured values are trial 0
        start = rl_base_params(spec, base)
        if start:
            study.enqueue_trial(start, skip_if_exists=True)
    try:
        report = run_study(spec, setup, data)
    except BaseException as exc:
        if parent is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            parent.client.set_terminated(parent.run_id, status)
        raise
    result = _write_best(spec, rl, agent_type, name, tuning_dir, report)
    if parent is not None:
        parent.log_metrics(
            {
                f"best_{RL_METRIC}": result.best_value,
                "n_trials": report.n_trials,
                "n_complete": report.n_complete,
                "n_failed": report.n_failed,
            }
        )
        parent.set_tags({"best_trial": report.best_trial_number})
        for path in (result.best_config_path, result.best_params_path):
            parent.log_artifact(path, "tuning")
        parent.client.set_terminated(parent.run_id, "FINISHED")
        result.mlflow_run_id = parent.run_id
    return result


def _parent_run(
    study: optuna.Study,
    run_dir: str | Path,
    name: str,
    tracking_uri: str | None,
    spec: TuningSpec,
    agent_type: str,
) -> Any:
    """The study's MLflow parent run (reattached on resume), or None without a tracking URI."""
    if tracking_uri is None:
        return None
    return study_parent_run(
        study,
        run_dir,
        name,
        tracking_uri,
        step="tune-rl",
        params={
            "agent_type": agent_type,
            "metric": spec.objective.metric,
            "sampler": spec.sampler.type,
            "seed": spec.sampler.seed,
            "search_space": json.dumps(spec.space.to_dict()),
        },
    )


def _write_best(
    spec: TuningSpec,
    rl: RLTrainingConfig,
    agent_type: str,
    study_name: str,
    tuning_dir: Path,
    report: StudyReport,
) -> RLTuningResult:
    overrides = {**spec.fixed, **spec.overrides(report.best_params)}
    base = rl.model_dump(mode="json")
    config = build_rl_config(base, overrides, "best parameters")
    data = apply_overrides(copy.deepcopy(base), overrides)
    config_path = tuning_dir / f"best_rl_training_{agent_type}.yaml"
    header = (
        f"# Best rl_training config from tuning {agent_type} ({RL_METRIC}="
        f"{report.best_value:.6g}, trial {report.best_trial_number} of {report.n_trials}).\n"
        f"# + best values {json.dumps(overrides, sort_keys=True)}\n"
    )
    config_path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    params_path = tuning_dir / f"best_rl_params_{agent_type}.json"
    payload = {
        "agent_type": agent_type,
        "study_name": study_name,
        "metric": RL_METRIC,
        "mode": "max",
        "value": report.best_value if math.isfinite(report.best_value) else None,
        "params": report.best_params,
        "overrides": overrides,
        "best_trial": report.best_trial_number,
        "study": report.as_dict(),
    }
    params_path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    log.info("best %s=%.6g with %s -> %s", RL_METRIC, report.best_value, overrides, config_path)
    return RLTuningResult(
        agent_type=agent_type,
        metric=RL_METRIC,
        best_value=report.best_value,
        best_params=dict(report.best_params),
        best_overrides=overrides,
        config=config,
        best_config_path=config_path,
        best_params_path=params_path,
        study=report,
    )
