"""One custom resource's life from a pipeline step: create it owned by the step's pod, wait,
and delete it when the step is cancelled.

:func:`run_pytorchjob` and :func:`run_experiment` are what the train and tune steps call;
they build a :class:`~kubetrade.k8s.launcher.CustomResourceLauncher` from
:func:`kube_clients` unless one is given (tests give one over the fake API server).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from kubetrade.errors import TrainingError
from kubetrade.k8s.katib_status import BestTrial
from kubetrade.k8s.launcher import CustomResourceLauncher, WaitResult
from kubetrade.k8s.namespace import current_namespace
from kubetrade.k8s.pods import UNSCHEDULABLE_GRACE_S, owner_reference
from kubetrade.tuning.space import SearchSpace

__all__ = [
    "Terminated",
    "delete_on_sigterm",
    "kube_clients",
    "run_experiment",
    "run_pytorchjob",
]

logger = logging.getLogger(__name__)


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
