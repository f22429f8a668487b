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

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from kubetrade.config import StrictModel, load_yaml_model
from kubetrade.errors import ConfigError

__all__ = [
    "PYTORCHJOB_GROUP",
    "PYTORCHJOB_VERSION",
    "PYTORCHJOB_PLURAL",
    "PYTORCHJOB_KIND",
    "CONTAINER_NAME",
    "POD_ANNOTATIONS",
    "MASTER_PORT",
    "TRAINER_MODULE",
    "SecretRef",
    "Toleration",
    "ClusterTrainingProfile",
    "load_cluster_profile",
    "cluster_profile_from_configmap",
    "current_namespace",
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
PROFILE_CONFIGMAP = "kubetrade-cluster-profile"
#: Annotations of every trainer/trial pod (no Istio sidecar: see build_pytorchjob).
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}
PROFILE_KEY = "profile.yaml"
_SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class SecretRef(StrictModel):
    """An environment variable read from a key of a Kubernetes Secret."""

    secret: str = Field(description="Secret name (in the job's namespace)")
    key: str = Field(description="key inside the Secret")
    optional: bool = False


class Toleration(StrictModel):
    """A pod toleration (Kubernetes ``core/v1 Toleration``, snake_case keys)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("operator 'Exists' takes no value; drop 'value' or use 'Equal'")
        if self.operator == "Equal" and self.key is None:
            raise ValueError("operator 'Equal' needs a key")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds only applies to effect 'NoExecute'")
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The camelCase dict the API server expects (unset fields left out)."""
        out: dict[str, Any] = {"operator": self.operator}
        if self.key is not None:
            out["key"] = self.key
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


class ClusterTrainingProfile(StrictModel):
    """Where and how training pods run in a cluster; the kustomize overlays ship one each.

    ``manifests/base`` puts a CPU profile in the ConfigMap ``kubetrade-cluster-profile``
    (key ``profile.yaml``); ``overlays/gpu`` replaces it with a GPU one. The train and tune
    steps read it with :func:`load_cluster_profile` and pass it to :func:`build_pytorchjob`.
    """

    namespace: str | None = Field(
        default=None, description="job namespace; default: the namespace this process runs in"
    )
    image: str = Field(description="trainer image, pinned tag or digest (never :latest)")
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    num_workers: int = Field(default=0, ge=0, le=1024, description="Worker pods besides the Master")
    nproc_per_node: int = Field(default=1, ge=1, le=64, description="processes per pod (torchrun)")
    gpus_per_worker: int = Field(default=0, ge=0, le=64, description="nvidia.com/gpu per pod")
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"
    shm_size: str = "1Gi"
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, SecretRef] = Field(default_factory=dict)
    pvc_name: str | None = "kubetrade-data"
    data_mount_path: str = "/data"
    service_account: str | None = "kubetrade-trainer"
    backoff_limit: int = Field(default=2, ge=0)
    restart_policy: Literal["OnFailure", "Never", "ExitCode", "Always"] = "OnFailure"
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=86400, ge=0)
    wait_deadline_s: float = Field(
        default=6 * 3600, gt=0, description="launcher gives up after this"
    )
    poll_s: float = Field(default=10.0, gt=0)
    unschedulable_grace_s: float = Field(
        default=120.0,
        ge=0,
        description="a pod may stay Unschedulable this long before the step fails (raise it "
        "on node pools that autoscale, e.g. GPU nodes that take minutes to join)",
    )
    katib_version: str = Field(
        default="v0.18.0",
        description="the cluster's Katib (kubetrade.k8s.versions.KATIB_VERSIONS); v0.17.0 "
        "(Kubeflow 1.9) has no feasibleSpace.distribution",
    )

    @field_validator("katib_version")
    @classmethod
    def _known_katib(cls, value: str) -> str:
        from kubetrade.k8s.versions import check_katib_version

        return check_katib_version(value)

    def job_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`build_pytorchjob` that this profile sets."""
        return {
            "namespace": self.namespace or current_namespace(),
            "image": self.image,
            "image_pull_policy": self.image_pull_policy,
            "num_workers": self.num_workers,
            "nproc_per_node": self.nproc_per_node,
            "gpus_per_worker": self.gpus_per_worker,
            "cpu_request": self.cpu_request,
            "cpu_limit": self.cpu_limit,
            "memory_request": self.memory_request,
            "memory_limit": self.memory_limit,
            "shm_size": self.shm_size,
            "tolerations": list(self.tolerations),
            "node_selector": dict(self.node_selector),
            "env": dict(self.env),
            "secret_env": dict(self.secret_env),
            "pvc_name": self.pvc_name,
            "data_mount_path": self.data_mount_path,
            "service_account": self.service_account,
            "backoff_limit": self.backoff_limit,
            "restart_policy": self.restart_policy,
            "active_deadline_seconds": self.active_deadline_seconds,
            "ttl_seconds_after_finished": self.ttl_seconds_after_finished,
        }

    def build(
        self,
        name: str,
        args: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """:func:`build_pytorchjob` with this profile's settings; keyword ``overrides`` win."""
        params = self.job_kwargs()
        params["labels"] = labels
        params.update(overrides)
        return build_pytorchjob(name, args=args, **params)


