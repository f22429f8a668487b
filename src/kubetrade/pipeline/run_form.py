"""The pipeline's run form: the typed parameters a person sets per run.

The Kubeflow UI shows them (with these descriptions) as the run form of the compiled
pipeline; ``kubetrade run --param`` and ``kubetrade submit --param`` take the same names and
types. Everything else stays in the config files (``config/*.yaml``, baked into the image).
The pipeline's first task, ``resolve``, loads those files and applies the form with
:func:`apply_run_params`; every later task reads the resolved config it writes.

Presets (``model_size``) and the per-profile defaults (``kubetrade compile --profile``) live in
``config/run_form.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError

from kubetrade.config import StrictModel
from kubetrade.errors import ConfigError

if TYPE_CHECKING:
    from kubetrade.config.run import RunConfig

__all__ = [
    "RunParams",
    "RUN_FORM_FILE",
    "BASE_CONFIG_ENV",
    "apply_run_params",
    "params_from_run",
    "profile_params",
    "parse_run_params",
    "pipeline_inputs",
    "resolve_step",
    "check_submitted_form",
]

RUN_FORM_FILE = "config/run_form.yaml"
#: The resolve task's base config: a pipeline YAML (default ``config/pipeline.yaml``, e.g. one
#: mounted from a ConfigMap) or a resolved RunConfig JSON (the local runner's run_config.json).
BASE_CONFIG_ENV = "KUBETRADE_BASE_CONFIG"
PROFILES = ("demo", "full")


class RunParams(StrictModel):
    """The run form. Field order is the form's order; descriptions are what the UI shows."""

    symbols: list[str] = Field(
        min_length=1, description="Tickers to trade, e.g. [AAPL, IBM] (must exist in the source)"
    )
    start_date: str = Field(description="First day of data, YYYY-MM-DD")
    end_date: str = Field(description="Last day of data, YYYY-MM-DD")
    data_source: Literal["embedded", "files", "synthetic"] = Field(
        description="embedded (bundled daily bars), files (paths in config/pipeline.yaml) "
        "or synthetic"
    )
    epochs: int = Field(
        ge=1, description="Hybrid CNN+LSTM training epochs (cosine schedule follows)"
    )
    model_size: Literal["demo", "full", "config"] = Field(
        description="Model size preset: demo (small, CPU minutes), full (the guide's model) "
        "or config (as in the config files); sets the tuning ranges to match"
    )
    rl_agents: list[str] = Field(
        min_length=1,
        description="RL agents to train, one task each (ppo, a2c, sac, td3, dqn, qrdqn)",
    )
    rl_timesteps: int = Field(ge=1, description="Environment steps per RL agent")
    tuning_trials: int = Field(
        ge=0, description="Hyperparameter trials (Optuna / Katib); 0 trains the configured values"
    )
    walk_forward_folds: int = Field(
        ge=1, le=50, description="Walk-forward folds scored after training, one task each"
    )
    backend: Literal["local", "kubeflow"] = Field(
        description="kubeflow: train/tune as PyTorchJob/Katib; local: inside the step's pod"
    )


def _run_form_file() -> dict[str, Any]:
    from kubetrade.config import read_yaml_file

    data = read_yaml_file(RUN_FORM_FILE, "run form") or {}
    if not isinstance(data, dict) or set(data) != {"model_sizes", "profiles"}:
        raise ConfigError(f"{RUN_FORM_FILE}: expected the keys model_sizes and profiles")
    return data


def _model_size(run: RunConfig, presets: Mapping[str, Any]) -> str:
    """The preset ``run`` matches exactly, else ``config``."""
    from kubetrade.config import flatten

    training = flatten(run.training)
    for name, preset in presets.items():
        if any(training.get(k) != v for k, v in (preset.get("training") or {}).items()):
            continue
        if run.search_space and _tuning_differs(run.search_space, preset.get("tuning") or {}):
            continue
        return str(name)
    return "config"


def _tuning_differs(space: Mapping[str, Any], overrides: Mapping[str, Any]) -> bool:
    from kubetrade.tuning.spec import apply_spec_overrides

    return apply_spec_overrides(space, overrides) != dict(space)


def params_from_run(run: RunConfig) -> RunParams:
    """The form filled in with what ``run`` already does (applying it changes nothing)."""
    p, t = run.pipeline, run.training
    return RunParams(
        symbols=list(p.symbols),
        start_date=p.start_date or "",
        end_date=p.end_date or "",
        data_source=p.source.type,
        epochs=t.training.num_epochs,
        # without the presets file (a run outside the repo), nothing can match a preset
        model_size=_model_size(run, _run_form_file()["model_sizes"])  # type: ignore[arg-type]
        if Path(RUN_FORM_FILE).is_file()
        else "config",
        rl_agents=run.agent_types(),
        rl_timesteps=run.rl.rl_training.total_timesteps,
        tuning_trials=int(run.search_space.get("objective", {}).get("num_trials", 0))
        if p.tuning.enabled and run.search_space
        else 0,
        walk_forward_folds=t.validation.cv_folds,
        backend=p.backend,
    )


def profile_params(run: RunConfig, profile: str, backend: str | None = None) -> RunParams:
    """The form's defaults for ``kubetrade compile --profile``: ``run``'s values (demo), with
    the profile's entries of ``config/run_form.yaml`` on top."""
    profiles = _run_form_file()["profiles"]
    if profile not in profiles:
        raise ConfigError(f"--profile {profile!r}: use one of {', '.join(sorted(profiles))}")
    values = params_from_run(run).model_dump()
    values.update(profiles[profile] or {})
    if backend is not None:
        values["backend"] = backend
    form = _validated(values, f"{RUN_FORM_FILE}: profiles.{profile}")
    apply_run_params(run, form)  # a preset the config files cannot take fails here
    return form


