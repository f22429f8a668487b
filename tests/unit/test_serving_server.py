"""The serving process's own ASGI/event-loop pieces, without a server: which requests the
v1 fast path takes, how its errors map to the app's handlers, and the event-loop choice.
(The end-to-end equality of fast-path and routed answers over HTTP is in
tests/integration/test_serving.py.)"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from typing import Any

import pytest

from kubetrade.serving.config import ServingConfig
from kubetrade.serving.server import (
    BusyPollSelector,
    PredictFastPath,
    freeze_startup_heap,
    loop_factory,
)
from kubetrade.serving.spec import ServingError


class Endpoints:
    """Stands in for KServe's V1Endpoints: records the model names it was asked for."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.result, self.error = result, error

    async def predict(self, model_name: str, request: Any) -> Any:
        self.calls.append(model_name)
        if self.error is not None:
            raise self.error
        return self.result


class App:
    """The rest of the ASGI stack (router): records the paths it was handed."""

    def __init__(self, handlers: dict[Any, Any] | None = None) -> None:
        self.paths: list[str] = []
        self.exception_handlers = handlers or {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])


def _call(mw: PredictFastPath, app: App, method: str, path: str,
          root_path: str = "") -> list[dict[str, Any]]:  # fmt: skip
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path,
             "headers": [], "query_string": b"", "app": app}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    return sent


def test_fast_path_takes_only_post_v1_predict() -> None:
    from starlette.responses import JSONResponse

    app, endpoints = App(), Endpoints(result=JSONResponse({"predictions": []}))
    mw = PredictFastPath(app, endpoints)
    sent = _call(mw, app, "POST", "/v1/models/kubetrade:predict")
    assert endpoints.calls == ["kubetrade"] and app.paths == []
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"predictions":[]}'
    assert _call(mw, app, "POST", "/api/v1/models/m-2:predict", root_path="/api")
    assert endpoints.calls == ["kubetrade", "m-2"]
    for method, path in [("GET", "/v1/models/kubetrade:predict"),  # 405 is the router's
                         ("POST", "/v1/models/kubetrade:explain"),
                         ("POST", "/v1/models/a/b:predict"),
                         ("POST", "/v1/models/kubetrade:predict/"),
                         ("POST", "/v2/models/kubetrade/infer")]:  # fmt: skip
        _call(mw, app, method, path)
    assert endpoints.calls == ["kubetrade", "m-2"]  # none of those took the fast path
    assert len(app.paths) == 5


def test_fast_path_errors_get_the_apps_specific_handler() -> None:
    from kserve.errors import InvalidInput, ModelNotFound
    from starlette.responses import JSONResponse

    async def invalid(request: Any, exc: Exception) -> Any:
        return JSONResponse({"error": str(exc)}, status_code=400)

    def not_found(request: Any, exc: Exception) -> Any:  # a sync handler is allowed too
        return JSONResponse({"error": "no such model"}, status_code=404)

    async def catch_all(request: Any, exc: Exception) -> Any:
        raise AssertionError("the catch-all belongs to Starlette's server-error middleware")

    handlers = {InvalidInput: invalid, ModelNotFound: not_found, Exception: catch_all}
    app = App(handlers)
    sent = _call(PredictFastPath(app, Endpoints(error=InvalidInput("window has NaN"))), app,
                 "POST", "/v1/models/kubetrade:predict")  # fmt: skip
    assert sent[0]["status"] == 400 and b"window has NaN" in sent[1]["body"]
    sent = _call(PredictFastPath(app, Endpoints(error=ModelNotFound("x"))), app,
                 "POST", "/v1/models/x:predict")  # fmt: skip
    assert sent[0]["status"] == 404
    with pytest.raises(RuntimeError, match="boom"):  # unhandled: goes on up the stack
        _call(PredictFastPath(app, Endpoints(error=RuntimeError("boom"))), app,
              "POST", "/v1/models/kubetrade:predict")  # fmt: skip


def test_fast_path_is_on_by_default_and_can_be_turned_off() -> None:
    assert ServingConfig().predict_fast_path is True
    assert ServingConfig(predict_fast_path=False).predict_fast_path is False


def test_loop_factory_picks_the_configured_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is asyncio.new_event_loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(ServingError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_freeze_startup_heap_takes_startup_objects_out_of_full_collections() -> None:
    """What the server freezes before serving is no longer walked by a full collection
    (the ~0.2 s loop stall under load, docs/benchmarks.md); objects made afterwards are."""
    gc.unfreeze()
    try:
        startup = [object() for _ in range(3)]
        gc.collect()
        assert any(o is startup for o in gc.get_objects(generation=2))  # before: walked
        tracked = len(gc.get_objects())
        assert freeze_startup_heap() >= tracked * 0.9  # the whole import-time heap
        assert not any(o is startup for o in gc.get_objects(generation=2))
        later: list[Any] = [[]]
        gc.collect()
        assert any(o is later for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()


def test_busy_polling_is_on_by_default_on_the_asyncio_loop() -> None:
    config = ServingConfig()
    assert config.busy_poll_us == 200 and config.event_loop == "auto"
    loop = loop_factory(config.event_loop, config.busy_poll_us)()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        selector = loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, BusyPollSelector) and selector.spin_seconds == 200e-6
    finally:
        loop.close()
    with pytest.raises(ServingError, match="busy_poll_us needs the asyncio loop"):
        loop_factory("uvloop", 200)
    with pytest.raises(ValueError, match="busy_poll_us needs the asyncio loop"):
        ServingConfig(event_loop="uvloop")
    assert ServingConfig(event_loop="uvloop", busy_poll_us=0).busy_poll_us == 0


def test_busy_poll_selector_finds_data_that_arrives_while_it_spins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import selectors

    blocking: list[float | None] = []  # waits that reach the real selector with a timeout
    real_select = selectors.DefaultSelector.select

    def counting(self: Any, timeout: float | None = None) -> Any:
        if timeout != 0:
            blocking.append(timeout)
        return real_select(self, timeout)

    monkeypatch.setattr(selectors.DefaultSelector, "select", counting)
    a, b = socket.socketpair()
    with a, b:
        _spin_checks(a, b, blocking)


def _spin_checks(a: socket.socket, b: socket.socket, blocking: list[float | None]) -> None:
    import selectors

    with BusyPollSelector(spin_seconds=5.0) as sel:
        sel.register(a, selectors.EVENT_READ)
        assert sel.select(0) == [] and blocking == []  # timeout 0: one poll, no spin
        timer = threading.Timer(0.05, b.send, args=(b"x",))
        timer.start()
        events = sel.select(timeout=30.0)
        timer.join()
        assert [key.fileobj for key, _ in events] == [a]
        assert blocking == []  # found by a poll while spinning: the 30 s wait never began
        a.recv(1)
        # nothing arrives: spins for the whole of a shorter timeout, never blocks
        assert sel.select(timeout=0.02) == [] and blocking == []
    with BusyPollSelector(spin_seconds=0.01) as sel:
        sel.register(a, selectors.EVENT_READ)
        # a longer timeout: spins 10 ms, then waits for the remaining 40 ms
        assert sel.select(timeout=0.05) == []
        assert len(blocking) == 1 and blocking[0] == pytest.approx(0.04)
