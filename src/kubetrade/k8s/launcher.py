"""Create a custom resource, watch it to the end, and fail loudly when it fails.

Unlike the old upstream KFP PyTorchJob launcher (which returned normally when the job
failed), :meth:`CustomResourceLauncher.wait` raises :class:`~kubetrade.errors.TrainingError`
for a failed job, a failed Katib experiment, a stalled experiment and a missed deadline,
so the pipeline step fails with a message that says why.

The launcher polls (``get_namespaced_custom_object`` every ``poll_s`` seconds) rather than
watching: a poll survives API-server restarts and proxy timeouts without re-list logic,
and it is what lets the tests drive it with scripted statuses. While a PyTorchJob runs,
the master pod's new log lines are forwarded to ``log`` on every poll.

It also fails fast, in one line naming the pod and the reason, when a pod of the job cannot
start (:func:`~kubetrade.k8s.pods.pod_problem`: ImagePullBackOff, ErrImagePull, CreateContainerConfigError,
Unschedulable, an unbound or missing PVC) instead of waiting out the deadline. A resource
it creates is owned by the pipeline step's pod (``ownerReferences``, from the downward-API
variables ``POD_NAME``/``POD_UID``), so deleting the step's pod (a cancelled KFP run)
garbage-collects it; on SIGTERM the run helpers delete it at once.

Reading pods (selectors, :func:`~kubetrade.k8s.pods.pod_problem`, logs, owner) is
:mod:`kubetrade.k8s.pods`; creating a resource and waiting for it from a pipeline step
(owner, SIGTERM, real clients) is :mod:`kubetrade.k8s.lifecycle`.

Clock and sleep are injectable so tests run instantly::

    launcher = CustomResourceLauncher.for_pytorchjobs(custom_api, core_api, "kubetrade")
    launcher.create(job)
    result = launcher.wait(job["metadata"]["name"], deadline_s=3600, poll_s=10)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubetrade.errors import TrainingError
from kubetrade.k8s.katib import (
    EXPERIMENT_KIND,
    EXPERIMENT_PLURAL,
    KATIB_GROUP,
    KATIB_VERSION,
)
from kubetrade.k8s.katib_status import BestTrial, best_trial_from_status, experiment_progress
from kubetrade.k8s.pods import (
    UNSCHEDULABLE_GRACE_S,
    CoreV1ApiLike,
    LogTail,
    as_json,
    container_termination,
    log_text,
    master_pod_selector,
    pod_problem,
    pods_selector,
)
from kubetrade.k8s.pytorchjob import (
    CONTAINER_NAME,
    PYTORCHJOB_GROUP,
    PYTORCHJOB_KIND,
    PYTORCHJOB_PLURAL,
    PYTORCHJOB_VERSION,
)
from kubetrade.tuning.space import SearchSpace

__all__ = [
    "CustomObjectsApiLike",
    "WaitResult",
    "CustomResourceLauncher",
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
        owner: an ``ownerReference`` (:func:`owner_reference`) put on what :meth:`create`
            creates, so it is garbage-collected with its owner.
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
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        self.owner = dict(owner) if owner else None
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
        if self.owner:
            refs = [
                r
                for r in metadata.get("ownerReferences") or []
                if r.get("uid") != self.owner["uid"]
            ]
            metadata["ownerReferences"] = [*refs, dict(self.owner)]
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
        unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S,
    ) -> WaitResult:
        """Poll until the resource reaches a terminal state.

        Args:
            name: the resource's name.
            deadline_s: give up after this many seconds (measured by ``clock``).
            poll_s: seconds between polls.
            delete_on_timeout: delete the resource when the deadline passes or a pod cannot
                start (stops paying for GPUs nobody waits for).
            stall_polls: Experiments only: fail when the trial counters have not moved for this
                many polls (set it above the longest trial's duration / ``poll_s``).
            max_api_errors: consecutive failed GETs (API server hiccups) tolerated.
            unschedulable_grace_s: how long a pod may stay Unschedulable before the wait
                fails (a node autoscaler adding a GPU node, a PVC being provisioned); image
                pull and container config errors fail at once.

        Returns:
            The :class:`WaitResult` of a ``Succeeded`` resource (for an Experiment with
            ``best_trial`` read from ``status.currentOptimalTrial``).

        Raises:
            TrainingError: it failed (with the operator's message and the master's last log
                lines), stalled, vanished, did not finish before the deadline, or one of its
                pods cannot start (:func:`pod_problem`, one line).
        """
        if deadline_s <= 0 or poll_s <= 0:
            raise TrainingError(f"deadline_s and poll_s must be > 0, got {deadline_s}, {poll_s}")
        start = self.clock()
        tail = LogTail()
        polls = api_errors = 0
        last_state = ""
        last_progress: Any = None
        unchanged = 0
        unschedulable_since: dict[str, float] = {}
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
                problem = self._pod_problem(name, unschedulable_since, unschedulable_grace_s)
                if problem is not None:
                    deleted = self.delete(name) if delete_on_timeout else False
                    raise TrainingError(
                        f"{self._describe(name)} cannot run: {problem}"
                        + ("; it was deleted" if deleted else "")
                    )
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
        self, name: str, obj: Mapping[str, Any], cond: Mapping[str, Any], tail: LogTail
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
    def _list_pods(self, selector: str) -> list[dict[str, Any]]:
        if self.core is None:
            return []
        try:
            raw = self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False
            )
            pods = as_json(raw) or {}
        except Exception as exc:
            logger.debug("listing pods %s failed: %s", selector, exc)
            return []
        return [dict(p) for p in pods.get("items") or [] if isinstance(p, Mapping)]

    def _pod_problem(self, name: str, since: dict[str, float], grace_s: float) -> str | None:
        """The first pod problem that is fatal now (Unschedulable only after ``grace_s``)."""
        now = self.clock()
        seen: set[str] = set()
        for pod in self._list_pods(pods_selector(self.kind, name)):
            problem = pod_problem(pod)
            if problem is None:
                continue
            if ": Unschedulable: " not in problem:
                return problem
            key = str((pod.get("metadata") or {}).get("name"))
            seen.add(key)
            first = since.setdefault(key, now)
            if now - first >= grace_s:
                return f"{problem} (for {now - first:.0f} s)"
        for key in set(since) - seen:  # scheduled meanwhile
            del since[key]
        return None

    def _master_pod(self, name: str) -> dict[str, Any] | None:
        items = self._list_pods(master_pod_selector(name))
        return items[0] if items else None

    def _stream_master_log(self, name: str, tail: LogTail, *, flush: bool = False) -> None:
        """Forward the master's new complete log lines (all of them with ``flush``).

        The log is read whole on every poll and an offset skips what was already shown:
        simple and restart-proof, fine for training logs of a few MB.
        """
        pod = self._master_pod(name)
        if pod is None or self.core is None:
            return
        pod_name = pod["metadata"]["name"]
        try:
            # _preload_content=False returns the raw bytes: with preloading, the client
            # deserializes the body and can mangle log lines that look like JSON.
            raw = self.core.read_namespaced_pod_log(
                pod_name, self.namespace, container=CONTAINER_NAME, _preload_content=False
            )
        except Exception as exc:  # container not started yet, pod gone, ...
            logger.debug("reading log of %s failed: %s", pod_name, exc)
            return
        restarted, lines = tail.take(pod_name, log_text(raw), flush=flush)
        if restarted:
            self.log(f"--- log of {pod_name} (restarted) ---")
        for line in lines:
            self.log(f"[{pod_name}] {line}")

    def _master_termination(self, name: str) -> str:
        return container_termination(self._master_pod(name) or {})
