"""Shared fixtures. Tests run from the repo root so config/ paths resolve."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)
# Two cores here: keep torch and BLAS from oversubscribing when tests run.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def embedded():
    """The embedded real OHLCV table (loaded once)."""
    from kubetrade.data.sources import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


# ---------------------------------------------------------------- the one tiny training config
#: The tiny hybrid model every quick training test uses (seconds per epoch on one CPU core).
TINY_MODEL: dict[str, Any] = {
    "cnn": {"hidden_dim": 8, "filter_sizes": [2, 3], "num_heads": 2, "dropout": 0.1},
    "lstm": {"hidden_dim": 4, "num_layers": 1, "dropout": 0.0},
    "fusion": {"output_dim": 8, "num_heads": 2},
}


def tiny_training_dict(**training: Any) -> dict[str, Any]:
    """The tiny training config as a dict (3 epochs, batch 16, 12-bar windows, CPU, fp32);
    ``training`` updates its ``training:`` section."""
    return {
        "model": copy.deepcopy(TINY_MODEL),
        "training": {
            "batch_size": 16,
            "num_epochs": 3,
            "early_stopping_patience": 5,
            "scheduler": {"T_max": 3},
            **training,
        },
        "data": {"sequence_length": 12},
        "hardware": {"mixed_precision": False, "device": "cpu"},
    }


def tiny_training_config(**training: Any) -> Any:
    """:func:`tiny_training_dict` as a validated :class:`~kubetrade.config.TrainingConfig`."""
    from kubetrade.config import TrainingConfig

    return TrainingConfig.model_validate(tiny_training_dict(**training))


def tiny_overrides(**dotted: Any) -> dict[str, Any]:
    """The tiny model as dotted ``config_overrides`` (for ``config/training.yaml`` based
    tests), fp32; ``dotted`` adds or replaces paths (``**{"data.sequence_length": 20}``)."""
    flat: dict[str, Any] = {
        f"model.{block}.{key}": value
        for block, fields in TINY_MODEL.items()
        for key, value in fields.items()
    }
    flat["hardware.mixed_precision"] = False
    return flat | dotted


# ---------------------------------------------------------------- the one fake Kubernetes API
class FakeResponse:
    """What the kubernetes client returns with ``_preload_content=False``: raw bytes."""

    def __init__(self, payload: Any) -> None:
        self.data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    pairs = [p.split("=", 1) for p in selector.split(",") if p]
    return all(labels.get(k) == v for k, v in pairs)


class FakeKubernetesApi:
    """The only fake Kubernetes API server of the suite (no cluster can run in tests).

    It answers the ``CustomObjectsApi`` and ``CoreV1Api`` calls kubetrade makes, with JSON
    shaped as the API server returns it:

    - custom objects: ``create`` stores the body; each ``get`` returns the stored object with
      the next scripted status (the last one repeats; an Exception is raised instead; a
      callable ``f(fake, obj)`` computes it, e.g. runs the trainer like a Master pod would);
      ``delete`` records the name.
    - pods: ``list_namespaced_pod`` filters ``pods`` (JSON Pod objects, e.g. recorded
      fixtures) by label selector; ``read_namespaced_pod_log`` returns the log grown by one
      chunk per read (the first read fails like a container still starting, if
      ``log_starts_waiting``); ``read_namespaced_pod`` returns a pod by name.
    - ConfigMaps: ``read_namespaced_config_map`` from ``config_maps``.
    """

    def __init__(
        self,
        statuses: list[Any] | None = None,
        *,
        pods: list[dict[str, Any]] | None = None,
        log_chunks: list[str] | None = None,
        log_starts_waiting: bool = True,
        config_maps: dict[tuple[str, str], dict[str, str]] | None = None,
    ) -> None:
        self.statuses = list(statuses or [{}])
        self.pods = list(pods or [])
        self.log_chunks = list(log_chunks or [])
        self.log_starts_waiting = log_starts_waiting
        self.config_maps = dict(config_maps or {})
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.gets = 0
        self.log_reads = 0
        self.selectors: list[str] = []
        self.create_error: Exception | None = None
        self.on_get: Any = None  # optional hook(fake, name) run on every GET

    # -- CustomObjectsApi
    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kw):  # type: ignore[no-untyped-def]
        if self.create_error is not None:
            raise self.create_error
        self.created.append({"group": group, "plural": plural, "namespace": namespace, **body})
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):  # type: ignore[no-untyped-def]
        if self.on_get is not None:
            self.on_get(self, name)
        item = self.statuses[min(self.gets, len(self.statuses) - 1)]
        self.gets += 1
        stored = next(
            (c for c in reversed(self.created) if c["metadata"]["name"] == name),
            {"metadata": {"name": name, "namespace": namespace}},
        )
        if callable(item):
            item = item(self, stored)
        if isinstance(item, Exception):
            raise item
        obj = {k: v for k, v in stored.items() if k not in ("group", "plural", "namespace")}
        return {**obj, **item}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):  # type: ignore[no-untyped-def]
        self.deleted.append(name)
        return {}

    # -- CoreV1Api
    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **kw: Any) -> Any:
        self.selectors.append(label_selector)
        items = [
            p
            for p in self.pods
            if _selector_matches(label_selector, (p.get("metadata") or {}).get("labels") or {})
        ]
        body = {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        return FakeResponse(body) if kw.get("_preload_content") is False else body

    def read_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> Any:
        for pod in self.pods:
            if pod["metadata"]["name"] == name:
                return FakeResponse(pod)
        from kubernetes.client import ApiException

        raise ApiException(status=404, reason="Not Found")

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> Any:
        assert kw["container"] == "pytorch" and kw["_preload_content"] is False
        self.log_reads += 1
        shown = self.log_reads - (1 if self.log_starts_waiting else 0)
        if shown <= 0:
            from kubernetes.client import ApiException

            raise ApiException(status=400, reason="container is waiting to start")
        return FakeResponse("".join(self.log_chunks[:shown]).encode())

    def read_namespaced_config_map(self, name: str, namespace: str, **kw: Any) -> Any:
        from kubernetes.client import ApiException, V1ConfigMap

        if (namespace, name) not in self.config_maps:
            raise ApiException(status=404, reason="Not Found")
        return V1ConfigMap(data=self.config_maps[(namespace, name)])


class FakeClock:
    """``clock`` and ``sleep`` for the launcher: sleeping advances time instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_kube() -> type[FakeKubernetesApi]:
    """The fake Kubernetes API class (construct it with the statuses/pods a test needs)."""
    return FakeKubernetesApi


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


POD_FIXTURES = ROOT / "tests" / "contracts" / "fixtures" / "pods"


def load_pod_fixture(name: str) -> dict[str, Any]:
    """A recorded Pod object (``kubectl get pod -o json`` shape) from tests/contracts/fixtures."""
    return json.loads((POD_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
def pod_fixture() -> Any:
    return load_pod_fixture


IMAGE = "kubetrade/base:0.1.0"


def job_profile(image: str = IMAGE, **fields: Any) -> Any:
    """A :class:`~kubetrade.k8s.ClusterTrainingProfile` with a bare job layout: namespace
    ``kubetrade``, no PVC, no service account (``fields`` set any other profile field)."""
    from kubetrade.k8s import ClusterTrainingProfile

    base: dict[str, Any] = {
        "image": image,
        "namespace": "kubetrade",
        "pvc_name": None,
        "service_account": None,
    }
    return ClusterTrainingProfile(**(base | fields))
