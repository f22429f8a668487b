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


# ------------------------------------------------------------------ Katib webhook port
# pkg/webhook/v1beta1/experiment/validator/validator.go (Katib v0.18/v0.19), the rules that
# do not need a cluster. Suggestion/early-stopping names are Katib's default katib-config.
KATIB_SUGGESTIONS = {
    "random",
    "tpe",
    "grid",
    "hyperband",
    "bayesianoptimization",
    "cmaes",
    "multivariate-tpe",
    "enas",
    "darts",
    "pbt",
}
KATIB_EARLY_STOPPING = {"medianstop"}
_META_KEYS = {"Name", "Namespace", "Kind", "APIVersion", "Labels", "Annotations"}


def _is_meta_key(reference: str) -> bool:
    match = re.fullmatch(r"\$\{trialSpec\.(.+?)\}", reference)
    if not match:
        return False
    key = match.group(1)
    sub = re.fullmatch(r"(.+)\[(.+)\]", key)
    return key in _META_KEYS or bool(sub and sub.group(1) in _META_KEYS)


def katib_webhook_errors(exp: dict[str, Any]) -> list[str]:  # noqa: C901 - mirrors the Go code
    errors: list[str] = []
    name = exp.get("metadata", {}).get("name", "")
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"metadata.name {name!r} invalid")
    spec = exp.get("spec") or {}
    max_failed, max_trials = spec.get("maxFailedTrialCount"), spec.get("maxTrialCount")
    parallel = spec.get("parallelTrialCount")
    if max_failed is not None and max_failed < 0:
        errors.append("maxFailedTrialCount < 0")
    if max_trials is not None and max_trials <= 0:
        errors.append("maxTrialCount <= 0")
    if parallel is not None and parallel <= 0:
        errors.append("parallelTrialCount <= 0")
    if max_failed is not None and max_trials is not None and max_failed > max_trials:
        errors.append("maxFailedTrialCount > maxTrialCount")
    if parallel is not None and max_trials is not None and parallel > max_trials:
        errors.append("parallelTrialCount > maxTrialCount")
    objective = spec.get("objective")
    if objective is None:
        return [*errors, "objective missing"]
    if objective.get("type") not in {"minimize", "maximize"}:
        errors.append("objective.type invalid")
    if not objective.get("objectiveMetricName"):
        errors.append("objectiveMetricName missing")
    if objective.get("objectiveMetricName") in (objective.get("additionalMetricNames") or []):
        errors.append("additionalMetricNames contains the objective")
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    if algorithm not in KATIB_SUGGESTIONS:
        errors.append(f"algorithm {algorithm!r} has no suggestion config")
    early = spec.get("earlyStopping")
    if early is not None and early.get("algorithmName") not in KATIB_EARLY_STOPPING:
        errors.append("earlyStopping algorithm unknown")
    if spec.get("resumePolicy", "") not in {"", "Never", "LongRunning", "FromVolume"}:
        errors.append("resumePolicy invalid")
    errors += _trial_template_errors(spec)
    parameters = spec.get("parameters") or []
    if not parameters and not spec.get("nasConfig"):
        errors.append("spec.parameters or spec.nasConfig must be specified")
    for i, p in enumerate(parameters):
        kind, space = p.get("parameterType"), p.get("feasibleSpace") or {}
        if kind not in {"int", "double", "categorical", "discrete", "unknown"}:
            errors.append(f"parameters[{i}].parameterType {kind!r}")
        dist = space.get("distribution", "")
        if dist not in {"", "uniform", "logUniform", "normal", "logNormal", "unknown"}:
            errors.append(f"parameters[{i}].distribution {dist!r}")
        if not space:
            errors.append(f"parameters[{i}].feasibleSpace missing")
        elif kind in {"int", "double"}:
            if space.get("list"):
                errors.append(f"parameters[{i}]: list not supported for {kind}")
            if not space.get("min") and not space.get("max"):
                errors.append(f"parameters[{i}]: min or max required")
        elif kind in {"categorical", "discrete"} and (
            space.get("min") or space.get("max") or space.get("step")
        ):
            errors.append(f"parameters[{i}]: min/max/step not supported for {kind}")
    collector = ((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind")
    if collector not in {
        None,
        "StdOut",
        "Push",
        "File",
        "TensorFlowEvent",
        "PrometheusMetric",
        "Custom",
        "None",
    }:
        errors.append(f"metrics collector kind {collector!r}")
    filters = ((spec.get("metricsCollectorSpec") or {}).get("source") or {}).get("filter") or {}
    for fmt in filters.get("metricsFormat") or []:
        try:
            re.compile(fmt)
        except re.error as exc:
            errors.append(f"metricsFormat {fmt!r}: {exc}")
        if not re.match(r".*\(.*\).*\(.*\).*", fmt):
            errors.append(f"metricsFormat {fmt!r}: two top subexpressions are required")
    return errors


def _trial_template_errors(spec: dict[str, Any]) -> list[str]:
    template = spec.get("trialTemplate")
    if template is None:
        return ["trialTemplate missing"]
    errors = []
    if not template.get("primaryContainerName"):
        errors.append("primaryContainerName missing")
    if not template.get("successCondition") or not template.get("failureCondition"):
        errors.append("successCondition and failureCondition must be specified")
    if template.get("trialParameters") is None:
        return [*errors, "trialParameters missing"]
    if ("trialSpec" in template) == ("configMap" in template):
        return [*errors, "exactly one of trialSpec and configMap"]
    text = json.dumps(template["trialSpec"])
    names, refs = set(), set()
    parameter_names = {p["name"] for p in spec.get("parameters") or []}
    for i, tp in enumerate(template["trialParameters"]):
        name, ref = tp.get("name", ""), tp.get("reference", "")
        if not name or not ref or "{" in name or "}" in name:
            errors.append(f"trialParameters[{i}] needs name and reference")
            continue
        if name in names or ref in refs:
            errors.append(f"trialParameters[{i}] duplicated")
            continue
        names.add(name)
        refs.add(ref)
        if parameter_names and not _is_meta_key(ref) and ref not in parameter_names:
            errors.append(f"trialParameters[{i}].reference {ref!r} not in spec.parameters")
        placeholder = "${trialParameters." + name + "}"
        if placeholder not in text:
            return [*errors, f"trialParameters[{i}] {name!r} not found in trialSpec"]
        text = text.replace(placeholder, "test-value")
    left = re.findall(r"\$\{trialParameters\..+?\}", text)
    if left:
        errors.append(f"trialSpec uses undeclared trial parameters {left}")
    run_spec = json.loads(text)
    metadata = run_spec.get("metadata") or {}
    if metadata.get("name") or metadata.get("namespace"):
        errors.append("trialSpec metadata.name/namespace must be omitted")
    if not run_spec.get("apiVersion") or not run_spec.get("kind"):
        errors.append("trialSpec apiVersion and kind required")
    return errors
