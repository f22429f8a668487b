"""Read a Katib Experiment's status: the best trial so far and the trial counters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kubetrade.errors import TrainingError
from kubetrade.tuning.space import SearchSpace

__all__ = [
    "TrialMetric",
    "BestTrial",
    "ExperimentProgress",
    "best_trial_from_status",
    "experiment_progress",
]


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
