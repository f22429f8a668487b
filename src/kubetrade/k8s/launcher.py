"""Create a custom resource, watch it to the end, and fail loudly when it fails.

Unlike the old upstream KFP PyTorchJob launcher (which returned normally when the job
failed), :meth:`CustomResourceLauncher.wait` raises :class:`~kubetrade.errors.TrainingError`
for a failed job, a failed Katib experiment, a stalled experiment and a missed deadline,
so the pipeline step fails with a message that says why.

The launcher polls (``get_namespaced_custom_object`` every ``poll_s`` seconds) rather than
watching: a poll survives API-server restarts and proxy timeouts without re-list logic,
and it is what lets the tests drive it with scripted statuses. While a PyTorchJob runs,
the master pod's new log lines are forwarded to ``log`` on every poll.

Clock and sleep are injectable so tests run instantly::

    launcher = CustomResourceLauncher.for_pytorchjobs(custom_api, core_api, "kubetrade")
    launcher.create(job)
    result = launcher.wait(job["metadata"]["name"], deadline_s=3600, poll_s=10)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetrade.errors import TrainingError
from kubetrade.k8s.katib import (
    EXPERIMENT_KIND,
    EXPERIMENT_PLURAL,
    KATIB_GROUP,
    KATIB_VERSION,
    BestTrial,
    SearchSpace,
    best_trial_from_status,
    experiment_progress,
)
from kubetrade.k8s.pytorchjob import (
    CONTAINER_NAME,
    PYTORCHJOB_GROUP,
    PYTORCHJOB_KIND,
    PYTORCHJOB_PLURAL,
    PYTORCHJOB_VERSION,
)

__all__ = [
    "CustomObjectsApiLike",
    "CoreV1ApiLike",
    "WaitResult",
    "CustomResourceLauncher",
    "kube_clients",
    "run_pytorchjob",
    "run_experiment",
    "master_pod_selector",
]

logger = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")


class CustomObjectsApiLike(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` the launcher uses."""

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> Any: ...

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...


class CoreV1ApiLike(Protocol):
    """The part of ``kubernetes.client.CoreV1Api`` the launcher uses."""

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any: ...

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any: ...


@dataclass
class WaitResult:
    """How a custom resource ended."""

    name: str
    kind: str
    state: str
    obj: dict[str, Any]
    best_trial: BestTrial | None = None
    elapsed_s: float = 0.0
    polls: int = 0


