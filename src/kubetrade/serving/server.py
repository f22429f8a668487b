"""The KServe model: :class:`KubetradeModel` (a ``kserve.Model``) served by KServe's
``ModelServer`` -- the same entry point locally (bound to 127.0.0.1) and as the custom
predictor of an ``InferenceService`` (bound to 0.0.0.0 in the pod).

* v1: ``POST /v1/models/<name>:predict`` with ``{"instances": [{"symbol": "AAPL"}, ...]}``
  -> ``{"predictions": [{"probabilities": {...}, "predicted_return", "signal",
  "model_version", "alias", ...}]}``;
* v2 (Open Inference Protocol): ``POST /v2/models/<name>/infer`` with a BYTES input
  ``symbol`` (optional BYTES ``as_of``) or an FP32/FP64 input ``window`` of shape
  ``[N, L, F]``; outputs ``probabilities`` [N, 3], ``predicted_return``, ``signal`` and
  ``model_version`` (BYTES).
* ``GET /v2/health/live``, ``/v2/health/ready``, ``/v1/models/<name>`` and ``/metrics``
  (Prometheus) are KServe's own.

Bad input raises ``kserve.errors.InvalidInput``: a 400 with ``{"error": "..."}``; a body
that is not declared JSON (Content-Type) is a 415 with the same shape.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import selectors
import time
from typing import Any

import numpy as np

from kubetrade.serving.batching import MicroBatcher
from kubetrade.serving.config import ServingConfig
from kubetrade.serving.predictor import BadRequest, Predictor
from kubetrade.serving.spec import ServingError

__all__ = [
    "BusyPollSelector",
    "JsonContentTypeMiddleware",
    "PredictFastPath",
    "build_model",
    "freeze_startup_heap",
    "loop_factory",
    "serve",
]


def _kserve_model_class() -> type:
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class KubetradeModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str, predictor: Predictor) -> None:
            super().__init__(name)
            self.predictor = predictor
            self.batcher = MicroBatcher(predictor.config.micro_batch)
            self.ready = True

        def load(self) -> bool:
            self.ready = True
            return True

        async def predict(self, payload: Any, headers: Any = None,
                          response_headers: Any = None) -> Any:  # fmt: skip
            try:
                if isinstance(payload, InferRequest):
                    return await self._v2(payload)
                return await self._v1(payload)
            except BadRequest as exc:
                raise InvalidInput(str(exc)) from exc

        async def _v1(self, payload: Any) -> dict[str, Any]:
            if not isinstance(payload, dict) or "instances" not in payload:
                raise BadRequest("expected a JSON object with 'instances' (a list)")
            answers = await self.predictor.predict_batched(payload["instances"], self.batcher)
            return {"predictions": [a.as_dict() for a in answers]}

        async def _v2(self, request: InferRequest) -> InferResponse:
            inputs = {i.name: i for i in request.inputs}
            unknown = set(inputs) - {"symbol", "as_of", "window"}
            if unknown:
                raise BadRequest(f"unknown input(s) {sorted(unknown)}; use symbol, as_of, window")
            if "window" in inputs:
                try:
                    windows = np.asarray(inputs["window"].as_numpy(), dtype=np.float64)
                except Exception as exc:  # noqa: BLE001 - kserve raises many types here
                    raise BadRequest(f"input 'window' is not numeric: {exc}") from exc
                if windows.ndim != 3:
                    raise BadRequest(f"input 'window' has shape {list(windows.shape)}; "
                                     "expected [N, sequence_length, features]")  # fmt: skip
                instances: list[dict[str, Any]] = [{"window": w} for w in windows]
            elif "symbol" in inputs:
                symbols = [_text(s) for s in inputs["symbol"].data]
                as_of = [_text(s) for s in inputs["as_of"].data] if "as_of" in inputs else None
                if as_of is not None and len(as_of) != len(symbols):
                    raise BadRequest("inputs 'as_of' and 'symbol' differ in length")
                instances = [{"symbol": s} if as_of is None else {"symbol": s, "as_of": a}
                             for s, a in zip(symbols, as_of or symbols, strict=True)]  # fmt: skip
            else:
                raise BadRequest("the request needs an input 'symbol' or 'window'")
            answers = await self.predictor.predict_batched(instances, self.batcher)
            n = len(answers)
            outputs = [
                InferOutput("probabilities", [n, 3], "FP32",
                            np.asarray([a.probabilities for a in answers], dtype=np.float32)),
                InferOutput("predicted_return", [n], "FP32",
                            np.asarray([a.predicted_return for a in answers], dtype=np.float32)),
                InferOutput("signal", [n], "FP32",
                            np.asarray([a.signal for a in answers], dtype=np.float32)),
                InferOutput("model_version", [n], "BYTES", [a.model_version for a in answers]),
            ]  # fmt: skip
            return InferResponse(request.id or "", self.name, outputs,
                                 model_version=answers[0].model_version)  # fmt: skip

    return KubetradeModel


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


JSON_TYPES = ("application/json", "application/cloudevents+json", "application/ld+json")


class JsonContentTypeMiddleware:
    """ASGI middleware: a ``:predict``/``infer`` POST whose Content-Type is not JSON gets a
    415 with ``{"error": ...}`` naming the type (KServe would hand the raw bytes to the model).
    A missing Content-Type is read as JSON, a JSON one with parameters (``; charset=utf-8``)
    is passed on as plain ``application/json``; Open Inference Protocol binary requests
    (``inference-header-content-length``) pass."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and (scope["path"].endswith(":predict") or scope["path"].endswith("/infer"))
        ):
            headers = dict(scope["headers"])
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            media = ctype.split(";", 1)[0].strip().lower()
            if (
                media
                and media not in JSON_TYPES
                and (b"inference-header-content-length" not in headers)
            ):
                body = json.dumps({"error": f"Content-Type {ctype!r} is not JSON; send "
                                   "Content-Type: application/json"}).encode()  # fmt: skip
                await send({"type": "http.response.start", "status": 415, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
            if media in JSON_TYPES and media != ctype:
                # KServe compares the whole header: "application/json; charset=utf-8" would
                # reach the model as raw bytes
                rest = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": [*rest, (b"content-type", media.encode())]}
        await self.app(scope, receive, send)


V1_PREDICT = re.compile(r"/v1/models/([^/]+):predict")


class PredictFastPath:
    """ASGI middleware: ``POST /v1/models/<name>:predict`` goes straight to KServe's own v1
    handler (``V1Endpoints.predict``: the same DataPlane, model, Prometheus timers and JSON
    answer), skipping FastAPI's route matching and dependency solving, which KServe 0.21's
    router of ~30 routes makes ~0.13 ms per request on the dev box. An exception gets the
    app's registered handler, as in a routed request (KServe's 400/404/503 JSON errors); one
    with only the catch-all ``Exception`` handler goes on to Starlette's server-error path,
    as a routed request's does. Every other request takes the normal route."""

    def __init__(self, app: Any, endpoints: Any) -> None:
        self.app = app
        self.endpoints = endpoints  # kserve.protocol.rest.v1_endpoints.V1Endpoints

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # the path a router matches (Starlette's rule)
            path = path[len(root) :]
        match = V1_PREDICT.fullmatch(path)
        if match is None:
            return await self.app(scope, receive, send)
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response

        request = Request(scope, receive)
        try:
            response = await self.endpoints.predict(match.group(1), request)
        except Exception as exc:
            handler = _specific_handler(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        if not isinstance(response, Response):  # the handler may return a plain dict
            response = JSONResponse(response)
        await response(scope, receive, send)


def _specific_handler(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The handler registered for ``exc``'s class or a base below ``Exception`` (Starlette's
    lookup, without the catch-all that its server-error middleware applies)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class BusyPollSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's selector (epoll on Linux), polled without blocking for up to
    ``spin_seconds`` before each blocking wait.

    A 1-client round trip leaves the server idle while the answer travels and the next
    request is made; blocking at once lets the kernel halt the CPU, and on a VM whose guest
    halts idle vCPUs without polling (``haltpoll.guest_halt_poll_ns=0``, as on the dev box)
    every request then pays a wake-up through the hypervisor. Polling first keeps the CPU
    awake for a request that follows within ``spin_seconds`` -- what the kernel's own halt
    polling does on a default KVM guest. A wait with a shorter timeout spins only that long;
    ``timeout=0`` never spins."""

    def __init__(self, spin_seconds: float) -> None:
        super().__init__()
        self.spin_seconds = spin_seconds

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        spin = self.spin_seconds if timeout is None else min(self.spin_seconds, timeout)
        deadline = time.perf_counter() + spin
        while time.perf_counter() < deadline:
            ready = super().select(0)
            if ready:
                return ready
        rest = None if timeout is None else max(0.0, timeout - spin)  # the wait's remainder
        return super().select(rest)  # type: ignore[no-any-return]


def loop_factory(event_loop: str, busy_poll_us: int = 0) -> Any:
    """The event-loop constructor for ``event_loop`` ("auto": asyncio's with a
    :class:`BusyPollSelector` when ``busy_poll_us`` > 0, else uvloop when importable, else
    asyncio's; "uvloop" fails in one line when it is missing or ``busy_poll_us`` > 0)."""
    if busy_poll_us > 0:
        if event_loop == "uvloop":
            raise ServingError("busy_poll_us needs the asyncio loop; set event_loop: auto "
                               "or asyncio, or busy_poll_us: 0")  # fmt: skip
        spin = busy_poll_us / 1e6
        return lambda: asyncio.SelectorEventLoop(BusyPollSelector(spin))
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if event_loop == "uvloop":
                raise ServingError("event_loop: uvloop is not installed; pip install uvloop "
                                   "or set event_loop: auto") from exc  # fmt: skip
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def freeze_startup_heap() -> int:
    """Move every object alive now into the collector's permanent generation; returns how
    many. The server imports ~4,600 modules (KServe, MLflow, ONNX Runtime, pandas, ...): ~0.5 M
    objects that live as long as the process. Left in generation 2, each full collection
    walks them all and stalls the event loop ~0.2 s on the dev box, every few seconds under
    load (wrk, 32 connections: p99 170-290 ms instead of ~9 ms; docs/benchmarks.md)."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def build_model(config: ServingConfig, predictor: Predictor | None = None) -> Any:
    """The ``kserve.Model`` for ``config`` (loads and verifies the served versions)."""
    return _kserve_model_class()(config.server_name, predictor or Predictor(config))


def serve(config: ServingConfig, model: Any = None) -> None:
    """Run KServe's ModelServer on ``config.host:config.port`` until SIGINT/SIGTERM.

    ``model``: a ready ``kserve.Model`` to serve instead of :func:`build_model`'s (the serving
    benchmark's constant-answer floor runs through the same server setup)."""
    import logging

    from kserve.model_server import FASTAPI_APP_IMPORT_STRING, ModelServer
    from kserve.protocol.rest.server import RESTServer

    model = model or build_model(config)  # fails here, before any port is bound
    predictor = getattr(model, "predictor", None)

    class QuietRESTServer(RESTServer):  # type: ignore[misc]
        """KServe's REST server with the JSON content-type check; its per-request timing
        middleware (one log line per request) only when ``access_log`` is on."""

        def _add_middlewares(self, app: Any) -> None:
            # added first, so innermost: the timing/access-log middlewares still see the
            # request; the content-type check (added last, outermost) runs before it
            if config.predict_fast_path:
                from kserve.protocol.rest.v1_endpoints import V1Endpoints

                endpoints = V1Endpoints(self.dataplane, self.model_repository_extension)
                app.add_middleware(PredictFastPath, endpoints=endpoints)
            if config.access_log:
                super()._add_middlewares(app)
            app.add_middleware(JsonContentTypeMiddleware)

    class BoundModelServer(ModelServer):  # type: ignore[misc]
        """KServe hard-codes host 0.0.0.0; bind the configured address instead."""

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = QuietRESTServer(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                self.http_port, access_log_format=self.access_log_format, workers=1,
                grace_period=self.grace_period, event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
            )  # fmt: skip
            self._rest_server.config.host = config.host
            if not config.access_log:
                # uvicorn logs a request only when "uvicorn.access" has handlers
                access = logging.getLogger("uvicorn.access")
                access.handlers, access.propagate = [], False
                logging.getLogger("kserve.trace").setLevel(logging.WARNING)
            self.servers.append(self._rest_server.start())
            # KServe's own start() configures one loop and then serves on another, a plain
            # asyncio loop whatever its event_loop says; serve on the configured loop instead
            factory = loop_factory(config.event_loop, config.busy_poll_us)
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.get_loop()  # created and set current: setup_event_loop configures it
                self.setup_event_loop()
                self.register_signal_handler()
                freeze_startup_heap()
                runner.run(self._serve())

    if predictor is not None:
        predictor.start_refresh()
    try:
        BoundModelServer(http_port=config.port, enable_grpc=False, workers=1).start([model])
    finally:
        if predictor is not None:
            predictor.stop()
