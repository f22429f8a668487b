"""The kustomize tree under manifests/: renders, validates against Kubernetes 1.32 schemas,
and keeps the security baseline (hardened pods, pinned images, namespaced least-privilege
RBAC, no credentials in git). Needs ``kubectl`` (skipped with a reason without it); no
cluster and no fakes."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from _k8s_checks import (
    MANIFESTS,
    OVERLAYS,
    by_kind,
    containers,
    env_reference_problems,
    hardening_problems,
    pod_specs,
    render,
    schema_errors,
    validate_k8s,
)

from conftest import job_profile
from kubetrade.k8s import build_pytorchjob, load_cluster_profile

EXPECTED_NAMESPACE = {"base": "kubetrade", "overlays/kind": "kubeflow", "overlays/gpu": "kubetrade"}
EXTERNAL_SECRETS = {
    "kubetrade-postgres": {"username", "password"},
    "kubetrade-minio": {"root-user", "root-password"},
}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_renders_and_every_object_validates_against_k8s_1_32(overlay: str) -> None:
    objs = render(overlay)
    kinds = {o["kind"] for o in objs}
    # kind: the namespace "kubeflow" belongs to KFP/Katib/Training Operator (not ours)
    assert ("Namespace" in kinds) == (overlay != "overlays/kind")
    assert {
        "Role",
        "RoleBinding",
        "Deployment",
        "StatefulSet",
        "Service",
        "PersistentVolumeClaim",
        "ConfigMap",
        "ServiceAccount",
    } <= kinds
    for obj in objs:
        validate_k8s(obj)
        assert obj["kind"] == "Namespace" or (
            obj["metadata"].get("namespace") == EXPECTED_NAMESPACE[overlay]
        ), f"{obj['kind']}/{obj['metadata']['name']} is not in {EXPECTED_NAMESPACE[overlay]}"


def test_schema_validation_catches_mistakes() -> None:
    """Negative control: the strict schemas really reject typos and wrong types."""
    deployment = by_kind(render("base"), "Deployment")["kubetrade-mlflow"]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    for bad in (typo, wrong_type):
        with pytest.raises(jsonschema.ValidationError):
            validate_k8s(bad)
        with pytest.raises(kubernetes_validate.ValidationError):  # the package's own entry point
            kubernetes_validate.validate(bad, "1.32.0", strict=True)
    assert kubernetes_validate.validate(deployment, "1.32.0", strict=True) == "1.32"


def test_namespace_is_labelled_for_katib(overlay: str) -> None:
    if overlay == "overlays/kind":
        pytest.skip("kind: no Namespace object of ours (Katib's install labels 'kubeflow')")
    (namespace,) = by_kind(render(overlay), "Namespace").values()
    assert namespace["metadata"]["name"] == EXPECTED_NAMESPACE[overlay]
    labels = namespace["metadata"]["labels"]
    assert labels["katib.kubeflow.org/metrics-collector-injection"] == "enabled"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_every_pod_is_hardened_and_pinned(overlay: str) -> None:
    problems: list[str] = []
    count = 0
    for obj in render(overlay):
        for where, pod in pod_specs(obj):
            count += 1
            problems += hardening_problems(where, pod)
            problems += env_reference_problems(where, pod)
    assert count == 4  # mlflow, minio, postgres, redis
    assert problems == []


def test_hardening_check_flags_a_weak_pod() -> None:
    """Negative control for the hardening checker."""
    pod = copy.deepcopy(by_kind(render("base"), "Deployment")["kubetrade-redis"])
    spec = pod["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    spec["containers"][0]["image"] = "redis:latest"
    del spec["containers"][0]["resources"]["limits"]
    problems = hardening_problems("redis", spec)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("floating tag 'latest'" in p for p in problems)
    assert any("no cpu limits" in p for p in problems)


def test_rbac_is_namespaced_and_least_privilege(overlay: str) -> None:
    objs = render(overlay)
    assert not [o for o in objs if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    roles = by_kind(objs, "Role")
    assert set(roles) == {"kubetrade-pipeline"}
    rules = roles["kubetrade-pipeline"]["rules"]
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {key}: {rule}"
        assert not {"escalate", "bind", "impersonate", "deletecollection", "patch", "update"} & set(
            rule["verbs"]
        )
        assert "secrets" not in rule["resources"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    crud = {"create", "get", "list", "watch", "delete"}
    for resource in ("pytorchjobs", "experiments"):
        assert {v for g, r, v in granted if (g, r) == ("kubeflow.org", resource)} == crud
    assert {v for g, r, v in granted if r == "trials"} == {"get", "list", "watch"}
    assert {v for g, r, v in granted if (g, r) == ("", "pods")} == {"get", "list"}
    assert {v for g, r, v in granted if r == "pods/log"} == {"get"}
    (configmap_rule,) = [r for r in rules if "configmaps" in r["resources"]]
    assert configmap_rule["resourceNames"] == ["kubetrade-cluster-profile"]
    assert configmap_rule["verbs"] == ["get"]

    (binding,) = by_kind(objs, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kubetrade-pipeline",
    }
    service_accounts = by_kind(objs, "ServiceAccount")
    subjects = {(s["namespace"], s["name"]) for s in binding["subjects"]}
    ns = EXPECTED_NAMESPACE[overlay]
    assert (ns, "kubetrade-pipeline") in subjects and "kubetrade-pipeline" in service_accounts
    extra = {
        "base": set(),
        "overlays/kind": {("kubeflow", "pipeline-runner")},
        "overlays/gpu": {("kubetrade", "default-editor")},
    }[overlay]
    assert subjects == {(ns, "kubetrade-pipeline")} | extra
    assert service_accounts["kubetrade-trainer"]["automountServiceAccountToken"] is False


def test_no_real_credentials_and_every_secret_ref_resolves(overlay: str) -> None:
    objs = render(overlay)
    secrets = by_kind(objs, "Secret")
    referenced: dict[str, set[str]] = {}
    for obj in objs:
        for _, pod in pod_specs(obj):
            for c in containers(pod):
                for env in c.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        referenced.setdefault(ref["name"], set()).add(ref["key"])
            for volume in pod.get("volumes") or []:  # Secrets mounted as files
                if "secret" in volume:
                    items = volume["secret"].get("items")
                    assert items, f"secret volume {volume['name']}: list its keys (items)"
                    name = volume["secret"]["secretName"]
                    referenced.setdefault(name, set()).update(i["key"] for i in items)
    if overlay == "overlays/kind":
        # generated, hash-suffixed placeholders that say what they are
        assert {name.rsplit("-", 1)[0] for name in secrets} == set(EXTERNAL_SECRETS)
        assert set(referenced) == set(secrets)
        import base64

        for name, keys in referenced.items():
            data = {k: base64.b64decode(v).decode() for k, v in secrets[name]["data"].items()}
            assert keys <= set(data)
            for key, value in data.items():
                if "password" in key:
                    assert "kind-only" in value and "insecure" in value
    else:
        assert secrets == {}, "Secret objects must not be committed; create them out of band"
        assert referenced == EXTERNAL_SECRETS


def test_services_select_pods_and_ports_exist(overlay: str) -> None:
    objs = render(overlay)
    pods = [
        (obj["spec"]["template"]["metadata"]["labels"], pod)
        for obj in objs
        for _, pod in pod_specs(obj)
    ]
    for svc in by_kind(objs, "Service").values():
        selector = svc["spec"]["selector"]
        matches = [pod for labels, pod in pods if selector.items() <= labels.items()]
        assert len(matches) == 1, f"service {svc['metadata']['name']} selects {len(matches)} pods"
        port_names = {p["name"] for c in matches[0]["containers"] for p in c.get("ports") or []}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_mlflow_server_configuration(overlay: str) -> None:
    deployment = by_kind(render(overlay), "Deployment")["kubetrade-mlflow"]
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"].startswith("ghcr.io/mlflow/mlflow:v3.")
    env = {e["name"]: e for e in server["env"]}
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "kubetrade-mlflow:5000" in hosts
    assert "kubetrade-mlflow.$(POD_NAMESPACE).svc.cluster.local:5000" in hosts
    assert "*" not in hosts
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql+psycopg2://")
    assert "--serve-artifacts" in server["args"]
    assert not any("PASSWORD" in a or "backend-store-uri" in a for a in server["args"])
    (init,) = pod["initContainers"]
    assert init["image"] == server["image"]  # one pinned image to pull


def test_cluster_profile_builds_a_valid_pytorchjob(overlay: str) -> None:
    objs = render(overlay)
    profile_map = by_kind(objs, "ConfigMap")["kubetrade-cluster-profile"]
    profile = load_cluster_profile(data=yaml.safe_load(profile_map["data"]["profile.yaml"]))
    job = profile.build("train-check", ["--bundle", "/data/b"], namespace="ns")
    assert schema_errors(job, "pytorchjob.kubeflow.org_v1.json") == []
    assert profile.pvc_name in by_kind(objs, "PersistentVolumeClaim")
    assert profile.service_account in by_kind(objs, "ServiceAccount")
    assert profile.env["MLFLOW_TRACKING_URI"] == "http://kubetrade-mlflow:5000"
    problems = []
    for where, pod in pod_specs(job):
        problems += hardening_problems(where, pod)
    assert problems == []
    if overlay == "overlays/gpu":
        assert profile.gpus_per_worker >= 1 and profile.image.startswith("kubetrade/trainer:")
        assert profile.tolerations and profile.node_selector
        master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        assert master["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        (pvc,) = [
            p for n, p in by_kind(objs, "PersistentVolumeClaim").items() if n == "kubetrade-data"
        ]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    else:
        assert profile.gpus_per_worker == 0 and profile.image.startswith("kubetrade/base:")


def test_feast_config_points_at_the_redis_service(overlay: str) -> None:
    objs = render(overlay)
    config = yaml.safe_load(
        by_kind(objs, "ConfigMap")["kubetrade-feast-config"]["data"]["feature_store.yaml"]
    )
    assert config["online_store"]["type"] == "redis"
    host, port = config["online_store"]["connection_string"].split(":")
    service = by_kind(objs, "Service")[host]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert config["entity_key_serialization_version"] == 3
    assert "kubetrade-feast-registry" in by_kind(objs, "PersistentVolumeClaim")


def test_kind_cluster_config() -> None:
    config = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    images = [node["image"] for node in config["nodes"]]
    assert images and all(image.startswith("kindest/node:v1.32.") for image in images)


def test_generated_pytorchjob_passes_the_same_baseline() -> None:
    job: dict[str, Any] = build_pytorchjob("j", job_profile(num_workers=1))
    problems = [p for where, pod in pod_specs(job) for p in hardening_problems(where, pod)]
    assert problems == []


def test_postgres_and_minio_read_credentials_from_files(overlay: str) -> None:
    """No secretKeyRef env in the two servers: *_FILE variables name mounted Secret files."""
    objs = render(overlay)
    workloads = {**by_kind(objs, "Deployment"), **by_kind(objs, "StatefulSet")}
    expected = {
        "kubetrade-postgres": {
            "POSTGRES_USER_FILE": "/run/secrets/kubetrade-postgres/username",
            "POSTGRES_PASSWORD_FILE": "/run/secrets/kubetrade-postgres/password",
        },
        "kubetrade-minio": {
            "MINIO_ROOT_USER_FILE": "root-user",  # MinIO reads it relative to /run/secrets
            "MINIO_ROOT_PASSWORD_FILE": "root-password",
        },
    }
    for name, files in expected.items():
        pod = workloads[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert not [
            e for e in env.values() if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
        ]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for variable, path in files.items():
            assert env[variable]["value"] == path
            full = path if path.startswith("/") else f"/run/secrets/{path}"
            folder, key = full.rsplit("/", 1)
            mount = mounts[folder]
            assert mount["readOnly"] is True
            secret = volumes[mount["name"]]["secret"]
            # kind: secretGenerator adds a hash suffix
            assert secret["secretName"].startswith(name) and secret["defaultMode"] == 0o440
            assert key in {i["path"] for i in secret["items"]}


def test_every_pod_has_an_ingress_network_policy(overlay: str) -> None:
    """Each of our pods is selected by a NetworkPolicy (none selects the whole namespace);
    Postgres and MinIO admit only the MLflow server."""
    objs = render(overlay)
    policies = by_kind(objs, "NetworkPolicy")
    for policy in policies.values():
        assert policy["spec"]["podSelector"].get("matchLabels"), "never select every pod"
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for obj in objs
        if obj["kind"] in {"Deployment", "StatefulSet"}
    }
    for name, labels in pods.items():
        selecting = [
            p
            for p in policies.values()
            if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1, f"{name}: {len(selecting)} NetworkPolicies select it"
        service_ports = {
            port["port"]
            for svc in by_kind(objs, "Service").values()
            if svc["spec"]["selector"].items() <= labels.items()
            for port in svc["spec"]["ports"]
        }
        allowed = {p["port"] for rule in selecting[0]["spec"]["ingress"] for p in rule["ports"]}
        assert allowed == service_ports, name
    mlflow = pods["kubetrade-mlflow"]
    for name in ("kubetrade-postgres", "kubetrade-minio"):
        (rule,) = policies[name]["spec"]["ingress"]
        (source,) = rule["from"]
        assert source["podSelector"]["matchLabels"].items() <= mlflow.items()


def test_kind_overlay_owns_no_namespace_so_delete_k_keeps_kubeflow() -> None:
    """Issue #13, defect 13: the kind overlay renamed our Namespace to ``kubeflow``, so
    ``kubectl delete -k manifests/overlays/kind`` deleted KFP, Katib and the Training
    Operator. What ``delete -k`` deletes is exactly what the overlay renders: it must hold
    no Namespace (and nothing cluster-scoped) while its objects live in ``kubeflow``."""
    objs = render("overlays/kind")
    assert by_kind(objs, "Namespace") == {}
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    assert not [o["metadata"]["name"] for o in objs if o["kind"] in cluster_scoped]
    assert {o["metadata"].get("namespace") for o in objs} == {"kubeflow"}
