"""Submit a compiled pipeline to Kubeflow Pipelines with ``kfp.Client``."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubetrade.errors import KubetradeError

__all__ = ["SubmitError", "submit_pipeline", "check_reachable"]

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


class SubmitError(KubetradeError):
    """The pipeline could not be submitted or its run failed."""


def check_reachable(host: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when the KFP API host cannot be reached."""
    parsed = urlparse(host if "://" in host else f"http://{host}")
    if not parsed.hostname:
        raise SubmitError(f"--host {host!r} is not a URL; use e.g. http://localhost:8080")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SubmitError(
            f"cannot reach Kubeflow Pipelines at {host} ({exc.strerror or exc}); check --host, "
            "or port-forward the UI: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
        ) from None


def submit_pipeline(
    package: str | Path,
    host: str,
    namespace: str = "kubeflow",
    experiment: str = "kubetrade",
    arguments: dict[str, Any] | None = None,
    run_name: str | None = None,
    wait: bool = False,
    timeout_s: int = 6 * 3600,
    client_factory: Callable[..., Any] | None = None,
    on_state: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create a run of ``package``; with ``wait``, follow it and fail unless it succeeds."""
    package = Path(package)
    if not package.is_file():
        raise SubmitError(f"pipeline package not found: {package}; run 'make compile' first")
    if client_factory is None:
        check_reachable(host)
        import kfp

        client_factory = kfp.Client
    try:
        client = client_factory(host=host, namespace=namespace)
        result = client.create_run_from_pipeline_package(
            str(package), arguments=arguments or {}, run_name=run_name,
            experiment_name=experiment, namespace=namespace,
        )  # fmt: skip
    except KubetradeError:
        raise
    except Exception as exc:  # kfp_server_api / urllib3 raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SubmitError(f"Kubeflow Pipelines at {host} refused the run: {first}") from None
    info: dict[str, Any] = {"run_id": result.run_id, "state": "SUBMITTED"}
    if not wait:
        return info
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        run = client.get_run(result.run_id)
        state = str(getattr(run, "state", "") or "").upper()
        if state != last and on_state:
            on_state(state)
        last = state
        if state in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise SubmitError(f"run {result.run_id} still {state} after {timeout_s}s")
        time.sleep(10)
    info["state"] = state
    if state != "SUCCEEDED":
        raise SubmitError(
            f"run {result.run_id} ended {state}; see the Kubeflow UI for the failed step"
        )
    return info
