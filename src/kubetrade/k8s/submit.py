"""Submit a compiled pipeline to Kubeflow Pipelines with ``kfp.Client``.

Two ways in: a one-off run from the local package (``submit_pipeline``), or the CI loop
(``SubmitPlan`` + ``execute_plan``): upload the package as a named *pipeline version*
(idempotent: a version of the same name is reused), then start a run of that version or
create/update one *recurring run* per name. ``describe_plan`` prints the same calls without
touching the network (``--dry-run``).

Auth for a multi-user Kubeflow: a bearer token (``--token``, ``KF_PIPELINES_TOKEN`` or the
projected service-account token file KFP documents for in-cluster clients) and/or a session
cookie (``--cookie`` / ``KF_PIPELINES_COOKIE``, e.g. ``authservice_session=...``). Secrets are
passed to kfp only; nothing here prints them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kubetrade.config import split_key_value
from kubetrade.errors import KubetradeError

__all__ = [
    "SubmitError",
    "Auth",
    "SubmitPlan",
    "resolve_auth",
    "resolve_namespace",
    "read_pipeline_inputs",
    "parse_params",
    "normalize_cron",
    "describe_plan",
    "execute_plan",
    "submit_pipeline",
    "check_reachable",
]

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
TOKEN_ENV = "KF_PIPELINES_TOKEN"
COOKIE_ENV = "KF_PIPELINES_COOKIE"
NAMESPACE_ENV = "KF_PIPELINES_NAMESPACE"
# kfp's own names for the projected service-account token (kfp.client.KF_PIPELINES_SA_TOKEN_*)
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
SA_NAMESPACE_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
PARAM_TYPES = ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT")


class SubmitError(KubetradeError):
    """The pipeline could not be submitted or its run failed."""


# ----------------------------------------------------------------------------------- auth


@dataclass(frozen=True)
class Auth:
    """Credentials for the KFP API; ``repr`` and ``describe`` never show the values."""

    token: str | None = field(default=None, repr=False)
    cookie: str | None = field(default=None, repr=False)
    token_source: str = "none"
    cookie_source: str = "none"
    token_file: str | None = None  # a projected SA token rotates: kfp rereads it per request

    def describe(self) -> str:
        token = f"bearer token from {self.token_source} (hidden)" if self.token else "no token"
        cookie = f"cookie from {self.cookie_source} (hidden)" if self.cookie else "no cookie"
        return f"{token}, {cookie}"


def resolve_auth(
    token: str | None = None,
    cookie: str | None = None,
    env: Mapping[str, str] | None = None,
    sa_token_path: str | Path | None = None,
) -> Auth:
    """Token: ``--token``, else ``$KF_PIPELINES_TOKEN``, else the in-cluster SA token file
    (``$KF_PIPELINES_SA_TOKEN_PATH`` or KFP's default path) when it exists. Cookie: ``--cookie``
    or ``$KF_PIPELINES_COOKIE``."""
    env = os.environ if env is None else env
    tok, tok_src, tok_file = None, "none", None
    if token:
        tok, tok_src = token.strip(), "--token"
    elif env.get(TOKEN_ENV, "").strip():
        tok, tok_src = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        path = Path(sa_token_path or env.get(SA_TOKEN_PATH_ENV) or SA_TOKEN_PATH)
        if path.is_file():
            try:
                text = path.read_text().strip()
            except OSError as exc:
                raise SubmitError(f"cannot read the service-account token {path}: {exc}") from None
            if not text:
                raise SubmitError(f"the service-account token file {path} is empty")
            tok, tok_src, tok_file = text, str(path), str(path)
    ck, ck_src = None, "none"
    if cookie:
        ck, ck_src = cookie.strip(), "--cookie"
    elif env.get(COOKIE_ENV, "").strip():
        ck, ck_src = env[COOKIE_ENV].strip(), f"${COOKIE_ENV}"
    for value, what in ((tok, "token"), (ck, "cookie")):
        if value and any(c in value for c in "\r\n"):
            raise SubmitError(f"the {what} contains a line break; pass it on one line")
    return Auth(tok, ck, tok_src, ck_src, tok_file)


def resolve_namespace(
    namespace: str | None,
    env: Mapping[str, str] | None = None,
    sa_namespace_path: str | None = None,
) -> tuple[str, str]:
    """The profile namespace and where it came from: ``--namespace``, else
    ``$KF_PIPELINES_NAMESPACE``, else the pod's own namespace in a cluster, else ``""``
    (single-user KFP; a multi-user server then gets a one-line error, see ``_check_namespace``).
    """
    env = os.environ if env is None else env
    if namespace:
        return namespace, "--namespace"
    if env.get(NAMESPACE_ENV, "").strip():
        return env[NAMESPACE_ENV].strip(), f"${NAMESPACE_ENV}"
    path = Path(sa_namespace_path or SA_NAMESPACE_PATH)
    if path.is_file():
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text, str(path)
    return "", "none (single-user KFP)"


# --------------------------------------------------------------------------- parameters


def _load_package(package: Path) -> list[dict[str, Any]]:
    if not package.is_file():
        raise SubmitError(f"pipeline package not found: {package}; run 'make compile' first")
    try:
        docs = [d for d in yaml.safe_load_all(package.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise SubmitError(f"{package} is not YAML: {str(exc).splitlines()[0]}") from None
    if not docs or not isinstance(docs[0], dict) or "root" not in docs[0]:
        raise SubmitError(
            f"{package} is not a compiled KFP pipeline (no 'root'); use 'make compile'"
        )
    return docs


def read_pipeline_inputs(package: str | Path) -> dict[str, dict[str, Any]]:
    """The pipeline's declared parameters (``root.inputDefinitions.parameters``)."""
    docs = _load_package(Path(package))
    params = ((docs[0].get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return {str(k): dict(v or {}) for k, v in params.items()}


def pipeline_name_of(package: str | Path) -> str:
    docs = _load_package(Path(package))
    return str((docs[0].get("pipelineInfo") or {}).get("name") or "")


def _convert(name: str, kind: str, raw: str) -> Any:
    bad = f"--param {name}={raw!r}: "
    if kind == "STRING":
        return raw
    if kind == "NUMBER_INTEGER":
        try:
            return int(raw.strip(), 10)
        except ValueError:
            raise SubmitError(bad + "expected an integer (NUMBER_INTEGER)") from None
    if kind == "NUMBER_DOUBLE":
        try:
            value = float(raw)
        except ValueError:
            raise SubmitError(bad + "expected a number (NUMBER_DOUBLE)") from None
        if not math.isfinite(value):
            raise SubmitError(bad + "expected a finite number (NUMBER_DOUBLE)")
        return value
    if kind == "BOOLEAN":
        low = raw.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        raise SubmitError(bad + "expected true or false (BOOLEAN)")
    if kind in ("LIST", "STRUCT"):
        want, label = (list, "a JSON list, e.g. '[1, 2]'") if kind == "LIST" else (
            dict, "a JSON object, e.g. '{\"k\": 1}'")  # fmt: skip
        parsed: Any
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            parsed = _flow_list(raw) if kind == "LIST" else None
            if parsed is None:
                raise SubmitError(bad + f"expected {label} ({kind}): {exc.msg}") from None
        if not isinstance(parsed, want):
            raise SubmitError(bad + f"expected {label} ({kind})")
        return parsed
    raise SubmitError(
        f"--param {name}: the pipeline declares type {kind!r}, which submit cannot set"
    )


def _flow_list(raw: str) -> list[Any] | None:
    """A YAML flow list of plain words/numbers, ``[AAPL,IBM]`` (as ``kubetrade run --set``),
    else None."""
    if not raw.strip().startswith("["):
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return None
    scalars = (str, int, float, bool)
    if isinstance(value, list) and all(isinstance(v, scalars) for v in value):
        return value
    return None


def parse_params(inputs: Mapping[str, Mapping[str, Any]], items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to typed values by the pipeline spec's ``parameterType``."""
    out: dict[str, Any] = {}
    for item in items:
        key, raw = split_key_value(item, "--param", "epochs=3", SubmitError)
        if key not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise SubmitError(f"--param {key}: the pipeline has no input {key!r} (inputs: {known})")
        if key in out:
            raise SubmitError(f"--param {key} given twice")
        kind = str(inputs[key].get("parameterType", "STRING"))
        out[key] = _convert(key, kind, raw)
    missing = [
        k
        for k, spec in inputs.items()
        if k not in out and not spec.get("isOptional") and "defaultValue" not in spec
    ]
    if missing:
        raise SubmitError(f"the pipeline needs --param for: {', '.join(sorted(missing))}")
    return out


def normalize_cron(cron: str) -> str:
    """KFP's scheduler reads 6-field cron (seconds first); a 5-field one gets ``0`` seconds."""
    fields = cron.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise SubmitError(
            f"--recurring {cron!r}: expected a cron expression of 5 fields "
            "(min hour day month weekday) or KFP's 6 (with seconds first)"
        )
    return " ".join(fields)


# --------------------------------------------------------------------------------- client


def check_reachable(host: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when the KFP API host cannot be reached."""
    parsed = urlparse(host if "://" in host else f"http://{host}")
    if not parsed.hostname:
        raise SubmitError(f"--host {host!r} is not a URL; use e.g. http://localhost:8080")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SubmitError(
            f"cannot reach Kubeflow Pipelines at {host} ({exc.strerror or exc}); check --host, "
            "or port-forward the UI: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
        ) from None


def _api_message(exc: BaseException) -> str:
    """One line from a kfp_server_api / urllib3 error; never the headers (cookies live there)."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    reason = getattr(exc, "reason", None)
    if status is not None and reason is not None:
        detail = ""
        with contextlib.suppress(Exception):
            data = json.loads(body) if body else {}
            detail = str(data.get("message") or data.get("error") or "").strip()
        head = f"({status}) {reason}".strip()
        line = f"{head}: {detail}" if detail else head
        return line.splitlines()[0] if line else type(exc).__name__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_id(obj: Any, attr: str, what: str, host: str) -> str:
    """kfp_server_api turns a non-JSON answer (an SSO login page) into empty models: without
    this, a login page looks like success ('run None: SUBMITTED')."""
    value = getattr(obj, attr, None)
    if not value:
        raise SubmitError(
            f"Kubeflow Pipelines at {host} answered the {what} call without a {attr}: that is "
            "not the KFP API (a login page?); check --host and pass --token or --cookie"
        )
    return str(value)


def _retryable(exc: BaseException) -> bool:
    status = getattr(exc, "status", None)
    if status is None or status == 0:
        return True  # connection dropped, timed out, refused: no HTTP answer at all
    return int(status) in (429, 502, 503, 504)


@contextlib.contextmanager
def _kfp_prints_to_stderr() -> Iterator[None]:
    """kfp prints 'Experiment details: URL' to stdout; our stdout carries the result."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _make_client(
    host: str, namespace: str, auth: Auth, client_factory: Callable[..., Any] | None
) -> Any:
    if client_factory is None:
        check_reachable(host)
        import kfp

        client_factory = kfp.Client
    kwargs: dict[str, Any] = {"host": host, "namespace": namespace}
    if auth.token_file:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=auth.token_file)
    elif auth.token:
        kwargs["existing_token"] = auth.token
    if auth.cookie:
        kwargs["cookies"] = auth.cookie
    try:
        with _kfp_prints_to_stderr():
            return client_factory(**kwargs)
    except KubetradeError:
        raise
    except Exception as exc:
        raise SubmitError(f"Kubeflow Pipelines at {host}: {_api_message(exc)}") from None


def _check_namespace(client: Any, host: str, namespace: str) -> None:
    if namespace:
        return
    health = client.get_kfp_healthz()
    if getattr(health, "multi_user", False):
        raise SubmitError(
            f"Kubeflow Pipelines at {host} is multi-user: pass --namespace PROFILE "
            f"(your profile namespace, e.g. kubeflow-user-example-com) or set ${NAMESPACE_ENV}"
        )


def _get_run_with_retries(
    client: Any, run_id: str, host: str, retries: int, backoff_s: float
) -> Any:
    for attempt in range(retries + 1):
        try:
            return client.get_run(run_id)
        except KubetradeError:
            raise
        except Exception as exc:  # kfp_server_api.ApiException, urllib3 errors, OSError
            if not _retryable(exc):
                raise SubmitError(
                    f"Kubeflow Pipelines at {host} refused get_run {run_id}: {_api_message(exc)}"
                ) from None
            if attempt == retries:
                raise SubmitError(
                    f"lost contact with Kubeflow Pipelines at {host} while following run {run_id} "
                    f"({_api_message(exc)}; {retries + 1} tries); the run goes on in the cluster: "
                    "rerun without --wait or check the Kubeflow UI"
                ) from None
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _follow(
    client: Any,
    run_id: str,
    host: str,
    timeout_s: int,
    poll_s: float,
    retries: int,
    on_state: Callable[[str], None] | None,
) -> str:
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        run = _get_run_with_retries(client, run_id, host, retries, backoff_s=min(poll_s, 5.0))
        state = str(getattr(run, "state", "") or "").upper()
        if state != last and on_state:
            on_state(state)
        last = state
        if state in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise SubmitError(f"run {run_id} still {state} after {timeout_s}s")
        time.sleep(poll_s)
    if state != "SUCCEEDED":
        raise SubmitError(f"run {run_id} ended {state}; see the Kubeflow UI for the failed step")
    return state


# ------------------------------------------------------------------------------ one-off run


def submit_pipeline(
    package: str | Path,
    host: str,
    namespace: str = "",
    experiment: str = "kubetrade",
    arguments: dict[str, Any] | None = None,
    run_name: str | None = None,
    wait: bool = False,
    timeout_s: int = 6 * 3600,
    client_factory: Callable[..., Any] | None = None,
    on_state: Callable[[str], None] | None = None,
    auth: Auth | None = None,
    poll_s: float = 10.0,
    retries: int = 5,
) -> dict[str, Any]:
    """Create a run of ``package``; with ``wait``, follow it and fail unless it succeeds."""
    package = Path(package)
    _load_package(package)
    auth = auth or Auth()
    client = _make_client(host, namespace, auth, client_factory)
    try:
        with _kfp_prints_to_stderr():
            _check_namespace(client, host, namespace)
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments or {}, run_name=run_name,
                experiment_name=experiment, namespace=namespace or None,
            )  # fmt: skip
    except KubetradeError:
        raise
    except Exception as exc:  # kfp_server_api / urllib3 raise many types
        raise SubmitError(
            f"Kubeflow Pipelines at {host} refused the run: {_api_message(exc)}"
        ) from None
    info: dict[str, Any] = {
        "run_id": _require_id(result, "run_id", "create run", host),
        "state": "SUBMITTED",
    }
    if wait:
        info["state"] = _follow(client, result.run_id, host, timeout_s, poll_s, retries, on_state)
    return info


# ---------------------------------------------------------------------- versioned (CI) loop


@dataclass
class SubmitPlan:
    """What ``kubetrade submit --pipeline-name ...`` does, before any request is sent."""

    package: Path
    host: str
    namespace: str
    namespace_source: str
    experiment: str
    pipeline_name: str | None
    version_name: str | None
    run_name: str
    params: dict[str, Any]
    auth: Auth
    recurring: str | None = None  # normalized 6-field cron
    wait: bool = False


def _eq_filter(name: str) -> str:
    # filter.proto: operation EQUALS is 1; kfp.Client sends the same
    return json.dumps(
        {"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]}
    )


def describe_plan(plan: SubmitPlan) -> list[str]:
    """The calls ``execute_plan`` makes, in order (``--dry-run``); no secret is shown."""
    api = f"{plan.host or '<--host>'}/apis/v2beta1"
    ns = plan.namespace or "(none: single-user)"
    nsq = f"&namespace={plan.namespace}" if plan.namespace else ""
    lines = [
        "dry run: nothing is sent",
        f"host {plan.host or '(not set)'}; namespace {ns} [{plan.namespace_source}]; "
        f"{plan.auth.describe()}",
        f"parameters: {json.dumps(plan.params, sort_keys=True) if plan.params else '(defaults)'}",
    ]
    steps: list[str] = []
    if plan.pipeline_name:
        steps += [
            f"GET  {api}/pipelines?filter=display_name=={plan.pipeline_name!r}{nsq}: "
            f"find pipeline {plan.pipeline_name!r}",
            f"POST {api}/pipelines: create it if missing",
            f"GET  {api}/pipelines/{{pipeline_id}}/versions?filter=display_name=="
            f"{plan.version_name!r}: reuse version {plan.version_name!r} if it exists",
            f"POST {api}/pipelines/upload_version?name={plan.version_name}&pipelineid="
            f"{{pipeline_id}} (multipart {plan.package}): otherwise upload it",
        ]
    else:
        steps.append(f"(package {plan.package} sent inline with the run)")
    steps += [
        f"GET  {api}/experiments?filter=display_name=={plan.experiment!r}{nsq}: "
        f"find experiment {plan.experiment!r}",
        f"POST {api}/experiments: create it if missing",
    ]
    if plan.recurring:
        steps += [
            f"GET  {api}/recurringruns?experiment_id={{experiment_id}}&filter=display_name=="
            f"{plan.run_name!r}: find recurring run {plan.run_name!r}; keep it if cron, version "
            "and parameters are the same",
            f"DELETE {api}/recurringruns/{{id}}: otherwise drop it (KFP has no update)",
            f"POST {api}/recurringruns: cron {plan.recurring!r}, max_concurrency 1, no_catchup",
        ]
    else:
        steps.append(f"POST {api}/runs: run {plan.run_name!r}")
        if plan.wait:
            steps.append(
                f"GET  {api}/runs/{{run_id}}: until it ends (retried on a dropped connection)"
            )
    return lines + [f"{i}. {step}" for i, step in enumerate(steps, 1)]


def _ensure_pipeline(client: Any, plan: SubmitPlan) -> str:
    ns = plan.namespace or None
    found = client.list_pipelines(filter=_eq_filter(plan.pipeline_name or ""), namespace=ns)
    pipelines = list(getattr(found, "pipelines", None) or [])
    if len(pipelines) > 1:
        raise SubmitError(
            f"{len(pipelines)} pipelines are named {plan.pipeline_name!r}; rename one"
        )
    if pipelines:
        return _require_id(pipelines[0], "pipeline_id", "list pipelines", plan.host)
    import kfp_server_api

    body = kfp_server_api.V2beta1Pipeline(
        display_name=plan.pipeline_name,
        description="kubetrade training pipeline (uploaded by kubetrade submit)",
        namespace=ns,
    )
    created = client._pipelines_api.pipeline_service_create_pipeline(pipeline=body)
    return _require_id(created, "pipeline_id", "create pipeline", plan.host)


def _ensure_version(client: Any, plan: SubmitPlan, pipeline_id: str) -> tuple[str, bool]:
    found = client.list_pipeline_versions(
        pipeline_id=pipeline_id, filter=_eq_filter(plan.version_name or "")
    )
    versions = list(getattr(found, "pipeline_versions", None) or [])
    if versions:
        return _require_id(versions[0], "pipeline_version_id", "list versions", plan.host), False
    version = client.upload_pipeline_version(
        str(plan.package), plan.version_name, pipeline_id=pipeline_id,
        description=f"{plan.pipeline_name} at {plan.version_name}",
    )  # fmt: skip
    return _require_id(version, "pipeline_version_id", "upload_version", plan.host), True


def _ensure_experiment(client: Any, plan: SubmitPlan) -> str:
    exp = client.create_experiment(plan.experiment, namespace=plan.namespace or None)
    return _require_id(exp, "experiment_id", "experiment", plan.host)


def _same_schedule(rr: Any, plan: SubmitPlan, pipeline_id: str, version_id: str) -> bool:
    ref = getattr(rr, "pipeline_version_reference", None)
    cron = getattr(getattr(getattr(rr, "trigger", None), "cron_schedule", None), "cron", None)
    params = getattr(getattr(rr, "runtime_config", None), "parameters", None) or {}
    return (
        cron == plan.recurring
        and getattr(ref, "pipeline_id", None) == pipeline_id
        and getattr(ref, "pipeline_version_id", None) == version_id
        and params == plan.params
    )


def execute_plan(
    plan: SubmitPlan,
    client_factory: Callable[..., Any] | None = None,
    on_state: Callable[[str], None] | None = None,
    timeout_s: int = 6 * 3600,
    poll_s: float = 10.0,
    retries: int = 5,
) -> dict[str, Any]:
    """Upload the version (if new), then start a run or create/update the recurring run."""
    if not plan.pipeline_name or not plan.version_name:
        raise SubmitError("--pipeline-name and --version-name go together")
    client = _make_client(plan.host, plan.namespace, plan.auth, client_factory)
    info: dict[str, Any] = {}
    step = "connect"
    try:
        with _kfp_prints_to_stderr():
            _check_namespace(client, plan.host, plan.namespace)
            step = "pipeline"
            pipeline_id = _ensure_pipeline(client, plan)
            step = "upload_version"
            version_id, uploaded = _ensure_version(client, plan, pipeline_id)
            info.update(pipeline_id=pipeline_id, version_id=version_id,
                        version="uploaded" if uploaded else "exists")  # fmt: skip
            step = "experiment"
            experiment_id = _ensure_experiment(client, plan)
            if plan.recurring:
                step = "recurring run"
                info.update(_upsert_recurring(client, plan, experiment_id, pipeline_id, version_id))
                return info
            step = "run"
            run = client.run_pipeline(
                experiment_id=experiment_id, job_name=plan.run_name, params=plan.params,
                pipeline_id=pipeline_id, version_id=version_id,
            )  # fmt: skip
    except KubetradeError:
        raise
    except Exception as exc:
        raise SubmitError(
            f"Kubeflow Pipelines at {plan.host} refused the {step} step: {_api_message(exc)}"
        ) from None
    info.update(run_id=_require_id(run, "run_id", "create run", plan.host), state="SUBMITTED")
    if plan.wait:
        info["state"] = _follow(client, run.run_id, plan.host, timeout_s, poll_s, retries, on_state)
    return info


def _upsert_recurring(
    client: Any, plan: SubmitPlan, experiment_id: str, pipeline_id: str, version_id: str
) -> dict[str, Any]:
    found = client.list_recurring_runs(
        experiment_id=experiment_id, filter=_eq_filter(plan.run_name), page_size=100
    )
    existing = list(getattr(found, "recurring_runs", None) or [])
    if len(existing) == 1 and _same_schedule(existing[0], plan, pipeline_id, version_id):
        return {"recurring_run_id": existing[0].recurring_run_id, "recurring": "unchanged"}
    for rr in existing:  # KFP v2beta1 has no update: replace (one per name)
        client.delete_recurring_run(rr.recurring_run_id)
    created = client.create_recurring_run(
        experiment_id=experiment_id, job_name=plan.run_name, cron_expression=plan.recurring,
        params=plan.params, pipeline_id=pipeline_id, version_id=version_id,
        max_concurrency=1, no_catchup=True,
        description=f"{plan.pipeline_name} {plan.version_name} on '{plan.recurring}'",
    )  # fmt: skip
    return {
        "recurring_run_id": _require_id(
            created, "recurring_run_id", "create recurring run", plan.host
        ),
        "recurring": "updated" if existing else "created",
    }
