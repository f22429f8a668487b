"""MLflow model registry: register a challenger, promote it only if it beats the champion.

Every registered version carries tags (data range, git commit, config hash, the
SHA-256 of each exported file, the out-of-sample metric). The new version gets
alias ``challenger``; alias ``champion`` moves to it only when its metric beats
the current champion's (or there is none). Nothing here runs unless the
pipeline's earlier gates passed, so a failed run never touches ``champion``.

Registration and promotion (see docs/reliability.md; the store plumbing -- bounded time,
retries, one-line errors, the promotion lock -- is :mod:`kubetrade.registry.store`, file
hashes and the git commit :mod:`kubetrade.registry.provenance`):

* **No duplicate versions.** Each call tags its version with a unique
  ``kubetrade.registration_id``; a retry first looks for that tag, so a create that
  reached the store but whose reply was lost is not registered twice.
* **Champion last, under a lock.** Reading the champion and moving the aliases happens
  while holding the promotion lock, so concurrent registrations cannot both read the old
  champion and overwrite each other; the best value wins. ``champion`` is the last
  write: any failure before it leaves ``champion`` where it was.
* **Worst case per store operation:**
  ``attempts * (http_retries + 1) * http_timeout_s + backoff_s * (2**(attempts-1) - 1)``;
  a refused connection fails in about ``backoff_s * (2**(attempts-1) - 1)`` seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubetrade.errors import RegistryError
from kubetrade.registry.provenance import git_commit, sha256_file, verify_sha256
from kubetrade.registry.store import (
    LOCK_SUFFIX,
    bounded_http,
    global_tracking_uri,
    is_missing,
    promotion_lock,
    redact,
    retry,
)

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

CHAMPION, CHALLENGER = "champion", "challenger"
REGISTRATION_TAG = "kubetrade.registration_id"


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
            if is_missing(exc):
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
            if is_missing(exc):
                return None, {}
            raise
        return str(current.version), dict(current.tags)

    with bounded_http(http_timeout_s, http_retries):
        version = retry(create, "register the model", uri, attempts, backoff_s)
        v = str(version.version)
        with promotion_lock(client, name, uri, lock_wait_s, lock_stale_s, attempts, backoff_s):
            challenger, _ = retry(
                lambda: alias(CHALLENGER), "read the challenger", uri, attempts, backoff_s
            )
            if challenger is None or int(challenger) < int(v):  # only ever moves forward
                retry(
                    lambda: client.set_registered_model_alias(name, CHALLENGER, v),
                    "set the challenger alias",
                    uri,
                    attempts,
                    backoff_s,
                )
            champ_version, champ_tags = retry(
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
            retry(
                lambda: client.set_model_version_tag(name, v, DECISION_TAG, reason[:4000]),
                "record the gate decision",
                uri,
                attempts,
                backoff_s,
            )
            if promote:  # the last write: every failure above left champion alone
                retry(
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
