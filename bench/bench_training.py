"""Training throughput and inference latency of the hybrid CNN+LSTM model (CPU).

Compares kubetrade's trainer step with a plain eager fp32 rendering of the guide's
architecture and training loop (its snippets, fixed only where they do not run), measures
FLOPs per sample and the fraction of this machine's fp32 matmul peak, and times inference
with eager PyTorch, TorchScript and ONNX Runtime.

    python bench/bench_training.py                 # full run, writes bench/results/training.json
    python bench/bench_training.py --quick         # fewer steps (smoke)

Shapes are the guide's: ``config/training.yaml`` model, 60-step windows, 8 features.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from kubetrade.config import TrainingConfig
from kubetrade.models import HybridCNNLSTM
from kubetrade.training.bundle import synthetic_bundle
from kubetrade.training.export import export_onnx, export_torchscript, onnx_session
from kubetrade.training.trainer import Trainer

SEQ, FEATURES = 60, 8


# ---------------------------------------------------------------- the guide's model, as written
class GuideCNN(nn.Module):
    def __init__(self, input_channels: int = FEATURES, hidden_dim: int = 256) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(
            [nn.Conv1d(input_channels, 64, kernel_size=k, padding=k // 2) for k in [3, 5, 7, 11]]
        )
        # fix needed to run at all: batch_first and (B, L, C) input (the guide passes (B, C, L))
        self.attention = nn.MultiheadAttention(256, 8, dropout=0.1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        combined = torch.cat([F.relu(conv(x)) for conv in self.conv_layers], dim=1)
        seq = combined.transpose(1, 2)
        attended, _ = self.attention(seq, seq, seq)
        return attended


class GuideLSTM(nn.Module):
    def __init__(self, input_dim: int = 256, hidden_dim: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers, bidirectional=True, dropout=0.2,
                            batch_first=True)  # fmt: skip
        self.skip_connection = nn.Linear(input_dim, hidden_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return out + self.skip_connection(x)


class GuideFusion(nn.Module):
    def __init__(self, cnn_dim: int = 256, lstm_dim: int = 256, output_dim: int = 256) -> None:
        super().__init__()
        self.cross_attention = nn.MultiheadAttention(output_dim, 8, dropout=0.1, batch_first=True)
        self.cnn_proj = nn.Linear(cnn_dim, output_dim)
        self.lstm_proj = nn.Linear(lstm_dim, output_dim)
        self.classifier = nn.Linear(output_dim, 3)
        self.regressor = nn.Linear(output_dim, 1)

    def forward(self, cnn: torch.Tensor, lstm: torch.Tensor) -> dict[str, torch.Tensor]:
        q, kv = self.cnn_proj(cnn), self.lstm_proj(lstm)
        fused, weights = self.cross_attention(q, kv, kv)
        last = fused[:, -1]  # the guide's heads run per step; a window needs one output
        return {"classification": self.classifier(last),
                "regression": self.regressor(last).squeeze(-1), "attention_weights": weights}  # fmt: skip


class GuideHybrid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cnn, self.lstm, self.fusion = GuideCNN(), GuideLSTM(), GuideFusion()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cnn = self.cnn(x)
        return self.fusion(cnn, self.lstm(cnn))


# ---------------------------------------------------------------- measurements
def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def lstm_flops(model: nn.Module, length: int) -> int:
    """Matmul FLOPs of every nn.LSTM forward (FlopCounterMode does not see the fused kernel)."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            dirs = 2 if module.bidirectional else 1
            for layer in range(module.num_layers):
                inp = module.input_size if layer == 0 else module.hidden_size * dirs
                total += 2 * 4 * module.hidden_size * (inp + module.hidden_size) * length * dirs
    return total


def flops_per_sample(model: nn.Module, train: bool) -> dict[str, float]:
    x = torch.randn(4, SEQ, FEATURES)
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            out = model(x)
            (out["classification"].sum() + out["regression"].sum()).backward()
        else:
            with torch.no_grad():
                model(x)
    counted = counter.get_total_flops() / 4
    lstm = lstm_flops(model, SEQ) * (3 if train else 1)  # backward ~ 2x forward
    return {"counted": counted, "lstm_analytic": lstm, "total": counted + lstm}


