"""manifests/serving against KServe's real InferenceService CRD (v1beta1 structural schema),
plus the cluster baseline: hardened predictor pod, pinned image, least-privilege RBAC, and
the predictor's config parsed by the same typed model `kubetrade serve` uses. Needs
``kubectl`` (kustomize); no cluster and no fakes."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "manifests"))
from _k8s_checks import MANIFESTS, hardening_problems, kubectl_or_skip  # noqa: E402

CRD_NAME = "kserve-inferenceservices-crd-v0.20.0.yaml"
TARGETS = ["serving/base", "serving/overlays/kind"]


def _crd_path() -> Path | None:
    candidates = [os.environ.get("KUBETRADE_KSERVE_CRD", ""),
                  ROOT / "tests/contracts/upstream/kserve" / CRD_NAME]  # fmt: skip
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    path = _crd_path()
    if path is None:
        pytest.fail(f"{CRD_NAME} is missing (see tests/contracts/upstream/kserve/README.md)")
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert crd["spec"]["group"] == "serving.kserve.io" and crd["spec"]["names"]["kind"] == (
        "InferenceService"
    )
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return dict(version["schema"]["openAPIV3Schema"])


def _render(target: str) -> list[dict[str, Any]]:
    import subprocess

    kubectl = kubectl_or_skip()
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS / target)], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def _isvc(target: str) -> dict[str, Any]:
    return next(o for o in _render(target) if o["kind"] == "InferenceService")


def crd_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """jsonschema violations plus fields the API server would prune (a structural schema
    drops unknown fields silently: a typo would vanish, so it is an error here)."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]  # fmt: skip

    def walk(value: Any, node: dict[str, Any], where: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields") or not isinstance(value, dict | list):
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, node.get("items", {}), f"{where}/{i}")
            return
        props = node.get("properties")
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                walk(item, props[key], f"{where}/{key}")
            elif isinstance(extra, dict):
                walk(item, extra, f"{where}/{key}")
            elif props is not None and where != "/metadata":
                errors.append(f"{where}/{key}: unknown field (pruned by the API server)")

    walk(obj, schema, "")
    return errors


@pytest.mark.parametrize("target", TARGETS)
def test_inferenceservice_matches_kserve_crd(target: str, schema: dict[str, Any]) -> None:
    assert crd_errors(_isvc(target), schema) == []


def test_crd_check_catches_mistakes(schema: dict[str, Any]) -> None:
    isvc = _isvc("serving/base")
    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    assert any("canaryTrafficPercnt: unknown field" in e for e in crd_errors(typo, schema))
    wrong_type = copy.deepcopy(isvc)
    wrong_type["spec"]["predictor"]["minReplicas"] = "one"
    assert any("minReplicas" in e for e in crd_errors(wrong_type, schema))
    no_name = copy.deepcopy(isvc)
    del no_name["spec"]["predictor"]["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in crd_errors(no_name, schema))


@pytest.mark.parametrize("target", TARGETS)
def test_predictor_pod_is_hardened_and_runs_kubetrade_serve(target: str) -> None:
    from kubetrade.config import load_yaml_model
    from kubetrade.serving.config import ServingConfig

    objs = _render(target)
    predictor = _isvc(target)["spec"]["predictor"]
    assert hardening_problems("predictor", predictor) == []
    container = predictor["containers"][0]
    assert container["command"][:2] == ["kubetrade", "serve"]
    config_map = next(o for o in objs if o["kind"] == "ConfigMap"
                      and o["metadata"]["name"] == "kubetrade-serving-config")  # fmt: skip
    cfg = load_yaml_model(ServingConfig, data=yaml.safe_load(config_map["data"]["serving.yaml"]))
    assert cfg.host == "0.0.0.0" and cfg.port == container["ports"][0]["containerPort"]
    mounted = {v["name"]: v for v in predictor["volumes"]}
    assert mounted["config"]["configMap"]["name"] == "kubetrade-serving-config"
    sa = next(o for o in objs if o["kind"] == "ServiceAccount")
    assert sa["metadata"]["name"] == predictor["serviceAccountName"]
    assert sa["automountServiceAccountToken"] is False


def test_rbac_is_namespaced_and_least_privilege() -> None:
    objs = _render("serving/overlays/kind")
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [o for o in objs if o["kind"] == "Role"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert rule["resourceNames"] == ["kubetrade-predictor"]
        assert set(rule["verbs"]) <= {"get", "patch"}
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "InferenceService"}
    assert {o["metadata"]["namespace"] for o in objs} == {"kubeflow"}
    isvc = _isvc("serving/overlays/kind")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
