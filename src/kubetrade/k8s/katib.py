"""One hyper-parameter search space, two backends: Optuna in-process and a Katib Experiment.

:class:`SearchSpace` is backend-neutral: it parses the YAML/dict form
(``{"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2}, ...}``), suggests
values from an ``optuna.Trial`` (:meth:`SearchSpace.suggest`) and turns into Katib
``spec.parameters`` (:meth:`SearchSpace.to_katib_parameters`).

:func:`build_experiment` writes a ``kubeflow.org/v1beta1`` Experiment whose trials are
PyTorchJobs from :func:`~kubetrade.k8s.pytorchjob.build_pytorchjob`. The rules Katib's
admission webhook enforces (``pkg/webhook/v1beta1/experiment/validator/validator.go``) and
the suggestion services' own checks (grid needs a finite grid no smaller than
``maxTrialCount``; CMA-ES needs two or more numeric parameters) are checked here, so a bad
experiment fails with a :class:`~kubetrade.errors.ConfigError` before it reaches a cluster.

Metrics reach Katib through its default StdOut collector: the trainer prints lines made
by :func:`format_metric_line` (``val_sharpe_ratio=1.2345``), which Katib parses with
:data:`KATIB_METRIC_REGEX`.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from kubetrade.config import StrictModel, format_validation_error
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.k8s.pytorchjob import CONTAINER_NAME, build_pytorchjob, current_namespace
from kubetrade.k8s.versions import (
    DEFAULT_KATIB_VERSION,
    check_katib_version,
    katib_has_distribution,
)

__all__ = [
    "KATIB_GROUP",
    "KATIB_VERSION",
    "EXPERIMENT_PLURAL",
    "EXPERIMENT_KIND",
    "KATIB_METRIC_REGEX",
    "ALGORITHMS",
    "SUCCESS_CONDITION",
    "FAILURE_CONDITION",
    "TRIAL_NAME_PLACEHOLDER",
    "EXPERIMENT_LABEL",
    "LogUniform",
    "Uniform",
    "IntRange",
    "Choice",
    "Parameter",
    "SearchSpace",
    "MedianStop",
    "TrialMetric",
    "BestTrial",
    "ExperimentProgress",
    "build_experiment",
    "format_metric_line",
    "parse_metric_lines",
    "best_trial_from_status",
    "experiment_progress",
]

KATIB_GROUP = "kubeflow.org"
KATIB_VERSION = "v1beta1"
EXPERIMENT_PLURAL = "experiments"
EXPERIMENT_KIND = "Experiment"

#: Katib's default StdOut/File metrics filter (``pkg/metricscollector/v1beta1/common``).
KATIB_METRIC_REGEX = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
_METRIC_RE = re.compile(KATIB_METRIC_REGEX)

#: Katib's built-in suggestion algorithms that fit a hyper-parameter (not NAS) search.
ALGORITHMS = (
    "tpe",
    "random",
    "grid",
    "bayesianoptimization",
    "multivariate-tpe",
    "cmaes",
    "hyperband",
)

#: GJSON conditions for Kubeflow training jobs (Katib's documented PyTorchJob values).
SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'

#: Put this in trial args to get the trial's own name (e.g. a per-trial output folder).
TRIAL_NAME_PLACEHOLDER = "${trialParameters.trialName}"
#: Pod label on every trial pod: the experiment's name (the launcher finds its pods by it).
EXPERIMENT_LABEL = "kubetrade/experiment"
_TRIAL_NAME_PARAM = {
    "name": "trialName",
    "reference": "${trialSpec.Name}",
    "description": "name of the Katib trial",
}
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_EXPERIMENT_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# ------------------------------------------------------------------ search space
class LogUniform(StrictModel):
    """A float sampled uniformly in log space between ``low`` and ``high`` (both > 0)."""

    type: Literal["loguniform"] = "loguniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _check(self) -> LogUniform:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got low={self.low}, high={self.high}")
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low}")
        if self.high <= self.low:
            raise ValueError(f"needs low < high, got low={self.low}, high={self.high}")
        return self


class Uniform(StrictModel):
    """A float sampled uniformly in ``[low, high]``; ``step`` makes it a grid (for ``grid``)."""

    type: Literal["uniform"] = "uniform"
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got low={self.low}, high={self.high}")
        if self.high <= self.low:
            raise ValueError(f"needs low < high, got low={self.low}, high={self.high}")
        if self.step is not None and self.step > self.high - self.low:
            raise ValueError(f"step {self.step} is larger than high - low = {self.high - self.low}")
        return self


class IntRange(StrictModel):
    """An integer in ``[low, high]`` (inclusive) with ``step``; ``log`` samples in log space."""

    type: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.high <= self.low:
            raise ValueError(f"needs low < high, got low={self.low}, high={self.high}")
        if self.log and self.low < 1:
            raise ValueError(f"log=true needs low >= 1, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError("log=true cannot be combined with step != 1")
        if (self.high - self.low) % self.step:
            raise ValueError(
                f"high - low ({self.high - self.low}) must be a multiple of step ({self.step})"
            )
        return self


class Choice(StrictModel):
    """One of a list of distinct values (numbers, strings or booleans)."""

    type: Literal["choice"] = "choice"
    values: list[bool | int | float | str] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Choice:
        keys = [str(v) for v in self.values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"values must be distinct, got {self.values}")
        return self


Parameter = LogUniform | Uniform | IntRange | Choice
_PARAM_TYPES: dict[str, type[StrictModel]] = {
    "loguniform": LogUniform,
    "uniform": Uniform,
    "int": IntRange,
    "choice": Choice,
}


def _format_number(value: float | int) -> str:
    """Shortest text that parses back to the same number (Go and Python agree on it)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class SearchSpace:
    """An ordered, validated mapping ``parameter name -> distribution``.

    Parameter names may be dotted config paths (``model.lstm.hidden_dim``); they must start
    with a letter or ``_`` and use letters, digits, ``_``, ``.`` and ``-``.
    """

    def __init__(self, parameters: Mapping[str, Parameter]) -> None:
        if not parameters:
            raise ConfigError("search space is empty: define at least one parameter")
        for name in parameters:
            _check_param_name(name)
        self._params: dict[str, Parameter] = dict(parameters)

    # -- construction --------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search space") -> SearchSpace:
        """Parse ``{name: {"type": ..., ...}}``; every problem is a ConfigError naming it."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: must be a mapping of parameter name to spec")
        params: dict[str, Parameter] = {}
        for name, spec in data.items():
            _check_param_name(name, source)
            where = f"{source}: parameter {name!r}"
            if not isinstance(spec, Mapping):
                raise ConfigError(f"{where}: must be a mapping with a 'type', got {spec!r}")
            kind = spec.get("type")
            model = _PARAM_TYPES.get(kind) if isinstance(kind, str) else None
            if model is None:
                raise ConfigError(
                    f"{where}: unknown distribution type {kind!r}; "
                    f"use one of {', '.join(_PARAM_TYPES)}"
                )
            try:
                params[name] = model.model_validate(dict(spec))  # type: ignore[assignment]
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, where)) from None
        if not params:
            raise ConfigError(f"{source}: is empty; define at least one parameter")
        return cls(params)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read :meth:`from_dict`'s format from a YAML file."""
        from kubetrade.config import read_yaml_file

        return cls.from_dict(read_yaml_file(path, "search space") or {}, source=str(path))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The plain-dict form (round-trips through :meth:`from_dict`)."""
        return {name: p.model_dump(exclude_none=True) for name, p in self._params.items()}

    # -- mapping protocol ----------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Parameter names, in definition order."""
        return list(self._params)

    def __getitem__(self, name: str) -> Parameter:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()!r})"

    # -- backends ------------------------------------------------------------
    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask an ``optuna.Trial`` (or anything with its ``suggest_*`` methods) for values."""
        values: dict[str, Any] = {}
        for name, p in self._params.items():
            if isinstance(p, LogUniform):
                values[name] = trial.suggest_float(name, p.low, p.high, log=True)
            elif isinstance(p, Uniform):
                values[name] = trial.suggest_float(name, p.low, p.high, step=p.step)
            elif isinstance(p, IntRange):
                values[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            else:
                values[name] = trial.suggest_categorical(name, list(p.values))
        return values

    def to_optuna_distributions(self) -> dict[str, Any]:
        """``{name: optuna.distributions.*}`` (for ``study.ask(fixed_distributions=...)``)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if isinstance(p, LogUniform):
                out[name] = FloatDistribution(p.low, p.high, log=True)
            elif isinstance(p, Uniform):
                out[name] = FloatDistribution(p.low, p.high, step=p.step)
            elif isinstance(p, IntRange):
                out[name] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
            else:
                out[name] = CategoricalDistribution(list(p.values))
        return out

    def to_katib_parameters(
        self, katib_version: str = DEFAULT_KATIB_VERSION
    ) -> list[dict[str, Any]]:
        """Katib ``spec.parameters`` (feasibleSpace values are strings, as Katib wants).

        Katib v0.17 (Kubeflow 1.9) has no ``feasibleSpace.distribution``: the webhook's Go
        types drop it and every double is sampled uniformly. For that version a log-scale
        parameter is a ConfigError (it would silently become uniform) and ``uniform`` is
        left implicit.

        Raises:
            ConfigError: a log-scale parameter for a Katib without ``distribution``.
        """
        with_distribution = katib_has_distribution(katib_version)
        out: list[dict[str, Any]] = []
        for name, p in self._params.items():
            if not with_distribution and (
                isinstance(p, LogUniform) or (isinstance(p, IntRange) and p.log)
            ):
                raise ConfigError(
                    f"parameter {name!r} is log-scale but Katib {katib_version} has no "
                    "feasibleSpace.distribution (it would be sampled uniformly); use Katib "
                    ">= v0.18 (Kubeflow 1.10) or make it a 'choice'"
                )
            space: dict[str, Any]
            if isinstance(p, LogUniform):
                kind = "double"
                space = {
                    "min": _format_number(p.low),
                    "max": _format_number(p.high),
                    "distribution": "logUniform",
                }
            elif isinstance(p, Uniform):
                kind = "double"
                space = {
                    "min": _format_number(p.low),
                    "max": _format_number(p.high),
                    "distribution": "uniform",
                }
                if p.step is not None:
                    space["step"] = _format_number(p.step)
            elif isinstance(p, IntRange):
                kind = "int"
                space = {"min": str(p.low), "max": str(p.high)}
                if p.step != 1:
                    space["step"] = str(p.step)
                if p.log:
                    space["distribution"] = "logUniform"
            else:
                kind = "categorical"
                space = {
                    "list": [_format_number(v) if not isinstance(v, str) else v for v in p.values]
                }
            if not with_distribution:
                space.pop("distribution", None)
            out.append({"name": name, "parameterType": kind, "feasibleSpace": space})
        return out

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's grid values (for Katib ``grid`` or ``optuna.samplers.GridSampler``).

        Raises:
            ConfigError: a loguniform parameter, or a uniform one without ``step``.
        """
        axes: dict[str, list[Any]] = {}
        continuous = []
        for name, p in self._params.items():
            if isinstance(p, IntRange):
                axes[name] = list(range(p.low, p.high + 1, p.step))
            elif isinstance(p, Choice):
                axes[name] = list(p.values)
            elif isinstance(p, Uniform) and p.step is not None:
                count = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
                axes[name] = [p.low + i * p.step for i in range(count)]
            else:
                continuous.append(name)
        if continuous:
            raise ConfigError(
                "grid search needs a finite grid: give 'step' to uniform parameters and replace "
                f"loguniform ones with a 'choice' list (offending: {', '.join(continuous)})"
            )
        return axes

    def grid_size(self) -> int | None:
        """Number of grid points, or None when a parameter is continuous without ``step``."""
        try:
            return math.prod(len(values) for values in self.grid().values())
        except ConfigError:
            return None

    def cast(self, assignments: Mapping[str, Any]) -> dict[str, Any]:
        """Turn assignments (Katib hands back strings) into typed values, checking bounds.

        Raises:
            ConfigError: unknown or missing parameter, or a value outside its space.
        """
        unknown = sorted(set(assignments) - set(self._params))
        if unknown:
            raise ConfigError(f"unknown parameters {unknown}; the search space has {self.names}")
        missing = [n for n in self._params if n not in assignments]
        if missing:
            raise ConfigError(f"parameters {missing} have no value")
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            raw = assignments[name]
            try:
                if isinstance(p, Choice):
                    lookup = {v if isinstance(v, str) else _format_number(v): v for v in p.values}
                    key = raw if isinstance(raw, str) else _format_number(raw)
                    if key not in lookup:
                        raise ValueError(f"not one of {p.values}")
                    out[name] = lookup[key]
                elif isinstance(p, IntRange):
                    number = float(raw)
                    if number != int(number):
                        raise ValueError("not an integer")
                    value = int(number)
                    if not p.low <= value <= p.high:
                        raise ValueError(f"outside [{p.low}, {p.high}]")
                    out[name] = value
                else:
                    value_f = float(raw)
                    tolerance = 1e-9 * max(1.0, abs(p.high))
                    if not p.low - tolerance <= value_f <= p.high + tolerance:
                        raise ValueError(f"outside [{p.low}, {p.high}]")
                    out[name] = value_f
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"parameter {name!r}: value {raw!r} is invalid ({exc})") from None
        return out


def _check_param_name(name: Any, source: str = "search space") -> None:
    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        raise ConfigError(
            f"{source}: parameter name {name!r} is invalid; start with a letter or '_' and use "
            "letters, digits, '_', '.', '-'"
        )


# ------------------------------------------------------------------ metrics
def format_metric_line(name: str, value: float, **extra: float) -> str:
    """One stdout line Katib's StdOut collector parses: ``name=value [other=value ...]``.

    Raises:
        TrainingError: a value is NaN/inf (Katib's filter cannot parse it; the run diverged).
        ValueError: a metric name Katib's filter would not match.
    """
    parts = []
    for metric, metric_value in {name: value, **extra}.items():
        if not re.fullmatch(r"[\w|-]+", metric):
            raise ValueError(f"metric name {metric!r} must match [\\w|-]+ for Katib")
        number = float(metric_value)
        if not math.isfinite(number):
            raise TrainingError(
                f"metric {metric}={number} is not finite; the run diverged "
                "(lower the learning rate or enable gradient clipping)"
            )
        parts.append(f"{metric}={number!r}")
    return " ".join(parts)


def parse_metric_lines(text: str) -> dict[str, list[float]]:
    """Parse stdout the way Katib's StdOut collector does: every ``name=value`` match."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for match in _METRIC_RE.finditer(line):
            name, value = match.group(1), match.group(2)
            try:
                out.setdefault(name, []).append(float(value))
            except ValueError:
                continue
    return out


# ------------------------------------------------------------------ experiment
class MedianStop(StrictModel):
    """Katib's ``medianstop`` early stopping: stop a trial below the median of completed ones."""

    min_trials_required: int = Field(default=3, ge=1)
    start_step: int = Field(default=4, ge=1)

    def to_katib(self) -> dict[str, Any]:
        return {
            "algorithmName": "medianstop",
            "algorithmSettings": [
                {"name": "min_trials_required", "value": str(self.min_trials_required)},
                {"name": "start_step", "value": str(self.start_step)},
            ],
        }


def _trial_param_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    candidate, index = base, 2
    while candidate in taken:
        candidate, index = f"{base}_{index}", index + 1
    taken.add(candidate)
    return candidate


def build_experiment(
    name: str,
    *,
    namespace: str | None = None,
    search_space: SearchSpace | Mapping[str, Any],
    objective_metric: str = "val_sharpe_ratio",
    mode: Literal["max", "min", "maximize", "minimize"] = "max",
    goal: float | None = None,
    additional_metrics: Sequence[str] = (),
    algorithm: str = "tpe",
    algorithm_settings: Mapping[str, str | int | float] | None = None,
    parallel_trial_count: int = 2,
    max_trial_count: int = 12,
    max_failed_trial_count: int = 3,
    early_stopping: MedianStop | None = None,
    trial_image: str | None = None,
    trial_args: Sequence[str] = (),
    param_flag: str = "--hparam",
    num_workers: int | None = None,
    nproc_per_node: int | None = None,
    job_options: Mapping[str, Any] | None = None,
    resume_policy: Literal["Never", "LongRunning", "FromVolume"] = "Never",
    katib_version: str = DEFAULT_KATIB_VERSION,
    param_targets: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Build a Katib ``Experiment`` whose trials are PyTorchJobs.

    Each trial runs ``trial_args`` followed by ``param_flag name=${trialParameters.x}`` for
    every parameter, e.g. ``--hparam learning_rate=0.0003 --hparam batch_size=64``. Put
    :data:`TRIAL_NAME_PLACEHOLDER` in ``trial_args`` (e.g. ``--out /data/tune/<it>``) to give
    each trial its own output folder.

    Args:
        name: experiment name (lower-case, starts with a letter, at most 40 characters so
            Katib's trial and pod names stay valid).
        namespace: namespace (default: the one this process runs in,
            :func:`~kubetrade.k8s.pytorchjob.current_namespace`); it must carry ``katib.kubeflow.org/metrics-collector-injection:
            enabled`` (``manifests/base`` sets it).
        search_space: a :class:`SearchSpace` or its dict form.
        objective_metric: metric the trainer prints with :func:`format_metric_line`.
        mode: ``max``/``maximize`` or ``min``/``minimize``.
        goal: stop once the objective reaches this value (optional).
        additional_metrics: other metrics to record (not the objective).
        algorithm: one of :data:`ALGORITHMS`.
        algorithm_settings: Katib ``algorithmSettings`` (values become strings).
        parallel_trial_count, max_trial_count, max_failed_trial_count: Katib budgets.
        early_stopping: :class:`MedianStop` settings, or None.
        trial_image: trainer image (or ``job_options["image"]``).
        trial_args: trainer arguments before the hyper-parameter flags.
        param_flag: flag that introduces each ``name=value`` pair.
        num_workers, nproc_per_node: trial job layout (override ``job_options``).
        job_options: more :func:`~kubetrade.k8s.pytorchjob.build_pytorchjob` keyword
            arguments, e.g. ``ClusterTrainingProfile.job_kwargs()``. Trials always get
            ``restartPolicy: Never`` and ``backoffLimit: 0`` (a crashed trial is a failed
            trial, not a retry) and no TTL (Katib cleans up its trials).
        resume_policy: Katib ``resumePolicy`` (``Never`` removes the suggestion service
            when the experiment ends).
        katib_version: the target Katib (:data:`~kubetrade.k8s.versions.KATIB_VERSIONS`);
            v0.17 has no ``feasibleSpace.distribution``.
        param_targets: search-space name -> the flag names its value is passed as (a
            linked parameter feeds several config paths); default: its own name.

    Every trial pod runs ``sh -c '<command line>'`` with each argument shell-quoted: Katib's
    metrics collector rewrites the primary container into ``sh -c "<command and args joined
    with spaces>"`` (``pkg/webhook/v1beta1/pod/utils.go``), so unquoted arguments would be
    split and interpreted by the shell; workers run the same quoted line.

    Raises:
        ConfigError: anything Katib's webhook or suggestion service would reject.
    """
    katib_version = check_katib_version(katib_version)
    namespace = namespace or current_namespace()
    if not isinstance(name, str) or len(name) > 40 or not _EXPERIMENT_NAME.match(name):
        raise ConfigError(
            f"experiment name {name!r} is invalid: at most 40 lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    space = (
        search_space
        if isinstance(search_space, SearchSpace)
        else SearchSpace.from_dict(search_space)
    )
    mode_map = {
        "max": "maximize",
        "maximize": "maximize",
        "min": "minimize",
        "minimize": "minimize",
    }
    if mode not in mode_map:
        raise ConfigError(f"mode {mode!r} is invalid; use 'max' or 'min'")
    objective_type = mode_map[mode]
    for metric in (objective_metric, *additional_metrics):
        if not re.fullmatch(r"[\w|-]+", metric or ""):
            raise ConfigError(f"metric name {metric!r} must match [\\w|-]+ (Katib's StdOut filter)")
    if objective_metric in additional_metrics:
        raise ConfigError(
            f"additional_metrics must not repeat the objective metric {objective_metric!r}"
        )
    if len(set(additional_metrics)) != len(additional_metrics):
        raise ConfigError(f"additional_metrics has duplicates: {list(additional_metrics)}")
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}"
        )
    if max_trial_count < 1:
        raise ConfigError(f"max_trial_count must be > 0, got {max_trial_count}")
    if parallel_trial_count < 1:
        raise ConfigError(f"parallel_trial_count must be > 0, got {parallel_trial_count}")
    if parallel_trial_count > max_trial_count:
        raise ConfigError(
            f"parallel_trial_count ({parallel_trial_count}) must be <= max_trial_count "
            f"({max_trial_count})"
        )
    if not 0 <= max_failed_trial_count <= max_trial_count:
        raise ConfigError(
            f"max_failed_trial_count must be in [0, max_trial_count={max_trial_count}], "
            f"got {max_failed_trial_count}"
        )
    if goal is not None and not math.isfinite(goal):
        raise ConfigError(f"goal must be a finite number, got {goal}")
    settings = {str(k): str(v) for k, v in (algorithm_settings or {}).items()}
    _check_algorithm(algorithm, space, max_trial_count, settings)

    # --- trial template
    options: dict[str, Any] = dict(job_options or {})
    for key in ("labels", "include_metadata_name", "args"):
        if key in options:
            raise ConfigError(f"job_options may not set {key!r}; build_experiment sets it")
    options.pop("namespace", None)
    if trial_image is not None:
        options["image"] = trial_image
    if "image" not in options:
        raise ConfigError("build_experiment needs trial_image (or job_options['image'])")
    if num_workers is not None:
        options["num_workers"] = num_workers
    if nproc_per_node is not None:
        options["nproc_per_node"] = nproc_per_node
    options.update(restart_policy="Never", backoff_limit=0, ttl_seconds_after_finished=None)

    taken: set[str] = {"trialName"}
    trial_parameters: list[dict[str, str]] = []
    hparam_args: list[str] = []
    for pname in space:
        tp = _trial_param_name(pname, taken)
        trial_parameters.append(
            {"name": tp, "reference": pname, "description": f"search-space parameter {pname}"}
        )
        for target in (param_targets or {}).get(pname) or [pname]:
            hparam_args += [param_flag, f"{target}=${{trialParameters.{tp}}}"]
    args = [str(a) for a in trial_args]
    if any(TRIAL_NAME_PLACEHOLDER in a for a in args):
        trial_parameters.append(dict(_TRIAL_NAME_PARAM))
    leftover = [a for a in args if "${trialParameters." in a.replace(TRIAL_NAME_PLACEHOLDER, "")]
    if leftover:
        raise ConfigError(
            f"trial_args {leftover} reference trial parameters; only {TRIAL_NAME_PLACEHOLDER} "
            "is allowed there (search-space values are added by build_experiment)"
        )
    trial_spec = build_pytorchjob(
        "trial",
        args=args + hparam_args,
        include_metadata_name=False,
        labels={"app.kubernetes.io/component": "tuning-trial", EXPERIMENT_LABEL: name},
        **options,
    )
    _shell_quote_containers(trial_spec)

    objective: dict[str, Any] = {
        "type": objective_type,
        "objectiveMetricName": objective_metric,
        "metricStrategies": [{"name": objective_metric, "value": mode_map[mode][:3]}]
        + [{"name": m, "value": "latest"} for m in additional_metrics],
    }
    if goal is not None:
        objective["goal"] = float(goal)
    if additional_metrics:
        objective["additionalMetricNames"] = list(additional_metrics)

    algorithm_spec: dict[str, Any] = {"algorithmName": algorithm}
    if settings:
        algorithm_spec["algorithmSettings"] = [{"name": k, "value": v} for k, v in settings.items()]

    spec: dict[str, Any] = {
        "objective": objective,
        "algorithm": algorithm_spec,
        "parallelTrialCount": parallel_trial_count,
        "maxTrialCount": max_trial_count,
        "maxFailedTrialCount": max_failed_trial_count,
        "resumePolicy": resume_policy,
        "metricsCollectorSpec": {
            "collector": {"kind": "StdOut"},
            "source": {"filter": {"metricsFormat": [KATIB_METRIC_REGEX]}},
        },
        "parameters": space.to_katib_parameters(katib_version),
        "trialTemplate": {
            "primaryContainerName": CONTAINER_NAME,
            "primaryPodLabels": {"training.kubeflow.org/job-role": "master"},
            "successCondition": SUCCESS_CONDITION,
            "failureCondition": FAILURE_CONDITION,
            "trialParameters": trial_parameters,
            "trialSpec": trial_spec,
        },
    }
    if early_stopping is not None:
        spec["earlyStopping"] = early_stopping.to_katib()
    return {
        "apiVersion": f"{KATIB_GROUP}/{KATIB_VERSION}",
        "kind": EXPERIMENT_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "kubetrade"},
        },
        "spec": spec,
    }


def _shell_quote_containers(job: dict[str, Any]) -> None:
    """Turn every replica's ``command + args`` into ``sh -c '<quoted command line>'``."""
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        for container in replica["template"]["spec"]["containers"]:
            argv = [*container.get("command", []), *container.get("args", [])]
            container["command"] = ["sh", "-c"]
            container["args"] = [shlex.join(argv)]


def _check_algorithm(
    algorithm: str, space: SearchSpace, max_trial_count: int, settings: Mapping[str, str]
) -> None:
    if algorithm == "grid":
        size = math.prod(len(values) for values in space.grid().values())
        if max_trial_count > size:
            raise ConfigError(
                f"grid search: max_trial_count {max_trial_count} exceeds the {size} grid points; "
                f"lower max_trial_count to <= {size}"
            )
    elif algorithm == "cmaes":
        numeric = [n for n in space if not isinstance(space[n], Choice)]
        if len(numeric) < 2:
            raise ConfigError(
                f"cmaes needs at least two numeric (non-choice) parameters, got {numeric}"
            )
    elif algorithm == "hyperband":
        resource = settings.get("resource_name")
        if resource is None or resource not in space:
            raise ConfigError(
                "hyperband needs algorithm_settings['resource_name'] naming a search-space "
                f"parameter used as the budget (e.g. num_epochs), got {resource!r}"
            )
        if isinstance(space[resource], Choice | LogUniform):
            raise ConfigError(
                f"hyperband resource parameter {resource!r} must be 'int' or 'uniform'"
            )
        if "eta" in settings and not float(settings["eta"]) > 1:
            raise ConfigError(f"hyperband eta must be > 1, got {settings['eta']}")


# ------------------------------------------------------------------ status
@dataclass(frozen=True)
class TrialMetric:
    """A metric Katib recorded for a trial (None where Katib reports 'unavailable')."""

    name: str
    latest: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class BestTrial:
    """``status.currentOptimalTrial`` of an Experiment."""

    name: str
    parameters: dict[str, Any]
    metrics: dict[str, TrialMetric] = field(default_factory=dict)

    def value(self, metric: str, strategy: Literal["latest", "min", "max"] = "latest") -> float:
        """One recorded value of ``metric``; TrainingError when Katib has none."""
        found = self.metrics.get(metric)
        number = getattr(found, strategy) if found is not None else None
        if number is None:
            raise TrainingError(
                f"best trial {self.name} has no {strategy} value for metric {metric!r}; "
                f"recorded: {sorted(self.metrics)}"
            )
        return float(number)


def _to_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def best_trial_from_status(
    experiment: Mapping[str, Any], search_space: SearchSpace | None = None
) -> BestTrial | None:
    """Read ``status.currentOptimalTrial``; None while no trial has finished.

    With ``search_space`` the parameter values are cast back to their types (Katib returns
    strings); without it they stay strings.
    """
    status = experiment.get("status") or {}
    optimal = status.get("currentOptimalTrial") or {}
    best_name = optimal.get("bestTrialName")
    if not best_name:
        return None
    raw = {a["name"]: a.get("value") for a in optimal.get("parameterAssignments") or []}
    parameters = search_space.cast(raw) if search_space is not None else raw
    metrics: dict[str, TrialMetric] = {}
    for m in (optimal.get("observation") or {}).get("metrics") or []:
        metrics[m["name"]] = TrialMetric(
            name=m["name"],
            latest=_to_float(m.get("latest")),
            min=_to_float(m.get("min")),
            max=_to_float(m.get("max")),
        )
    return BestTrial(name=best_name, parameters=parameters, metrics=metrics)


@dataclass(frozen=True)
class ExperimentProgress:
    """Trial counters from an Experiment's status (0 where Katib omits them)."""

    trials: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    pending: int = 0
    killed: int = 0
    early_stopped: int = 0
    metrics_unavailable: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.killed + self.early_stopped

    def summary(self) -> str:
        return (
            f"trials={self.trials} succeeded={self.succeeded} running={self.running} "
            f"pending={self.pending} failed={self.failed} early_stopped={self.early_stopped} "
            f"killed={self.killed} metrics_unavailable={self.metrics_unavailable}"
        )


def experiment_progress(experiment: Mapping[str, Any]) -> ExperimentProgress:
    """The trial counters of an Experiment object."""
    s = experiment.get("status") or {}
    return ExperimentProgress(
        trials=int(s.get("trials") or 0),
        succeeded=int(s.get("trialsSucceeded") or 0),
        failed=int(s.get("trialsFailed") or 0),
        running=int(s.get("trialsRunning") or 0),
        pending=int(s.get("trialsPending") or 0),
        killed=int(s.get("trialsKilled") or 0),
        early_stopped=int(s.get("trialsEarlyStopped") or 0),
        metrics_unavailable=int(s.get("trialMetricsUnavailable") or 0),
    )
