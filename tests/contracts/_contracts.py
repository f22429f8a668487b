"""Checks against upstream's own definitions (tests/contracts/upstream/, see its README).

- :func:`crd_validator`: a PyTorchJob CRD's ``openAPIV3Schema`` made strict (unknown fields
  fail, as ``kubectl apply --validate=strict`` would report; the API server prunes them).
- :func:`katib_validator`: the Experiment Go types of one Katib version (its swagger.json),
  strict the same way: the webhook decodes JSON into these types and silently drops fields
  they lack (e.g. ``feasibleSpace.distribution`` on v0.17) and rejects wrong types (a float
  where ``min`` is a Go string).
- :func:`katib_webhook_errors`: a Python PORT of the admission rules in Katib v0.19.0's
  ``pkg/webhook/v1beta1/experiment/validator/validator.go`` (not upstream code).
- :func:`katib_wrap_primary_container`: a PORT of ``wrapWorkerContainer`` in Katib v0.19.0's
  ``pkg/webhook/v1beta1/pod/utils.go`` (StdOut collector): command and args joined with
  spaces into ``sh -c``.
- :func:`proto_messages` / :func:`unknown_proto_fields`: the message fields of a KFP
  ``kubernetes_executor_config.proto`` (small regex parser) and the keys of an executor
  config that the backend's strict protojson parse would reject.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from kubetrade.k8s import goyaml

UPSTREAM = Path(__file__).resolve().parent / "upstream"
PYTORCHJOB_CRDS = {"v1.8.0": "pytorchjobs-crd-v1.8.0.yaml", "v1.9.0": "pytorchjobs-crd-v1.9.0.yaml"}
KATIB_SWAGGER = {
    "v0.17.0": "katib-swagger-v0.17.0.json",
    "v0.18.0": "katib-swagger-v0.18.0.json",
    "v0.19.0": "katib-swagger-v0.19.0.json",
}
#: the supported backends (kubetrade.k8s.versions.KFP_VERSIONS) + 2.2.0, an old strict driver
#: for the negative control (kfp-kubernetes' raw output fails it, the retargeted one passes)
KFP_PROTOS = {v: f"k8s_exec-{v}.proto" for v in ("2.2.0", "2.14.0", "2.15.0", "2.16.1")}


# ---------------------------------------------------------------- strict JSON schemas
def _strict(node: Any) -> Any:
    """Close every object schema that lists properties; map Kubernetes extensions."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(version: str) -> jsonschema.Draft7Validator:
    crd = goyaml.load((UPSTREAM / PYTORCHJOB_CRDS[version]).read_text(encoding="utf-8"))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


@cache
def katib_validator(version: str) -> jsonschema.Draft7Validator:
    swagger = json.loads((UPSTREAM / KATIB_SWAGGER[version]).read_text(encoding="utf-8"))
    definitions = _strict(copy.deepcopy(swagger["definitions"]))
    # Types from other Go packages (ObjectMeta, Unstructured trialSpec, Container, Time):
    # not in this swagger; accepted as they are (the API server checks ObjectMeta itself).
    refs = set(re.findall(r"#/definitions/([^\"]+)", json.dumps(definitions)))
    for missing in refs - set(definitions):
        definitions[missing] = {}
    schema = {"$ref": "#/definitions/v1beta1.Experiment", "definitions": definitions}
    return jsonschema.Draft7Validator(schema)


def schema_problems(validator: jsonschema.Draft7Validator, obj: Any) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    )


# ---------------------------------------------------------------- Katib webhook (port)
# consts.TrialTemplateMetaKeys (Katib v0.19.0 pkg/controller.v1beta1/consts/const.go)
_META_KEYS = {"Name", "Namespace", "Kind", "APIVersion", "Labels", "Annotations"}
# pkg/suggestion/v1beta1 + katib-config: the suggestion algorithms Katib ships
KATIB_SUGGESTIONS = {
    "random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "multivariate-tpe",
    "sobol", "enas", "darts", "pbt",
}  # fmt: skip
KATIB_EARLY_STOPPING = {"medianstop"}


def _is_meta_key(reference: str) -> bool:
    match = re.fullmatch(r"\$\{trialSpec\.(.+?)\}", reference)
    if not match:
        return False
    key = match.group(1)
    sub = re.fullmatch(r"(.+)\[(.+)\]", key)
    return key in _META_KEYS or bool(sub and sub.group(1) in _META_KEYS)


def katib_webhook_errors(exp: dict[str, Any]) -> list[str]:  # noqa: C901 - mirrors the Go code
    """PORT of ``DefaultValidator.ValidateExperiment`` (Katib v0.19.0 validator.go)."""
    errors: list[str] = []
    name = exp.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} invalid")
    spec = exp.get("spec") or {}
    max_failed, max_trials = spec.get("maxFailedTrialCount"), spec.get("maxTrialCount")
    parallel = spec.get("parallelTrialCount")
    for key, value in (("maxFailedTrialCount", max_failed), ("maxTrialCount", max_trials),
                       ("parallelTrialCount", parallel)):  # fmt: skip
        if value is not None and not isinstance(value, int):
            errors.append(f"{key} must be an integer, got {value!r}")
            return errors
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
            if not space.get("min") or not space.get("max"):  # Go: Max == "" || Min == ""
                errors.append(f"parameters[{i}]: feasibleSpace.max or .min must be specified")
        elif kind in {"categorical", "discrete"} and (
            space.get("min") or space.get("max") or space.get("step")
        ):
            errors.append(f"parameters[{i}]: min/max/step not supported for {kind}")
    mc = spec.get("metricsCollectorSpec") or {}
    collector = (mc.get("collector") or {}).get("kind")
    if collector not in {"StdOut", "Push", "File", "TensorFlowEvent", "PrometheusMetric",
                         "Custom", "None", None}:  # fmt: skip
        errors.append(f"metrics collector kind {collector!r}")
    filters = (mc.get("source") or {}).get("filter") or {}
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


