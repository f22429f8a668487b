"""The tuning file (``config/search_space.yaml``): one search space plus the study's settings.

The file has a ``parameters`` section in :class:`~kubetrade.tuning.space.SearchSpace`'s format
and the settings both backends share::

    objective: {metric: val_sharpe_ratio, mode: max, num_trials: 50,
                max_concurrent_trials: 4, max_t: 100}
    pruner: {type: asha, grace_period: 10, reduction_factor: 2}
    sampler: {type: tpe, seed: 42}
    links: {hidden_dim: [model.cnn.hidden_dim, model.fusion.output_dim]}
    fixed: {training.early_stopping_patience: 10}
    parameters:
      training.learning_rate: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
      hidden_dim: {type: choice, values: [128, 256, 512]}

A parameter name is either a dotted ``TrainingConfig`` path or a *link*: one sampled value
written to several config paths (``hidden_dim`` above). The guide's bare names
(``learning_rate``, ``lr``, ``batch_size``, ``hidden_dim``, ``num_layers``, ``dropout``) have
default links (:data:`GUIDE_LINKS`), so the guide's ``search_space`` dict works as written.

:meth:`TuningSpec.validate` builds the training config for every choice value and both ends
of every range, so a value that would break the model (``model.cnn.hidden_dim`` not
divisible by ``num_heads`` or by the number of ``filter_sizes``) fails before any trial runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from kubetrade.config import (
    StrictModel,
    TrainingConfig,
    apply_overrides,
    check_dotted_path,
    format_validation_error,
)
from kubetrade.errors import ConfigError
from kubetrade.tuning.space import Choice, IntRange, SearchSpace

ModelT = TypeVar("ModelT", bound=BaseModel)

__all__ = [
    "EPOCH_METRICS",
    "MONITOR_METRICS",
    "GUIDE_LINKS",
    "ObjectiveSettings",
    "PrunerSettings",
    "SamplerSettings",
    "KatibSettings",
    "TuningSpec",
    "load_tuning_spec",
    "apply_spec_overrides",
    "build_model_config",
    "metric_direction",
]

#: Per-epoch validation metrics the trainer logs; the only allowed objectives (never test_*).
EPOCH_METRICS = (
    "val_loss", "val_cls_loss", "val_reg_loss", "val_accuracy", "val_sharpe_ratio",
    "val_fold_mean_sharpe_ratio",
)  # fmt: skip
#: Metrics ``training.monitor`` accepts; trials monitor the objective when it is one of them.
MONITOR_METRICS = ("val_loss", "val_sharpe_ratio", "val_fold_mean_sharpe_ratio")
_MAXIMISED = ("val_accuracy", "val_sharpe_ratio", "val_fold_mean_sharpe_ratio")

#: Default targets of the guide's bare parameter names.
GUIDE_LINKS: dict[str, list[str]] = {
    "learning_rate": ["training.learning_rate"],
    "lr": ["training.learning_rate"],
    "batch_size": ["training.batch_size"],
    # CNN width and fusion width move together (both 256 in the guide's training.yaml);
    # the LSTM keeps its own width so hidden_dim=512 does not quadruple the recurrent cost
    "hidden_dim": ["model.cnn.hidden_dim", "model.fusion.output_dim"],
    "num_layers": ["model.lstm.num_layers"],
    "dropout": ["model.cnn.dropout", "model.lstm.dropout"],
}


def metric_direction(metric: str) -> Literal["max", "min"]:
    """The direction that makes ``metric`` better (losses down, Sharpe and accuracy up)."""
    return "max" if metric in _MAXIMISED else "min"


class ObjectiveSettings(StrictModel):
    """What to optimise and the trial budget."""

    metric: str = Field("val_sharpe_ratio", description="a validation metric of EPOCH_METRICS")
    mode: Literal["max", "min"] = "max"
    num_trials: int = Field(
        50, ge=1, le=100_000, description="trials in the study, resumed included"
    )
    max_concurrent_trials: int = Field(4, ge=1, le=256)
    max_t: int = Field(100, ge=1, description="epochs per trial; sets training.num_epochs")

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSettings:
        if self.metric not in EPOCH_METRICS:
            hint = " (tuning never reads the test split)" if "test" in self.metric else ""
            raise ValueError(
                f"metric {self.metric!r} is not a per-epoch validation metric{hint}; "
                f"use one of {', '.join(EPOCH_METRICS)}"
            )
        if self.mode != metric_direction(self.metric):
            raise ValueError(
                f"mode {self.mode!r} would select the worst {self.metric}; "
                f"use mode {metric_direction(self.metric)!r}"
            )
        return self


class PrunerSettings(StrictModel):
    """Early stopping of bad trials from their per-epoch reports (resource = epochs)."""

    type: Literal["asha", "median", "hyperband", "none"] = "asha"
    grace_period: int = Field(10, ge=1, description="epochs before a trial can be pruned")
    reduction_factor: int = Field(2, ge=2, description="asha/hyperband: keep 1/rf per rung")
    n_startup_trials: int = Field(3, ge=0, description="median: finished trials before pruning")


class SamplerSettings(StrictModel):
    """How trials are proposed locally (Katib's own algorithm is ``katib.algorithm``)."""

    type: Literal["tpe", "random"] = "tpe"
    seed: int = 42
    n_startup_trials: int = Field(10, ge=0, description="tpe: random trials before TPE kicks in")


class KatibSettings(StrictModel):
    """Katib-only settings (the rest comes from the shared sections)."""

    algorithm: str = Field("tpe", description="one of kubetrade.k8s.ALGORITHMS")
    max_failed_trial_count: int = Field(3, ge=0)
    early_stopping: Literal["medianstop", "none"] = Field(
        "medianstop", description="Katib has no ASHA; medianstop is its per-epoch early stopping"
    )
    goal: float | None = None


class _TuningFile(StrictModel):
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    pruner: PrunerSettings = Field(default_factory=PrunerSettings)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    katib: KatibSettings = Field(default_factory=KatibSettings)
    links: dict[str, list[str]] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> _TuningFile:
        if self.pruner.type != "none" and self.pruner.grace_period > self.objective.max_t:
            raise ValueError(
                f"pruner.grace_period ({self.pruner.grace_period}) exceeds objective.max_t "
                f"({self.objective.max_t}): no trial could ever be pruned"
            )
        for name, targets in self.links.items():
            if not targets:
                raise ValueError(f"links.{name}: list at least one config path")
        return self


@dataclass(frozen=True)
class TuningSpec:
    """A validated tuning file: search space, links, fixed overrides and study settings."""

    space: SearchSpace
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    pruner: PrunerSettings = field(default_factory=PrunerSettings)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    katib: KatibSettings = field(default_factory=KatibSettings)
    links: dict[str, list[str]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search space") -> TuningSpec:
        """Parse the tuning file's dict form.

        A mapping without a ``parameters`` key is taken as the parameters alone (the guide's
        ``search_space`` dict), with default settings.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: must be a mapping, got {type(data).__name__}")
        raw = dict(data) if "parameters" in data else {"parameters": dict(data)}
        try:
            parsed = _TuningFile.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from None
        space = SearchSpace.from_dict(parsed.parameters, source=f"{source}: parameters")
        links = {name: list(GUIDE_LINKS[name]) for name in space if name in GUIDE_LINKS}
        links.update({k: list(v) for k, v in parsed.links.items()})
        unused = sorted(set(parsed.links) - set(space.names))
        if unused:
            raise ConfigError(f"{source}: links {unused} name no parameter of the search space")
        for name in space:
            if name not in links and "." not in name:
                raise ConfigError(
                    f"{source}: parameter {name!r} is neither a dotted training-config path "
                    f"(e.g. training.{name}) nor a link; add links.{name}: [<config paths>]"
                )
        spec = cls(
            space=space,
            objective=parsed.objective,
            pruner=parsed.pruner,
            sampler=parsed.sampler,
            katib=parsed.katib,
            links=links,
            fixed=dict(parsed.fixed),
        )
        targets = [t for name in space for t in spec.targets(name)]
        clash = sorted(
            {t for t in targets if targets.count(t) > 1} | (set(targets) & set(spec.fixed))
        )
        if clash:
            raise ConfigError(
                f"{source}: config path(s) {clash} are set by more than one parameter or by "
                "'fixed'; each path may have one source"
            )
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> TuningSpec:
        """Read :meth:`from_dict`'s format from a YAML file."""
        from kubetrade.config import read_yaml_file

        return cls.from_dict(read_yaml_file(path, "search space") or {}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The file form (round-trips through :meth:`from_dict`)."""
        return {
            "objective": self.objective.model_dump(),
            "pruner": self.pruner.model_dump(),
            "sampler": self.sampler.model_dump(),
            "katib": self.katib.model_dump(),
            "links": copy.deepcopy(self.links),
            "fixed": copy.deepcopy(self.fixed),
            "parameters": self.space.to_dict(),
        }

    def with_objective(self, **changes: Any) -> TuningSpec:
        """A copy with objective settings replaced (validated again)."""
        data = self.to_dict()
        data["objective"].update({k: v for k, v in changes.items() if v is not None})
        return TuningSpec.from_dict(data)

    # ------------------------------------------------------------ overrides
    def targets(self, name: str) -> list[str]:
        """The config paths parameter ``name`` is written to."""
        return list(self.links.get(name, [name]))

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Sampled values (by parameter name) -> dotted config overrides."""
        out: dict[str, Any] = {}
        for name, value in params.items():
            if name not in self.space:
                raise ConfigError(
                    f"unknown parameter {name!r}; the search space has {self.space.names}"
                )
            for target in self.targets(name):
                out[target] = value
        return out

    def tuning_only_overrides(self) -> dict[str, Any]:
        """What every trial gets besides the sampled values: ``max_t`` epochs and the monitor."""
        out: dict[str, Any] = {"training.num_epochs": self.objective.max_t}
        if self.objective.metric in MONITOR_METRICS:
            # early stopping inside a trial then keeps the epoch the study is judged on
            out["training.monitor"] = self.objective.metric
        return out

    def trial_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """All overrides one trial trains with."""
        return {**self.fixed, **self.tuning_only_overrides(), **self.overrides(params)}

    def final_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Overrides for ``best_config.yaml``: a trial's, but ``num_epochs`` stays as configured."""
        out = {**self.fixed, **self.overrides(params)}
        if self.objective.metric in MONITOR_METRICS:
            out["training.monitor"] = self.objective.metric
        return out

    # ------------------------------------------------------------ validation
    def base_params(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The configured values of the parameters, where the search space contains them.

        The local study runs these first (``study.enqueue_trial``), so the configured training
        config is always trial 0 and the best trial is at least as good on validation.
        Parameters whose configured value lies outside their range or choices are left to the
        sampler.
        """
        cfg = build_config(base, dict(self.fixed), "fixed").model_dump(mode="json")
        return self.values_in_space(cfg)

    def values_in_space(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Each parameter's value in the nested config ``cfg`` (its first target path), where
        the search space contains it (within the range, or one of the choices)."""
        out: dict[str, Any] = {}
        for name in self.space:
            node: Any = cfg
            for part in self.targets(name)[0].split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            p = self.space[name]
            if node is None or isinstance(node, Mapping | list):
                continue
            if isinstance(p, Choice):
                if node in p.values:
                    out[name] = node
            elif (
                isinstance(node, int | float)
                and not isinstance(node, bool)
                and p.low <= node <= p.high
                and (not isinstance(p, IntRange) or node == int(node))
            ):
                out[name] = int(node) if isinstance(p, IntRange) else float(node)
        return out

    def probe_values(self, name: str) -> list[Any]:
        """Values :meth:`validate` tries (:meth:`SearchSpace.probe_values`)."""
        return self.space.probe_values(name)

    def validate(self, base: Mapping[str, Any]) -> TrainingConfig:
        """Check every probe value of every parameter against the base training config.

        Args:
            base: the training config's dict form (``training.yaml`` plus its overrides).

        Returns:
            The base config with the fixed and tuning-only overrides (the parameters at their
            base values).

        Raises:
            ConfigError: naming the parameter, the value and why it cannot be trained.
        """
        reference = build_config(base, {**self.fixed, **self.tuning_only_overrides()}, "fixed")
        for name in self.space:
            for value in self.probe_values(name):
                overrides = {**self.fixed, **self.tuning_only_overrides()}
                overrides.update({t: value for t in self.targets(name)})
                where = f"search space parameter {name!r} = {value!r}"
                cfg = build_config(base, overrides, where)
                branches = len(cfg.model.cnn.filter_sizes)
                if cfg.model.cnn.hidden_dim % branches:
                    raise ConfigError(
                        f"{where}: model.cnn.hidden_dim ({cfg.model.cnn.hidden_dim}) must be "
                        f"divisible by the number of filter_sizes ({branches}) so every "
                        "convolution branch gets the same width; change the choices or the links"
                    )
        return reference


def build_config(
    base: Mapping[str, Any], overrides: Mapping[str, Any], where: str
) -> TrainingConfig:
    """``base`` with dotted ``overrides`` applied, validated; ConfigError names ``where``."""
    return build_model_config(TrainingConfig, base, overrides, where)


def build_model_config(
    model: type[ModelT],
    base: Mapping[str, Any],
    overrides: Mapping[str, Any],
    where: str,
    what: str = "training-config",
) -> ModelT:
    """``base`` (a dict of ``model``) with dotted ``overrides``, each path checked against
    ``model`` first (:func:`kubetrade.config.check_dotted_path`), validated; ConfigError names ``where``."""
    data = copy.deepcopy(dict(base))
    for dotted in overrides:
        check_dotted_path(model, dotted, where, what)
    apply_overrides(data, dict(overrides))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def apply_spec_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a tuning file's dict with dotted overrides applied.

    ``parameters.<name>`` and ``links.<name>`` replace one whole entry (parameter names
    contain dots, ``parameters.training.learning_rate`` means the parameter
    ``training.learning_rate``); any other key is a dotted path (``objective.num_trials``).
    A ``null`` value under ``parameters.`` removes that parameter.
    """
    out = copy.deepcopy(dict(data))
    plain: dict[str, Any] = {}
    for key, value in overrides.items():
        section, sep, name = str(key).partition(".")
        if section in ("parameters", "links") and sep:
            entries = out.setdefault(section, {})
            if not isinstance(entries, dict):
                raise ConfigError(f"search space: {section} must be a mapping")
            if value is None:
                entries.pop(name, None)
            else:
                entries[name] = value
        else:
            plain[key] = value
    return apply_overrides(out, plain)


def load_tuning_spec(
    source: str | Path | Mapping[str, Any] | SearchSpace | TuningSpec,
) -> TuningSpec:
    """A :class:`TuningSpec` from a YAML path, a dict, a bare SearchSpace or a spec."""
    if isinstance(source, TuningSpec):
        return source
    if isinstance(source, SearchSpace):
        return TuningSpec.from_dict(source.to_dict())
    if isinstance(source, Mapping):
        return TuningSpec.from_dict(source)
    return TuningSpec.from_yaml(source)
