"""MLflow model registry: register a challenger, promote it only if it beats the champion.

Every registered version carries tags (data range, git commit, config hash, the
SHA-256 of each exported file, the out-of-sample metric). The new version gets
alias ``challenger``; alias ``champion`` moves to it only when its metric beats
the current champion's (or there is none). Nothing here runs unless the
pipeline's earlier gates passed, so a failed run never touches ``champion``.

Failure handling (see docs/reliability.md):

* **Bounded time.** For the duration of a call MLflow's own HTTP client is set to
  ``http_retries`` retries and ``http_timeout_s`` per request (the
  ``MLFLOW_HTTP_REQUEST_*`` variables, restored afterwards); each store operation is
  tried ``attempts`` times with exponential backoff. Worst case per operation:
  ``attempts * (http_retries + 1) * http_timeout_s + backoff_s * (2**(attempts-1) - 1)``;
  a refused connection fails in about ``backoff_s * (2**(attempts-1) - 1)`` seconds.
* **Transient vs permanent.** Connection errors, timeouts, 5xx and SQLite
  ``database is locked`` (``TEMPORARILY_UNAVAILABLE``) are retried; a refusal
  (bad parameter, missing run, permission) is not. Either way the caller gets one
  :class:`~kubetrade.errors.RegistryError` line naming the store and the fix.
* **No duplicate versions.** Each call tags its version with a unique
  ``kubetrade.registration_id``; a retry first looks for that tag, so a create that
  reached the store but whose reply was lost is not registered twice.
* **Champion last, under a lock.** Reading the champion and moving the aliases happens
  while holding a promotion lock: a registered model ``<name>.promotion-lock`` that
  only one client can create (the store's unique name constraint makes this atomic,
  for SQLite and for an ``mlflow server`` alike). So concurrent registrations cannot
  both read the old champion and overwrite each other; the best value wins. A lock
  left by a crashed client is broken after ``lock_stale_s``. ``champion`` is the last
  write: any failure before it leaves ``champion`` where it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from kubetrade.errors import RegistryError
from kubetrade.process import pid_alive

__all__ = [
    "Promotion",
    "register_challenger",
    "sha256_file",
    "git_commit",
    "verify_sha256",
    "bounded_http",
    "global_tracking_uri",
    "LOCK_SUFFIX",
    "REGISTRATION_TAG",
    "redact",
    "METRIC_DIRECTIONS",
    "DATA_RANGE_TAGS",
    "gate_decision",
    "metric_direction",
]

T = TypeVar("T")
CHAMPION, CHALLENGER = "champion", "challenger"
LOCK_SUFFIX = ".promotion-lock"
REGISTRATION_TAG = "kubetrade.registration_id"
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


# direction of each out-of-sample metric the gate may decide on ("max": higher is better)
METRIC_DIRECTIONS: dict[str, Literal["max", "min"]] = {
    "sharpe_ratio": "max",
    "sortino_ratio": "max",
    "calmar_ratio": "max",
    "total_return": "max",
    "annual_return": "max",
    "annualized_return": "max",
    "accuracy": "max",
    "f1_score": "max",
    "precision": "max",
    "recall": "max",
    "win_rate": "max",
    "profit_factor": "max",
    "max_drawdown": "max",  # drawdowns are <= 0: closer to zero is better
    "mse": "min",
    "rmse": "min",
    "mae": "min",
    "log_loss": "min",
    "volatility": "min",
}
# tags that say which data a version was scored on; a champion is only beaten on the same
DATA_RANGE_TAGS = ("kubetrade.test_period", "kubetrade.symbols")
DECISION_TAG = "kubetrade.gate_decision"
IDEMPOTENCY_TAG = "kubetrade.idempotency_key"
FORCE_TAG = "kubetrade.forced_reason"


def metric_direction(
    metric: str, mode: Literal["max", "min"] | None = None
) -> Literal["max", "min"]:
    """``mode`` if given, else the known direction of ``metric`` (RegistryError if unknown)."""
    if mode is not None:
        if mode not in ("max", "min"):
            raise RegistryError(f"mode {mode!r} is neither 'max' nor 'min'")
        return mode
    if metric not in METRIC_DIRECTIONS:
        raise RegistryError(
            f"metric {metric!r} has no known direction (known: {', '.join(sorted(METRIC_DIRECTIONS))}); "
            "refusing to compare models on it"
        )
    return METRIC_DIRECTIONS[metric]


@dataclass
class Promotion:
    name: str
    version: str
    promoted: bool
    metric: str
    value: float
    champion_version: str | None
    champion_value: float | None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(files: Mapping[str, str | Path], expected: Mapping[str, str]) -> None:
    """Raise RegistryError if a file's SHA-256 differs from what export recorded."""
    for key, path in files.items():
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise RegistryError(
                f"{path}: cannot read it ({type(exc).__name__}); the export is incomplete, "
                "not promoting"
            ) from exc
        if expected.get(key) != actual:
            raise RegistryError(
                f"{path}: SHA-256 {actual[:12]}... does not match the exported "
                f"{str(expected.get(key))[:12]}...; the artifact changed after export, not promoting"
            )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


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


