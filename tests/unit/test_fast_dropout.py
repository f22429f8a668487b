"""The CPU training dropout (kubetrade.models.fast_dropout): distribution, parity, scope."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from kubetrade.models import HybridCNNLSTM
from kubetrade.models import fast_dropout as fd


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_mask_is_bernoulli_with_unbiased_scale(p: float) -> None:
    torch.manual_seed(0)
    mask = fd.dropout_mask((1000, 1000), p, torch.float32)
    dropped = (mask == 0).float().mean().item()
    # 1e6 samples: the standard error of the drop rate is <= 5e-4
    assert abs(dropped - p) < 3e-3
    assert abs(mask.mean().item() - 1.0) < 5e-3  # E[mask] = 1: the expectation is kept
    values = torch.unique(mask).tolist()
    assert len(values) == 2 and values[0] == 0.0
    assert values[1] == pytest.approx(1 / (1 - p), rel=1e-4)
    # neighbouring elements (chunks of one 64-bit draw) are not correlated
    flat = (mask.flatten() == 0).float()
    corr = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()
    assert abs(corr) < 5e-3


def test_mask_follows_torch_seed_and_generator_state() -> None:
    torch.manual_seed(3)
    a = fd.dropout_mask((7, 13), 0.1, torch.float32)
    state = torch.get_rng_state()
    b = fd.dropout_mask((7, 13), 0.1, torch.float32)
    torch.manual_seed(3)
    assert torch.equal(fd.dropout_mask((7, 13), 0.1, torch.float32), a)
    torch.set_rng_state(state)  # what a resumed snapshot restores
    assert torch.equal(fd.dropout_mask((7, 13), 0.1, torch.float32), b)
    assert fd.dropout_mask((2, 3), 0.1, torch.bfloat16).dtype == torch.bfloat16


def test_only_cpu_training_with_representable_p() -> None:
    x = torch.zeros(3)
    assert fd.fast_dropout_applies(x, 0.1)
    assert not fd.fast_dropout_applies(x, 0.0)
    assert not fd.fast_dropout_applies(x, 1e-7)  # below 16-bit resolution: PyTorch's dropout
    assert not fd.fast_dropout_applies(x, 1.0)
    drop = fd.FastDropout(1e-7).train()
    assert drop(torch.ones(10)).shape == (10,)
    assert torch.equal(fd.FastDropout(0.5).eval()(torch.ones(4)), torch.ones(4))


def _ones_mask(shape: Any, p: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_matches_pytorch_when_nothing_is_dropped(
    monkeypatch: pytest.MonkeyPatch, cross: bool, need_weights: bool
) -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, dropout=0.1, batch_first=True)
    query = torch.randn(3, 7, 16)
    memory = torch.randn(3, 5, 16) if cross else query
    monkeypatch.setattr(fd, "dropout_mask", _ones_mask)
    assert fd.attention_fast_dropout_applies(attn.train(), query)
    out, weights = fd.attention_with_fast_dropout(attn, query, memory, memory, need_weights)
    ref, ref_weights = attn.eval()(query, memory, memory, need_weights=need_weights)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    if need_weights:
        assert weights is not None and ref_weights is not None
        torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)
    else:
        assert weights is None


def test_model_training_path_is_the_eval_function_without_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every mask all-ones, the training forward (fast attention and dropout modules)
    computes exactly the eval forward (PyTorch's modules)."""
    torch.manual_seed(0)
    model = HybridCNNLSTM(n_features=5, cnn_hidden_dim=16, filter_sizes=(3, 5), cnn_num_heads=4,
                          lstm_hidden_dim=8, lstm_dropout=0.3, cnn_dropout=0.3, fusion_dim=16,
                          fusion_num_heads=4)  # fmt: skip
    x = torch.randn(4, 12, 5)
    monkeypatch.setattr(fd, "dropout_mask", _ones_mask)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    for key in ("classification", "regression", "attention_weights"):
        torch.testing.assert_close(train_out[key], eval_out[key], rtol=1e-5, atol=1e-6)
    (train_out["classification"].sum() + train_out["regression"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_training_forward_drops_and_is_seeded() -> None:
    model = HybridCNNLSTM(n_features=5, cnn_hidden_dim=16, filter_sizes=(3, 5), cnn_num_heads=4,
                          lstm_hidden_dim=8, lstm_dropout=0.3, cnn_dropout=0.3, fusion_dim=16,
                          fusion_num_heads=4).train()  # fmt: skip
    x = torch.randn(4, 12, 5)
    torch.manual_seed(1)
    a = model(x)["classification"]
    torch.manual_seed(1)
    b = model(x)["classification"]
    c = model(x)["classification"]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_stacked_lstm_matches_pytorch_when_nothing_is_dropped(
    monkeypatch: pytest.MonkeyPatch, bidirectional: bool
) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5, num_layers=3, dropout=0.2, bidirectional=bidirectional,
                   batch_first=True)  # fmt: skip
    x = torch.randn(4, 9, 6, requires_grad=True)
    monkeypatch.setattr(fd, "dropout_mask", _ones_mask)
    assert fd.lstm_fast_dropout_applies(lstm.train(), x)
    out = fd.lstm_with_fast_dropout(lstm, x)
    ref = lstm.eval()(x)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in lstm.parameters())
    assert not fd.lstm_fast_dropout_applies(nn.LSTM(6, 5, num_layers=1).train(), x)
