"""Integration tests: TorchScript / ONNX export and the parity gate on real market windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from kubetrade.data.sources import load_embedded
from kubetrade.errors import ExportError
from kubetrade.models import HybridCNNLSTM
from kubetrade.training.export import (
    ServingWrapper,
    export_model,
    export_onnx_serving,
    onnx_session,
    verify_parity,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real_windows() -> np.ndarray:
    """300 windows of 20 daily bars of real AAPL data (embedded sample), 5 raw features."""
    df = load_embedded()
    df = df[df["symbol"] == "AAPL"].tail(340)
    close = df["close"].to_numpy()
    features = np.column_stack(
        [
            np.log(close),
            np.r_[0.0, np.diff(np.log(close))],
            (df["high"] - df["low"]).to_numpy() / close,
            np.log1p(df["volume"].to_numpy()),
            df["open"].to_numpy(),
        ]
    ).astype(np.float32)
    windows = np.stack([features[i : i + 20] for i in range(len(features) - 20)])
    return windows[:300]


@pytest.fixture(scope="module")
def model(real_windows: np.ndarray) -> HybridCNNLSTM:
    torch.manual_seed(0)
    net = HybridCNNLSTM(
        5, cnn_hidden_dim=16, filter_sizes=(2, 3, 5), cnn_num_heads=2, lstm_hidden_dim=8,
        fusion_dim=16, fusion_num_heads=2, batch_norm=True,
    )  # fmt: skip
    flat = torch.from_numpy(real_windows).reshape(-1, 5)
    net.set_normalization(flat.mean(0), flat.std(0), target_scale=0.02)
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        net.train()
        for start in range(0, 300, 50):
            net(torch.from_numpy(real_windows[start : start + 50]))
    return net.eval()


def test_torchscript_and_onnx_match_eager(
    tmp_path: Path, model: HybridCNNLSTM, real_windows: np.ndarray
) -> None:
    result = export_model(model, tmp_path, real_windows)
    assert result.n_windows == 300 and result.onnx_exporter in ("torchscript", "dynamo")
    assert result.onnx_serving_path == str(tmp_path / "model_serving.onnx")
    for fmt in ("torchscript", "onnx", "onnx_serving"):
        for output in ("classification", "regression"):
            assert result.max_abs_diff[fmt][output] <= 1e-4
    graph = onnx.load(result.onnx_path)
    assert graph.opset_import[0].version >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # dynamic batch: batch 1 and an odd batch both run and agree with eager
    session = onnx_session(result.onnx_path)
    serving = onnx_session(result.onnx_serving_path)
    scripted = torch.jit.load(result.torchscript_path)
    for batch in (1, 37):
        x = real_windows[:batch]
        with torch.no_grad():
            logits, regression = model.export_forward(torch.from_numpy(x))
            ts_logits, ts_regression = scripted(torch.from_numpy(x))
        for graph in (session, serving):
            ort_logits, ort_regression = graph.run(None, {"input": x})
            assert ort_logits.shape == (batch, 3) and ort_regression.shape == (batch,)
            np.testing.assert_allclose(ort_logits, logits.numpy(), atol=1e-4)
            np.testing.assert_allclose(ort_regression, regression.numpy(), atol=1e-4)
        torch.testing.assert_close(ts_logits, logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ts_regression, regression, atol=1e-5, rtol=1e-5)
    # the exporters must not leave the caller's model in training mode
    assert not model.training


def test_parity_gate_reports_the_measured_difference(
    tmp_path: Path, model: HybridCNNLSTM, real_windows: np.ndarray
) -> None:
    result = export_model(model, tmp_path, real_windows[:8])
    drifted = HybridCNNLSTM(**model.config)
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.fusion.classifier.bias.add_(0.5)  # eager model now differs from the files
    with pytest.raises(ExportError, match=r"max abs diff \{'classification': 0\.5") as info:
        verify_parity(drifted.eval(), real_windows, onnx_path=result.onnx_path)
    assert "tolerance 0.0001" in str(info.value)
    with pytest.raises(ExportError, match="torchscript"):
        verify_parity(drifted.eval(), real_windows, torchscript_path=result.torchscript_path)
    with pytest.raises(ExportError, match="shape"):
        verify_parity(model, real_windows[0], onnx_path=result.onnx_path)


@pytest.mark.slow
def test_dynamo_exporter_fallback_keeps_dynamic_batch(
    tmp_path: Path, model: HybridCNNLSTM, real_windows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = torch.onnx.export

    def legacy_unavailable(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("dynamo") is False:
            raise RuntimeError("legacy exporter removed")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", legacy_unavailable)
    result = export_model(model, tmp_path, real_windows[:150])
    assert result.onnx_exporter == "dynamo"
    assert max(result.max_abs_diff["onnx"].values()) <= 1e-4
    assert max(result.max_abs_diff["onnx_serving"].values()) <= 1e-4


@pytest.mark.parametrize(
    "options",
    [
        {"layer_norm": False},
        {"pooling": "last"},
        {"bidirectional": False, "lstm_num_layers": 3},
        {"filter_sizes": (4, 6), "batch_norm": False},
        {"cnn_hidden_dim": 18, "filter_sizes": (3, 5, 7, 11), "cnn_num_heads": 3},
    ],
    ids=["no_layer_norm", "last_pooling", "unidirectional_3_layers", "even_kernels", "uneven"],
)
def test_serving_graph_matches_eager_across_configs(
    tmp_path: Path, real_windows: np.ndarray, options: dict[str, object]
) -> None:
    """The serving graph folds convolutions, BatchNorm and projections: check the algebra for
    the model options that change it, at batch 128 and a remainder (dynamic batch)."""
    torch.manual_seed(1)
    kwargs: dict[str, object] = {"cnn_hidden_dim": 16, "filter_sizes": (2, 3, 5),
                                 "cnn_num_heads": 2, "lstm_hidden_dim": 8, "fusion_dim": 16,
                                 "fusion_num_heads": 2, "batch_norm": True, **options}  # fmt: skip
    net = HybridCNNLSTM(5, **kwargs)  # type: ignore[arg-type]
    flat = torch.from_numpy(real_windows).reshape(-1, 5)
    net.set_normalization(flat.mean(0), flat.std(0), target_scale=0.02)
    with torch.no_grad():  # non-trivial BatchNorm running statistics where present
        net.train()
        net(torch.from_numpy(real_windows[:100]))
    net.eval()
    path, diffs = export_onnx_serving(net, tmp_path / "serving.onnx", real_windows[:150])
    assert path.is_file() and max(diffs.values()) <= 1e-4


def test_serving_graph_parity_failure_is_loud(
    tmp_path: Path, model: HybridCNNLSTM, real_windows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong fold (here: a shifted logit) stops export_model with the measured difference."""
    forward = ServingWrapper.forward

    def off_by_half(self: ServingWrapper, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, regression = forward(self, x)
        return logits + 0.5, regression

    monkeypatch.setattr(ServingWrapper, "forward", off_by_half)
    with pytest.raises(ExportError, match=r"onnx_serving export is not numerically equal.*0\.5"):
        export_model(model, tmp_path, real_windows[:16])
