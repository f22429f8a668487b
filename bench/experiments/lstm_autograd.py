"""Experiment: can a hand-written BiLSTM beat PyTorch's oneDNN LSTM in a CPU training step?

Half of a training sample's FLOPs are the model's 2-layer BiLSTM (docs/benchmarks.md). This
script implements one bidirectional layer as a ``torch.autograd.Function`` laid out the way
cuDNN-style kernels are: time-major input, one GEMM for both directions' input projections,
both directions' recurrences in one ``bmm`` per step, gate activations saved for the
backward pass, and the weight gradients as three large GEMMs after the reverse loop. It
checks float64 parity with ``nn.LSTM`` (outputs and every gradient), then times forward +
backward of the guide-sized stack (256 -> 128 x 2 layers, bidirectional, 60 steps) against
``nn.LSTM``, interleaved.

    python bench/experiments/lstm_autograd.py [--batch 32] [--repeats 8]

Result on the dev box (2 AVX2 cores, 2026-11-26): parity 1.8e-15; oneDNN is faster —
b32: 94 ms best / 99 ms median vs 121 / 127 ms hand-written (1.28x); b256: 893 / 1002 ms vs
1275 / 1374 ms (1.43x). The model keeps ``nn.LSTM``. Numbers go to stdout only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class BiLSTMLayer(torch.autograd.Function):
    """One bidirectional LSTM layer from zero states: x (T, B, I) -> (T, B, 2H).

    ``w_ih`` (8H, I) is [forward; backward], ``w_hh`` (2, 4H, H), ``bias`` (8H) is
    b_ih + b_hh; gate order i, f, g, o as in ``nn.LSTM``. Internally "slot" 1 (the backward
    direction) runs over reversed time, so step t of the loop serves both directions.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor) -> Tensor:
        steps, batch, n_in = x.shape
        hidden = w_hh.shape[2]
        gates_x = torch.addmm(bias, x.reshape(steps * batch, n_in), w_ih.t())
        gates_x = gates_x.view(steps, batch, 2, 4 * hidden)
        pre = torch.empty(steps, 2, batch, 4 * hidden, dtype=x.dtype)
        pre[:, 0].copy_(gates_x[:, :, 0])
        pre[:, 1].copy_(gates_x.flip(0)[:, :, 1])
        acts = torch.empty_like(pre)
        cells = torch.zeros(steps + 1, 2, batch, hidden, dtype=x.dtype)  # cells[t + 1] = c_t
        tanh_c = torch.empty(steps, 2, batch, hidden, dtype=x.dtype)
        hs = torch.zeros(steps + 1, 2, batch, hidden, dtype=x.dtype)  # hs[t + 1] = h_t
        w_hh_t = w_hh.transpose(1, 2)
        g_slice = slice(2 * hidden, 3 * hidden)
        for t in range(steps):
            gates = torch.baddbmm(pre[t], hs[t], w_hh_t)
            act = acts[t]
            torch.sigmoid(gates, out=act)
            torch.tanh(gates[..., g_slice], out=act[..., g_slice])
            cell = cells[t + 1]
            torch.mul(act[..., hidden : 2 * hidden], cells[t], out=cell)
            cell.addcmul_(act[..., :hidden], act[..., g_slice])
            torch.tanh(cell, out=tanh_c[t])
            torch.mul(act[..., 3 * hidden :], tanh_c[t], out=hs[t + 1])
        out = torch.empty(steps, batch, 2 * hidden, dtype=x.dtype)
        out[:, :, :hidden].copy_(hs[1:, 0])
        out[:, :, hidden:].copy_(hs[1:, 1].flip(0))
        ctx.save_for_backward(x, w_ih, w_hh, acts, cells, tanh_c, hs)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, w_ih, w_hh, acts, cells, tanh_c, hs = ctx.saved_tensors
        steps, batch, n_in = x.shape
        hidden = w_hh.shape[2]
        gate = acts.view(steps, 2, batch, 4, hidden)
        i, f, g, o = gate.unbind(3)
        # per-step factors as four large elementwise ops instead of ~15 small ones per step
        dc_from_h = o * (1 - tanh_c * tanh_c)
        ifg_factor = torch.stack((g * i * (1 - i), cells[:-1] * f * (1 - f), i * (1 - g * g)), 3)
        o_factor = tanh_c * o * (1 - o)
        grad_h = torch.empty(steps, 2, batch, hidden, dtype=x.dtype)
        grad_h[:, 0].copy_(grad_out[:, :, :hidden])
        grad_h[:, 1].copy_(grad_out[:, :, hidden:].flip(0))
        grad_pre = torch.empty(steps, 2, batch, 4, hidden, dtype=x.dtype)
        dc = torch.zeros(2, batch, hidden, dtype=x.dtype)
        dh = grad_h[steps - 1]
        for t in range(steps - 1, -1, -1):
            dc.addcmul_(dh, dc_from_h[t])
            d = grad_pre[t]
            torch.mul(ifg_factor[t], dc.unsqueeze(2), out=d[:, :, :3])
            torch.mul(dh, o_factor[t], out=d[:, :, 3])
            if t:
                dc.mul_(f[t])
                dh = torch.baddbmm(grad_h[t - 1], d.view(2, batch, 4 * hidden), w_hh)
        grad_pre = grad_pre.view(steps, 2, batch, 4 * hidden)
        per_dir = grad_pre.transpose(0, 1).reshape(2, steps * batch, 4 * hidden)
        h_prev = hs[:-1].transpose(0, 1).reshape(2, steps * batch, hidden)
        grad_w_hh = torch.bmm(per_dir.transpose(1, 2), h_prev)
        grad_x_gates = torch.empty(steps, batch, 2, 4 * hidden, dtype=x.dtype)
        grad_x_gates[:, :, 0].copy_(grad_pre[:, 0])
        grad_x_gates[:, :, 1].copy_(grad_pre[:, 1].flip(0))
        flat = grad_x_gates.view(steps * batch, 8 * hidden)
        grad_w_ih = flat.t() @ x.reshape(steps * batch, n_in)
        grad_x = (flat @ w_ih).view(steps, batch, n_in)
        return grad_x, grad_w_ih, grad_w_hh, flat.sum(0)


