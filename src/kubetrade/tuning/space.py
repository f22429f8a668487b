"""The hyper-parameter search space, backend-neutral: Optuna in-process or a Katib Experiment.

:class:`SearchSpace` parses the YAML/dict form
(``{"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2}, ...}``), suggests
values from an ``optuna.Trial`` (:meth:`SearchSpace.suggest`), lists grids and casts values
a backend hands back (:meth:`SearchSpace.cast`). Katib's ``spec.parameters`` form is
:func:`kubetrade.k8s.katib.katib_parameters` (the cluster side reads this module, never the
other way round).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from kubetrade.config import StrictModel, format_validation_error
from kubetrade.errors import ConfigError

__all__ = [
    "LogUniform",
    "Uniform",
    "IntRange",
    "Choice",
    "Parameter",
    "SearchSpace",
    "format_number",
]

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


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


def format_number(value: float | int) -> str:
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

    def probe_values(self, name: str) -> list[Any]:
        """Values that exercise parameter ``name`` when checking a config: every choice,
        every int (or both ends of a range over 256 values), both ends of a float range."""
        p = self._params[name]
        if isinstance(p, Choice):
            return list(p.values)
        if isinstance(p, IntRange):
            count = (p.high - p.low) // p.step + 1
            return list(range(p.low, p.high + 1, p.step)) if count <= 256 else [p.low, p.high]
        return [p.low, p.high]

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
                    lookup = {v if isinstance(v, str) else format_number(v): v for v in p.values}
                    key = raw if isinstance(raw, str) else format_number(raw)
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
