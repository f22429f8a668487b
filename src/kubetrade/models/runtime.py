"""ONNX Runtime sessions for exported graphs, without torch: the model server loads only
this (the export step's parity checks use the same function)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["onnx_session"]


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads when given).

    All graph optimisations, sequential execution (the graph is a chain: inter-op
    parallelism only adds hand-offs), memory pattern and arena on (the defaults; turning
    them off measured no faster at batch 1).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