class Runner:
    """A training loop that can be timed in slices, so variants can be interleaved."""

    def __init__(
        self, batch: int, step: Callable[[Any], None], batches: Callable[[int], Any]
    ) -> None:
        self.batch, self.step, self.batches = batch, step, batches
        self.epoch, self.iterator = 0, iter(())

    def _next(self) -> Any:
        while True:
            item = next(self.iterator, None)
            if item is not None and len(item[0]) == self.batch:
                return item
            if item is None:
                self.epoch += 1
                self.iterator = iter(self.batches(self.epoch))

    def run(self, steps: int) -> float:
        """Samples per second over ``steps`` optimiser steps (batch fetching included)."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step(self._next())
        return steps * self.batch / (time.perf_counter() - start)


def single_threaded(runner: Runner) -> Runner:
    """Run ``runner``'s steps with one intra-op thread (restored afterwards)."""
    step = runner.step

    def one_thread(item: Any) -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            step(item)
        finally:
            torch.set_num_threads(previous)

    runner.step = one_thread
    return runner


def guide_runner(batch: int, data: Any) -> Runner:
    """The guide's loop: DataLoader(shuffle) + AdamW + multi-task loss + clipping, eager fp32."""
    torch.manual_seed(0)
    model = GuideHybrid().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999))
    dataset = TensorDataset(torch.from_numpy(data.X), torch.from_numpy(data.y_cls),
                            torch.from_numpy(data.y_reg))  # fmt: skip
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)

    def step(item: Any) -> None:
        x, y_cls, y_reg = item
        out = model(x)
        loss = 0.6 * F.cross_entropy(out["classification"], y_cls) + 0.4 * F.mse_loss(
            out["regression"], y_reg
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return Runner(batch, step, lambda epoch: loader)


def kubetrade_runner(batch: int, bundle: Any, workdir: str, **overrides: Any) -> Runner:
    """kubetrade's ``Trainer._run_batch`` on its in-memory batches (augmentation off)."""
    cfg = TrainingConfig()
    cfg.training.batch_size = batch
    cfg.hardware.mixed_precision = overrides.get("mixed_precision", False)
    cfg.training.compile = overrides.get("compile", False)
    torch.manual_seed(0)
    model = HybridCNNLSTM.from_config(cfg.model, FEATURES)
    trainer = Trainer(model, cfg, bundle.train, bundle.val, workdir, resume=False, augment=False,
                      verbose=False)  # fmt: skip
    trainer.model.train()
    return Runner(batch, lambda item: trainer._run_batch(*item), trainer._batches)


def _timings(fn: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def inference(
    model: HybridCNNLSTM, data: np.ndarray, repeats: dict[int, int], threads: int, rounds: int
) -> dict[str, Any]:
    """p50/p99 latency of eager, TorchScript and ONNX Runtime, interleaved over ``rounds``."""
    model = model.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        example = torch.from_numpy(data[:1])
        ts = torch.jit.load(str(export_torchscript(model, Path(tmp) / "m.pt", example))).eval()
        session = onnx_session(export_onnx(model, Path(tmp) / "m.onnx", example), threads=threads)
        for batch, n in repeats.items():
            x = data[:batch]
            xt = torch.from_numpy(x)
            runtimes: dict[str, Callable[[], Any]] = {
                "eager": lambda xt=xt: model.export_forward(xt),
                "torchscript": lambda xt=xt: ts(xt),
                "onnxruntime": lambda x=x: session.run(None, {"input": x}),
            }
            pooled: dict[str, list[float]] = {name: [] for name in runtimes}
            with torch.inference_mode():
                for fn in runtimes.values():
                    _timings(fn, 3)  # warm-up
                for _ in range(rounds):
                    for name, fn in runtimes.items():
                        pooled[name] += _timings(fn, max(1, n // rounds))
            for name, times in pooled.items():
                times.sort()
                results[f"{name}_b{batch}"] = {
                    "p50_ms": statistics.median(times),
                    "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
                    "runs": len(times),
                }
            eager = results[f"eager_b{batch}"]["p50_ms"]
            for name in runtimes:
                results[f"{name}_b{batch}"]["speedup_p50_vs_eager"] = (
                    eager / results[f"{name}_b{batch}"]["p50_ms"]
                )
    torch.set_num_threads(previous)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument(
        "--latency-threads", type=int, default=1, help="torch/ORT threads for the latency runs"
    )
    parser.add_argument("--out", default="bench/results/training.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    steps = {32: 2 if args.quick else 4, 256: 1}
    bundle = synthetic_bundle(
        n_timestamps=700, n_symbols=2, sequence_length=SEQ, n_features=FEATURES
    )

    peak = matmul_peak_gflops()
    guide_flops = flops_per_sample(GuideHybrid(), train=True)
    ours = HybridCNNLSTM.from_config(TrainingConfig().model, FEATURES)
    ours_flops = flops_per_sample(copy.deepcopy(ours), train=True)
    print(f"threads={threads} fp32 matmul peak={peak:.1f} GFLOP/s; train GFLOP/sample: "
          f"guide {guide_flops['total'] / 1e9:.3f}, kubetrade {ours_flops['total'] / 1e9:.3f}")  # fmt: skip

    workdir = tempfile.mkdtemp(prefix="kt-bench-")
    factories: dict[str, Callable[[int], Runner]] = {
        "guide eager fp32 (baseline)": lambda b: guide_runner(b, bundle.train),
        "kubetrade eager fp32": lambda b: kubetrade_runner(b, bundle, workdir),
        "kubetrade bf16 autocast": lambda b: kubetrade_runner(b, bundle, workdir, mixed_precision=True),
    }  # fmt: skip
    if threads > 1:
        factories["kubetrade eager fp32, 1 thread"] = lambda b: single_threaded(
            kubetrade_runner(b, bundle, workdir)
        )
    if not args.skip_compile:
        factories["kubetrade torch.compile fp32"] = lambda b: kubetrade_runner(
            b, bundle, workdir, compile=True
        )
    training: dict[str, dict[str, float]] = {}
    for batch in args.batches:
        runners = {}
        for name, factory in factories.items():
            started = time.perf_counter()
            runners[name] = factory(batch)
            runners[name].run(3 if "compile" in name else 1)  # warm-up / compilation
            print(f"warm-up {name} b{batch}: {time.perf_counter() - started:.1f}s", flush=True)
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for round_index in range(args.rounds):  # interleaved: other processes' load hits all
            for name, runner in runners.items():
                if "bf16" in name and round_index > 0:
                    continue  # ~5x slower without bf16 hardware: one slice says enough
                rates[name].append(runner.run(max(1, steps[batch] // (2 if "bf16" in name else 1))))
        for name, values in rates.items():
            flops = guide_flops if name.startswith("guide") else ours_flops
            best = max(values)
            achieved = best * flops["total"] / 1e9
            training[f"{name} | b{batch}"] = {
                "samples_per_s": best,
                "samples_per_s_median": statistics.median(values),
                "achieved_gflops": achieved,
                "fraction_of_peak": achieved / peak,
            }
            print(f"{name:32s} batch {batch:4d}: best {best:7.1f} median "
                  f"{statistics.median(values):7.1f} samples/s  {achieved:6.2f} GFLOP/s "
                  f"({achieved / peak:.1%} of peak)", flush=True)  # fmt: skip
    for batch in args.batches:
        base = training[f"guide eager fp32 (baseline) | b{batch}"]["samples_per_s"]
        for key, value in training.items():
            if key.endswith(f"| b{batch}"):
                value["speedup_vs_baseline"] = value["samples_per_s"] / base

    peak = max(peak, matmul_peak_gflops())  # the machine is shared: keep the better reading
    for value in training.values():
        value["fraction_of_peak"] = value["achieved_gflops"] / peak
    latencies = inference(
        ours, bundle.test.X, {1: 60 if args.quick else 300, 256: 6 if args.quick else 24},
        threads=args.latency_threads, rounds=args.rounds,
    )  # fmt: skip

    record = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "fp32_matmul_peak_gflops": peak,
        "train_flops_per_sample": {"guide": guide_flops, "kubetrade": ours_flops},
        "training": training,
        "inference_latency": latencies,
        "latency_threads": args.latency_threads,
        "notes": "samples/s is the best of interleaved rounds on a shared machine",
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(
        "\n| variant | batch | samples/s (best) | median | vs baseline | GFLOP/s | % of fp32 peak |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, value in training.items():
        name, batch = key.split(" | ")
        print(f"| {name} | {batch[1:]} | {value['samples_per_s']:.1f} | "
              f"{value['samples_per_s_median']:.1f} | {value['speedup_vs_baseline']:.2f}x | "
              f"{value['achieved_gflops']:.2f} | {value['fraction_of_peak']:.1%} |")  # fmt: skip
    print(f"\n| runtime ({args.latency_threads} thread) | batch | p50 ms | p99 ms | p50 vs eager |")
    print("|---|---|---|---|---|")
    for key, value in latencies.items():
        name, batch = key.rsplit("_b", 1)
        print(f"| {name} | {batch} | {value['p50_ms']:.2f} | {value['p99_ms']:.2f} | "
              f"{value['speedup_p50_vs_eager']:.2f}x |")  # fmt: skip
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
