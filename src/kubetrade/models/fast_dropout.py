"""Dropout for CPU training without ``bernoulli_``'s cost.

PyTorch's CPU dropout draws one Bernoulli sample per element with ``bernoulli_``, one
32-bit Mersenne-Twister draw each. In the hybrid model's training step that is ~2.8 M
samples per batch of 32 (attention weights dominate: B x heads x L x L, twice), and
profiling put ``aten::bernoulli_`` at 19% of a bf16 step on a Xeon with AMX (2 threads) and
39% with 16 threads — more than the BiLSTM. Here a mask costs one 64-bit draw of the same
generator per *four* elements: each element is kept when its 16-bit chunk falls below
``round((1 - p) * 65536)``, and kept values are scaled by ``65536 / that`` so the
expectation is exactly the input. The drop probability is ``p`` to within 2^-17; the draws
come from torch's default generator, so ``torch.manual_seed`` and the trainer's snapshots
(which save that generator's state) make runs reproducible and resumable as before.

It is used only where it pays and is safe: training, on the CPU, outside ``torch.compile``
(inductor generates its own masks) and outside TorchScript. Eval mode, exports and CUDA
(whose fused dropout kernel is fast) run PyTorch's own modules unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_RESOLUTION = 1 << 16


def _keep_threshold(p: float) -> int:
    """Kept 16-bit values out of 65536; 0 or 65536 when ``p`` is within 2^-17 of 1 or 0."""
    return round((1.0 - p) * _RESOLUTION)


def fast_dropout_applies(x: Tensor, p: float) -> bool:
    """Whether :func:`fast_dropout` should replace ``F.dropout`` for this tensor."""
    keep = _keep_threshold(p)  # unrepresentable p: PyTorch's own dropout
    return 0 < keep < _RESOLUTION and x.device.type == "cpu" and not torch.compiler.is_compiling()


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """A CPU tensor of ``shape``: 0 with probability ~``p``, else ``1 / P(keep)``."""
    n = math.prod(shape)
    keep = _keep_threshold(p)
    if not 0 < keep < _RESOLUTION:
        raise ValueError(f"dropout probability {p} is too close to 0 or 1 for a 16-bit mask")
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    chunks = words.view(torch.int16)[:n]  # signed 16-bit: uniform on [-32768, 32767]
    kept = chunks < keep - _RESOLUTION // 2
    return kept.to(dtype).mul_(_RESOLUTION / keep).view(shape)


def fast_dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout of a CPU tensor with :func:`dropout_mask`."""
    return x * dropout_mask(x.shape, p, x.dtype)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training path uses :func:`fast_dropout` (same state, same
    eval behaviour, scriptable)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Dropout's signature
        if not torch.jit.is_scripting():  # TorchScript does not compile this block
            return dropout(input, self.p, self.training, self.inplace)
        return F.dropout(input, self.p, self.training, self.inplace)


def dropout(x: Tensor, p: float, training: bool, inplace: bool = False) -> Tensor:
    """``F.dropout`` with :func:`fast_dropout` where it applies."""
    if training and fast_dropout_applies(x, p):
        return fast_dropout(x, p)
    return F.dropout(x, p, training, inplace)


def attention_fast_dropout_applies(attn: nn.MultiheadAttention, query: Tensor) -> bool:
    """Whether :func:`attention_with_fast_dropout` can stand in for ``attn(...)``: training,
    CPU, batch_first, packed projections, no bias_k/v or zero attention (masks are not
    passed by this model)."""
    return (
        attn.training
        and fast_dropout_applies(query, attn.dropout)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


def attention_with_fast_dropout(
    attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """``attn(query, key, value, need_weights=need_weights)`` in training mode, with the
    attention-weight dropout drawn by :func:`dropout_mask`.

    Same parameters and the same arithmetic as ``F.multi_head_attention_forward``'s math
    path (packed in-projection, ``q / sqrt(head_dim)``, softmax, dropout on the weights,
    out-projection); returned weights are the dropped-out ones averaged over heads, as
    PyTorch returns them.
    """
    batch, q_len, embed = query.shape
    k_len, heads = key.shape[1], attn.num_heads
    head_dim = embed // heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if query is key and key is value:
        q, k, v = F.linear(query, weight, bias).chunk(3, dim=-1)
    else:
        b_q, b_kv = (None, None) if bias is None else (bias[:embed], bias[embed:])
        q = F.linear(query, weight[:embed], b_q)
        if key is value:  # cross-attention over one memory: one GEMM for keys and values
            k, v = F.linear(key, weight[embed:], b_kv).chunk(2, dim=-1)
        else:
            b_k, b_v = (None, None) if b_kv is None else b_kv.chunk(2)
            w_k, w_v = weight[embed:].chunk(2)
            k, v = F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
    q = q.reshape(batch, q_len, heads, head_dim).transpose(1, 2)
    k = k.reshape(batch, k_len, heads, head_dim).transpose(1, 2)
    v = v.reshape(batch, k_len, heads, head_dim).transpose(1, 2)
    scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)  # (B, H, L, S)
    weights = torch.softmax(scores, dim=-1)
    weights = weights * dropout_mask(weights.shape, attn.dropout, weights.dtype)
    out = (weights @ v).transpose(1, 2).reshape(batch, q_len, embed)
    out = attn.out_proj(out)
    return out, weights.mean(dim=1) if need_weights else None


def multihead_attention(
    attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """``attn(query, key, value, need_weights=...)``, through
    :func:`attention_with_fast_dropout` where it applies."""
    if attention_fast_dropout_applies(attn, query):
        return attention_with_fast_dropout(attn, query, key, value, need_weights)
    return attn(query, key, value, need_weights=need_weights)


def lstm_fast_dropout_applies(lstm: nn.LSTM, x: Tensor) -> bool:
    """Whether :func:`lstm_with_fast_dropout` can stand in for ``lstm(x)``: training, CPU,
    stacked layers with inter-layer dropout, no projection."""
    return (
        lstm.training
        and lstm.num_layers > 1
        and lstm.proj_size == 0
        and fast_dropout_applies(x, lstm.dropout)
    )


def lstm_with_fast_dropout(lstm: nn.LSTM, x: Tensor) -> Tensor:
    """``lstm(x)[0]`` in training mode from zero initial states, one layer at a time with
    the inter-layer dropout drawn by :func:`dropout_mask` (same kernels, same parameters)."""
    dirs = 2 if lstm.bidirectional else 1
    batch = x.shape[0] if lstm.batch_first else x.shape[1]
    zeros = torch.zeros(dirs, batch, lstm.hidden_size, dtype=x.dtype, device=x.device)
    per_layer = (4 if lstm.bias else 2) * dirs
    weights: list[Tensor] = [w for w in lstm._flat_weights if w is not None]
    out = x
    for layer in range(lstm.num_layers):
        params = weights[layer * per_layer : (layer + 1) * per_layer]
        out = torch._VF.lstm(
            out, (zeros, zeros), params, lstm.bias, 1, 0.0, True, lstm.bidirectional,
            lstm.batch_first,
        )[0]  # fmt: skip
        if layer < lstm.num_layers - 1:
            out = fast_dropout(out, lstm.dropout)
    return out


def lstm_output(lstm: nn.LSTM, x: Tensor) -> Tensor:
    """``lstm(x)[0]``, through :func:`lstm_with_fast_dropout` where it applies."""
    if lstm_fast_dropout_applies(lstm, x):
        return lstm_with_fast_dropout(lstm, x)
    return lstm(x)[0]
