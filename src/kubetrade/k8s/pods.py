"""Reading a job's pods: selectors, why a pod cannot start, its log, how it ended, its owner.

Pure functions over Pod objects in the API server's JSON shape (the launcher lists pods with
``_preload_content=False``), so each is tested on hand-written pod fixtures
(``tests/contracts/fixtures/pods/``) without a cluster.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetrade.k8s.katib import EXPERIMENT_KIND, EXPERIMENT_LABEL
from kubetrade.k8s.namespace import current_namespace
from kubetrade.k8s.pytorchjob import CONTAINER_NAME

__all__ = [
    "CoreV1ApiLike",
    "FATAL_WAITING_REASONS",
    "UNSCHEDULABLE_GRACE_S",
    "LogTail",
    "as_json",
    "container_termination",
    "log_text",
    "master_pod_selector",
    "owner_reference",
    "pod_problem",
    "pods_selector",
]

logger = logging.getLogger(__name__)


class CoreV1ApiLike(Protocol):
    """The part of ``kubernetes.client.CoreV1Api`` the launcher uses."""

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any: ...

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any: ...


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


def as_json(obj: Any) -> Any:
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
            pod = as_json(
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


@dataclass
class LogTail:
    """What of one pod's log was already forwarded (and its last 200 lines, for errors)."""

    pod: str | None = None
    seen: int = 0
    lines: list[str] = field(default_factory=list)

    def take(self, pod_name: str, text: str, *, flush: bool = False) -> tuple[bool, list[str]]:
        """The complete lines of ``text`` (the pod's whole log) not taken yet; all of them with
        ``flush``. The first item is True when the log restarted (a new pod, or a restarted
        container whose log is shorter than what was seen)."""
        restarted = False
        if pod_name != self.pod or len(text) < self.seen:
            restarted = self.pod is not None
            self.pod, self.seen = pod_name, 0
        new = text[self.seen :]
        end = len(new) if flush else new.rfind("\n") + 1
        if end <= 0:
            return restarted, []  # no complete line yet
        self.seen += end
        lines = new[:end].rstrip("\n").split("\n")
        self.lines.extend(lines)
        del self.lines[:-200]
        return restarted, lines


def log_text(raw: Any) -> str:
    """A ``read_namespaced_pod_log(..., _preload_content=False)`` response as text."""
    data = getattr(raw, "data", raw)
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data if isinstance(data, str) else str(data or "")


def container_termination(pod: Mapping[str, Any], container: str = CONTAINER_NAME) -> str:
    """How ``container`` of ``pod`` ended (exit code, reason, message) or why it waits; ``""``
    when the pod says neither."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
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
