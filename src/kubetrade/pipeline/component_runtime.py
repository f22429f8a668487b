"""What every component does around its step: one-line errors, timing, error file, the
Metrics artifact's names with units, and report files named with their extension.

A user-caused :class:`~kubetrade.errors.KubetradeError` inside a component is
printed as one line (no traceback), recorded in ``$KUBETRADE_ERROR_FILE`` when
set (the local runner reads it to show the user the real cause instead of
kfp's generic "task failed"), and ends the task with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubetrade.errors import KubetradeError

__all__ = [
    "run_step",
    "ERROR_FILE_ENV",
    "METRIC_UNITS",
    "named_file",
    "ui_metric",
    "step_metrics",
]

ERROR_FILE_ENV = "KUBETRADE_ERROR_FILE"
T = TypeVar("T")

#: Units in the names of the scalars a component logs to its KFP Metrics artifact (the run's
#: metrics table in the Kubeflow UI): step name ending -> (UI name ending, factor). A step key
#: ending in one of these words (or in them + ``_low`` / ``_high``, an interval's bounds) gets
#: the UI ending, its value times the factor. Returns and drawdowns are fractions in the steps
#: (0.05 = 5 %), so the UI shows percent; Sharpe and Sortino are annualized (252 days); costs
#: are in the account's currency (US equities: USD). Every other key is a count, a fraction or
#: a unitless score and keeps its name (no step logs a duration; one would end in ``_s``).
#: Step return values, MLflow metrics and the local
#: runner's metrics (:func:`step_metrics`) keep the step names.
METRIC_UNITS: dict[str, tuple[str, float]] = {
    "total_return": ("total_return_pct", 100.0),
    "max_drawdown": ("max_drawdown_pct", 100.0),
    "sharpe_ratio": ("sharpe_ratio_annualized", 1.0),
    "sortino_ratio": ("sortino_ratio_annualized", 1.0),
    "num_trades": ("trades_count", 1.0),
    "total_costs": ("total_costs_usd", 1.0),
    "costs_paid": ("costs_paid_usd", 1.0),
}
_QUALIFIER = r"(_low|_high)?$"
_TO_UI = [
    (re.compile(rf"(^|_){stem}{_QUALIFIER}"), ui, factor)
    for stem, (ui, factor) in METRIC_UNITS.items()
]
_TO_STEP = [
    (re.compile(rf"(^|_){ui}{_QUALIFIER}"), stem, factor)
    for stem, (ui, factor) in METRIC_UNITS.items()
]


def run_step(name: str, fn: Callable[[], T], metrics: Any = None) -> T:
    """Run ``fn``; on a KubetradeError print it on one line and exit non-zero.

    ``metrics``: a KFP ``Metrics`` output; the numeric values of the summary dict ``fn``
    returns are logged to it.
    """
    start = time.perf_counter()
    print(f"[kubetrade] {name}: started", flush=True)
    try:
        result = fn()
    except KubetradeError as exc:
        message = f"{name}: {exc}"
        print(f"[kubetrade] ERROR {message}", file=sys.stderr, flush=True)
        path = os.environ.get(ERROR_FILE_ENV)
        if path:
            payload: dict[str, Any] = {
                "step": name,
                "error": type(exc).__name__,
                "message": str(exc),
            }
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(payload, fh)
        raise SystemExit(exc.exit_code) from None
    elapsed = time.perf_counter() - start
    summary = f" {result}" if isinstance(result, dict) else ""
    print(f"[kubetrade] {name}: done in {elapsed:.1f}s{summary}", flush=True)
    if metrics is not None and isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, int | float):
                metrics.log_metric(*ui_metric(key, value))
    return result


def _rename(key: str, value: float, rules: Any, scale: bool) -> tuple[str, float]:
    for pattern, ending, factor in rules:
        found = pattern.search(key)
        if found:
            name = f"{key[: found.start()]}{found.group(1)}{ending}{found.group(2) or ''}"
            if factor == 1.0 or isinstance(value, bool):
                return name, value
            return name, value * factor if scale else value / factor
    return key, value


def ui_metric(key: str, value: float) -> tuple[str, float]:
    """A step's summary value as the Metrics artifact shows it (:data:`METRIC_UNITS`):
    ``backtest`` ``rl_ensemble_total_return`` 0.031 -> ``rl_ensemble_total_return_pct`` 3.1."""
    return _rename(key, value, _TO_UI, scale=True)


def step_metrics(ui: Mapping[str, Any]) -> dict[str, Any]:
    """A Metrics artifact's values back under the step's names (the local runner's table and
    ``RunResult.outputs``); inverse of :func:`ui_metric` up to float rounding."""
    out: dict[str, Any] = {}
    for key, value in ui.items():
        if isinstance(value, int | float):
            key, value = _rename(key, value, _TO_STEP, scale=False)
        out[key] = value
    return out


def named_file(artifact: Any, extension: str) -> str:
    """The local path of an output ``artifact`` whose URI ends with ``extension``
    (``.html``, ``.md``), so the Kubeflow UI and the object store show a file a browser
    previews; call it before writing ``artifact.path``.

    The executor writes the artifact's (changed) ``uri`` into ``executor_output``; the KFP
    backend's launcher and ``kfp.local`` take that URI as the artifact's, so downstream
    inputs read the named file. Idempotent.
    """
    if not extension.startswith("."):
        raise ValueError(f"extension {extension!r}: expected a leading dot, e.g. '.html'")
    if not artifact.uri.endswith(extension):
        artifact.uri = artifact.uri + extension
    return str(artifact.path)
