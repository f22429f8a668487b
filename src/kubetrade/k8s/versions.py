"""The supported-versions matrix of the cluster path, in one place.

Each Kubeflow release ships one KFP backend (two patch lines), one Training Operator and one
Katib (``RELEASES``). ``kubetrade tune --katib-version`` takes a Katib from there. The KFP
backend is chosen separately: the pipeline fans in two ``dsl.ParallelFor`` loops with
``dsl.Collected``, which a KFP driver resolves only from 2.14.0 (kubeflow/pipelines#11725),
so ``kubetrade compile --kfp-version`` takes a version from ``KFP_VERSIONS`` (2.14.0 or newer,
each with its executor-config proto in tests/contracts/upstream/) and emits only what that
version understands; the KFP lines of Kubeflow 1.9/1.10 are refused with the reason.
docs/cluster.md prints the same table, and tests/contracts check every emitted object against
the upstream definitions of each listed version.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetrade.errors import ConfigError

__all__ = [
    "KubeflowRelease",
    "RELEASES",
    "MIN_KFP_VERSION",
    "KFP_VERSIONS",
    "KATIB_VERSIONS",
    "TRAINING_OPERATOR_VERSIONS",
    "DEFAULT_KFP_VERSION",
    "DEFAULT_KATIB_VERSION",
    "KfpFeatures",
    "kfp_features",
    "check_kfp_version",
    "check_katib_version",
    "katib_has_distribution",
]


@dataclass(frozen=True)
class KubeflowRelease:
    name: str
    #: the KFP backend it ships; those older than MIN_KFP_VERSION are refused by compile
    kfp: tuple[str, ...]
    training_operator: str
    katib: str


RELEASES: tuple[KubeflowRelease, ...] = (
    KubeflowRelease("Kubeflow 1.9", ("2.2.0", "2.3.0"), "v1.8.0", "v0.17.0"),
    KubeflowRelease("Kubeflow 1.10", ("2.4.1", "2.5.0"), "v1.9.0", "v0.18.0"),
    KubeflowRelease("kind (make kind-e2e)", ("2.16.1",), "v1.9.0", "v0.19.0"),
)

#: The first KFP backend whose driver resolves ``dsl.Collected`` (kubeflow/pipelines#11725;
#: 2.5.0's driver skips ParallelFor DAG outputs) and looks producers up by task key, not by
#: display name (kubeflow/pipelines#11173, fixed by #11938/#12061).
MIN_KFP_VERSION = "2.14.0"
#: What ``compile --kfp-version`` accepts: backends >= MIN_KFP_VERSION whose executor-config
#: proto the contract tests hold (tests/contracts/upstream/k8s_exec-<version>.proto).
KFP_VERSIONS: tuple[str, ...] = ("2.14.0", "2.15.0", "2.16.1")
KATIB_VERSIONS: tuple[str, ...] = tuple(dict.fromkeys(r.katib for r in RELEASES))
TRAINING_OPERATOR_VERSIONS: tuple[str, ...] = tuple(
    dict.fromkeys(r.training_operator for r in RELEASES)
)
#: The oldest supported backend: what compiles for it runs on every listed backend.
DEFAULT_KFP_VERSION = KFP_VERSIONS[0]
#: Katib v0.18 (Kubeflow 1.10) and v0.19 accept the same Experiments; v0.17 lacks
#: ``feasibleSpace.distribution``.
DEFAULT_KATIB_VERSION = "v0.18.0"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


def _key_or_none(version: str) -> tuple[int, ...] | None:
    try:
        return _key(version)
    except ValueError:
        return None


@dataclass(frozen=True)
class KfpFeatures:
    """What a KFP backend's driver understands in the kubernetes executor config."""

    version: str
    #: ``secretNameParameter`` / ``configMapNameParameter`` / ``pvcNameParameter`` (2.5+)
    name_parameters: bool
    #: ``optional`` on secretAsEnv/configMapAsEnv is in the proto and honoured by the driver
    #: (2.15+; before, only the *AsVolume messages have it)
    optional_honoured: bool


def check_kfp_version(version: str) -> str:
    """``version`` if it is a supported KFP backend, else a one-line ConfigError: the reason
    for a backend older than :data:`MIN_KFP_VERSION`, the supported list otherwise."""
    key = _key_or_none(version)
    if key is not None and key < _key(MIN_KFP_VERSION):
        raise ConfigError(
            f"KFP {version} cannot run this pipeline: its driver has no dsl.Collected fan-in "
            f"(kubeflow/pipelines#11725, from {MIN_KFP_VERSION}); use --kfp-version "
            f"{MIN_KFP_VERSION} or newer"
        )
    if version not in KFP_VERSIONS:
        raise ConfigError(
            f"KFP backend {version!r} is not supported; use one of {', '.join(KFP_VERSIONS)} "
            "(docs/cluster.md, supported versions)"
        )
    return version


def kfp_features(version: str) -> KfpFeatures:
    """The executor-config features of any KFP ``version`` (supported or not: the contract
    tests' negative controls ask about older backends; :func:`check_kfp_version` gates)."""
    key = _key(version)
    return KfpFeatures(version, name_parameters=key >= (2, 5), optional_honoured=key >= (2, 15))


def check_katib_version(version: str) -> str:
    """Normalise ``0.17``/``v0.17``/``v0.17.0`` to a listed Katib version (ConfigError if none)."""
    text = version.strip()
    text = text if text.startswith("v") else f"v{text}"
    for known in KATIB_VERSIONS:
        if known == text or known.startswith(text + "."):
            return known
    raise ConfigError(f"Katib {version!r} is not supported; use one of {', '.join(KATIB_VERSIONS)}")


def katib_has_distribution(version: str) -> bool:
    """``feasibleSpace.distribution`` exists from Katib v0.18 (v0.17 silently drops it)."""
    return _key(check_katib_version(version)) >= (0, 18)
