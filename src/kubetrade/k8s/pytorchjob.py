"""Build Kubeflow ``PyTorchJob`` custom resources (kubeflow.org/v1, Training Operator v1.9).

The job has a ``Master`` replica (rank 0, the pod whose logs we stream) and, when
``num_workers > 0``, a ``Worker`` replica set. Every pod runs the container named
``pytorch`` (the Training Operator finds the rendezvous port on that name) hardened the
same way as the manifests in ``manifests/``: non-root uid 1000, read-only root file
system with an ``emptyDir`` on ``/tmp``, no privilege escalation, all capabilities
dropped, ``RuntimeDefault`` seccomp.

How the trainer is started. For a job with a master the operator sets ``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE = pods * nprocPerNode``, ``RANK = pod index``,
``PET_NPROC_PER_NODE``, ``PET_NNODES`` and ``PET_NODE_RANK`` (``pkg/controller.v1/pytorch/
envvar.go``). ``RANK`` is the *node* rank, so a plain ``python -m`` is only right with one
process per pod; the default launcher is therefore ``torchrun`` with its static-rendezvous
flags taken from those variables (kubelet expands ``$(VAR)`` in ``command``)::

    torchrun --nnodes=$(PET_NNODES) --nproc-per-node=$(PET_NPROC_PER_NODE)
             --node-rank=$(PET_NODE_RANK) --master-addr=$(MASTER_ADDR)
             --master-port=$(MASTER_PORT) -m kubetrade.training.run --bundle ... --out ...

The command is always explicit (never the image entrypoint) because Katib's StdOut metrics
collector rewrites the primary container's command and cannot look up entrypoints of
images that were only ``kind load``-ed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from kubetrade.errors import ConfigError
from kubetrade.k8s.namespace import current_namespace

if TYPE_CHECKING:  # the profile module builds jobs with this one (ClusterTrainingProfile.build)
    from kubetrade.k8s.cluster_profile import ClusterTrainingProfile

__all__ = [
    "PYTORCHJOB_GROUP",
    "PYTORCHJOB_VERSION",
    "PYTORCHJOB_PLURAL",
    "PYTORCHJOB_KIND",
    "CONTAINER_NAME",
    "POD_ANNOTATIONS",
    "MASTER_PORT",
    "TRAINER_MODULE",
    "build_pytorchjob",
    "trainer_command",
    "hardened_container_security_context",
    "hardened_pod_security_context",
    "validate_k8s_name",
]

PYTORCHJOB_GROUP = "kubeflow.org"
PYTORCHJOB_VERSION = "v1"
PYTORCHJOB_PLURAL = "pytorchjobs"
PYTORCHJOB_KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the Training Operator's default container name
PORT_NAME = "pytorchjob-port"  # ... and port name (kubeflowv1.PytorchJobDefaultPortName)
MASTER_PORT = 23456
TRAINER_MODULE = "kubetrade.training.run"
RUN_AS_USER = 1000
#: Annotations of every trainer/trial pod (no Istio sidecar: see build_pytorchjob).
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def validate_k8s_name(
    name: str, what: str = "name", *, max_len: int = 63, subdomain: bool = False
) -> str:
    """Check an RFC 1123 label (or, with ``subdomain``, a dotted subdomain); return it."""
    pattern = _DNS1123_SUBDOMAIN if subdomain else _DNS1123_LABEL
    if not isinstance(name, str) or not name or len(name) > max_len or not pattern.match(name):
        allowed = "letters, digits, '-' and '.'" if subdomain else "letters, digits and '-'"
        raise ConfigError(
            f"{what} {name!r} is not a valid Kubernetes name: use at most {max_len} lower-case "
            f"{allowed}, starting and ending with a letter or digit"
        )
    return name


def _check_quantity(value: str, what: str) -> Any:
    from kubernetes.utils import parse_quantity  # lazy: kubernetes.client is slow to import

    try:
        return parse_quantity(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{what} {value!r} is not a Kubernetes quantity (e.g. '500m', '2', '4Gi')"
        ) from exc


def _check_image(image: str) -> str:
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"image {image!r} is empty or contains spaces")
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and ":" not in last:
        raise ConfigError(f"image {image!r} has no tag: pin a version tag or a digest")
    if "@" not in image and last.endswith(":latest"):
        raise ConfigError(f"image {image!r} uses ':latest': pin a version tag or a digest")
    return image


def hardened_container_security_context() -> dict[str, Any]:
    """The container securityContext every kubetrade container gets."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def hardened_pod_security_context() -> dict[str, Any]:
    """The pod securityContext every kubetrade pod gets (fsGroup makes PVCs writable)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def trainer_command(
    launcher: Literal["torchrun", "python"] = "torchrun", module: str = TRAINER_MODULE
) -> list[str]:
    """The container command that starts ``module`` under the Training Operator's env vars."""
    if launcher == "python":
        return ["python", "-m", module]
    if launcher == "torchrun":
        return [
            "torchrun",
            "--nnodes=$(PET_NNODES)",
            "--nproc-per-node=$(PET_NPROC_PER_NODE)",
            "--node-rank=$(PET_NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
            "-m",
            module,
        ]
    raise ConfigError(f"launcher {launcher!r} is not supported; use 'torchrun' or 'python'")