def current_namespace(default: str = "kubetrade") -> str:
    """The namespace this process runs in: ``$KUBETRADE_NAMESPACE``, the pod's service-account
    namespace file, else ``default``."""
    env = os.environ.get("KUBETRADE_NAMESPACE")
    if env:
        return env
    try:
        text = Path(_SA_NAMESPACE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return default
    return text or default


def cluster_profile_from_configmap(
    core: Any, namespace: str | None = None, name: str = PROFILE_CONFIGMAP
) -> ClusterTrainingProfile:
    """Read the profile the kustomize overlay installed (ConfigMap key ``profile.yaml``).

    Args:
        core: a ``kubernetes.client.CoreV1Api`` (the Role allows ``get`` on this one map).
        namespace: default :func:`current_namespace`.
        name: the ConfigMap's name.
    """
    ns = namespace or current_namespace()
    try:
        cm = core.read_namespaced_config_map(name, ns)
    except Exception as exc:
        raise ConfigError(
            f"cannot read ConfigMap {ns}/{name} ({type(exc).__name__}: {exc}); "
            "apply manifests/overlays/<env> first"
        ) from exc
    data = getattr(cm, "data", None) or {}
    if PROFILE_KEY not in data:
        raise ConfigError(f"ConfigMap {ns}/{name} has no key {PROFILE_KEY!r}")
    try:
        parsed = yaml.safe_load(data[PROFILE_KEY]) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"ConfigMap {ns}/{name}: {PROFILE_KEY} is not YAML ({exc})") from exc
    return load_yaml_model(ClusterTrainingProfile, f"ConfigMap {ns}/{name}", parsed)


