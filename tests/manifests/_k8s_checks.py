"""Shared helpers for tests/manifests: render kustomize, validate against schemas, port of
Katib's admission-webhook rules. Imported by the sibling test modules (no fixtures here)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = ["base", "overlays/kind", "overlays/gpu"]
#: The cluster version we target (kubectl 1.32); kubernetes-validate ships its schemas.
K8S_VERSION = "1.32.0"
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


# ------------------------------------------------------------------ kustomize
def kubectl_or_skip() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not found: install kubectl >= 1.27 (built-in kustomize) to render")
    return path


@functools.cache
def _render(target: str) -> str:
    kubectl = kubectl_or_skip()
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {target} failed:\n{result.stderr}")
    return result.stdout


def render(target: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize manifests/<target>`` produces (fresh copies)."""
    return [doc for doc in yaml.safe_load_all(_render(target)) if doc]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


# ------------------------------------------------------------------ schemas
def _k8s_schema_folder() -> Path:
    package = Path(kubernetes_validate.__file__).parent
    major_minor = ".".join(K8S_VERSION.split(".")[:2])
    return package / "kubernetes-json-schema" / f"v{major_minor}.0-local-strict"


@functools.lru_cache(maxsize=1)
def _k8s_definitions() -> Resource:
    return Resource.from_contents(
        json.loads((_k8s_schema_folder() / "_definitions.json").read_text())
    )


@functools.cache
def _k8s_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    # kubernetes-validate's own file naming (utils.validate), with the parsed schemas cached:
    # its validate() re-reads the multi-MB definitions file on every call.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _k8s_schema_folder() / f"{kind.lower()}-{group_version}.json"
    schema = json.loads(path.read_text())
    registry: Registry = _k8s_definitions() @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_k8s(obj: dict[str, Any]) -> None:
    """Strict Kubernetes 1.32 schema validation (unknown fields are errors).

    Same schemas and rules as ``kubernetes_validate.validate(obj, "1.32.0", strict=True)``
    (which one test also calls directly); raises ``jsonschema.ValidationError``.
    """
    _k8s_validator(obj["kind"], obj["apiVersion"]).validate(obj)


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    registry: Registry = _k8s_definitions() @ Registry()
    for path in SCHEMAS.glob("*.json"):
        registry = Resource.from_contents(json.loads(path.read_text())) @ registry
    return registry


def schema_errors(obj: dict[str, Any], schema_file: str) -> list[str]:
    """Messages of every violation of ``schemas/<schema_file>`` (empty when valid)."""
    schema = json.loads((SCHEMAS / schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    return [
        f"{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator.iter_errors(obj)
    ]


# ------------------------------------------------------------------ pods
def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, podSpec) for workload objects and PyTorchJob replicas."""
    name = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
    if obj["kind"] in POD_OWNERS:
        yield name, obj["spec"]["template"]["spec"]
    elif obj["kind"] == "PyTorchJob":
        for replica, spec in obj["spec"]["pytorchReplicaSpecs"].items():
            yield f"{name}/{replica}", spec["template"]["spec"]


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


_PINNED = re.compile(r"^[a-z0-9.\-/_:]+(:[A-Za-z0-9][A-Za-z0-9._-]*|@sha256:[a-f0-9]{64})$")


def image_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or None."""
    if "@sha256:" in image:
        return None if _PINNED.match(image) else "malformed digest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag"
    tag = last.split(":", 1)[1]
    if tag in {"latest", "main", "master", "stable", "edge"} or tag.endswith("-latest"):
        return f"floating tag {tag!r}"
    if not re.search(r"\d", tag):
        return f"tag {tag!r} has no version number"
    return None


def hardening_problems(where: str, pod: dict[str, Any]) -> list[str]:
    """Every deviation from the hardened pod/container baseline."""
    problems = []
    pod_ctx = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken is not false")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{where}: uses host namespaces")
    for c in containers(pod):
        here = f"{where}/{c['name']}"
        ctx = c.get("securityContext") or {}
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{here}: runAsNonRoot not set")
        for key in ("runAsUser", "runAsGroup"):
            if ctx.get(key, pod_ctx.get(key)) == 0:
                problems.append(f"{here}: {key} is 0")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{here}: readOnlyRootFilesystem is not true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{here}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problems.append(f"{here}: privileged")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            problems.append(f"{here}: capabilities do not drop ALL (or add some)")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{here}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in (resources.get(kind) or {}):
                    problems.append(f"{here}: no {res} {kind}")
        why = image_problem(c.get("image", ""))
        if why:
            problems.append(f"{here}: image {c.get('image')!r} not pinned ({why})")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        writable = [
            m["mountPath"]
            for m in c.get("volumeMounts") or []
            if not m.get("readOnly")
            and (
                m["name"] not in volumes  # volumeClaimTemplates
                or {"emptyDir", "persistentVolumeClaim"} & set(volumes[m["name"]])
            )
        ]
        if not writable:
            problems.append(f"{here}: read-only root but no writable emptyDir/PVC mount")
    return problems


def env_reference_problems(where: str, pod: dict[str, Any]) -> list[str]:
    """``$(VAR)`` in env values must name an earlier env var; in command/args any env var."""
    problems = []
    for c in containers(pod):
        defined: list[str] = []
        for env in c.get("env") or []:
            for ref in re.findall(r"\$\((\w+)\)", str(env.get("value", ""))):
                if ref not in defined:
                    problems.append(
                        f"{where}/{c['name']}: env {env['name']} uses $({ref}) before it is defined"
                    )
            defined.append(env["name"])
        for part in [*(c.get("command") or []), *(c.get("args") or [])]:
            for ref in re.findall(r"\$\((\w+)\)", part):
                if ref not in defined:
                    problems.append(f"{where}/{c['name']}: command/args use undefined $({ref})")
    return problems
