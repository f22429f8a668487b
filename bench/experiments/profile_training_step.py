"""Where one training step of the hybrid model spends its time (CPU), and what changes it.

    python bench/experiments/profile_training_step.py --batch 32 --steps 20 --profile --variants
    python bench/experiments/profile_training_step.py --batch 32 --roofline

Times forward / backward / clip / optimizer separately for kubetrade's model (as the
Trainer runs it: need_weights=False, fused AdamW) and the guide rendering from
bench_training.py, prints a torch.profiler op table, and tries thread / oneDNN / optimizer
variants. Numbers go to stdout only: docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: bench_training
from bench_training import FEATURES, SEQ, GuideHybrid  # noqa: E402

from kubetrade.config import TrainingConfig  # noqa: E402
from kubetrade.models import HybridCNNLSTM  # noqa: E402


def build(kind: str, fused: bool | None) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    torch.manual_seed(0)
    if kind == "guide":
        model: torch.nn.Module = GuideHybrid().train()
        kwargs: dict = {}
    else:
        model = HybridCNNLSTM.from_config(TrainingConfig().model, FEATURES).train()
        kwargs = {"need_weights": False}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
    return model, opt, kwargs


def phases(kind: str, batch: int, steps: int, fused: bool | None = True) -> dict[str, float]:
    model, opt, kwargs = build(kind, fused)
    x = torch.randn(batch, SEQ, FEATURES)
    yc = torch.randint(0, 3, (batch,))
    yr = torch.randn(batch)
    acc: dict[str, list[float]] = {k: [] for k in ("forward", "backward", "clip", "optim")}
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x, **kwargs)
        loss = 0.6 * F.cross_entropy(out["classification"], yc) + 0.4 * F.mse_loss(
            out["regression"], yr
        )
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= 2:
            for k, v in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                acc[k].append(v * 1000)
    res = {k: statistics.median(v) for k, v in acc.items()}
    res["total"] = sum(res.values())
    res["samples_per_s"] = batch / res["total"] * 1000
    return res


def profile(kind: str, batch: int, steps: int) -> None:
    model, opt, kwargs = build(kind, True)
    x = torch.randn(batch, SEQ, FEATURES)
    yc = torch.randint(0, 3, (batch,))
    yr = torch.randn(batch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x, **kwargs)
        loss = 0.6 * F.cross_entropy(out["classification"], yc) + 0.4 * F.mse_loss(
            out["regression"], yr
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def lstm_roofline(batch: int, repeats: int = 6) -> None:
    """GFLOP/s of the model's BiLSTM (fwd+bwd) alone and of its recurrence-sized GEMM,
    beside a 2048^2 GEMM: how close to the matmul peak the LSTM half of the step can get."""
    from bench_training import lstm_flops, matmul_peak_gflops

    lstm = torch.nn.LSTM(256, 128, 2, bidirectional=True, batch_first=True, dropout=0.2)
    h = torch.randn(batch, SEQ, 256, requires_grad=True)
    flops = lstm_flops(lstm, SEQ) * 3 * batch  # fwd + bwd (2x fwd)

    def fwd_bwd() -> None:
        out, _ = lstm(h)
        out.sum().backward()

    a, w = torch.randn(batch, 128), torch.randn(128, 512)

    def recurrence_gemms() -> None:  # one step's h @ W_hh^T, 240 times (60 steps x 4)
        for _ in range(240):
            a @ w

    for name, fn, work in (
        ("BiLSTM 2x128 fwd+bwd", fwd_bwd, flops),
        ("240 x (B x 128) @ (128 x 512)", recurrence_gemms, 240 * 2 * batch * 128 * 512),
    ):
        fn()
        best = min(_time(fn) for _ in range(repeats))
        print(f"{name:32s} b{batch}: {best * 1000:7.2f} ms  {work / best / 1e9:6.1f} GFLOP/s")
    print(f"matmul peak (2048^2): {matmul_peak_gflops(repeats=repeats):.1f} GFLOP/s")


def _time(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--variants", action="store_true")
    p.add_argument("--roofline", action="store_true", help="LSTM-alone GFLOP/s vs the peak")
    a = p.parse_args()
    if a.roofline:
        lstm_roofline(a.batch)
        return
    print(f"threads={torch.get_num_threads()} interop={torch.get_num_interop_threads()} "
          f"mkldnn={torch.backends.mkldnn.enabled}")  # fmt: skip
    if a.profile:
        for kind in ("kubetrade", "guide"):
            print(f"=== profile {kind} b{a.batch}")
            profile(kind, a.batch, a.steps)
    for kind in ("guide", "kubetrade"):
        r = phases(kind, a.batch, a.steps)
        print(kind, {k: round(v, 2) for k, v in r.items()})
    if a.variants:
        for fused in (None, False):
            r = phases("kubetrade", a.batch, a.steps, fused=fused)
            print(f"kubetrade AdamW fused={fused}", {k: round(v, 2) for k, v in r.items()})
        torch.backends.mkldnn.enabled = False
        for kind in ("guide", "kubetrade"):
            r = phases(kind, a.batch, a.steps)
            print(f"{kind} mkldnn off", {k: round(v, 2) for k, v in r.items()})
        torch.backends.mkldnn.enabled = True
        torch.set_num_threads(1)
        for kind in ("guide", "kubetrade"):
            r = phases(kind, a.batch, a.steps)
            print(f"{kind} 1 thread", {k: round(v, 2) for k, v in r.items()})


if __name__ == "__main__":
    main()
