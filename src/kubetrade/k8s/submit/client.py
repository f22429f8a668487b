"""The KFP client: reachability, one-line API errors, the namespace check, following a run
(``--wait``, retried on a dropped connection) and the one-off run (:func:`submit_pipeline`)."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubetrade.errors import KubetradeError
from kubetrade.k8s.submit.auth import NAMESPACE_ENV, Auth
from kubetrade.k8s.submit.spec import SubmitError, load_package

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


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


def api_message(exc: BaseException) -> str:
    """One line from a kfp_server_api / urllib3 error; never the headers (cookies live there)."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    reason = getattr(exc, "reason", None)
    if status is not None and reason is not None:
        detail = ""
        with contextlib.suppress(Exception):
            data = json.loads(body) if body else {}
            detail = str(data.get("message") or data.get("error") or "").strip()
        head = f"({status}) {reason}".strip()
        line = f"{head}: {detail}" if detail else head
        return line.splitlines()[0] if line else type(exc).__name__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_id(obj: Any, attr: str, what: str, host: str) -> str:
    """kfp_server_api turns a non-JSON answer (an SSO login page) into empty models: without
    this, a login page looks like success ('run None: SUBMITTED')."""
    value = getattr(obj, attr, None)
    if not value:
        raise SubmitError(
            f"Kubeflow Pipelines at {host} answered the {what} call without a {attr}: that is "
            "not the KFP API (a login page?); check --host and pass --token or --cookie"
        )
    return str(value)


def _retryable(exc: BaseException) -> bool:
    status = getattr(exc, "status", None)
    if status is None or status == 0:
        return True  # connection dropped, timed out, refused: no HTTP answer at all
    return int(status) in (429, 502, 503, 504)


@contextlib.contextmanager
def kfp_prints_to_stderr() -> Iterator[None]:
    """kfp prints 'Experiment details: URL' to stdout; our stdout carries the result."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def make_client(
    host: str, namespace: str, auth: Auth, client_factory: Callable[..., Any] | None
) -> Any:
    if client_factory is None:
        check_reachable(host)
        import kfp

        client_factory = kfp.Client
    kwargs: dict[str, Any] = {"host": host, "namespace": namespace}
    if auth.token_file:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=auth.token_file)
    elif auth.token:
        kwargs["existing_token"] = auth.token
    if auth.cookie:
        kwargs["cookies"] = auth.cookie
    try:
        with kfp_prints_to_stderr():
            return client_factory(**kwargs)
    except KubetradeError:
        raise
    except Exception as exc:
        raise SubmitError(f"Kubeflow Pipelines at {host}: {api_message(exc)}") from None


def check_namespace(client: Any, host: str, namespace: str) -> None:
    if namespace:
        return
    health = client.get_kfp_healthz()
    if getattr(health, "multi_user", False):
        raise SubmitError(
            f"Kubeflow Pipelines at {host} is multi-user: pass --namespace PROFILE "
            f"(your profile namespace, e.g. kubeflow-user-example-com) or set ${NAMESPACE_ENV}"
        )


def _get_run_with_retries(
    client: Any, run_id: str, host: str, retries: int, backoff_s: float
) -> Any:
    for attempt in range(retries + 1):
        try:
            return client.get_run(run_id)
        except KubetradeError:
            raise
        except Exception as exc:  # kfp_server_api.ApiException, urllib3 errors, OSError
            if not _retryable(exc):
                raise SubmitError(
                    f"Kubeflow Pipelines at {host} refused get_run {run_id}: {api_message(exc)}"
                ) from None
            if attempt == retries:
                raise SubmitError(
                    f"lost contact with Kubeflow Pipelines at {host} while following run {run_id} "
                    f"({api_message(exc)}; {retries + 1} tries); the run goes on in the cluster: "
                    "rerun without --wait or check the Kubeflow UI"
                ) from None
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def follow_run(
    client: Any,
    run_id: str,
    host: str,
    timeout_s: int,
    poll_s: float,
    retries: int,
    on_state: Callable[[str], None] | None,
) -> str:
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        run = _get_run_with_retries(client, run_id, host, retries, backoff_s=min(poll_s, 5.0))
        state = str(getattr(run, "state", "") or "").upper()
        if state != last and on_state:
            on_state(state)
        last = state
        if state in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise SubmitError(f"run {run_id} still {state} after {timeout_s}s")
        time.sleep(poll_s)
    if state != "SUCCEEDED":
        raise SubmitError(f"run {run_id} ended {state}; see the Kubeflow UI for the failed step")
    return state


# ------------------------------------------------------------------------------ one-off run


def submit_pipeline(
    package: str | Path,
    host: str,
    namespace: str = "",
    experiment: str = "kubetrade",
    arguments: dict[str, Any] | None = None,
    run_name: str | None = None,
    wait: bool = False,
    timeout_s: int = 6 * 3600,
    client_factory: Callable[..., Any] | None = None,
    on_state: Callable[[str], None] | None = None,
    auth: Auth | None = None,
    poll_s: float = 10.0,
    retries: int = 5,
) -> dict[str, Any]:
    """Create a run of ``package``; with ``wait``, follow it and fail unless it succeeds."""
    package = Path(package)
    load_package(package)
    auth = auth or Auth()
    client = make_client(host, namespace, auth, client_factory)
    try:
        with kfp_prints_to_stderr():
            check_namespace(client, host, namespace)
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments or {}, run_name=run_name,
                experiment_name=experiment, namespace=namespace or None,
            )  # fmt: skip
    except KubetradeError:
        raise
    except Exception as exc:  # kfp_server_api / urllib3 raise many types
        raise SubmitError(
            f"Kubeflow Pipelines at {host} refused the run: {api_message(exc)}"
        ) from None
    info: dict[str, Any] = {
        "run_id": require_id(result, "run_id", "create run", host),
        "state": "SUBMITTED",
    }
    if wait:
        info["state"] = follow_run(
            client, result.run_id, host, timeout_s, poll_s, retries, on_state
        )
    return info
