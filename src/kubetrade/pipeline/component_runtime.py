"""What every component does around its step: one-line errors, timing, error file.

A user-caused :class:`~kubetrade.errors.KubetradeError` inside a component is
printed as one line (no traceback), recorded in ``$KUBETRADE_ERROR_FILE`` when
set (the local runner reads it to show the user the real cause instead of
kfp's generic "task failed"), and ends the task with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubetrade.errors import KubetradeError

__all__ = ["run_step", "ERROR_FILE_ENV"]

ERROR_FILE_ENV = "KUBETRADE_ERROR_FILE"
T = TypeVar("T")


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
                metrics.log_metric(key, value)
    return result
