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
start (:func:`pod_problem`: ImagePullBackOff, ErrImagePull, CreateContainerConfigError,
Unschedulable, an unbound or missing PVC) instead of waiting out the deadline. A resource
it creates is owned by the pipeline step's pod (``ownerReferences``, from the downward-API
variables ``POD_NAME``/``POD_UID``), so deleting the step's pod (a cancelled KFP run)
garbage-collects it; on SIGTERM the run helpers delete it at once.

Clock and sleep are injectable so tests run instantly::

    launcher = CustomResourceLauncher.for_pytorchjobs(custom_api, core_api, "kubetrade")
    launcher.create(job)
    result = launcher.wait(job["metadata"]["name"], deadline_s=3600, poll_s=10)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetrade.errors import TrainingError
from kubetrade.k8s.katib import (
    EXPERIMENT_KIND,
    EXPERIMENT_LABEL,
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
    current_namespace,
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
    "pod_problem",
    "owner_reference",
    "delete_on_sigterm",
    "Terminated",
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


def pods_selector(kind: str, name: str) -> str:
    """Label selector of every pod of a PyTorchJob (operator label) or of an Experiment's
    trials (:data:`~kubetrade.k8s.katib.EXPERIMENT_LABEL`, set by build_experiment)."""
    if kind == EXPERIMENT_KIND:
        return f"{EXPERIMENT_LABEL}={name}"
    return f"training.kubeflow.org/job-name={name}"


#: Seconds a pod may stay Unschedulable before waiting fails (autoscaler, PVC provisioning).
UNSCHEDULABLE_GRACE_S = 120.0

#: Container waiting reasons that do not fix themselves.
FATAL_WAITING_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
)


