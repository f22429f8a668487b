"""The supported-versions matrix of the cluster path, in one place.

Each Kubeflow release ships one KFP backend (two patch lines), one Training Operator and one
Katib. ``kubetrade compile --kfp-version`` and ``kubetrade tune --katib-version`` take a
version from here and emit only what that version understands; docs/cluster.md prints the
same table, and tests/contracts check every emitted object against the upstream
definitions of each listed version (tests/contracts/upstream/).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetrade.errors import ConfigError

__all__ = [
    "KubeflowRelease",
    "RELEASES",
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
    kfp: tuple[str, ...]
    training_operator: str
    katib: str


RELEASES: tuple[KubeflowRelease, ...] = (
    KubeflowRelease("Kubeflow 1.9", ("2.2.0", "2.3.0"), "v1.8.0", "v0.17.0"),
    KubeflowRelease("Kubeflow 1.10", ("2.4.1", "2.5.0"), "v1.9.0", "v0.18.0"),
    KubeflowRelease("kind (make kind-e2e)", ("2.16.1",), "v1.9.0", "v0.19.0"),
)

KFP_VERSIONS: tuple[str, ...] = tuple(v for r in RELEASES for v in r.kfp)
KATIB_VERSIONS: tuple[str, ...] = tuple(dict.fromkeys(r.katib for r in RELEASES))
TRAINING_OPERATOR_VERSIONS: tuple[str, ...] = tuple(
    dict.fromkeys(r.training_operator for r in RELEASES)
)
#: The oldest backend: what compiles for it runs on every listed backend.
DEFAULT_KFP_VERSION = KFP_VERSIONS[0]
#: Katib v0.18 (Kubeflow 1.10) and v0.19 accept the same Experiments; v0.17 lacks
#: ``feasibleSpace.distribution``.
DEFAULT_KATIB_VERSION = "v0.18.0"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


@dataclass(frozen=True)
class KfpFeatures:
    """What a KFP backend's driver understands in the kubernetes executor config."""

    version: str
    #: ``secretNameParameter`` / ``configMapNameParameter`` / ``pvcNameParameter`` (2.5+)
    name_parameters: bool
    #: ``optional`` on secretAsEnv/configMapAsEnv is *honoured* by the driver (2.15+; the
    #: field is in the proto since 2.2.0 but older drivers leave the reference required)
    optional_honoured: bool


def check_kfp_version(version: str) -> str:
    """``version`` if it is a supported KFP backend, else a ConfigError listing them."""
    if version not in KFP_VERSIONS:
        raise ConfigError(
            f"KFP backend {version!r} is not supported; use one of {', '.join(KFP_VERSIONS)} "
            "(docs/cluster.md, supported versions)"
        )
    return version


def kfp_features(version: str) -> KfpFeatures:
    key = _key(check_kfp_version(version))
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