def load_cluster_profile(
    path: str | Path | None = None, data: dict[str, Any] | None = None
) -> ClusterTrainingProfile:
    """Read a :class:`ClusterTrainingProfile` from YAML (unknown keys are ConfigErrors)."""
    if path is None and data is None:
        raise ConfigError("load_cluster_profile: give a path or a dict (no default profile)")
    return load_yaml_model(ClusterTrainingProfile, path, data)


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
    *,
    namespace: str = "kubetrade",
    image: str,
    args: Sequence[str] = (),
    command: Sequence[str] | None = None,
    launcher: Literal["torchrun", "python"] = "torchrun",
    num_workers: int = 0,
    nproc_per_node: int = 1,
    gpus_per_worker: int = 0,
    cpu_request: str = "1",
    cpu_limit: str = "2",
    memory_request: str = "2Gi",
    memory_limit: str = "4Gi",
    shm_size: str = "1Gi",
    tolerations: Sequence[Toleration | Mapping[str, Any]] = (),
    node_selector: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, SecretRef | Mapping[str, Any]] | None = None,
    pvc_name: str | None = None,
    data_mount_path: str = "/data",
    service_account: str | None = None,
    image_pull_policy: str = "IfNotPresent",
    backoff_limit: int = 2,
    restart_policy: str = "OnFailure",
    active_deadline_seconds: int | None = None,
    ttl_seconds_after_finished: int | None = 86400,
    labels: Mapping[str, str] | None = None,
    include_metadata_name: bool = True,
) -> dict[str, Any]:
    """Build a ``kubeflow.org/v1`` PyTorchJob as a plain dict (ready for the API server).

    Args:
        name: job name (RFC 1123 label; the Training Operator names pods ``<name>-master-0``).
        namespace: namespace of the job.
        image: container image, with a pinned tag or digest.
        args: arguments after the command, e.g. ``["--bundle", "/data/b", "--out", "/data/o"]``.
        command: the full command; default :func:`trainer_command` of ``launcher``.
        launcher: ``torchrun`` (any ``nproc_per_node``) or ``python`` (only one per pod).
        num_workers: Worker pods in addition to the Master pod.
        nproc_per_node: processes per pod (``spec.nprocPerNode``).
        gpus_per_worker: ``nvidia.com/gpu`` limit of every pod; 0 for CPU training.
        cpu_request, cpu_limit, memory_request, memory_limit: container resources.
        shm_size: size limit of the in-memory ``/dev/shm`` (DataLoader workers, torchrun
            processes and NCCL need more than the runtime's 64 MiB default).
        tolerations: pod tolerations (``Toleration`` or dicts with its snake_case keys).
        node_selector: pod node selector.
        env: plain environment variables.
        secret_env: environment variables read from Secrets: ``{VAR: SecretRef}``.
        pvc_name: a PersistentVolumeClaim mounted read-write at ``data_mount_path``.
        data_mount_path: where the PVC is mounted.
        service_account: pod service account (token not mounted: trainers need no API access).
        image_pull_policy: ``IfNotPresent`` (kind-loaded images), ``Always`` or ``Never``.
        backoff_limit: ``runPolicy.backoffLimit``, pod restarts before the job fails.
        restart_policy: replica restart policy (``OnFailure``, ``Never``, ``ExitCode``, ``Always``).
        active_deadline_seconds: optional ``runPolicy.activeDeadlineSeconds``.
        ttl_seconds_after_finished: optional ``runPolicy.ttlSecondsAfterFinished``.
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
    if include_metadata_name:
        validate_k8s_name(name, "PyTorchJob name", max_len=50)  # pods add '-worker-<n>'
        validate_k8s_name(namespace, "namespace")
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
    if launcher == "python" and nproc_per_node != 1 and command is None:
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

    env_list: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    seen = {e["name"] for e in env_list}
    for key, value in (env or {}).items():
        _check_env_name(key, seen)
        env_list.append({"name": key, "value": str(value)})
    for key, ref in (secret_env or {}).items():
        _check_env_name(key, seen)
        secret = ref if isinstance(ref, SecretRef) else SecretRef.model_validate(dict(ref))
        validate_k8s_name(secret.secret, f"secret for env {key}", max_len=253, subdomain=True)
        selector: dict[str, Any] = {"name": secret.secret, "key": secret.key}
        if secret.optional:
            selector["optional"] = True
        env_list.append({"name": key, "valueFrom": {"secretKeyRef": selector}})

    limits: dict[str, str] = {"cpu": cpu_limit, "memory": memory_limit}
    if gpus_per_worker:
        limits["nvidia.com/gpu"] = str(gpus_per_worker)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    # DataLoader workers, several torchrun processes and NCCL all share memory through
    # /dev/shm, which container runtimes cap at 64 MiB; tmpfs pages count against the limit.
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
    if pvc_name is not None:
        mounts.append({"name": "data", "mountPath": data_mount_path})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": pvc_name}})

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(command) if command is not None else trainer_command(launcher),
        "args": [str(a) for a in args],
        "env": env_list,
        "ports": [{"name": PORT_NAME, "containerPort": MASTER_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": cpu_request, "memory": memory_request},
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
    if service_account is not None:
        pod_spec["serviceAccountName"] = service_account
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [
            (t if isinstance(t, Toleration) else Toleration.model_validate(dict(t))).to_k8s()
            for t in tolerations
        ]

    def replica(replicas: int) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": restart_policy,
            "template": {
                "metadata": {"labels": dict(all_labels), "annotations": dict(POD_ANNOTATIONS)},
                "spec": _deep_copy(pod_spec),
            },
        }

    replica_specs = {"Master": replica(1)}
    if num_workers:
        replica_specs["Worker"] = replica(num_workers)
    # Running: when the job ends (succeeded, failed, or a Katib trial early-stopped through
    # its master) pods still running (workers) are deleted; finished pods stay for their logs.
    run_policy: dict[str, Any] = {"backoffLimit": backoff_limit, "cleanPodPolicy": "Running"}
    if active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = active_deadline_seconds
    if ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = ttl_seconds_after_finished

    metadata: dict[str, Any] = {"labels": dict(all_labels)}
    if include_metadata_name:
        metadata = {"name": name, "namespace": namespace, **metadata}
    return {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": PYTORCHJOB_KIND,
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        },
    }


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