def master_pod_selector(job_name: str) -> str:
    """Label selector of a PyTorchJob's master pod (labels set by the Training Operator)."""
    return f"training.kubeflow.org/job-name={job_name},training.kubeflow.org/replica-type=master"


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _terminal_condition(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest true Succeeded/Failed condition, if any."""
    for cond in reversed(_conditions(obj)):
        if cond.get("type") in _TERMINAL and str(cond.get("status")) == "True":
            return cond
    return None


def _current_state(obj: Mapping[str, Any]) -> str:
    for cond in reversed(_conditions(obj)):
        if str(cond.get("status")) == "True":
            return str(cond.get("type"))
    return "Pending"


@dataclass
class _LogTail:
    pod: str | None = None
    seen: int = 0
    lines: list[str] = field(default_factory=list)


class CustomResourceLauncher:
    """Create, watch and (on timeout) delete one kind of namespaced custom resource.

    Args:
        api: a ``CustomObjectsApi`` (or anything with its three methods).
        core: a ``CoreV1Api`` for pod logs, or None to skip log streaming.
        group, version, plural: the resource (``kubeflow.org``, ``v1``, ``pytorchjobs``).
        namespace: where the resources live.
        kind: ``PyTorchJob`` or ``Experiment`` (what terminal states mean); derived from
            ``plural`` when omitted.
        clock: monotonic seconds (``time.monotonic``).
        sleep: ``time.sleep``.
        log: receives progress messages and the master pod's log lines.
        search_space: casts an Experiment's best-trial parameters back to their types.
    """

    def __init__(
        self,
        api: CustomObjectsApiLike,
        core: CoreV1ApiLike | None,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        *,
        kind: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
        search_space: SearchSpace | None = None,
    ) -> None:
        self.api = api
        self.core = core
        self.group = group
        self.version = version
        self.plural = plural
        self.namespace = namespace
        self.kind = kind or {
            PYTORCHJOB_PLURAL: PYTORCHJOB_KIND,
            EXPERIMENT_PLURAL: EXPERIMENT_KIND,
        }.get(plural, plural)
        self.clock = clock
        self.sleep = sleep
        self.log = log or logger.info
        self.search_space = search_space

    # ------------------------------------------------------------ constructors
    @classmethod
    def for_pytorchjobs(
        cls, api: CustomObjectsApiLike, core: CoreV1ApiLike | None, namespace: str, **kwargs: Any
    ) -> CustomResourceLauncher:
        """A launcher for ``kubeflow.org/v1`` PyTorchJobs."""
        return cls(
            api, core, PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL, namespace, **kwargs
        )

    @classmethod
    def for_experiments(
        cls, api: CustomObjectsApiLike, core: CoreV1ApiLike | None, namespace: str, **kwargs: Any
    ) -> CustomResourceLauncher:
        """A launcher for Katib ``kubeflow.org/v1beta1`` Experiments."""
        return cls(api, core, KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL, namespace, **kwargs)

    # ------------------------------------------------------------ API calls
    def _describe(self, name: str) -> str:
        return f"{self.kind} {self.namespace}/{name}"

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj`` in this launcher's namespace and return what the server stored.

        Raises:
            TrainingError: the object exists already, the CRD is not installed, RBAC forbids
                it, or the server rejected it (the server's message is included).
        """
        body = dict(obj)
        metadata = dict(body.get("metadata") or {})
        name = metadata.get("name")
        if not name:
            raise TrainingError(f"{self.kind} has no metadata.name")
        if metadata.setdefault("namespace", self.namespace) != self.namespace:
            raise TrainingError(
                f"{self.kind} {name} is for namespace {metadata['namespace']!r} but this launcher "
                f"creates in {self.namespace!r}"
            )
        body["metadata"] = metadata
        try:
            created = self.api.create_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, body
            )
        except Exception as exc:  # kubernetes.client.ApiException and transport errors
            raise TrainingError(self._api_error("create", name, exc)) from exc
        self.log(f"created {self._describe(name)}")
        return dict(created) if isinstance(created, Mapping) else body

    def get(self, name: str) -> dict[str, Any]:
        """Read the current object."""
        obj = self.api.get_namespaced_custom_object(
            self.group, self.version, self.namespace, self.plural, name
        )
        return dict(obj)

    def delete(self, name: str) -> bool:
        """Delete (foreground, so pods go too); False when it was already gone."""
        try:
            self.api.delete_namespaced_custom_object(
                self.group,
                self.version,
                self.namespace,
                self.plural,
                name,
                propagation_policy="Foreground",
            )
        except Exception as exc:
            if _status_code(exc) == 404:
                return False
            raise TrainingError(self._api_error("delete", name, exc)) from exc
        self.log(f"deleted {self._describe(name)}")
        return True

    def _api_error(self, verb: str, name: str, exc: BaseException) -> str:
        code = _status_code(exc)
        what = self._describe(name)
        reason = str(getattr(exc, "body", None) or getattr(exc, "reason", None) or exc)
        reason = " ".join(reason.split())[:500]
        if code == 409:
            return f"cannot {verb} {what}: it already exists; pick another name or delete it"
        if code == 404:
            return (
                f"cannot {verb} {what}: the API server does not know {self.plural}.{self.group}/"
                f"{self.version} or the namespace is missing; install the operator and "
                f"`kubectl apply -k manifests/overlays/<env>` ({reason})"
            )
        if code == 403:
            return (
                f"cannot {verb} {what}: forbidden; bind the Role 'kubetrade-pipeline' to this "
                f"pod's service account ({reason})"
            )
        if code == 422 or code == 400:
            return f"cannot {verb} {what}: the API server rejected it: {reason}"
        return f"cannot {verb} {what}: {type(exc).__name__}: {reason}"

    # ------------------------------------------------------------ waiting
    def wait(
        self,
        name: str,
        deadline_s: float,
        poll_s: float = 10.0,
        *,
        delete_on_timeout: bool = True,
        stall_polls: int = 60,
        max_api_errors: int = 10,
    ) -> WaitResult:
        """Poll until the resource reaches a terminal state.

        Args:
            name: the resource's name.
            deadline_s: give up after this many seconds (measured by ``clock``).
            poll_s: seconds between polls.
            delete_on_timeout: delete the resource when the deadline passes (stops paying for
                GPUs nobody waits for).
            stall_polls: Experiments only: fail when the trial counters have not moved for this
                many polls (set it above the longest trial's duration / ``poll_s``).
            max_api_errors: consecutive failed GETs (API server hiccups) tolerated.

        Returns:
            The :class:`WaitResult` of a ``Succeeded`` resource (for an Experiment with
            ``best_trial`` read from ``status.currentOptimalTrial``).

        Raises:
            TrainingError: it failed (with the operator's message and the master's last log
                lines), stalled, vanished, or did not finish before the deadline.
        """
        if deadline_s <= 0 or poll_s <= 0:
            raise TrainingError(f"deadline_s and poll_s must be > 0, got {deadline_s}, {poll_s}")
        start = self.clock()
        tail = _LogTail()
        polls = api_errors = 0
        last_state = ""
        last_progress: Any = None
        unchanged = 0
        obj: dict[str, Any] = {}
        while True:
            polls += 1
            try:
                obj = self.get(name)
                api_errors = 0
            except Exception as exc:
                if _status_code(exc) == 404:
                    raise TrainingError(
                        f"{self._describe(name)} disappeared while waiting (deleted by someone "
                        "or by its TTL)"
                    ) from exc
                api_errors += 1
                if api_errors > max_api_errors:
                    raise TrainingError(self._api_error("read", name, exc)) from exc
                self.log(f"reading {self._describe(name)} failed ({exc}); retrying")
            else:
                terminal = _terminal_condition(obj)
                if self.kind == PYTORCHJOB_KIND:
                    self._stream_master_log(name, tail, flush=terminal is not None)
                state = _current_state(obj)
                if state != last_state:
                    self.log(f"{self._describe(name)}: {state}")
                    last_state = state
                elapsed = self.clock() - start
                if terminal is not None and terminal["type"] == "Succeeded":
                    return self._succeeded(name, obj, elapsed, polls)
                if terminal is not None:
                    raise TrainingError(self._failure_message(name, obj, terminal, tail))
                if self.kind == EXPERIMENT_KIND:
                    progress = experiment_progress(obj)
                    if progress != last_progress:
                        self.log(f"{self._describe(name)}: {progress.summary()}")
                        last_progress, unchanged = progress, 0
                    else:
                        unchanged += 1
                        if unchanged >= stall_polls:
                            raise TrainingError(
                                f"{self._describe(name)} stalled: no trial progress in "
                                f"{unchanged} polls ({unchanged * poll_s:.0f} s; "
                                f"{progress.summary()}); check `kubectl -n {self.namespace} get "
                                f"suggestions,trials` and the suggestion pod's logs"
                            )
            elapsed = self.clock() - start
            if elapsed >= deadline_s:
                deleted = self.delete(name) if delete_on_timeout else False
                raise TrainingError(
                    f"{self._describe(name)} did not finish within {deadline_s:.0f} s "
                    f"(last state: {last_state or 'unknown'})"
                    + ("; it was deleted" if deleted else "")
                    + "; raise the deadline or shrink the job"
                )
            self.sleep(min(poll_s, max(deadline_s - elapsed, 0.0)))

    def _succeeded(self, name: str, obj: dict[str, Any], elapsed: float, polls: int) -> WaitResult:
        best = None
        if self.kind == EXPERIMENT_KIND:
            best = best_trial_from_status(obj, self.search_space)
            if best is None:
                raise TrainingError(
                    f"{self._describe(name)} succeeded but reports no best trial "
                    "(no trial produced the objective metric; check the trainer prints "
                    "'<metric>=<value>' lines)"
                )
            self.log(f"{self._describe(name)}: best trial {best.name} {best.parameters}")
        return WaitResult(name, self.kind, "Succeeded", obj, best, elapsed, polls)

    def _failure_message(
        self, name: str, obj: Mapping[str, Any], cond: Mapping[str, Any], tail: _LogTail
    ) -> str:
        reason = cond.get("reason") or "Failed"
        message = cond.get("message") or "no message from the operator"
        text = f"{self._describe(name)} failed ({reason}): {message}"
        if self.kind == EXPERIMENT_KIND:
            progress = experiment_progress(obj)
            failed = (obj.get("status") or {}).get("failedTrialList") or []
            text += f" [{progress.summary()}]"
            if failed:
                text += (
                    f"; failed trials: {', '.join(failed[:5])} (see `kubectl -n {self.namespace} "
                    f"logs -l training.kubeflow.org/job-name=<trial> -c {CONTAINER_NAME}`)"
                )
            return text
        detail = self._master_termination(name)
        if detail:
            text += f"; master container: {detail}"
        if tail.lines:
            text += "; last log lines:\n" + "\n".join(tail.lines[-20:])
        return text

    # ------------------------------------------------------------ pod logs
    def _master_pod(self, name: str) -> Any | None:
        if self.core is None:
            return None
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=master_pod_selector(name)
            )
        except Exception as exc:
            logger.debug("listing master pod of %s failed: %s", name, exc)
            return None
        items = list(getattr(pods, "items", None) or [])
        return items[0] if items else None

    def _stream_master_log(self, name: str, tail: _LogTail, *, flush: bool = False) -> None:
        """Forward the master's new complete log lines (all of them with ``flush``).

        The log is read whole on every poll and an offset skips what was already shown:
        simple and restart-proof, fine for training logs of a few MB.
        """
        pod = self._master_pod(name)
        if pod is None or self.core is None:
            return
        pod_name = pod.metadata.name
        try:
            # _preload_content=False returns the raw bytes: with preloading, the client
            # deserializes the body and can mangle log lines that look like JSON.
            raw = self.core.read_namespaced_pod_log(
                pod_name, self.namespace, container=CONTAINER_NAME, _preload_content=False
            )
        except Exception as exc:  # container not started yet, pod gone, ...
            logger.debug("reading log of %s failed: %s", pod_name, exc)
            return
        data = getattr(raw, "data", raw)
        if isinstance(data, bytes):
            text = data.decode("utf-8", errors="replace")
        else:
            text = data if isinstance(data, str) else str(data or "")
        if pod_name != tail.pod or len(text) < tail.seen:  # new pod or restarted container
            if tail.pod is not None:
                self.log(f"--- log of {pod_name} (restarted) ---")
            tail.pod, tail.seen = pod_name, 0
        new = text[tail.seen :]
        end = len(new) if flush else new.rfind("\n") + 1
        if end <= 0:
            return  # no complete line yet
        tail.seen += end
        for line in new[:end].rstrip("\n").split("\n"):
            self.log(f"[{pod_name}] {line}")
            tail.lines.append(line)
        del tail.lines[:-200]

    def _master_termination(self, name: str) -> str:
        pod = self._master_pod(name)
        statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
        for status in statuses:
            if status.name != CONTAINER_NAME:
                continue
            state = status.state
            term = getattr(state, "terminated", None) or getattr(
                status.last_state, "terminated", None
            )
            if term is not None:
                parts = [f"exit code {term.exit_code}"]
                if term.reason:
                    parts.append(str(term.reason))
                if term.message:
                    parts.append(str(term.message).strip()[:500])
                return ", ".join(parts)
            waiting = getattr(state, "waiting", None)
            if waiting is not None and waiting.reason:
                return f"waiting: {waiting.reason} {waiting.message or ''}".strip()
        return ""


