"""Talking to the MLflow store safely: bounded time, retries of transient errors only,
one-line errors with secrets masked, and the promotion lock.

* **Bounded time.** For the duration of a call MLflow's own HTTP client is set to
  ``http_retries`` retries and ``http_timeout_s`` per request (the
  ``MLFLOW_HTTP_REQUEST_*`` variables, restored afterwards, :func:`bounded_http`); each store
  operation is tried ``attempts`` times with exponential backoff (:func:`retry`).
* **Transient vs permanent.** Connection errors, timeouts, 5xx and SQLite
  ``database is locked`` (``TEMPORARILY_UNAVAILABLE``) are retried; a refusal
  (bad parameter, missing run, permission) is not. Either way the caller gets one
  :class:`~kubetrade.errors.RegistryError` line naming the store and the fix.
* **The promotion lock** (:func:`promotion_lock`): a registered model
  ``<name>.promotion-lock`` that only one client can create (the store's unique name
  constraint makes this atomic, for SQLite and for an ``mlflow server`` alike). A lock left
  by a crashed client is broken after ``lock_stale_s``, or at once when its process on this
  host is gone.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from kubetrade.errors import RegistryError
from kubetrade.process import pid_alive

__all__ = [
    "LOCK_SUFFIX",
    "bounded_http",
    "global_tracking_uri",
    "is_missing",
    "one_line",
    "promotion_lock",
    "redact",
    "retry",
]

T = TypeVar("T")
LOCK_SUFFIX = ".promotion-lock"
_LOCK_TAG = "kubetrade.lock_owner"
_log = logging.getLogger(__name__)

# refusals: retrying cannot help
_PERMANENT = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "NOT_FOUND",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "INVALID_STATE",
        "FEATURE_DISABLED",
    }
)
_HTTP_ENV = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)


@contextmanager
def bounded_http(timeout_s: int = 10, retries: int = 1) -> Iterator[None]:
    """Bound MLflow's HTTP client (per-request timeout, its own retries) inside the block,
    then restore the ``MLFLOW_HTTP_REQUEST_*`` variables exactly as they were.

    MLflow reads them per request (its default is 7 retries with 2 s backoff and a
    120 s timeout: minutes per call against a dead server)."""
    saved = {k: os.environ.get(k) for k in _HTTP_ENV}
    os.environ.update(
        {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(retries)),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
            # downloads for verification: no progress bars on stderr (one-line errors)
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global (fluent) API at ``uri``, then restore the previous state exactly
    (``set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment)."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


_SECRET_PATTERNS = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1***@"),
    # ?password=...&token=... in URIs and KEY=VALUE text
    (re.compile(r"(?i)\b((?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)"
                r"[^\s&;,]+"), r"\1***"),
)  # fmt: skip


def redact(text: str) -> str:
    """``text`` with URI passwords and ``password=``/``token=``-style values masked (every
    error and log line that names a store goes through this)."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def one_line(exc: BaseException | None, limit: int = 240) -> str:
    if exc is None:
        return "no error recorded"
    text = redact(" ".join(str(exc).split()))
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fix(uri: str) -> str:
    where = (
        f"that the MLflow tracking server at {redact(uri)} is up and reachable (MLFLOW_TRACKING_URI)"
        if uri.startswith(("http://", "https://"))
        else f"that the store {redact(uri)} is writable and not held by another writer"
    )
    return f"check {where}, then rerun the register step; the champion alias was not changed"