def _one_line(text: Any, limit: int = 300) -> str:
    return " ".join(str(text or "").split())[:limit]


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why ``pod`` (a Pod object as the API server returns it, JSON) cannot run, or None.

    One line naming the pod and the reason: a container waiting on ImagePullBackOff /
    ErrImagePull / CreateContainerConfigError (a missing Secret or key), or the scheduler's
    ``PodScheduled=False, Unschedulable`` (which covers a missing or unbound PVC:
    ``persistentvolumeclaim "x" not found``, ``unbound immediate PersistentVolumeClaims``).
    """
    meta = pod.get("metadata") or {}
    where = f"pod {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    for cs in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING_REASONS:
            detail = _one_line(waiting.get("message")) or f"image {cs.get('image', '?')}"
            return f"{where}: container {cs.get('name', '?')} {reason}: {detail}"
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and str(cond.get("status")) == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return f"{where}: Unschedulable: {_one_line(cond.get('message'))}"
    return None


def _as_json(obj: Any) -> Any:
    """An API response as plain JSON: raw (``_preload_content=False``), dict or model."""
    data = getattr(obj, "data", None)
    if isinstance(data, bytes | str) and not isinstance(obj, Mapping):
        return json.loads(data)
    if isinstance(obj, Mapping) or obj is None:
        return obj
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def owner_reference(
    core: CoreV1ApiLike | None = None,
    namespace: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """The ``ownerReference`` to this process's pod, or None outside a pod.

    ``POD_NAME`` and ``POD_UID`` come from the downward API (the compiled pipeline sets them
    on the train and tune tasks with kfp-kubernetes ``use_field_path_as_env``); without
    ``POD_UID`` the pod named ``$HOSTNAME`` is read through the API (in a pod only). None
    when ``namespace`` (where the resource goes) is not this pod's namespace.
    """
    env = os.environ if env is None else env
    if namespace is not None and namespace != current_namespace():
        # An owner must live in the dependent's namespace: the garbage collector would take
        # a reference to a pod of another namespace for a deleted owner and delete the job.
        logger.info("creating in %s, not this pod's namespace: the resource is unowned", namespace)
        return None
    name, uid = env.get("POD_NAME"), env.get("POD_UID")
    if not uid and core is not None and env.get("KUBERNETES_SERVICE_HOST"):
        name = name or env.get("HOSTNAME")
        try:
            pod = _as_json(
                core.read_namespaced_pod(  # type: ignore[attr-defined]
                    name, namespace or current_namespace(), _preload_content=False
                )
            )
            uid = (pod.get("metadata") or {}).get("uid")
        except Exception as exc:  # no RBAC, not a pod: run unowned
            logger.debug("cannot read own pod %s: %s", name, exc)
            uid = None
    if not (name and uid):
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


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
        tail = _LogTail()
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
    def _list_pods(self, selector: str) -> list[dict[str, Any]]:
        if self.core is None:
            return []
        try:
            raw = self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False
            )
            pods = _as_json(raw) or {}
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

    def _stream_master_log(self, name: str, tail: _LogTail, *, flush: bool = False) -> None:
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
        pod = self._master_pod(name) or {}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != CONTAINER_NAME:
                continue
            state = status.get("state") or {}
            term = state.get("terminated") or (status.get("lastState") or {}).get("terminated")
            if term:
                parts = [f"exit code {term.get('exitCode')}"]
                if term.get("reason"):
                    parts.append(str(term["reason"]))
                if term.get("message"):
                    parts.append(str(term["message"]).strip()[:500])
                return ", ".join(parts)
            waiting = state.get("waiting") or {}
            if waiting.get("reason"):
                return f"waiting: {waiting['reason']} {waiting.get('message') or ''}".strip()
        return ""


class Terminated(BaseException):
    """SIGTERM while waiting (a BaseException, so API-error retries do not swallow it)."""


@contextlib.contextmanager
def delete_on_sigterm(launcher: CustomResourceLauncher, name: str) -> Iterator[None]:
    """While waiting: SIGTERM (a cancelled KFP run stops the step's pod) or Ctrl-C deletes
    the resource ``name`` before the process ends, then raises TrainingError (SIGTERM) or
    re-raises KeyboardInterrupt. The previous SIGTERM handler is restored afterwards; off the
    main thread (where Python cannot set handlers) only KeyboardInterrupt is handled."""

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main else None
    try:
        try:
            yield
        except (Terminated, KeyboardInterrupt) as exc:
            try:
                deleted = launcher.delete(name)
            except TrainingError as err:
                logger.warning("could not delete %s: %s", name, err)
                deleted = False
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise TrainingError(
                f"{launcher._describe(name)}: SIGTERM received while waiting"
                + ("; it was deleted" if deleted else "")
            ) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


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
    unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S,
) -> WaitResult:
    """Create ``job`` (owned by this pod) and wait for it; raises TrainingError unless it
    succeeds. SIGTERM while waiting deletes the job."""
    namespace = (job.get("metadata") or {}).get("namespace") or current_namespace()
    if launcher is None:
        api, core = kube_clients()
        launcher = CustomResourceLauncher.for_pytorchjobs(
            api, core, namespace, owner=owner_reference(core, namespace)
        )
    name = job["metadata"]["name"]
    with delete_on_sigterm(launcher, name):
        launcher.create(job)
        return launcher.wait(
            name,
            deadline_s,
            poll_s,
            delete_on_timeout=delete_on_timeout,
            unschedulable_grace_s=unschedulable_grace_s,
        )


def run_experiment(
    experiment: Mapping[str, Any],
    *,
    deadline_s: float,
    poll_s: float = 30.0,
    stall_polls: int = 60,
    search_space: SearchSpace | None = None,
    launcher: CustomResourceLauncher | None = None,
    unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S,
) -> BestTrial:
    """Create a Katib Experiment (owned by this pod), wait for it and return its best trial.
    SIGTERM while waiting deletes the experiment (and with it its trials)."""
    namespace = (experiment.get("metadata") or {}).get("namespace") or current_namespace()
    if launcher is None:
        api, core = kube_clients()
        launcher = CustomResourceLauncher.for_experiments(
            api,
            core,
            namespace,
            search_space=search_space,
            owner=owner_reference(core, namespace),
        )
    name = experiment["metadata"]["name"]
    with delete_on_sigterm(launcher, name):
        launcher.create(experiment)
        result = launcher.wait(
            name,
            deadline_s,
            poll_s,
            stall_polls=stall_polls,
            unschedulable_grace_s=unschedulable_grace_s,
        )
    assert result.best_trial is not None  # _succeeded guarantees it
    return result.best_trial
