"""Micro-batching: the model runs of concurrent requests gathered into one ONNX Runtime run.

The server handles requests on one event loop. A request's handler queues its scaled input
and awaits the answer; the flush is scheduled with ``call_soon``, so it runs right after the
handlers that are ready in the same loop turn (requests that arrived together) and never
waits for more: a lone request is run at once, never delayed by a timer. Inputs for the
same model version are concatenated (at most ``max_rows`` rows per run) and the output rows
handed back in order. The serving graph treats each row on its own, so a row's answer does
not depend on the batch it ran in (tests/integration/test_serving.py checks equality).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """``await batcher.run(model, inputs)`` -> ``model.run(inputs)``, batched with the other
    requests queued in the same loop turn (``max_rows`` 1: every request runs alone)."""

    def __init__(self, max_rows: int = 32) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows = max_rows
        self._queue: list[tuple[Any, np.ndarray, asyncio.Future[Any]]] = []
        self._scheduled = False
        self.runs = 0  # model runs made (a batch of one counts too)
        self.rows = 0  # rows they covered

    async def run(self, model: Any, inputs: np.ndarray) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((model, inputs, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        result: tuple[Any, Any] = await future
        return result

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        by_model: dict[int, list[tuple[Any, np.ndarray, asyncio.Future[Any]]]] = {}
        for item in queue:  # a swap mid-turn: each version runs its own requests
            by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            chunk: list[tuple[Any, np.ndarray, asyncio.Future[Any]]] = []
            rows = 0
            for item in items:
                if chunk and rows + len(item[1]) > self.max_rows:
                    self._run(chunk)
                    chunk, rows = [], 0
                chunk.append(item)
                rows += len(item[1])
            self._run(chunk)

    def _run(self, chunk: list[tuple[Any, np.ndarray, asyncio.Future[Any]]]) -> None:
        model = chunk[0][0]
        inputs = chunk[0][1] if len(chunk) == 1 else np.concatenate([c[1] for c in chunk])
        try:
            probs, reg = model.run(inputs)
        except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
            for _, _, future in chunk:
                if not future.done():
                    future.set_exception(exc)
            return
        self.runs += 1
        self.rows += len(inputs)
        start = 0
        for _, x, future in chunk:
            end = start + len(x)
            if not future.done():  # a client that went away cancelled its handler
                future.set_result((probs[start:end], reg[start:end]))
            start = end
