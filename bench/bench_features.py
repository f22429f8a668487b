"""Benchmark the causal feature build and compare RSI/MACD/Bollinger/ATR with ``ta``.

Cases: (a) the embedded real data (AAPL, GOOG, IBM, MSFT), (b) synthetic
``--symbols`` x ``--years`` (default 500 x 20). For each case it reports

* wall time of ``FeatureEngineer.build_all`` (all indicators and advanced groups) and
  of each stage on its own;
* peak traced memory of the full build (``tracemalloc``: Python and numpy allocations
  made during the call, in a second, separate run because tracing slows allocation);
* our RSI+MACD+Bollinger+ATR vs the ``ta`` package (per symbol via ``groupby``) on the
  same data in the same process: both times, the speed-up and the max absolute
  difference after warm-up.

Prints a markdown table and writes JSON (default ``bench/results/features.json``).

    python bench/bench_features.py                      # 500 x 20 (several minutes)
    python bench/bench_features.py --symbols 50 --years 5
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.data.features import FeatureEngineer
from kubetrade.data.sources import generate_synthetic, load_embedded, select

TA_INDICATORS = ["rsi", "macd", "bollinger_bands", "atr"]
TA_COLUMNS = [
    "rsi", "macd", "macd_signal", "macd_hist",
    "bb_upper", "bb_middle", "bb_lower", "bb_width", "bb_pct", "atr",
]  # fmt: skip


def timed(func: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def traced_peak_mb(func: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def ta_reference(df: pd.DataFrame) -> pd.DataFrame:
    """The ten columns computed by ``ta`` one symbol at a time."""
    import ta

    def one(g: pd.DataFrame) -> pd.DataFrame:
        close, high, low = g["close"], g["high"], g["low"]
        macd = ta.trend.MACD(close)
        bb = ta.volatility.BollingerBands(close)
        return pd.DataFrame(
            {
                "rsi": ta.momentum.RSIIndicator(close).rsi(),
                "macd": macd.macd(),
                "macd_signal": macd.macd_signal(),
                "macd_hist": macd.macd_diff(),
                "bb_upper": bb.bollinger_hband(),
                "bb_middle": bb.bollinger_mavg(),
                "bb_lower": bb.bollinger_lband(),
                "bb_width": bb.bollinger_wband(),
                "bb_pct": bb.bollinger_pband(),
                "atr": ta.volatility.AverageTrueRange(high, low, close).average_true_range(),
            },
            index=g.index,
        )

    parts = [one(g) for _, g in df.groupby("symbol", sort=False)]
    return pd.concat(parts).loc[df.index]


def exact_bollinger(window: np.ndarray, close: float) -> dict[str, float]:
    """Bollinger values of one window in exact rational arithmetic (then rounded once)."""
    values = [Fraction(float(v)) for v in window]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    upper, lower = float(mean) + 2 * std, float(mean) - 2 * std
    return {
        "bb_middle": float(mean),
        "bb_upper": upper,
        "bb_lower": lower,
        "bb_width": 4 * std / float(mean) * 100,
        "bb_pct": (close - lower) / (upper - lower),
    }


def compare(df: pd.DataFrame, ours: pd.DataFrame, ref: pd.DataFrame) -> dict[str, Any]:
    """Max |ours - ta| where ours is defined (our warm-up is NaN; ta's ATR writes 0 there).

    For Bollinger columns the worst row is also recomputed exactly, to tell which side
    is off when they disagree (pandas' rolling variance is an online update that loses
    precision after large price moves; ours is two-pass).
    """
    out: dict[str, Any] = {}
    for col in TA_COLUMNS:
        a = ours[col].to_numpy()
        b = ref[col].to_numpy()
        defined = np.isfinite(a)
        diff = np.abs(a - b)
        diff[~defined] = 0.0
        worst = int(np.argmax(diff))
        entry: dict[str, Any] = {
            "max_abs_diff": float(diff[worst]),
            "share_within_1e-6": float((diff[defined] <= 1e-6).mean()),
            "ta_nan_where_ours_defined": int(np.isnan(b[defined]).sum()),
            "compared": int(defined.sum()),
        }
        if col.startswith("bb_") and diff[worst] > 1e-9:
            pos = worst  # ours and df share row order
            window = df["close"].to_numpy()[pos - 19 : pos + 1]
            exact = exact_bollinger(window, float(window[-1]))[col]
            entry["worst_row"] = {
                "symbol": str(df["symbol"].iloc[pos]),
                "exact": exact,
                "ours_abs_err": abs(float(a[worst]) - exact),
                "ta_abs_err": abs(float(b[worst]) - exact),
            }
        out[col] = entry
    return out


def run_case(name: str, df: pd.DataFrame, repeat: int, memory: bool) -> dict[str, Any]:
    print(f"[{name}] {df['symbol'].nunique()} symbols, {len(df):,} rows", flush=True)
    fe = FeatureEngineer()
    stages: dict[str, float] = {}
    stages["technical (all 10)"], tech = timed(lambda: fe.add_technical_indicators(df), repeat)
    stages["wavelet"], _ = timed(lambda: fe.add_wavelet_features(df), repeat)
    stages["fourier"], _ = timed(lambda: fe.add_fourier_features(df), repeat)
    stages["fractal"], _ = timed(lambda: fe.add_fractal_features(df), repeat)
    stages["cross_asset"], _ = timed(lambda: fe.add_cross_asset_features(df), repeat)
    del tech
    full_s, full = timed(lambda: fe.build_all(df), repeat)
    n_features = len(full.columns) - len(df.columns)
    nan_share = float(full.iloc[:, len(df.columns) :].isna().to_numpy().mean())
    del full
    print(f"[{name}] full build {full_s:.2f} s", flush=True)
    peak_mb = traced_peak_mb(lambda: fe.build_all(df)) if memory else None

    ours_s, ours = timed(lambda: fe.add_technical_indicators(df, TA_INDICATORS), repeat)
    print(f"[{name}] ours rsi+macd+bb+atr {ours_s:.3f} s; running ta ...", flush=True)
    ta_s, ref = timed(lambda: ta_reference(df), 1)
    diffs = compare(df, ours, ref)
    return {
        "case": name,
        "symbols": int(df["symbol"].nunique()),
        "rows": len(df),
        "features_added": n_features,
        "nan_share_incl_warmup": nan_share,
        "full_build_s": full_s,
        "full_build_rows_per_s": len(df) / full_s,
        "full_build_tracemalloc_peak_mb": peak_mb,
        "stage_s": stages,
        "ours_ta_set_s": ours_s,
        "ta_package_s": ta_s,
        "speedup_vs_ta": ta_s / ours_s,
        "max_abs_diff_vs_ta": max(d["max_abs_diff"] for d in diffs.values()),
        "min_share_within_1e-6": min(d["share_within_1e-6"] for d in diffs.values()),
        "ta_nan_where_ours_defined": sum(d["ta_nan_where_ours_defined"] for d in diffs.values()),
        "diff_by_column": diffs,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    head = (
        "| case | rows | full build s | rows/s | peak MB (tracemalloc) | "
        "ours RSI+MACD+BB+ATR s | ta s | speed-up | max abs diff | within 1e-6 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in results:
        peak = r["full_build_tracemalloc_peak_mb"]
        lines.append(
            f"| {r['case']} | {r['rows']:,} | {r['full_build_s']:.2f} | "
            f"{r['full_build_rows_per_s']:,.0f} | {'-' if peak is None else f'{peak:,.0f}'} | "
            f"{r['ours_ta_set_s']:.3f} | {r['ta_package_s']:.2f} | "
            f"{r['speedup_vs_ta']:.1f}x | {r['max_abs_diff_vs_ta']:.1e} | "
            f"{100 * r['min_share_within_1e-6']:.4f}% |"
        )
    stage_head = "\n\n| case | " + " | ".join(results[0]["stage_s"]) + " |\n"
    stage_head += "|---|" + "---:|" * len(results[0]["stage_s"]) + "\n"
    stage_lines = [
        f"| {r['case']} | " + " | ".join(f"{v:.2f}" for v in r["stage_s"].values()) + " |"
        for r in results
    ]
    notes = []
    for r in results:
        for col, d in r["diff_by_column"].items():
            if "worst_row" in d:
                w = d["worst_row"]
                notes.append(
                    f"- {r['case']} {col} worst row ({w['symbol']}): |ours - exact| = "
                    f"{w['ours_abs_err']:.1e}, |ta - exact| = {w['ta_abs_err']:.1e}"
                )
    return (
        head
        + "\n".join(lines)
        + stage_head
        + "\n".join(stage_lines)
        + ("\n\n" + "\n".join(notes) if notes else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500, help="synthetic symbols")
    parser.add_argument("--years", type=float, default=20.0, help="synthetic years")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="repeats for the real case")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/features.json"))
    args = parser.parse_args()

    results = []
    if not args.skip_real:
        real = select(load_embedded(), ["AAPL", "GOOG", "IBM", "MSFT"])
        results.append(run_case("real 4 symbols", real, args.repeat, not args.no_memory))
    if not args.skip_synthetic:
        synth = generate_synthetic(args.symbols, args.years, seed=args.seed)
        name = f"synthetic {args.symbols}x{args.years:g}y"
        results.append(run_case(name, synth, 1, not args.no_memory))

    table = markdown(results)
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "memory_method": "tracemalloc peak during one full build (separate run)",
        "timing": "wall clock (perf_counter); real case best of --repeat, synthetic single run",
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
