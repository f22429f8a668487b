"""A schema-checking stand-in for the KFP v2beta1 REST API, on 127.0.0.1 only.

Every request is checked against the upstream swagger files in ``upstream/`` (KFP 2.16.1):
the path and method must be a declared operation, every query parameter a declared one of
the right type, and every JSON body must validate against its definition with unknown
fields rejected (grpc-gateway's protojson rejects them too). Multipart uploads must carry
the declared ``uploadfile`` part holding a compiled pipeline. Every response we send is
validated against the operation's 200 schema, so this fake cannot drift from the contract
either. State is just enough for ``kfp.Client`` to drive: pipelines, versions, experiments,
runs, recurring runs; names that the real server keeps unique answer 409 here as there.

What the real server does and this one does not: Kubernetes, Argo, scheduling, executing.
It stands in for a cluster that cannot exist on this machine. The server is bounded: request
bodies up to 32 MiB (the swagger's upload limit), 5000 requests, socket timeouts, and it stops
itself after ``lifetime_s`` seconds even if a test forgets to.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

UPSTREAM = Path(__file__).resolve().parent / "upstream"
# API tag -> folder of its swagger files: 2.16.1 (the kind pin), 2.14.0 (the oldest KFP
# backend the pipeline runs on, kubetrade.k8s.versions.MIN_KFP_VERSION)
TAGS = {"2.16.1": UPSTREAM, "2.14.0": UPSTREAM / "2.14.0"}
SPEC_FILES = ("run", "pipeline", "pipeline.upload", "experiment", "recurring_run", "healthz")
MAX_BODY = 32 * 1024 * 1024
MAX_REQUESTS = 5000  # a client stuck in a loop gets 429s, not an endless test
INT64 = {"int64", "uint64"}


def _strict(node: Any) -> Any:
    """Swagger 2 -> JSON Schema as protojson reads it: unknown fields fail, int64 as
    string or number (protojson accepts both)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        if out.get("type") == "string" and out.get("format") in INT64:
            out["type"] = ["string", "integer"]
            out["pattern"] = r"^-?[0-9]+$"
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@dataclass
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    spec: dict[str, Any]
    definitions: dict[str, Any]  # of the swagger file that declares it (strict form)

    def params(self, where: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.spec.get("parameters", []) if p["in"] == where}


def load_contract(tag: str = "2.16.1") -> list[Operation]:
    ops: list[Operation] = []
    for name in SPEC_FILES:
        doc = json.loads((TAGS[tag] / f"{name}.swagger.json").read_text())
        definitions = _strict(doc.get("definitions", {}))
        for template, methods in doc["paths"].items():
            pattern = re.sub(
                r"\{(\w+)\}",
                r"(?P<\1>[^/:]+)",
                re.escape(template).replace(r"\{", "{").replace(r"\}", "}"),
            )
            for method, spec in methods.items():
                ops.append(
                    Operation(
                        method.upper(), template, re.compile(f"^{pattern}$"), spec, definitions
                    )
                )
    # most specific first: literal paths before templated ones
    ops.sort(key=lambda o: (o.template.count("{"), -len(o.template)))
    return ops


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class State:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_gets: dict[str, int] = field(default_factory=dict)


