"""Hybrid model training on hardware with low-precision units: CPU bf16 and CUDA.

``bench_training.py`` measures the development machine (2 AVX2 cores, no bf16 units), where
the trainer's bf16 autocast is 20-30x *slower* than fp32. This script measures the same
trainer step (``Trainer._run_batch``) against the same plain eager fp32 rendering of the
guide's model on whatever machine it runs on:

* CPU: fp32 / bf16 matmul peaks, then training samples/s at each thread count and batch for
  the guide baseline (eager fp32), kubetrade fp32 and kubetrade with its mixed precision
  (``hardware.mixed_precision: true`` = bf16 autocast on CPU), optionally torch.compile;
* CUDA (when visible): the same rows on the GPU (mixed precision = fp16 autocast +
  GradScaler there).

The trainer's CUDA path (fp16 fit, snapshot resume, CPU reload, CPU/CUDA parity) is checked
by ``tests/integration/test_training_cuda.py``; run it on the same machine.

    python bench/bench_accelerators.py                    # all it can, JSON to bench/results/
    python bench/bench_accelerators.py --threads 16 2 --batches 32 256 --compile
    python bench/bench_accelerators.py --skip-cuda --threads 2 --seconds 2   # smoke run

Results are written after every section, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import (  # noqa: E402
    FEATURES,
    SEQ,
    GuideHybrid,
    Runner,
    flops_per_sample,
    guide_runner,
    kubetrade_runner,
    with_pytorch_dropout,
)

from kubetrade.config import TrainingConfig  # noqa: E402
from kubetrade.models import HybridCNNLSTM  # noqa: E402
from kubetrade.training.bundle import synthetic_bundle  # noqa: E402

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line),
            platform.processor(),
        )
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in text.splitlines()
                if line.startswith("flags")
            ),
            [],
        )
        info["cpu_model"] = model
        info["cpu_flags"] = {flag: flag in flags for flag in CPU_FLAGS}
    except OSError:
        info["cpu_model"] = platform.processor()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda_device"] = props.name
        info["cuda_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda_runtime"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(n: int, dtype: torch.dtype, device: str, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of one n x n x n product."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def peaks(device: str, threads: int) -> dict[str, float]:
    if device == "cpu":
        n = 2048 if threads <= 4 else 4096
        # a CPU without bf16 units runs bf16 GEMMs at well under 1 GFLOP/s: probe small first
        probe = matmul_gflops(512, torch.bfloat16, "cpu", repeats=3)
        bf16_n = n if probe > 50 else 512
        return {
            "fp32_gflops": matmul_gflops(n, torch.float32, "cpu"),
            "bf16_gflops": probe if bf16_n == 512 else matmul_gflops(bf16_n, torch.bfloat16, "cpu"),
            "bf16_matrix_n": bf16_n,
        }
    fp32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        out = {"fp32_gflops": matmul_gflops(8192, torch.float32, "cuda")}
        torch.backends.cuda.matmul.allow_tf32 = True
        out["tf32_gflops"] = matmul_gflops(8192, torch.float32, "cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = fp32
    out["fp16_gflops"] = matmul_gflops(8192, torch.float16, "cuda")
    out["bf16_gflops"] = matmul_gflops(8192, torch.bfloat16, "cuda")
    return out


def timed_slice(runner: Runner, device: str, min_steps: int, budget_s: float) -> float:
    """samples/s over at least one and at most ``min_steps`` steps, stopping after ``budget_s``."""
    sync(device)
    start = time.perf_counter()
    steps = 0
    while steps < min_steps:
        runner.step(runner._next())
        steps += 1
        if time.perf_counter() - start > budget_s:
            break
    sync(device)
    return steps * runner.batch / (time.perf_counter() - start)


def training_rows(
    device: str,
    batch: int,
    factories: dict[str, Callable[[int], Runner]],
    rounds: int,
    seconds: float,
) -> dict[str, dict[str, float]]:
    """Interleaved rounds of every variant; a variant whose warm-up step alone exceeds the
    slice budget is measured once (its one step says enough)."""
    runners: dict[str, Runner] = {}
    warm: dict[str, float] = {}
    for name, factory in factories.items():
        started = time.perf_counter()
        runners[name] = factory(batch)
        for _ in range(3 if "compile" in name or device == "cuda" else 1):
            runners[name].step(runners[name]._next())
        sync(device)
        warm[name] = time.perf_counter() - started
        print(f"  warm-up {name} b{batch}: {warm[name]:.1f}s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    per_slice = seconds / rounds
    for round_index in range(rounds):
        for name, runner in runners.items():
            one_step_s = warm[name] if "compile" not in name else 0.0
            if round_index > 0 and one_step_s > per_slice:
                continue
            rates[name].append(
                timed_slice(runner, device, 50 if device == "cuda" else 8, per_slice)
            )
    rows: dict[str, dict[str, float]] = {}
    for name, values in rates.items():
        rows[name] = {
            "samples_per_s": max(values),
            "samples_per_s_median": statistics.median(values),
            "slices": len(values),
            "warmup_s": warm[name],
        }
    base = rows["guide eager fp32 (baseline)"]["samples_per_s"]
    for row in rows.values():
        row["speedup_vs_baseline"] = row["samples_per_s"] / base
    return rows


def bf16_op_profile(bundle: Any, workdir: str, batch: int) -> list[dict[str, Any]]:
    """Top ops by self CPU time of the trainer's bf16 step (where the time goes)."""
    runner = kubetrade_runner(batch, bundle, workdir, mixed_precision=True)
    runner.step(runner._next())
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            runner.step(runner._next())
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "op": e.key,
            "self_ms_per_step": e.self_cpu_time_total / 3e3,
            "share": e.self_cpu_time_total / total,
        }  # fmt: skip
        for e in events[:12]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU thread counts to measure (default: all cores, and 2)")  # fmt: skip
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="timing budget per variant and batch (split over the rounds)")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile variants at batch 32 (first thread count and "
                             "CUDA; slow to warm up)")  # fmt: skip
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-cuda", action="store_true")
    parser.add_argument("--out", default="bench/results/bench_accelerators.json")
    args = parser.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "machine": machine()}

    def save() -> None:
        out.write_text(json.dumps(record, indent=2, default=str))

    print(json.dumps(record["machine"], indent=2), flush=True)
    save()
    cores = os.cpu_count() or 1
    threads_list = args.threads or sorted({cores, min(2, cores)}, reverse=True)
    bundle = synthetic_bundle(n_timestamps=700, n_symbols=2, sequence_length=SEQ,
                              n_features=FEATURES)  # fmt: skip
    workdir = tempfile.mkdtemp(prefix="kt-accel-")
    guide_flops = flops_per_sample(GuideHybrid(), train=True)["total"]
    ours_flops = flops_per_sample(
        HybridCNNLSTM.from_config(TrainingConfig().model, FEATURES), train=True
    )["total"]
    record["train_gflop_per_sample"] = {"guide": guide_flops / 1e9, "kubetrade": ours_flops / 1e9}

    def factories(device: str, with_compile: bool) -> dict[str, Callable[[int], Runner]]:
        amp = "bf16 autocast" if device == "cpu" else "fp16 autocast + GradScaler"
        made: dict[str, Callable[[int], Runner]] = {
            "guide eager fp32 (baseline)": lambda b: guide_runner(b, bundle.train, device),
            "kubetrade eager fp32": lambda b: kubetrade_runner(b, bundle, workdir, device),
            f"kubetrade {amp}": lambda b: kubetrade_runner(
                b, bundle, workdir, device, mixed_precision=True
            ),
        }
        if device == "cpu":
            made[f"kubetrade {amp}, PyTorch dropout"] = lambda b: with_pytorch_dropout(
                kubetrade_runner(b, bundle, workdir, device, mixed_precision=True)
            )
        if with_compile:
            made[f"kubetrade {amp} + torch.compile"] = lambda b: kubetrade_runner(
                b, bundle, workdir, device, mixed_precision=True, compile=True
            )
        return made

    if not args.skip_cpu:
        record["cpu"] = {}
        for threads in threads_list:
            torch.set_num_threads(threads)
            section: dict[str, Any] = {"peaks": peaks("cpu", threads)}
            record["cpu"][f"{threads}_threads"] = section
            print(f"CPU, {threads} threads: {section['peaks']}", flush=True)
            for batch in args.batches:
                compiled = args.compile and batch == 32 and threads == threads_list[0]
                rows = training_rows(
                    "cpu", batch, factories("cpu", compiled), args.rounds, args.seconds
                )
                for name, row in rows.items():
                    flops = guide_flops if name.startswith("guide") else ours_flops
                    row["achieved_gflops"] = row["samples_per_s"] * flops / 1e9
                    row["fraction_of_fp32_peak"] = (
                        row["achieved_gflops"] / section["peaks"]["fp32_gflops"]
                    )
                    print(f"  {name:44s} b{batch:<4d} {row['samples_per_s']:8.1f} samples/s "
                          f"({row['speedup_vs_baseline']:.2f}x baseline)", flush=True)  # fmt: skip
                section[f"b{batch}"] = rows
                save()
            if 32 in args.batches:
                section["bf16_op_profile_b32"] = bf16_op_profile(bundle, workdir, 32)
                save()
        torch.set_num_threads(cores)

    if not args.skip_cuda and torch.cuda.is_available():
        section = {"peaks": peaks("cuda", cores), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                   "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}  # fmt: skip
        record["cuda"] = section
        print(f"CUDA: {section['peaks']}", flush=True)
        for batch in args.batches:
            compiled = args.compile and batch == 32
            rows = training_rows(
                "cuda", batch, factories("cuda", compiled), args.rounds, args.seconds
            )
            for name, row in rows.items():
                print(f"  {name:44s} b{batch:<4d} {row['samples_per_s']:8.1f} samples/s "
                      f"({row['speedup_vs_baseline']:.2f}x baseline)", flush=True)  # fmt: skip
            section[f"b{batch}"] = rows
            save()
    elif not args.skip_cuda:
        record["cuda"] = "no CUDA device visible"
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
