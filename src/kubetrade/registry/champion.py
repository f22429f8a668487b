"""MLflow model registry: register a challenger, promote it only if it beats the champion.

Every registered version carries tags (data range, git commit, config hash, the
SHA-256 of each exported file, the out-of-sample metric). The new version gets
alias ``challenger``; alias ``champion`` moves to it only when its metric beats
the current champion's (or there is none). Nothing here runs unless the
pipeline's earlier gates passed, so a failed run never touches ``champion``.
Transient store errors are retried a bounded number of times, then fail with one
clear line; the champion alias is set last, so a failure leaves it where it was.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from kubetrade.errors import RegistryError

__all__ = ["Promotion", "register_challenger", "sha256_file", "git_commit", "verify_sha256"]

T = TypeVar("T")
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class Promotion:
    name: str
    version: str
    promoted: bool
    metric: str
    value: float
    champion_version: str | None
    champion_value: float | None

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
        actual = sha256_file(path)
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


def _retry(fn: Callable[[], T], what: str, uri: str, attempts: int, backoff_s: float) -> T:
    from mlflow.exceptions import MlflowException

    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return fn()
        except (MlflowException, OSError, ConnectionError) as exc:
            if isinstance(exc, MlflowException) and getattr(exc, "error_code", "") in (
                "INVALID_PARAMETER_VALUE",
                "RESOURCE_ALREADY_EXISTS",
            ):
                raise
            last = exc
            time.sleep(backoff_s * (2**attempt))
    first = str(last).strip().splitlines()[0] if last and str(last).strip() else type(last).__name__
    raise RegistryError(
        f"MLflow at {uri} failed to {what} after {attempts} attempts ({first}); "
        "check the tracking server, the champion alias was not changed"
    )


def _better(new: float, old: float, mode: Literal["max", "min"]) -> bool:
    return new > old if mode == "max" else new < old


def register_challenger(
    model_uri: str,
    name: str,
    metric: str,
    value: float,
    mode: Literal["max", "min"] = "max",
    tags: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    attempts: int = 3,
    backoff_s: float = 0.5,
) -> Promotion:
    """Register ``model_uri`` as a new version of ``name``; alias it challenger; promote
    it to champion if ``value`` of ``metric`` beats the champion's."""
    import math

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not math.isfinite(value):
        raise RegistryError(f"{metric}={value} is not a number; refusing to register")
    client = MlflowClient(tracking_uri)
    uri = tracking_uri or client._tracking_client.tracking_uri
    all_tags = {**{k: str(v) for k, v in (tags or {}).items()}, f"oos_{metric}": repr(value)}

    def create() -> Any:
        import mlflow

        # mlflow.register_model resolves MLflow 3 logged-model URIs (models:/m-...) and runs:/
        # but reads the global URI; set it, then restore the previous state exactly
        # (set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment)
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            return mlflow.register_model(model_uri, name, tags=all_tags)
        finally:
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)

    version = _retry(create, "register the model", uri, attempts, backoff_s)
    v = str(version.version)
    _retry(
        lambda: client.set_registered_model_alias(name, CHALLENGER, v),
        "set the challenger alias",
        uri,
        attempts,
        backoff_s,
    )

    def champion() -> tuple[str | None, float | None]:
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as exc:
            if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return None, None
            raise
        raw = current.tags.get(f"oos_{metric}")
        return str(current.version), (float(raw) if raw is not None else None)

    champ_version, champ_value = _retry(champion, "read the champion", uri, attempts, backoff_s)
    promote = champ_value is None or _better(value, champ_value, mode)
    if promote:
        _retry(
            lambda: client.set_registered_model_alias(name, CHAMPION, v),
            "promote the champion",
            uri,
            attempts,
            backoff_s,
        )
    return Promotion(name, v, promote, metric, value, champ_version, champ_value)