class KfpApiServer:
    """``with KfpApiServer() as api: kfp.Client(host=api.url)``."""

    def __init__(
        self,
        token: str | None = None,
        cookie: str | None = None,
        multi_user: bool = False,
        run_states: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED"),
        lifetime_s: float = 120.0,
        tag: str = "2.16.1",
    ) -> None:
        self.tag = tag
        self.ops = load_contract(tag)
        self.token, self.cookie, self.multi_user = token, cookie, multi_user
        self.run_states = run_states
        self.lifetime_s = lifetime_s
        self.state = State()
        self.requests: list[dict[str, Any]] = []  # (method, path, query, body) of each request
        self.drop_run_gets = 0  # close the connection unanswered on the next N GET /runs/{id}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> KfpApiServer:
        server = self

        class Handler(_Handler):
            api = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._httpd:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()

    # ------------------------------------------------------------------ validation
    @staticmethod
    def validate(op: Operation, ref_or_schema: dict[str, Any], value: Any, what: str) -> None:
        schema = dict(_strict(ref_or_schema))
        schema["definitions"] = op.definitions
        errors = sorted(
            jsonschema.Draft4Validator(schema).iter_errors(value), key=lambda e: list(e.path)
        )
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.path) or "(root)"
            raise ApiError(400, f"{what} does not match the API contract at {where}: {err.message}")

    @staticmethod
    def fit(op: Operation, schema: dict[str, Any], value: Any) -> Any:
        """Our stored record as this tag's server would answer it: fields its messages do not
        have are left out (an older server has no such field); the rest is then validated."""
        while "$ref" in schema:
            schema = op.definitions[schema["$ref"].rsplit("/", 1)[1]]
        if isinstance(value, dict) and "properties" in schema:
            props = schema["properties"]
            return {k: KfpApiServer.fit(op, props[k], v) for k, v in value.items() if k in props}
        if isinstance(value, list) and "items" in schema:
            return [KfpApiServer.fit(op, schema["items"], v) for v in value]
        return value

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    # ------------------------------------------------------------------ handlers
    def handle(self, method: str, op: Operation, path_args: dict[str, str],
               query: dict[str, str], body: Any, files: dict[str, bytes]) -> Any:  # fmt: skip
        key = f"{method} {op.template}"
        with self._lock:
            return getattr(self, "_" + re.sub(r"\W+", "_", key).strip("_").lower())(
                path_args, query, body, files
            )

    def _get_apis_v2beta1_healthz(self, p, q, b, f):
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    # pipelines
    def _pipeline_ns(self, namespace: str | None) -> str:
        return namespace or "" if self.multi_user else ""

    def _add_pipeline(self, display_name: str, namespace: str, description: str = "") -> dict:
        if not display_name:
            raise ApiError(400, "pipeline display_name is required")
        for p in self.state.pipelines.values():
            if p["display_name"] == display_name and p.get("namespace", "") == namespace:
                raise ApiError(409, f"pipeline {display_name!r} already exists", code=6)
        pid = self._new_id("pipeline")
        rec = {"pipeline_id": pid, "display_name": display_name, "name": display_name,
               "description": description, "created_at": _now()}  # fmt: skip
        if namespace:
            rec["namespace"] = namespace
        self.state.pipelines[pid] = rec
        return rec

    def _post_apis_v2beta1_pipelines(self, p, q, b, f):
        return self._add_pipeline(
            b.get("display_name", ""),
            self._pipeline_ns(b.get("namespace")),
            b.get("description", ""),
        )

    def _get_apis_v2beta1_pipelines(self, p, q, b, f):
        ns = self._pipeline_ns(q.get("namespace"))
        items = [x for x in self.state.pipelines.values() if x.get("namespace", "") == ns]
        items = _filtered(items, q.get("filter"))
        return {"pipelines": items, "total_size": len(items)} if items else {}

    def _get_apis_v2beta1_pipelines_pipeline_id(self, p, q, b, f):
        return self._pipeline(p["pipeline_id"])

    def _pipeline(self, pid: str) -> dict:
        if pid not in self.state.pipelines:
            raise ApiError(404, f"pipeline {pid} not found", code=5)
        return self.state.pipelines[pid]

    def _add_version(self, pid: str, name: str, spec: dict, description: str = "") -> dict:
        self._pipeline(pid)
        if not name:
            raise ApiError(400, "pipeline version name is required")
        for v in self.state.versions.values():
            if v["pipeline_id"] == pid and v["display_name"] == name:
                raise ApiError(409, f"pipeline version {name!r} already exists", code=6)
        vid = self._new_id("version")
        rec = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name,
               "name": name, "description": description, "created_at": _now(),
               "pipeline_spec": spec}  # fmt: skip
        self.state.versions[vid] = rec
        return rec

    def _get_apis_v2beta1_pipelines_pipeline_id_versions(self, p, q, b, f):
        self._pipeline(p["pipeline_id"])
        items = [v for v in self.state.versions.values() if v["pipeline_id"] == p["pipeline_id"]]
        items = _filtered(items, q.get("filter"))
        return {"pipeline_versions": items, "total_size": len(items)} if items else {}

    def _get_apis_v2beta1_pipelines_pipeline_id_versions_pipeline_version_id(self, p, q, b, f):
        v = self.state.versions.get(p["pipeline_version_id"])
        if not v or v["pipeline_id"] != p["pipeline_id"]:
            raise ApiError(404, "pipeline version not found", code=5)
        return v

    def _post_apis_v2beta1_pipelines_upload(self, p, q, b, f):
        spec = _pipeline_spec(f)
        name = q.get("display_name") or q.get("name") or spec_name(spec)
        pipe = self._add_pipeline(
            name, self._pipeline_ns(q.get("namespace")), q.get("description", "")
        )
        self._add_version(pipe["pipeline_id"], name, spec)
        return pipe

    def _post_apis_v2beta1_pipelines_upload_version(self, p, q, b, f):
        spec = _pipeline_spec(f)
        pid = q.get("pipelineid", "")
        if not pid:
            raise ApiError(400, "pipelineid is required to upload a version")
        name = q.get("display_name") or q.get("name") or ""
        return self._add_version(pid, name, spec, q.get("description", ""))

    # experiments
    def _post_apis_v2beta1_experiments(self, p, q, b, f):
        ns = b.get("namespace", "") if self.multi_user else ""
        if self.multi_user and not ns:
            raise ApiError(400, "An experiment cannot have an empty namespace in multi-user mode")
        if not b.get("display_name"):
            raise ApiError(400, "experiment display_name is required")
        for e in self.state.experiments.values():
            if e["display_name"] == b["display_name"] and e.get("namespace", "") == ns:
                raise ApiError(409, "experiment already exists", code=6)
        eid = self._new_id("experiment")
        rec = {"experiment_id": eid, "display_name": b["display_name"], "created_at": _now(),
               "storage_state": "AVAILABLE", "description": b.get("description") or ""}  # fmt: skip
        if ns:
            rec["namespace"] = ns
        self.state.experiments[eid] = rec
        return rec

    def _get_apis_v2beta1_experiments(self, p, q, b, f):
        ns = q.get("namespace", "") if self.multi_user else ""
        if self.multi_user and not ns:
            raise ApiError(400, "listing experiments needs a namespace in multi-user mode")
        items = [e for e in self.state.experiments.values() if e.get("namespace", "") == ns]
        items = _filtered(items, q.get("filter"))
        return {"experiments": items, "total_size": len(items)} if items else {}

    def _get_apis_v2beta1_experiments_experiment_id(self, p, q, b, f):
        return self._experiment(p["experiment_id"])

    def _experiment(self, eid: str) -> dict:
        if eid not in self.state.experiments:
            raise ApiError(404, f"experiment {eid} not found", code=5)
        return self.state.experiments[eid]

    # runs and recurring runs
    def _check_job(self, b: dict) -> None:
        self._experiment(b.get("experiment_id", ""))
        ref = b.get("pipeline_version_reference")
        if ref:
            v = self.state.versions.get(ref.get("pipeline_version_id", ""))
            if not v or v["pipeline_id"] != ref.get("pipeline_id"):
                raise ApiError(
                    404, "pipeline version in pipeline_version_reference not found", code=5
                )
            spec = v["pipeline_spec"]
        elif b.get("pipeline_spec"):
            spec = b["pipeline_spec"]
        else:
            raise ApiError(400, "a run needs pipeline_version_reference or pipeline_spec")
        # KFP checks parameters against the spec when the run starts; this fake does it at
        # create time so a test sees it.
        root = spec.get("pipeline_spec", spec).get("root") or {}
        declared = ((root.get("inputDefinitions") or {}).get("parameters")) or {}
        for name, value in ((b.get("runtime_config") or {}).get("parameters") or {}).items():
            if name not in declared:
                raise ApiError(400, f"parameter {name!r} is not an input of the pipeline")
            _check_param(name, declared[name].get("parameterType", "STRING"), value)

    def _post_apis_v2beta1_runs(self, p, q, b, f):
        self._check_job(b)
        rid = self._new_id("run")
        rec = {k: v for k, v in b.items() if k in ("experiment_id", "display_name", "description",
               "pipeline_version_reference", "pipeline_spec", "runtime_config", "service_account")}  # fmt: skip
        rec.update(run_id=rid, created_at=_now(), state="PENDING", storage_state="AVAILABLE")
        self.state.runs[rid] = rec
        return rec

    def _get_apis_v2beta1_runs_run_id(self, p, q, b, f):
        rid = p["run_id"]
        if rid not in self.state.runs:
            raise ApiError(404, f"run {rid} not found", code=5)
        n = self.state.run_gets.get(rid, 0)
        self.state.run_gets[rid] = n + 1
        run = self.state.runs[rid]
        run["state"] = self.run_states[min(n, len(self.run_states) - 1)]
        return run

    def _post_apis_v2beta1_recurringruns(self, p, q, b, f):
        self._check_job(b)
        trigger = b.get("trigger") or {}
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        if not cron and not trigger.get("periodic_schedule"):
            raise ApiError(400, "a recurring run needs a trigger")
        if cron is not None and len(cron.split()) != 6:
            raise ApiError(400, f"invalid cron {cron!r}: the scheduler expects 6 fields")
        if int(b.get("max_concurrency") or 0) not in range(1, 11):
            raise ApiError(400, "max_concurrency must be in [1, 10]")
        rrid = self._new_id("recurring")
        rec = {k: v for k, v in b.items() if k != "pipeline_version_id"}
        rec.update(recurring_run_id=rrid, created_at=_now(), updated_at=_now(),
                   status="ENABLED" if b.get("mode") != "DISABLE" else "DISABLED")  # fmt: skip
        rec["max_concurrency"] = str(b["max_concurrency"])
        self.state.recurring[rrid] = rec
        return rec

    def _get_apis_v2beta1_recurringruns(self, p, q, b, f):
        items = list(self.state.recurring.values())
        if q.get("experiment_id"):
            items = [r for r in items if r["experiment_id"] == q["experiment_id"]]
        items = _filtered(items, q.get("filter"))
        return {"recurringRuns": items, "total_size": len(items)} if items else {}

    def _delete_apis_v2beta1_recurringruns_recurring_run_id(self, p, q, b, f):
        if self.state.recurring.pop(p["recurring_run_id"], None) is None:
            raise ApiError(404, "recurring run not found", code=5)
        return {}