def katib_substitute(exp: dict[str, Any], values: dict[str, str], trial: str) -> dict[str, Any]:
    """The trial job Katib creates: ``${trialParameters.x}`` replaced in the JSON text."""
    template = exp["spec"]["trialTemplate"]
    text = json.dumps(template["trialSpec"])
    for tp in template["trialParameters"]:
        ref = tp["reference"]
        value = trial if ref == "${trialSpec.Name}" else values[ref]
        text = text.replace("${trialParameters." + tp["name"] + "}", value)
    return json.loads(text)


def katib_wrap_primary_container(container: dict[str, Any], early_stopping: bool) -> list[str]:
    """PORT of ``wrapWorkerContainer`` (Katib v0.19.0 pod/utils.go), StdOut collector:
    the container's final ``command + args``."""
    args = [*container.get("command", []), *container.get("args", [])]
    command = ["sh", "-c"]
    if args[0] in ("sh", "bash") and args[1] == "-c":
        command, args = args[0:2], args[2:]
    args.append("1>/var/log/katib/metrics.log 2>&1")
    if early_stopping:
        args += ["||", "if test -f /var/log/katib/$$$$.pid ...; fi"]
    args += ["&&", "echo completed > /var/log/katib/$$$$.pid"]
    return [*command, " ".join(args)]


# ---------------------------------------------------------------- KFP kubernetes proto
_FIELD = re.compile(
    r"^\s*(?:(repeated|optional)\s+)?(map\s*<\s*[\w.]+\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*\d+"
)


@cache
def proto_messages(version: str) -> dict[str, dict[str, str]]:
    """``{qualified message: {json field name: type}}`` of one k8s_exec proto (the snake_case
    names are accepted too, as protojson does)."""
    text = re.sub(r"//[^\n]*", "", (UPSTREAM / KFP_PROTOS[version]).read_text(encoding="utf-8"))
    messages: dict[str, dict[str, str]] = {}
    stack: list[tuple[str, str | None]] = []  # (kind, message name)
    for raw in re.split(r"([{};])", text):
        token = raw.strip()
        if token == "{":
            continue
        if token == "}":
            if stack:
                stack.pop()
            continue
        if token == ";" or not token:
            continue
        head = re.match(r"^(message|oneof|enum|service)\s+(\w+)\s*$", token)
        if head:
            kind, name = head.groups()
            if kind == "message":
                outer = [n for k, n in stack if k == "message" and n]
                qualified = ".".join([*outer, name])
                messages.setdefault(qualified, {})
                stack.append(("message", qualified.split(".")[-1]))
            else:
                stack.append((kind, None))
            continue
        in_message = [n for k, n in stack if k == "message" and n]
        if not in_message or any(k == "enum" for k, _ in stack):
            continue
        field = _FIELD.match(token)
        if field:
            _, type_, map_value, name = field.groups()
            owner = ".".join(in_message)
            kind = map_value if map_value else type_
            camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)
            messages[owner][camel] = kind
            messages[owner][name] = kind
    return messages


def _resolve(messages: dict[str, dict[str, str]], scope: str, type_name: str) -> str | None:
    parts = scope.split(".")
    for i in range(len(parts), -1, -1):
        candidate = ".".join([*parts[:i], type_name])
        if candidate in messages:
            return candidate
    return None


def unknown_proto_fields(
    config: Any, version: str, message: str = "KubernetesExecutorConfig"
) -> list[str]:
    """Paths of keys in ``config`` that message ``message`` of KFP ``version`` lacks."""
    messages = proto_messages(version)
    problems: list[str] = []

    def walk(node: Any, msg: str, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, msg, f"{path}[{i}]")
            return
        if not isinstance(node, dict):
            return
        fields = messages[msg]
        for key, value in node.items():
            if key not in fields:
                problems.append(f"{path}.{key}" if path else key)
                continue
            nested = _resolve(messages, msg, fields[key])
            if nested is not None:
                walk(value, nested, f"{path}.{key}" if path else key)

    walk(config, message, "")
    return problems


def executor_configs(compiled_text: str) -> dict[str, dict[str, Any]]:
    """``{executor: kubernetes config}`` of a compiled pipeline (go-yaml v2 parse)."""
    out: dict[str, dict[str, Any]] = {}
    for doc in goyaml.load_all(compiled_text):
        executors = (
            (doc.get("platforms") or {}).get("kubernetes", {}).get("deploymentSpec", {})
        ).get("executors") or {}
        out.update(executors)
    return out