def _validated(values: Mapping[str, Any], source: str) -> RunParams:
    from kubetrade.config import format_validation_error

    try:
        return RunParams.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def apply_run_params(run: RunConfig, params: RunParams | Mapping[str, Any]) -> RunConfig:
    """``run`` with the form's values applied, validated as a whole (ConfigError, one line).

    Only values that differ from ``run`` are written, so the form filled in from a config
    (:func:`params_from_run`) gives back exactly that config.
    """
    from kubetrade.config import TrainingConfig, apply_overrides, format_validation_error
    from kubetrade.config.rl import RLTrainingConfig
    from kubetrade.config.run import RunConfig, resolve_search_space
    from kubetrade.tuning.spec import apply_spec_overrides, load_tuning_spec

    form = params if isinstance(params, RunParams) else _validated(params, "run parameters")
    now = params_from_run(run)
    data = run.model_dump(mode="json")
    pipe, training = data["pipeline"], data["training"]
    train_over: dict[str, Any] = {}
    tune_over: dict[str, Any] = {}
    for key in ("symbols", "start_date", "end_date", "backend"):
        if getattr(form, key) != getattr(now, key):
            pipe[key] = getattr(form, key)
    if form.data_source != now.data_source:
        pipe["source"]["type"] = form.data_source
    if form.model_size != now.model_size and form.model_size != "config":
        preset = _run_form_file()["model_sizes"][form.model_size]
        train_over.update(preset.get("training") or {})
        tune_over.update(preset.get("tuning") or {})
    if form.epochs != now.epochs:
        train_over["training.num_epochs"] = form.epochs
        if run.training.training.scheduler.T_max == now.epochs:  # the schedule follows epochs
            train_over["training.scheduler.T_max"] = form.epochs
    if form.walk_forward_folds != now.walk_forward_folds:
        train_over["validation.cv_folds"] = form.walk_forward_folds
    rl_training = data["rl"]["rl_training"]
    if form.rl_agents != now.rl_agents:
        rl_training["agent_types"] = list(form.rl_agents)
    if form.rl_timesteps != now.rl_timesteps:
        rl_training["total_timesteps"] = form.rl_timesteps
    try:
        if train_over:
            data["training"] = TrainingConfig.model_validate(
                apply_overrides(copy.deepcopy(training), train_over)
            ).model_dump(mode="json")
        RLTrainingConfig.model_validate(rl_training)  # its errors name its own keys
        new = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "run parameters")) from None
    if form.tuning_trials != now.tuning_trials or tune_over:
        if form.tuning_trials == 0:
            new.pipeline.tuning.enabled = False
            new.search_space = {}
        else:
            space = new.search_space
            if not space:
                new.pipeline.tuning.enabled = True
                space = resolve_search_space(new.pipeline, new.training)
            overrides = {**tune_over, "objective.num_trials": form.tuning_trials}
            spec = load_tuning_spec(apply_spec_overrides(space, overrides))
            spec.validate(new.training.model_dump(mode="json"))
            new.search_space = spec.to_dict()
    return new


def pipeline_inputs() -> dict[str, dict[str, Any]]:
    """The compiled pipeline's ``root.inputDefinitions.parameters`` (types, descriptions)."""
    from google.protobuf import json_format

    from kubetrade.pipelines.training import training_pipeline

    spec = json_format.MessageToDict(training_pipeline.pipeline_spec)
    params = spec["root"]["inputDefinitions"]["parameters"]
    return {str(k): dict(v) for k, v in params.items()}


def parse_run_params(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` options typed and checked by the pipeline spec (as ``submit --param``),
    then by :class:`RunParams`; one-line errors."""
    from kubetrade.k8s.submit import parse_params

    if not items:
        return {}
    inputs = {k: {**v, "defaultValue": None} for k, v in pipeline_inputs().items()}
    return parse_params(inputs, items)


def read_base_config(env: Mapping[str, str]) -> RunConfig:
    """The resolve task's base: ``$KUBETRADE_BASE_CONFIG`` (RunConfig JSON or pipeline YAML),
    else ``config/pipeline.yaml``."""
    from kubetrade.config.run import RunConfig, load_run_config

    path = env.get(BASE_CONFIG_ENV) or "config/pipeline.yaml"
    if path.endswith(".json"):
        try:
            return RunConfig.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise ConfigError(f"{BASE_CONFIG_ENV}={path}: not a run config ({exc})") from None
    return load_run_config(path)


def resolve_step(params: Mapping[str, Any], out_path: str | Path) -> list[int]:
    """The pipeline's first task: base config + the run form -> ``run_config.json``.

    Returns the walk-forward fold indices (the folds' ParallelFor items; the RL agents'
    ParallelFor iterates over the form's ``rl_agents``, checked here first). One return value:
    kfp.local resolves a ParallelFor over a task's single ``Output`` only.
    """
    import os

    from kubetrade.pipeline.steps.common import write_json

    run = apply_run_params(read_base_config(os.environ), params)
    write_json(run.model_dump(mode="json"), out_path)
    return run.fold_indices()


def check_submitted_form(
    inputs: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any]
) -> None:
    """``kubetrade submit``: when the package's inputs are this run form, check the filled-in
    form (its defaults + ``params``) as the resolve task will, before anything is sent.
    Other pipelines pass unchecked (their inputs are only typed by the spec)."""
    if set(inputs) != set(RunParams.model_fields):
        return
    values: dict[str, Any] = {}
    for name, spec in inputs.items():
        value = params.get(name, spec.get("defaultValue"))
        if spec.get("parameterType") == "NUMBER_INTEGER" and isinstance(value, float):
            value = int(value) if value.is_integer() else value
        values[name] = value
    _validated(values, "--param")