def spec_name(spec: dict) -> str:
    return str((spec.get("pipeline_spec", spec).get("pipelineInfo") or {}).get("name") or "")


def _pipeline_spec(files: dict[str, bytes]) -> dict:
    if "uploadfile" not in files:
        raise ApiError(400, "multipart field 'uploadfile' is required")
    try:
        docs = [d for d in yaml.safe_load_all(files["uploadfile"]) if d is not None]
    except yaml.YAMLError as exc:
        raise ApiError(400, f"uploadfile is not YAML: {exc}") from None
    if not docs or "root" not in docs[0] or "pipelineInfo" not in docs[0]:
        raise ApiError(400, "uploadfile is not a compiled pipeline (no root/pipelineInfo)")
    return {"pipeline_spec": docs[0], "platform_spec": docs[1]} if len(docs) > 1 else docs[0]


def _check_param(name: str, kind: str, value: Any) -> None:
    ok = {
        "STRING": lambda v: isinstance(v, str),
        "NUMBER_INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "NUMBER_DOUBLE": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "BOOLEAN": lambda v: isinstance(v, bool),
        "LIST": lambda v: isinstance(v, list),
        "STRUCT": lambda v: isinstance(v, dict),
    }.get(kind)
    if ok is None or not ok(value):
        raise ApiError(400, f"parameter {name!r}: {type(value).__name__} is not {kind}")


