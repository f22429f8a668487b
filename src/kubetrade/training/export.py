"""TorchScript and ONNX export of the hybrid model, with a numerical parity gate.

Both formats take windows ``input`` (batch, L, F) float32 with a dynamic batch axis and
return ``classification`` (batch, 3) logits and ``regression`` (batch,) forward return.
The normalisation buffers are inside the graph, so raw features go in.

ONNX uses the TorchScript-based exporter (``dynamo=False``, opset 17): it handles the
LSTM and ``nn.MultiheadAttention`` and takes ~1 s, where the dynamo exporter takes ~40 s
for the same graph; if the legacy exporter fails we fall back to ``dynamo=True``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubetrade.errors import ExportError
from kubetrade.models import ExportWrapper, HybridCNNLSTM

__all__ = [
    "ExportResult",
    "export_torchscript",
    "export_onnx",
    "verify_parity",
    "export_model",
    "onnx_session",
]

INPUT_NAME = "input"
OUTPUT_NAMES = ("classification", "regression")
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """Paths of the exported files and the measured parity against eager PyTorch."""

    torchscript_path: str
    onnx_path: str
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    n_windows: int = 0
    onnx_exporter: str = "torchscript"
    tolerance: float = DEFAULT_TOLERANCE


def _cpu_eval_copy(model: HybridCNNLSTM) -> HybridCNNLSTM:
    # exporters flip train/eval on the module they get; never touch the caller's model
    return copy.deepcopy(model).to("cpu").eval()


def export_torchscript(model: HybridCNNLSTM, path: str | Path, example: torch.Tensor) -> Path:
    """Save a TorchScript module of :class:`~kubetrade.models.ExportWrapper`.

    ``torch.jit.script`` keeps the batch axis symbolic; if scripting fails the module is
    traced with ``example`` instead (also batch-agnostic for this architecture).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(_cpu_eval_copy(model)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.script(wrapper)
        except Exception:  # noqa: BLE001 - any scripting failure: fall back to tracing
            try:
                module = torch.jit.trace(wrapper, example.detach().cpu().float())
            except Exception as exc:
                raise ExportError(f"TorchScript export failed: {exc}") from exc
        module.save(str(path))
    return path


def export_onnx(
    model: HybridCNNLSTM, path: str | Path, example: torch.Tensor, opset: int = 17
) -> Path:
    """Save an ONNX graph (opset >= 17) with a dynamic batch axis."""
    return _export_onnx(model, path, example, opset)[0]


def _export_onnx(
    model: HybridCNNLSTM, path: str | Path, example: torch.Tensor, opset: int
) -> tuple[Path, str]:
    if opset < 17:
        raise ExportError(f"ONNX opset {opset} is too old; use 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(_cpu_eval_copy(model)).eval()
    example = example.detach().cpu().float()
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=axes,
            )
            exporter = "torchscript"
        except Exception:  # noqa: BLE001 - legacy exporter missing or failing: use dynamo
            try:
                batch = torch.export.Dim("batch", min=1, max=65536)
                # torch.export specialises a size-1 dimension: trace with a batch of 2
                example2 = example if len(example) > 1 else example.repeat(2, 1, 1)
                torch.onnx.export(
                    wrapper,
                    (example2,),
                    str(path),
                    dynamo=True,
                    opset_version=max(opset, 18),
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_shapes=({0: batch},),
                    external_data=False,
                )
                exporter = "dynamo"
            except Exception as exc:
                raise ExportError(f"ONNX export failed with both exporters: {exc}") from exc
    import onnx

    onnx.checker.check_model(str(path))
    return path, exporter


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads when given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _as_array(windows: Any) -> np.ndarray:
    array = np.asarray(getattr(windows, "X", windows), dtype=np.float32)
    if array.ndim != 3 or len(array) == 0:
        raise ExportError(f"parity needs windows of shape (N, L, F) with N > 0, got {array.shape}")
    return array


def verify_parity(
    model: HybridCNNLSTM,
    windows: Any,
    torchscript_path: str | Path | None = None,
    onnx_path: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_windows: int = 512,
    batch_size: int = 128,
) -> dict[str, dict[str, float]]:
    """Compare exported outputs with eager PyTorch on up to ``max_windows`` real windows.

    Batches of ``batch_size`` (and the remainder) exercise the dynamic batch axis.

    Returns:
        ``{"torchscript": {"classification": diff, "regression": diff}, "onnx": {...}}``.

    Raises:
        ExportError: a max absolute difference exceeds ``tolerance`` (message has the value).
    """
    data = _as_array(windows)[:max_windows]
    eager = _cpu_eval_copy(model)
    diffs: dict[str, dict[str, float]] = {}
    runners: dict[str, Any] = {}
    if torchscript_path is not None:
        scripted = torch.jit.load(str(torchscript_path), map_location="cpu").eval()
        runners["torchscript"] = lambda x: [t.numpy() for t in scripted(torch.from_numpy(x))]
    if onnx_path is not None:
        session = onnx_session(onnx_path)
        runners["onnx"] = lambda x: session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    with torch.no_grad():
        for name, run in runners.items():
            worst = {key: 0.0 for key in OUTPUT_NAMES}
            for start in range(0, len(data), batch_size):
                chunk = data[start : start + batch_size]
                reference = [t.numpy() for t in eager.export_forward(torch.from_numpy(chunk))]
                for key, got, want in zip(OUTPUT_NAMES, run(chunk), reference, strict=True):
                    got = np.asarray(got)
                    if got.shape != want.shape:
                        raise ExportError(
                            f"{name} {key} has shape {got.shape}, eager has {want.shape}"
                        )
                    worst[key] = max(worst[key], float(np.max(np.abs(got - want))))
            diffs[name] = worst
            bad = {k: v for k, v in worst.items() if not v <= tolerance}
            if bad:
                raise ExportError(
                    f"{name} export is not numerically equal to eager PyTorch: max abs diff "
                    f"{bad} > tolerance {tolerance:g} on {len(data)} windows"
                )
    return diffs


def export_model(
    model: HybridCNNLSTM,
    out_dir: str | Path,
    windows: Any,
    tolerance: float = DEFAULT_TOLERANCE,
    max_windows: int = 512,
    opset: int = 17,
) -> ExportResult:
    """Export ``model.pt`` (TorchScript) and ``model.onnx`` to ``out_dir`` and check parity."""
    out = Path(out_dir)
    data = _as_array(windows)
    example = torch.from_numpy(data[:1])  # batch 1: the legacy LSTM export is safest so
    ts_path = export_torchscript(model, out / "model.pt", example)
    onnx_path, exporter = _export_onnx(model, out / "model.onnx", example, opset)
    diffs = verify_parity(model, data, ts_path, onnx_path, tolerance, max_windows)
    return ExportResult(
        str(ts_path), str(onnx_path), diffs, min(len(data), max_windows), exporter, tolerance
    )
