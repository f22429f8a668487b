"""TorchScript and ONNX export of the hybrid model, with a numerical parity gate.

Both formats take windows ``input`` (batch, L, F) float32 with a dynamic batch axis and
return ``classification`` (batch, 3) logits and ``regression`` (batch,) forward return.
The normalisation buffers are inside the graph, so raw features go in.

ONNX uses the TorchScript-based exporter (``dynamo=False``, opset 17): it handles the
LSTM and ``nn.MultiheadAttention`` and takes ~1 s, where the dynamo exporter takes ~40 s
for the same graph; if the legacy exporter fails we fall back to ``dynamo=True``.

:func:`export_onnx_serving` writes a second, latency-oriented ONNX graph of the same
function (same input and outputs, parity-checked against eager PyTorch): eval-mode
algebra is precomputed once (the four conv branches and their BatchNorm become one
convolution, the fusion's ``lstm_proj`` is folded into the cross-attention key/value
projection) and attention is written with static head shapes, so ONNX Runtime runs no
shape arithmetic per call. :func:`onnx_session` builds the tuned CPU session.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kubetrade.errors import ExportError
from kubetrade.models import ExportWrapper, FeatureFusion, HybridCNNLSTM, LSTMTemporalProcessor
from kubetrade.models.runtime import onnx_session

__all__ = [
    "ExportResult",
    "export_torchscript",
    "export_onnx",
    "verify_parity",
    "export_model",
    "export_onnx_serving",
    "onnx_session",
    "ServingWrapper",
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
    #: the latency-oriented graph (:func:`export_onnx_serving`), when exported
    onnx_serving_path: str | None = None

    def files(self) -> dict[str, str]:
        """Exported files by format: ``torchscript``, ``onnx`` and ``onnx_serving``."""
        files = {"torchscript": self.torchscript_path, "onnx": self.onnx_path}
        if self.onnx_serving_path is not None:
            files["onnx_serving"] = self.onnx_serving_path
        return files


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
    return _export_onnx_module(ExportWrapper(_cpu_eval_copy(model)).eval(), path, example, opset)


def _export_onnx_module(
    wrapper: nn.Module, path: str | Path, example: torch.Tensor, opset: int
) -> tuple[Path, str]:
    """``wrapper`` (windows -> logits, regression) to ONNX: the TorchScript-based exporter,
    else dynamo; checked with ``onnx.checker``. Returns the path and the exporter used."""
    if opset < 17:
        raise ExportError(f"ONNX opset {opset} is too old; use 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
                raise ExportError(
                    f"ONNX export of {path.name} failed with both exporters: {exc}"
                ) from exc
    import onnx

    onnx.checker.check_model(str(path))
    return path, exporter


class ServingWrapper(nn.Module):
    """Eval-mode :meth:`HybridCNNLSTM.export_forward` with inference-time algebra precomputed.

    Same function as the model in ``eval()`` (differences are float rounding, ~1e-7), fewer
    FLOPs and far fewer graph nodes:

    * the conv branches (each ``pad -> conv -> [BatchNorm] -> ReLU``) become one convolution
      with the largest kernel: smaller kernels are zero-extended at their offset and eval
      BatchNorm is folded into the weights;
    * the fusion's ``lstm_proj`` feeds only the cross-attention key/value projection, so the
      two affine maps are multiplied once (saves one ``L x d x d`` matmul per window);
    * the three affine maps of the CNN features (LSTM skip connection, ``cnn_proj`` and the
      cross-attention query projection composed with it) run as one GEMM;
    * attention uses fixed head shapes and a constant softmax scale (no Shape/Gather/Sqrt
      nodes in the exported graph).

    Built from a copy of ``model``; later changes to ``model`` are not seen.
    """

    input_mean: Tensor
    input_std: Tensor
    target_scale: Tensor
    conv_weight: Tensor
    conv_bias: Tensor
    kv_weight: Tensor
    kv_bias: Tensor
    cnn_weight: Tensor
    cnn_bias: Tensor

    def __init__(self, model: HybridCNNLSTM) -> None:
        super().__init__()
        model = _cpu_eval_copy(model)
        cnn, lstm, fusion = model.cnn, model.lstm, model.fusion
        self.register_buffer("input_mean", model.input_mean.clone())
        self.register_buffer("input_std", model.input_std.clone())
        self.register_buffer("target_scale", model.target_scale.clone())
        weight, bias, self.pad = self._merged_conv(cnn.branches)
        self.register_buffer("conv_weight", weight)
        self.register_buffer("conv_bias", bias)
        self.cnn_attention, self.cnn_norm = cnn.attention, cnn.norm
        self.cnn_residual = cnn.residual
        self.lstm, self.lstm_norm = lstm.lstm, lstm.norm
        self.cross_attention = fusion.cross_attention
        self.fusion_norm, self.fusion_residual = fusion.norm, fusion.residual
        self.pooling, self.pool_score = fusion.pooling, fusion.pool_score
        self.classifier, self.regressor = fusion.classifier, fusion.regressor
        self._fold_projections(lstm, fusion)
        self.requires_grad_(False)

    def _fold_projections(self, lstm: LSTMTemporalProcessor, fusion: FeatureFusion) -> None:
        """Compose the affine maps around the fusion in float64 (see the class docstring)."""
        attn = fusion.cross_attention
        assert attn.in_proj_weight is not None and attn.in_proj_bias is not None
        dim = attn.embed_dim
        w_q, b_q = attn.in_proj_weight[:dim].double(), attn.in_proj_bias[:dim].double()
        w_kv, b_kv = attn.in_proj_weight[dim:].double(), attn.in_proj_bias[dim:].double()
        # k/v = W_kv (W_p m + b_p) + b_kv = (W_kv W_p) m + (W_kv b_p + b_kv)
        w_p, b_p = fusion.lstm_proj.weight.double(), fusion.lstm_proj.bias.double()
        self.register_buffer("kv_weight", (w_kv @ w_p).float())
        self.register_buffer("kv_bias", (w_kv @ b_p + b_kv).float())
        # one GEMM on the CNN features: LSTM skip, fusion query and its attention projection
        w_s, b_s = lstm.skip_connection.weight.double(), lstm.skip_connection.bias.double()
        w_c, b_c = fusion.cnn_proj.weight.double(), fusion.cnn_proj.bias.double()
        self.register_buffer("cnn_weight", torch.cat([w_s, w_c, w_q @ w_c]).float())
        self.register_buffer("cnn_bias", torch.cat([b_s, b_c, w_q @ b_c + b_q]).float())
        self.cnn_split = [w_s.shape[0], w_c.shape[0], dim]

    @staticmethod
    def _merged_conv(branches: nn.ModuleList) -> tuple[Tensor, Tensor, tuple[int, int]]:
        sequences = [cast(nn.Sequential, branch) for branch in branches]
        convs = [cast(nn.Conv1d, branch[1]) for branch in sequences]
        norms = [branch[2] for branch in sequences]
        kernel = max(int(conv.kernel_size[0]) for conv in convs)
        left = (kernel - 1) // 2
        weights, biases = [], []
        for conv, norm in zip(convs, norms, strict=True):
            k = int(conv.kernel_size[0])
            w = conv.weight.double()
            b = conv.bias.double() if conv.bias is not None else w.new_zeros(w.shape[0])
            if isinstance(norm, nn.BatchNorm1d):
                assert norm.running_mean is not None and norm.running_var is not None
                scale = norm.running_var.double().add(norm.eps).rsqrt()
                if norm.weight is not None:
                    scale = scale * norm.weight.double()
                shift = norm.bias.double() if norm.bias is not None else torch.zeros_like(b)
                b = (b - norm.running_mean.double()) * scale + shift
                w = w * scale[:, None, None]
            offset = left - (k - 1) // 2  # branch taps t-left_k..t+right_k inside t-left..
            full = w.new_zeros(w.shape[0], w.shape[1], kernel)
            full[:, :, offset : offset + k] = w
            weights.append(full)
            biases.append(b)
        return (
            torch.cat(weights).float(),
            torch.cat(biases).float(),
            (left, kernel - 1 - left),
        )

    @staticmethod
    def _heads(attn: nn.MultiheadAttention, out: Tensor, length: int) -> Tensor:
        """Merge heads (B, H, L, d) and apply the output projection."""
        return attn.out_proj(out.transpose(1, 2).reshape(-1, length, attn.embed_dim))

    def _self_attend(self, attn: nn.MultiheadAttention, seq: Tensor) -> Tensor:
        assert attn.in_proj_weight is not None and attn.in_proj_bias is not None
        heads, length = attn.num_heads, seq.shape[1]
        head = attn.embed_dim // heads
        qkv = F.linear(seq, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.reshape(-1, length, 3, heads, head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=float(head) ** -0.5)
        return self._heads(attn, out, length)

    def _cross_attend(self, attn: nn.MultiheadAttention, q: Tensor, kv: Tensor) -> Tensor:
        """Attention from projected queries ``q`` (B, L, E) and keys/values ``kv`` (B, S, 2E)."""
        dim, heads, length = attn.embed_dim, attn.num_heads, q.shape[1]
        head = dim // heads
        q = q.reshape(-1, length, heads, head).transpose(1, 2)
        k, v = kv.reshape(-1, kv.shape[1], 2, heads, head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=float(head) ** -0.5)
        return self._heads(attn, out, length)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = (x - self.input_mean) / self.input_std
        conv = F.conv1d(F.pad(x.transpose(1, 2), self.pad), self.conv_weight, self.conv_bias)
        seq = torch.relu(conv).transpose(1, 2)
        attended = self._self_attend(self.cnn_attention, seq)
        cnn = self.cnn_norm(seq + attended) if self.cnn_residual else attended
        lstm_out, _ = self.lstm(cnn)
        skip, query, q = F.linear(cnn, self.cnn_weight, self.cnn_bias).split(self.cnn_split, -1)
        lstm = self.lstm_norm(lstm_out + skip)
        kv = F.linear(lstm, self.kv_weight, self.kv_bias)
        attended = self._cross_attend(self.cross_attention, q, kv)
        fused = self.fusion_norm(query + attended) if self.fusion_residual else attended
        if self.pooling == "attention":
            pool = torch.softmax(self.pool_score(fused).squeeze(-1), dim=1)
            pooled = torch.bmm(pool.unsqueeze(1), fused).squeeze(1)
        else:
            pooled = fused[:, -1]
        return self.classifier(pooled), self.regressor(pooled).squeeze(-1) * self.target_scale


def export_onnx_serving(
    model: HybridCNNLSTM,
    path: str | Path,
    windows: Any,
    opset: int = 17,
    tolerance: float = DEFAULT_TOLERANCE,
    max_windows: int = 512,
) -> tuple[Path, dict[str, float]]:
    """Save the :class:`ServingWrapper` graph (same input/outputs as :func:`export_onnx`).

    The graph is parity-checked against the eager model on up to ``max_windows`` of
    ``windows`` (batch 128 and the remainder); returns the path and the max abs diffs.

    Raises:
        ExportError: export failed or a difference exceeds ``tolerance``.
    """
    data = _as_array(windows)
    path = _export_serving(model, path, torch.from_numpy(data[:1]), opset)
    diffs = verify_parity(
        model, data, onnx_serving_path=path, tolerance=tolerance, max_windows=max_windows
    )
    return path, diffs["onnx_serving"]


def _export_serving(
    model: HybridCNNLSTM, path: str | Path, example: torch.Tensor, opset: int
) -> Path:
    return _export_onnx_module(ServingWrapper(model).eval(), path, example, opset)[0]


def _as_array(windows: Any) -> np.ndarray:
    array = np.asarray(getattr(windows, "X", windows), dtype=np.float32)
    if array.ndim != 3 or len(array) == 0:
        raise ExportError(f"parity needs windows of shape (N, L, F) with N > 0, got {array.shape}")
    return array


def _run_session(session: Any, x: np.ndarray) -> list[np.ndarray]:
    return list(session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}))


def verify_parity(
    model: HybridCNNLSTM,
    windows: Any,
    torchscript_path: str | Path | None = None,
    onnx_path: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_windows: int = 512,
    batch_size: int = 128,
    onnx_serving_path: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Compare exported outputs with eager PyTorch on up to ``max_windows`` real windows.

    Batches of ``batch_size`` (and the remainder) exercise the dynamic batch axis.

    Returns:
        ``{"torchscript": {"classification": diff, "regression": diff}, "onnx": {...}}``
        (and ``"onnx_serving"``), one entry per file given.

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
    for name, path in (("onnx", onnx_path), ("onnx_serving", onnx_serving_path)):
        if path is not None:
            session = onnx_session(path)
            runners[name] = partial(_run_session, session)
    chunks = [data[start : start + batch_size] for start in range(0, len(data), batch_size)]
    with torch.no_grad():  # eager outputs once, shared by every exported file
        references = [
            [t.numpy() for t in eager.export_forward(torch.from_numpy(chunk))] for chunk in chunks
        ]
        for name, run in runners.items():
            worst = {key: 0.0 for key in OUTPUT_NAMES}
            for chunk, reference in zip(chunks, references, strict=True):
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
    serving: bool = True,
) -> ExportResult:
    """Export ``model.pt`` (TorchScript), ``model.onnx`` and, with ``serving``,
    ``model_serving.onnx`` (:func:`export_onnx_serving`: same function, ~2x faster in ONNX
    Runtime at batch 1) to ``out_dir``; every file is parity-checked against eager PyTorch.

    Raises:
        ExportError: an exporter failed, or a file's outputs differ by more than ``tolerance``.
    """
    out = Path(out_dir)
    data = _as_array(windows)
    example = torch.from_numpy(data[:1])  # batch 1: the legacy LSTM export is safest so
    ts_path = export_torchscript(model, out / "model.pt", example)
    onnx_path, exporter = _export_onnx(model, out / "model.onnx", example, opset)
    serving_path = (
        _export_serving(model, out / "model_serving.onnx", example, opset) if serving else None
    )
    diffs = verify_parity(model, data, ts_path, onnx_path, tolerance, max_windows,
                          onnx_serving_path=serving_path)  # fmt: skip
    return ExportResult(
        str(ts_path), str(onnx_path), diffs, min(len(data), max_windows), exporter, tolerance,
        None if serving_path is None else str(serving_path),
    )  # fmt: skip
