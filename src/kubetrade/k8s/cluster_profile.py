"""Where and how trainer pods run: the cluster profile each kustomize overlay ships.

:class:`ClusterTrainingProfile` is the one object
:func:`~kubetrade.k8s.pytorchjob.build_pytorchjob` and
:func:`~kubetrade.k8s.katib.build_experiment` take (image, workers, GPUs, resources,
tolerations, PVC, Secret env, run policy, how long the launcher waits). It is read from
the ConfigMap ``kubetrade-cluster-profile`` (:func:`cluster_profile_from_configmap`) or a
YAML file (:func:`load_cluster_profile`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from kubetrade.config import StrictModel, load_yaml_model
from kubetrade.errors import ConfigError
from kubetrade.k8s.namespace import current_namespace

__all__ = [
    "PROFILE_CONFIGMAP",
    "PROFILE_KEY",
    "SecretRef",
    "Toleration",
    "ClusterTrainingProfile",
    "current_namespace",
    "cluster_profile_from_configmap",
    "load_cluster_profile",
]

PROFILE_CONFIGMAP = "kubetrade-cluster-profile"
PROFILE_KEY = "profile.yaml"


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
    steps read it with :func:`load_cluster_profile` and pass it to
    :func:`~kubetrade.k8s.pytorchjob.build_pytorchjob`.
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

    def build(
        self,
        name: str,
        args: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """:func:`~kubetrade.k8s.pytorchjob.build_pytorchjob` with this profile; keyword
        ``overrides`` (profile fields, e.g. ``namespace``) win."""
        from kubetrade.k8s.pytorchjob import build_pytorchjob

        profile = self.model_copy(update=overrides) if overrides else self
        return build_pytorchjob(name, profile, args=args, labels=labels)


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