def _one_line(exc: BaseException | None, limit: int = 240) -> str:
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


def _retry(fn: Callable[[], T], what: str, uri: str, attempts: int, backoff_s: float) -> T:
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
                    f"MLflow at {redact(uri)} refused to {what} ({_code(exc)}: {_one_line(exc)}); "
                    "the champion alias was not changed"
                ) from exc
            last = exc
            _log.warning("MLflow at %s: %s failed (attempt %d): %s", redact(uri), what, attempt + 1,
                         _one_line(exc))  # fmt: skip
    raise RegistryError(
        f"MLflow at {redact(uri)} failed to {what} after {attempts} attempts ({_one_line(last)}); "
        + _fix(uri)
    ) from last


def _is_missing(exc: BaseException) -> bool:
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
def _promotion_lock(
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
            if _is_missing(exc):
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
                # transient failure: the create may have landed anyway; _retry-style bound
                attempts -= 1
                if attempts <= 0:
                    raise RegistryError(
                        f"MLflow at {redact(uri)} failed to take the promotion lock {lock!r} "
                        f"({_one_line(exc)}); " + _fix(uri)
                    ) from exc
                time.sleep(backoff_s)
        holder, age = _retry(owner, "read the promotion lock", uri, attempts, backoff_s)
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
                if not _is_missing(exc):
                    raise RegistryError(
                        f"MLflow at {redact(uri)}: could not delete the stale promotion lock {lock!r} "
                        f"({_one_line(exc)}); delete that registered model by hand"
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
            _log.warning("could not release promotion lock %s: %s", lock, _one_line(exc))


def gate_decision(
    value: float,
    metric: str,
    mode: Literal["max", "min"],
    margin: float,
    data_range: Mapping[str, str] | None,
    champion_version: str | None,
    champion_tags: Mapping[str, str] | None,
    force_reason: str | None = None,
    baselines: Mapping[str, float] | None = None,
) -> tuple[bool, str]:
    """(promote?, why) for a challenger scoring ``value`` against the champion's tags.

    Promotes when there is no champion; otherwise only when the champion was scored on the
    same data range (``DATA_RANGE_TAGS``, both recorded), records ``metric``, and ``value``
    beats it by more than ``margin`` in the metric's direction. ``force_reason`` promotes
    anyway (the reason is recorded). ``baselines`` (name -> the same metric on the same test
    period, e.g. buy-and-hold after costs) must all be beaten first, champion or not."""
    for base, base_value in (baselines or {}).items():
        beaten = value > base_value if mode == "max" else value < base_value
        if not beaten and not force_reason:
            return False, (
                f"{metric} {value:.4g} does not beat the {base} baseline's {base_value:.4g} on "
                "the same test period"
            )
    if champion_version is None:
        return True, "no champion yet"
    if force_reason:
        return True, f"forced over champion v{champion_version}: {force_reason}"
    tags = champion_tags or {}
    raw = tags.get(f"oos_{metric}")
    if raw is None:
        return False, (
            f"champion v{champion_version} records no {metric}; not comparable (promote with "
            "--force --reason '...' if intended)"
        )
    try:
        champ = float(raw)
    except ValueError:
        return False, f"champion v{champion_version}'s {metric} tag {raw[:40]!r} is not a number"
    ours = dict(data_range or {})
    for key in DATA_RANGE_TAGS:
        mine, theirs = ours.get(key), tags.get(key)
        if not mine or not theirs:
            return False, (
                f"{key} not recorded for the {'challenger' if not mine else 'champion'}; "
                "cannot tell if both were scored on the same data"
            )
        if mine != theirs:
            return False, (
                f"scored on a different {key.split('.')[-1]} ({mine} vs the champion's "
                f"{theirs}); not comparable"
            )
    delta = value - champ if mode == "max" else champ - value
    if delta > margin:
        return (
            True,
            f"{metric} {value:.4g} beats champion v{champion_version}'s {champ:.4g} "
            f"by {delta:.4g} > margin {margin:g}",
        )
    return False, (
        f"{metric} {value:.4g} vs champion v{champion_version}'s {champ:.4g}: improvement "
        f"{delta:.4g} is not above the margin {margin:g}"
    )


def register_challenger(
    model_uri: str,
    name: str,
    metric: str,
    value: float,
    mode: Literal["max", "min"] | None = None,
    tags: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    attempts: int = 4,
    backoff_s: float = 0.5,
    http_timeout_s: int = 10,
    http_retries: int = 1,
    lock_wait_s: float = 120.0,
    lock_stale_s: float = 60.0,
    *,
    margin: float = 0.0,
    data_range: Mapping[str, str] | None = None,
    force_reason: str | None = None,
    baselines: Mapping[str, float] | None = None,
    idempotency_key: str | None = None,
) -> Promotion:
    """Register ``model_uri`` as a new version of ``name``; alias it challenger; promote
    it to champion if :func:`gate_decision` says so (same ``data_range``, ``value`` of
    ``metric`` better than the champion's by more than ``margin``; ``mode``: the metric's
    known direction unless given). The decision's reason is tagged ``kubetrade.gate_decision``
    on the new version and returned in :attr:`Promotion.reason`. ``idempotency_key`` (e.g. a
    digest of the logged files): a version of ``name`` already tagged with it is reused
    instead of registering a duplicate (a rerun after a ``kill -9`` mid-registration finishes
    the gating of the version the killed run created).

    Raises :class:`RegistryError` (one line: the store, what failed, the fix) when the
    store refuses or stays unreachable; ``champion`` is then unchanged."""
    import math

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not math.isfinite(value):
        raise RegistryError(f"{metric}={value} is not a number; refusing to register")
    mode = metric_direction(metric, mode)
    if not math.isfinite(margin) or margin < 0:
        raise RegistryError(f"gate margin {margin} must be a finite number >= 0")
    if force_reason is not None and not force_reason.strip():
        raise RegistryError("--force needs a non-empty --reason (it is recorded on the version)")
    client = MlflowClient(tracking_uri)
    uri = tracking_uri or client._tracking_client.tracking_uri
    registration_id = uuid.uuid4().hex
    all_tags = {
        **{k: str(v) for k, v in (tags or {}).items()},
        **{k: str(v) for k, v in (data_range or {}).items()},
        f"oos_{metric}": repr(value),
        REGISTRATION_TAG: registration_id,
    }
    if force_reason:
        all_tags[FORCE_TAG] = force_reason.strip()[:4000]
    if idempotency_key:
        all_tags[IDEMPOTENCY_TAG] = idempotency_key
    tries = {"create": 0}

    def existing() -> Any:
        """The version an earlier try of this call created, if its reply was lost."""
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException as exc:
            if _is_missing(exc):
                return None
            raise
        for mv in versions:
            if mv.tags.get(REGISTRATION_TAG) == registration_id:
                return mv
            if idempotency_key and mv.tags.get(IDEMPOTENCY_TAG) == idempotency_key:
                return mv
        return None

    def create() -> Any:
        import mlflow

        tries["create"] += 1
        if (tries["create"] > 1 or idempotency_key) and (found := existing()) is not None:
            if idempotency_key and found.tags.get(IDEMPOTENCY_TAG) == idempotency_key:
                for key in (FORCE_TAG, f"oos_{metric}", *DATA_RANGE_TAGS):
                    if key in all_tags:
                        client.set_model_version_tag(name, found.version, key, all_tags[key])
            return found
        # mlflow.register_model resolves MLflow 3 logged-model URIs (models:/m-...) and runs:/
        # but reads the global URI
        with global_tracking_uri(uri):
            return mlflow.register_model(model_uri, name, tags=all_tags)

    def alias(alias_name: str) -> tuple[str | None, dict[str, str]]:
        try:
            current = client.get_model_version_by_alias(name, alias_name)
        except MlflowException as exc:
            if _is_missing(exc):
                return None, {}
            raise
        return str(current.version), dict(current.tags)

    with bounded_http(http_timeout_s, http_retries):
        version = _retry(create, "register the model", uri, attempts, backoff_s)
        v = str(version.version)
        with _promotion_lock(client, name, uri, lock_wait_s, lock_stale_s, attempts, backoff_s):
            challenger, _ = _retry(
                lambda: alias(CHALLENGER), "read the challenger", uri, attempts, backoff_s
            )
            if challenger is None or int(challenger) < int(v):  # only ever moves forward
                _retry(
                    lambda: client.set_registered_model_alias(name, CHALLENGER, v),
                    "set the challenger alias",
                    uri,
                    attempts,
                    backoff_s,
                )
            champ_version, champ_tags = _retry(
                lambda: alias(CHAMPION), "read the champion", uri, attempts, backoff_s
            )
            promote, reason = gate_decision(
                value,
                metric,
                mode,
                margin,
                data_range,
                champ_version,
                champ_tags,
                force_reason,
                {k: float(b) for k, b in (baselines or {}).items() if math.isfinite(float(b))},
            )
            _retry(
                lambda: client.set_model_version_tag(name, v, DECISION_TAG, reason[:4000]),
                "record the gate decision",
                uri,
                attempts,
                backoff_s,
            )
            if promote:  # the last write: every failure above left champion alone
                _retry(
                    lambda: client.set_registered_model_alias(name, CHAMPION, v),
                    "promote the champion",
                    uri,
                    attempts,
                    backoff_s,
                )
    raw = champ_tags.get(f"oos_{metric}")
    try:
        champ_value = float(raw) if raw is not None else None
    except ValueError:
        champ_value = None
    return Promotion(name, v, promote, metric, value, champ_version, champ_value, reason)