# ---------------------------------------------------------------- real clients
def kube_clients(context: str | None = None) -> tuple[Any, Any]:
    """``(CustomObjectsApi, CoreV1Api)`` from the in-cluster config, else the kubeconfig.

    Raises:
        TrainingError: neither an in-cluster service account nor a kubeconfig is available.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config(context=context)
        except (config.ConfigException, FileNotFoundError, TypeError) as exc:
            raise TrainingError(
                "no Kubernetes credentials: not running in a pod and no usable kubeconfig "
                f"({exc}); set KUBECONFIG or run inside the cluster"
            ) from exc
    return client.CustomObjectsApi(), client.CoreV1Api()


def run_pytorchjob(
    job: Mapping[str, Any],
    *,
    deadline_s: float,
    poll_s: float = 10.0,
    launcher: CustomResourceLauncher | None = None,
    delete_on_timeout: bool = True,
) -> WaitResult:
    """Create ``job`` and wait for it; raises TrainingError unless it succeeds."""
    namespace = (job.get("metadata") or {}).get("namespace") or "kubetrade"
    if launcher is None:
        api, core = kube_clients()
        launcher = CustomResourceLauncher.for_pytorchjobs(api, core, namespace)
    launcher.create(job)
    return launcher.wait(
        job["metadata"]["name"], deadline_s, poll_s, delete_on_timeout=delete_on_timeout
    )


def run_experiment(
    experiment: Mapping[str, Any],
    *,
    deadline_s: float,
    poll_s: float = 30.0,
    stall_polls: int = 60,
    search_space: SearchSpace | None = None,
    launcher: CustomResourceLauncher | None = None,
) -> BestTrial:
    """Create a Katib Experiment, wait for it and return its best trial."""
    namespace = (experiment.get("metadata") or {}).get("namespace") or "kubetrade"
    if launcher is None:
        api, core = kube_clients()
        launcher = CustomResourceLauncher.for_experiments(
            api, core, namespace, search_space=search_space
        )
    launcher.create(experiment)
    result = launcher.wait(
        experiment["metadata"]["name"], deadline_s, poll_s, stall_polls=stall_polls
    )
    assert result.best_trial is not None  # _succeeded guarantees it
    return result.best_trial