def handwritten_lstm(lstm: nn.LSTM, x: Tensor) -> Tensor:
    """``lstm(x)[0]`` for a batch-first, bidirectional, dropout-free ``nn.LSTM``."""
    out = x.transpose(0, 1).contiguous()
    for layer in range(lstm.num_layers):

        def param(name: str, reverse: bool, layer: int = layer) -> Tensor:
            return getattr(lstm, f"{name}_l{layer}{'_reverse' if reverse else ''}")  # type: ignore[no-any-return]

        w_ih = torch.cat([param("weight_ih", False), param("weight_ih", True)])
        w_hh = torch.stack([param("weight_hh", False), param("weight_hh", True)])
        bias = torch.cat([param("bias_ih", r) + param("bias_hh", r) for r in (False, True)])
        out = BiLSTMLayer.apply(out, w_ih, w_hh, bias)
    return out.transpose(0, 1)


def parity() -> float:
    """Max abs difference (float64) of outputs and all gradients vs ``nn.LSTM``."""
    torch.manual_seed(0)
    lstm = nn.LSTM(16, 8, 2, bidirectional=True, batch_first=True).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    ref = lstm(x)[0]
    ours = handwritten_lstm(lstm, x)
    upstream = torch.randn_like(ref)
    wrt = [x, *lstm.parameters()]
    diffs = [(ours - ref).abs().max()]
    for a, b in zip(
        torch.autograd.grad(ref, wrt, upstream),
        torch.autograd.grad(ours, wrt, upstream),
        strict=True,
    ):
        diffs.append((a - b).abs().max())
    return float(max(diffs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=8)
    args = p.parse_args()
    diff = parity()
    print(f"float64 parity vs nn.LSTM (output and all gradients): max abs diff {diff:.2e}")
    if diff > 1e-10:
        raise SystemExit(
            "parity failed: the hand-written LSTM is wrong, timings would mean nothing"
        )
    torch.manual_seed(0)
    lstm = nn.LSTM(256, 128, 2, bidirectional=True, batch_first=True)
    h = torch.randn(args.batch, 60, 256, requires_grad=True)
    variants: dict[str, Callable[[], None]] = {
        "nn.LSTM (oneDNN)": lambda: lstm(h)[0].sum().backward(),
        "hand-written autograd": lambda: handwritten_lstm(lstm, h).sum().backward(),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    print(f"BiLSTM 256->128x2 fwd+bwd, b{args.batch}, {torch.get_num_threads()} threads:")
    for name, ts in times.items():
        print(f"  {name:24s} best {min(ts):7.1f} ms  median {statistics.median(ts):7.1f} ms")


if __name__ == "__main__":
    main()