def retry(fn: Callable[[], T], what: str, uri: str, attempts: int, backoff_s: float) -> T:
    """Call ``fn`` up to ``attempts`` times, sleeping ``backoff_s * 2**i`` (+ jitter) between
    tries on transient errors; refusals and exhaustion raise one-line RegistryErrors."""
    from mlflow.exceptions import MlflowException

    last: Exception | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            delay = backoff_s * (2 ** (attempt - 1))
            time.sleep(delay + random.uniform(0, delay / 2))
        try:
            return fn()
        except RegistryError:
            raise
        except (MlflowException, OSError, ConnectionError) as exc:
            if isinstance(exc, MlflowException) and _code(exc) in _PERMANENT:
                raise RegistryError(
                    f"MLflow at {redact(uri)} refused to {what} ({_code(exc)}: {one_line(exc)}); "
                    "the champion alias was not changed"
                ) from exc
            last = exc
            _log.warning("MLflow at %s: %s failed (attempt %d): %s", redact(uri), what, attempt + 1,
                         one_line(exc))  # fmt: skip
    raise RegistryError(
        f"MLflow at {redact(uri)} failed to {what} after {attempts} attempts ({one_line(last)}); "
        + _fix(uri)
    ) from last


def is_missing(exc: BaseException) -> bool:
    return _code(exc) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _holder_is_dead(holder: str | None) -> bool:
    """True when the lock token ``host:pid:uuid`` names this host and a pid that is gone
    (a ``kill -9``-ed registration): no need to wait ``lock_stale_s`` for it."""
    if not holder or holder.count(":") < 2:
        return False
    host, pid_text, _ = holder.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not pid_alive(pid)


@contextmanager
def promotion_lock(
    client: Any, name: str, uri: str, wait_s: float, stale_s: float, attempts: int, backoff_s: float
) -> Iterator[None]:
    """Hold ``<name>.promotion-lock`` (a registered model: creating one is atomic)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait_s
    delay = 0.05

    def owner() -> tuple[str | None, float | None]:
        """(owner token, age in seconds) of the lock; (None, None) if there is none."""
        try:
            rm = client.get_registered_model(lock)
        except MlflowException as exc:
            if is_missing(exc):
                return None, None
            raise
        return rm.tags.get(_LOCK_TAG), time.time() - rm.creation_timestamp / 1000.0

    while True:
        try:
            client.create_registered_model(
                lock,
                tags={_LOCK_TAG: token},
                description=f"transient lock of the kubetrade registry ({token}); "
                f"delete it if no registration of {name!r} is running",
            )
            break
        except MlflowException as exc:
            if _code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                # transient failure: the create may have landed anyway; retry-style bound
                attempts -= 1
                if attempts <= 0:
                    raise RegistryError(
                        f"MLflow at {redact(uri)} failed to take the promotion lock {lock!r} "
                        f"({one_line(exc)}); " + _fix(uri)
                    ) from exc
                time.sleep(backoff_s)
        holder, age = retry(owner, "read the promotion lock", uri, attempts, backoff_s)
        if holder == token:  # our create landed but its reply was lost
            break
        dead = _holder_is_dead(holder)
        if dead or (age is not None and age > stale_s):
            why = "its process on this host is gone" if dead else f"{age:.0f} s old"
            print(f"kubetrade: breaking the stale promotion lock {lock!r} of {holder} ({why})",
                  file=sys.stderr)  # fmt: skip
            _log.warning("breaking stale promotion lock %s (%s, %.0f s old)", lock, holder, age)
            try:
                client.delete_registered_model(lock)
            except MlflowException as exc:
                if not is_missing(exc):
                    raise RegistryError(
                        f"MLflow at {redact(uri)}: could not delete the stale promotion lock {lock!r} "
                        f"({one_line(exc)}); delete that registered model by hand"
                    ) from exc
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"the promotion lock {lock!r} at {redact(uri)} has been held by {holder} for "
                f"{age or 0:.0f} s (waited {wait_s:.0f} s); if no registration of {name!r} is "
                "running, delete that registered model; the champion alias was not changed"
            )
        time.sleep(delay + random.uniform(0, delay))
        delay = min(delay * 1.5, 1.0)
    try:
        yield
    finally:
        try:
            holder, _ = owner()
            if holder == token:
                client.delete_registered_model(lock)
        except Exception as exc:  # noqa: BLE001 - a stale lock is broken later
            _log.warning("could not release promotion lock %s: %s", lock, one_line(exc))