def _filtered(items: list[dict], raw: str | None) -> list[dict]:
    if not raw:
        return items
    try:
        predicates = json.loads(raw).get("predicates", [])
    except (ValueError, AttributeError):
        raise ApiError(400, "filter is not a JSON Filter") from None
    for pred in predicates:
        if pred.get("operation") not in (1, "EQUALS") or pred.get("key") not in (
            "display_name",
            "name",
        ):
            raise ApiError(400, f"this stand-in supports only EQUALS on display_name, not {pred}")
        items = [i for i in items if i.get("display_name") == pred.get("stringValue")]
    return items


class _Handler(BaseHTTPRequestHandler):
    api: KfpApiServer
    timeout = 10
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        api = self.api
        parts = urlsplit(self.path)
        record: dict[str, Any] = {"method": self.command, "path": parts.path,
                                  "authorization": self.headers.get("Authorization"),
                                  "cookie": self.headers.get("Cookie")}  # fmt: skip
        api.requests.append(record)
        try:
            if len(api.requests) > MAX_REQUESTS:
                raise ApiError(429, f"over {MAX_REQUESTS} requests: stand-in exhausted", code=8)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ApiError(413, "request body over 32 MiB")
            raw = self.rfile.read(length) if length else b""
            op, args = self._route(parts.path)
            if (
                self.command == "GET"
                and op.template == "/apis/v2beta1/runs/{run_id}"
                and api.drop_run_gets > 0
            ):
                api.drop_run_gets -= 1
                self.close_connection = True
                return  # no answer: the connection drops
            if api.token or api.cookie:
                good = (
                    api.token and self.headers.get("Authorization") == f"Bearer {api.token}"
                ) or (api.cookie and api.cookie in (self.headers.get("Cookie") or ""))
                if not good and op.template != "/apis/v2beta1/healthz":
                    raise ApiError(
                        401, "Unauthenticated: no valid token or session cookie", code=16
                    )
            query = self._query(op, parts.query)
            record["query"] = query
            body, files = self._body(op, raw)
            record["body"] = body
            result = api.handle(self.command, op, args, query, body, files)
            schema = op.spec["responses"]["200"]["schema"]
            if api.tag != "2.16.1":  # the newest tag: every field we keep must be in it
                result = api.fit(op, schema, result)
            api.validate(op, schema, result, f"response of {op.spec['operationId']}")
            self._send(200, result)
        except ApiError as exc:
            record["error"] = exc.message
            self._send(exc.status, {"code": exc.code, "message": exc.message, "details": []})

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

    def _route(self, path: str) -> tuple[Operation, dict[str, str]]:
        known = False
        for op in self.api.ops:
            m = op.regex.match(path)
            if m:
                known = True
                if op.method == self.command:
                    return op, m.groupdict()
        raise ApiError(405 if known else 404, f"{self.command} {path} is not in the API", code=12)

    def _query(self, op: Operation, raw: str) -> dict[str, str]:
        declared = op.params("query")
        out: dict[str, str] = {}
        for name, values in parse_qs(raw, keep_blank_values=True).items():
            if name not in declared:
                raise ApiError(
                    400, f"query parameter {name!r} is not declared for {op.spec['operationId']}"
                )
            value = values[-1]
            kind = declared[name].get("type")
            if kind == "integer" and not re.fullmatch(r"-?\d+", value):
                raise ApiError(400, f"query parameter {name}={value!r} is not an integer")
            if kind == "boolean" and value not in ("true", "false"):
                raise ApiError(400, f"query parameter {name}={value!r} is not a boolean")
            enum = declared[name].get("enum")
            if enum and value not in enum:
                raise ApiError(400, f"query parameter {name}={value!r} is not one of {enum}")
            out[name] = value
        return out

    def _body(self, op: Operation, raw: bytes) -> tuple[Any, dict[str, bytes]]:
        ctype = self.headers.get("Content-Type", "")
        if "multipart/form-data" in op.spec.get("consumes", []):
            if not ctype.startswith("multipart/form-data"):
                raise ApiError(400, f"{op.spec['operationId']} takes multipart/form-data")
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
            )
            files: dict[str, bytes] = {}
            declared = op.params("formData")
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name not in declared:
                    raise ApiError(400, f"form field {name!r} is not declared")
                files[str(name)] = part.get_payload(decode=True) or b""
            return None, files
        body_params = [p for p in op.spec.get("parameters", []) if p["in"] == "body"]
        if not body_params:
            if raw.strip() not in (b"", b"{}"):
                raise ApiError(400, f"{op.spec['operationId']} takes no body")
            return None, {}
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(400, "body is not JSON") from None
        if body is None and body_params[0].get("required"):
            raise ApiError(400, f"{op.spec['operationId']} needs a body")
        self.api.validate(
            op, copy.deepcopy(body_params[0]["schema"]), body, f"{op.spec['operationId']} body"
        )
        return body, {}
