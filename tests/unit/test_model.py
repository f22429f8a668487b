"""Unit tests: the hybrid model's shapes and contracts, and the evaluation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kubetrade.config import TrainingConfig
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.models import CNNFeatureExtractor, ExportWrapper, HybridCNNLSTM
from kubetrade.training.callbacks import EarlyStopping
from kubetrade.training.distributed import DistributedContext
from kubetrade.training.evaluation import (
    calmar_ratio,
    max_drawdown,
    sharpe_ratio,
    signal_returns,
    sortino_ratio,
)

torch.set_num_threads(1)

TINY = dict(
    cnn_hidden_dim=16, cnn_num_heads=2, lstm_hidden_dim=8, fusion_dim=16, fusion_num_heads=2
)


@pytest.mark.parametrize(
    "overrides",
    [
        {"filter_sizes": (3, 5, 7, 11)},
        {"filter_sizes": (2, 4), "batch_norm": True},  # even kernels
        {"filter_sizes": (3,), "batch_norm": False, "layer_norm": False},
        {"filter_sizes": (2, 3, 5), "bidirectional": False, "lstm_num_layers": 2},  # 16 = 6+5+5
        {"filter_sizes": (3, 4), "pooling": "last"},
    ],
)
def test_output_shapes(overrides: dict) -> None:
    torch.manual_seed(0)
    model = HybridCNNLSTM(7, **{**TINY, **overrides})
    x = torch.randn(4, 13, 7)
    assert model(x)["classification"].shape == (4, 3)  # train mode
    model.eval()  # attention dropout off: weights are distributions
    out = model(x)
    assert out["classification"].shape == (4, 3)
    assert out["regression"].shape == (4,)
    assert out["features"].shape == (4, 16)
    # attention runs over time: (B, L, L) maps whose rows are distributions
    for key in ("attention_weights", "cnn_attention_weights"):
        assert out[key].shape == (4, 13, 13)
        torch.testing.assert_close(out[key].sum(-1), torch.ones(4, 13))
    assert out["pooling_weights"].shape == (4, 13)
    torch.testing.assert_close(out["pooling_weights"].sum(-1), torch.ones(4))
    logits, regression = model.export_forward(x)
    torch.testing.assert_close(logits, model(x)["classification"])
    torch.testing.assert_close(regression, model(x)["regression"])


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 6, 11])
def test_conv_branches_keep_sequence_length(kernel: int) -> None:
    cnn = CNNFeatureExtractor(3, 8, [kernel], num_heads=2)
    features, weights = cnn(torch.randn(2, 9, 3))
    assert features.shape == (2, 9, 8)
    assert weights is not None and weights.shape == (2, 9, 9)


def test_cnn_channels_sum_to_hidden_dim_when_not_divisible() -> None:
    cnn = CNNFeatureExtractor(3, 10, [3, 5, 7], num_heads=2)
    assert [b[1].out_channels for b in cnn.branches] == [4, 3, 3]


def test_from_config_uses_data_feature_count() -> None:
    cfg = TrainingConfig()  # the guide's defaults: 256 / [3,5,7,11] / BiLSTM 128x2 / fusion 256
    model = HybridCNNLSTM.from_config(cfg.model, n_features=8)
    assert model.n_features == 8
    assert model.cnn.branches[0][1].in_channels == 8
    assert model.lstm.out_dim == 256
    out = model(torch.randn(2, 10, 8), need_weights=False)
    assert out["classification"].shape == (2, 3)
    assert "attention_weights" not in out


def test_guide_keyword_constructor() -> None:
    model = HybridCNNLSTM(
        dropout=0.2, weight_decay=0.01, batch_norm=True, layer_norm=True, gradient_clip=1.0
    )
    assert model.config["cnn_dropout"] == model.config["lstm_dropout"] == 0.2
    assert model.weight_decay == 0.01 and model.gradient_clip == 1.0
    assert isinstance(model.cnn.branches[0][2], torch.nn.BatchNorm1d)
    assert model(torch.randn(2, 12, 5))["regression"].shape == (2,)
    rebuilt = HybridCNNLSTM(**model.config)  # checkpoints rebuild models from .config
    assert rebuilt.config == model.config


def test_bad_head_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fusion_dim"):
        HybridCNNLSTM(4, cnn_hidden_dim=16, cnn_num_heads=2, fusion_dim=10, fusion_num_heads=4)


def test_normalization_buffers_standardise_inside_the_model() -> None:
    torch.manual_seed(0)
    model = HybridCNNLSTM(3, **TINY).eval()
    reference = HybridCNNLSTM(3, **TINY).eval()
    reference.load_state_dict(model.state_dict())
    mean, std = torch.tensor([100.0, -5.0, 1e6]), torch.tensor([10.0, 0.1, 1e5])
    model.set_normalization(mean, std, target_scale=0.02)
    x = torch.randn(3, 11, 3)
    raw = x * std + mean
    out, ref = model(raw), reference(x)
    torch.testing.assert_close(out["classification"], ref["classification"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["regression"], ref["regression"] * 0.02, rtol=1e-4, atol=1e-6)


def test_every_parameter_gets_a_gradient() -> None:
    # DDP needs no unused parameters in the training forward
    for pooling in ("attention", "last"):
        model = HybridCNNLSTM(4, **TINY, filter_sizes=(2, 3), batch_norm=True, pooling=pooling)
        out = model(torch.randn(3, 8, 4), need_weights=False)
        (out["classification"].sum() + out["regression"].sum()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing


def test_export_wrapper_scripts() -> None:
    model = HybridCNNLSTM(4, **TINY, filter_sizes=(2, 3)).eval()
    with pytest.warns(Warning):  # torch.jit is deprecated in torch 2.13 but still works
        scripted = torch.jit.script(ExportWrapper(model))
    x = torch.randn(5, 9, 4)
    torch.testing.assert_close(scripted(x)[0], model(x)["classification"])


# ---------------------------------------------------------------- callbacks
class _FakeTrainer:
    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.stop_training = False
        self.ctx = DistributedContext()


def test_early_stopping_stops_and_restores_best_weights() -> None:
    trainer = _FakeTrainer()
    stopper = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    for epoch, loss in enumerate([1.0, 0.5, 0.7, 0.8, 0.4], start=1):
        trainer.model.weight.data.fill_(float(epoch))
        stopper.on_epoch_end(trainer, epoch, {"val_loss": loss})  # type: ignore[arg-type]
        if trainer.stop_training:
            break
    assert trainer.stop_training and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    stopper.on_train_end(trainer)  # type: ignore[arg-type]
    assert trainer.model.weight.item() == 2.0


def test_early_stopping_maximises_sharpe_and_ignores_nan() -> None:
    trainer = _FakeTrainer()
    stopper = EarlyStopping("val_sharpe_ratio", patience=1)
    assert stopper.mode == "max"
    for epoch, value in enumerate([0.1, 0.3, math.nan], start=1):
        stopper.on_epoch_end(trainer, epoch, {"val_sharpe_ratio": value})  # type: ignore[arg-type]
    assert stopper.best == 0.3 and trainer.stop_training
    with pytest.raises(TrainingError, match="not logged"):
        stopper.on_epoch_end(trainer, 4, {"val_loss": 1.0})  # type: ignore[arg-type]


# ---------------------------------------------------------------- trading metrics
def test_signal_returns_average_symbols_per_timestamp() -> None:
    predicted = np.array([0, 2, 1, 0])  # buy, sell, hold, buy
    forward = np.array([0.01, 0.02, 0.05, -0.01])
    stamps = np.array(
        ["2020-01-02", "2020-01-02", "2020-01-01", "2020-01-01"], dtype="datetime64[D]"
    )
    times, returns = signal_returns(predicted, forward, stamps)
    assert list(times.astype(str)) == ["2020-01-01", "2020-01-02"]
    np.testing.assert_allclose(returns, [(0.0 - 0.01) / 2, (0.01 - 0.02) / 2])


def test_financial_metrics_known_values() -> None:
    returns = np.array([0.1, -0.5, 0.2])
    # equity 1.1 -> 0.55 -> 0.66: worst fall is 50% from the 1.1 peak
    assert max_drawdown(returns) == pytest.approx(-0.5)  # the backtest's sign convention
    r = np.array([0.01, -0.02, 0.03, 0.0])
    assert sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert sortino_ratio(r) == pytest.approx(r.mean() / math.sqrt(0.02**2 / 4) * math.sqrt(252))
    growth = np.prod(1 + r)
    assert calmar_ratio(r) == pytest.approx((growth ** (252 / 4) - 1) / -max_drawdown(r))
    assert sharpe_ratio(np.zeros(5)) == 0.0 and calmar_ratio(np.full(3, 0.01)) == 0.0