def build_pytorchjob(
    name: str,
    profile: ClusterTrainingProfile,
    *,
    args: Sequence[str] = (),
    command: Sequence[str] | None = None,
    launcher: Literal["torchrun", "python"] = "torchrun",
    labels: Mapping[str, str] | None = None,
    include_metadata_name: bool = True,
) -> dict[str, Any]:
    """Build a ``kubeflow.org/v1`` PyTorchJob as a plain dict (ready for the API server).

    Args:
        name: job name (RFC 1123 label; the Training Operator names pods ``<name>-master-0``).
        profile: where and how the pods run: namespace (default :func:`current_namespace`),
            image (pinned tag or digest), workers and processes per pod, GPUs, container
            resources, ``/dev/shm`` size (DataLoader workers, torchrun processes and NCCL
            need more than the runtime's 64 MiB default), tolerations, node selector, env
            and Secret env, the PVC mounted read-write at ``data_mount_path``, the service
            account (token not mounted: trainers need no API access), pull policy and the
            run policy (backoff limit, restart policy, active deadline, TTL).
        args: arguments after the command, e.g. ``["--bundle", "/data/b", "--out", "/data/o"]``.
        command: the full command; default :func:`trainer_command` of ``launcher``.
        launcher: ``torchrun`` (any ``nproc_per_node``) or ``python`` (only one per pod).
        labels: extra labels on the job and its pods.
        include_metadata_name: False leaves ``metadata.name/namespace`` out (Katib trial specs
            must omit them; Katib names each job after its trial).

    Returns:
        The PyTorchJob dict. ``cleanPodPolicy`` is ``Running``: pods still running when the
        job ends (a worker of an early-stopped Katib trial) are deleted, finished ones are
        kept so a failed master's log can still be read. Pods carry
        ``sidecar.istio.io/inject: "false"`` (:data:`POD_ANNOTATIONS`): the Training
        Operator's docs require it in Istio-injected Kubeflow profile namespaces, where a
        sidecar keeps a finished pod running and blocks the rendezvous; it is inert
        elsewhere.

    Raises:
        ConfigError: a value the API server or the operator would reject, or a GPU/process
            layout that cannot work (more processes than GPUs per pod).
    """
    namespace = profile.namespace or current_namespace()
    if include_metadata_name:
        validate_k8s_name(name, "PyTorchJob name", max_len=50)  # pods add '-worker-<n>'
        validate_k8s_name(namespace, "namespace")
    _check_profile(profile, launcher, custom_command=command is not None)

    env_list: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    seen = {e["name"] for e in env_list}
    for key, value in profile.env.items():
        _check_env_name(key, seen)
        env_list.append({"name": key, "value": str(value)})
    for key, secret in profile.secret_env.items():
        _check_env_name(key, seen)
        validate_k8s_name(secret.secret, f"secret for env {key}", max_len=253, subdomain=True)
        selector: dict[str, Any] = {"name": secret.secret, "key": secret.key}
        if secret.optional:
            selector["optional"] = True
        env_list.append({"name": key, "valueFrom": {"secretKeyRef": selector}})

    limits: dict[str, str] = {"cpu": profile.cpu_limit, "memory": profile.memory_limit}
    if profile.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(profile.gpus_per_worker)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    # DataLoader workers, several torchrun processes and NCCL all share memory through
    # /dev/shm, which container runtimes cap at 64 MiB; tmpfs pages count against the limit.
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    volumes.append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": profile.shm_size}}
    )
    if profile.pvc_name is not None:
        mounts.append({"name": "data", "mountPath": profile.data_mount_path})
        claim = {"claimName": profile.pvc_name}
        volumes.append({"name": "data", "persistentVolumeClaim": claim})

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": profile.image,
        "imagePullPolicy": profile.image_pull_policy,
        "command": list(command) if command is not None else trainer_command(launcher),
        "args": [str(a) for a in args],
        "env": env_list,
        "ports": [{"name": PORT_NAME, "containerPort": MASTER_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": profile.cpu_request, "memory": profile.memory_request},
            "limits": limits,
        },
        "securityContext": hardened_container_security_context(),
        "volumeMounts": mounts,
    }
    all_labels = {
        "app.kubernetes.io/part-of": "kubetrade",
        "app.kubernetes.io/component": "trainer",
    }
    all_labels.update(labels or {})
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": hardened_pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if profile.service_account is not None:
        pod_spec["serviceAccountName"] = profile.service_account
    if profile.node_selector:
        pod_spec["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in profile.tolerations]

    def replica(replicas: int) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": profile.restart_policy,
            "template": {
                "metadata": {"labels": dict(all_labels), "annotations": dict(POD_ANNOTATIONS)},
                "spec": _deep_copy(pod_spec),
            },
        }

    replica_specs = {"Master": replica(1)}
    if profile.num_workers:
        replica_specs["Worker"] = replica(profile.num_workers)
    # Running: when the job ends (succeeded, failed, or a Katib trial early-stopped through
    # its master) pods still running (workers) are deleted; finished pods stay for their logs.
    run_policy: dict[str, Any] = {
        "backoffLimit": profile.backoff_limit,
        "cleanPodPolicy": "Running",
    }
    if profile.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = profile.active_deadline_seconds
    if profile.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = profile.ttl_seconds_after_finished

    metadata: dict[str, Any] = {"labels": dict(all_labels)}
    if include_metadata_name:
        metadata = {"name": name, "namespace": namespace, **metadata}
    return {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": PYTORCHJOB_KIND,
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(profile.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def _check_profile(profile: ClusterTrainingProfile, launcher: str, *, custom_command: bool) -> None:
    """What the API server or the operator would reject, or a layout that cannot work.

    The profile's own validators ran when it was loaded, but ``model_copy(update=...)``
    (trial overrides, :meth:`ClusterTrainingProfile.build`) skips them, so every value the
    job depends on is checked here again.
    """
    image, image_pull_policy = profile.image, profile.image_pull_policy
    num_workers, nproc_per_node = profile.num_workers, profile.nproc_per_node
    gpus_per_worker, backoff_limit = profile.gpus_per_worker, profile.backoff_limit
    cpu_request, cpu_limit = profile.cpu_request, profile.cpu_limit
    memory_request, memory_limit = profile.memory_request, profile.memory_limit
    shm_size, restart_policy = profile.shm_size, profile.restart_policy
    pvc_name, data_mount_path = profile.pvc_name, profile.data_mount_path
    service_account = profile.service_account
    _check_image(image)
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    if nproc_per_node < 1:
        raise ConfigError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    if gpus_per_worker < 0:
        raise ConfigError(f"gpus_per_worker must be >= 0, got {gpus_per_worker}")
    if gpus_per_worker and nproc_per_node > gpus_per_worker:
        raise ConfigError(
            f"nproc_per_node={nproc_per_node} exceeds gpus_per_worker={gpus_per_worker}: "
            "NCCL needs one GPU per process; lower nproc_per_node or request more GPUs"
        )
    if launcher == "python" and nproc_per_node != 1 and not custom_command:
        raise ConfigError(
            f"launcher 'python' starts one process per pod but nproc_per_node={nproc_per_node}; "
            "use launcher='torchrun'"
        )
    if restart_policy not in {"OnFailure", "Never", "ExitCode", "Always"}:
        raise ConfigError(
            f"restart_policy {restart_policy!r} is invalid; use OnFailure, Never, ExitCode or Always"
        )
    if image_pull_policy not in {"IfNotPresent", "Always", "Never"}:
        raise ConfigError(
            f"image_pull_policy {image_pull_policy!r} is invalid; use IfNotPresent, Always or Never"
        )
    if backoff_limit < 0:
        raise ConfigError(f"backoff_limit must be >= 0, got {backoff_limit}")
    for request, limit, what in (
        (cpu_request, cpu_limit, "cpu"),
        (memory_request, memory_limit, "memory"),
    ):
        if _check_quantity(request, f"{what} request") > _check_quantity(limit, f"{what} limit"):
            raise ConfigError(f"{what} request {request} is larger than its limit {limit}")
    if _check_quantity(shm_size, "shm_size") > _check_quantity(memory_limit, "memory limit"):
        raise ConfigError(
            f"shm_size {shm_size} exceeds memory limit {memory_limit} (/dev/shm counts against it)"
        )
    if not data_mount_path.startswith("/") or data_mount_path in {"/", "/tmp", "/dev/shm"}:
        raise ConfigError(
            f"data_mount_path {data_mount_path!r} must be an absolute path other than /, /tmp, /dev/shm"
        )
    if pvc_name is not None:
        validate_k8s_name(pvc_name, "pvc_name", max_len=253, subdomain=True)
    if service_account is not None:
        validate_k8s_name(service_account, "service_account", max_len=253, subdomain=True)


def _check_env_name(key: str, seen: set[str]) -> None:
    if not _ENV_NAME.match(key):
        raise ConfigError(f"environment variable name {key!r} is invalid (letters, digits, _-.)")
    if key in seen:
        raise ConfigError(f"environment variable {key!r} is set twice")
    seen.add(key)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
