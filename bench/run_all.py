"""Run every benchmark in turn (``make bench``); each writes bench/results/<name>.json.

Benchmarks are never part of ``make test``: speed and memory targets live here,
and their measured numbers are copied into docs/benchmarks.md with the command
that produced them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_features.py", "bench_training.py", "bench_env.py", "bench_backtest.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="subset, e.g. --only bench_env.py")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHES:
        script = HERE / name
        if not script.is_file():
            print(f"skip {name}: not present")
            continue
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"=== {name}: exit {rc} in {time.perf_counter() - start:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
