"""A tuning worker process: ``python -m kubetrade.tuning.worker --setup ... --storage ...``.

Started by :func:`kubetrade.tuning.optuna_backend.run_study` when ``max_concurrent_trials``
> 1; it runs trials of the shared study until the claim counter reaches ``--total``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from kubetrade.errors import KubetradeError
from kubetrade.tuning.optuna_backend import TrialSetup, worker_loop

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; returns the exit code."""
    parser = argparse.ArgumentParser(prog="kubetrade.tuning.worker")
    parser.add_argument("--setup", required=True, help="TrialSetup as JSON")
    parser.add_argument("--storage", required=True, help="Optuna storage URL")
    parser.add_argument("--worker", type=int, default=0, help="worker index (sampler seed offset)")
    parser.add_argument("--claims", required=True, help="claim counter file")
    parser.add_argument("--total", type=int, required=True, help="trials to run in all")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(levelname)s tune-worker{args.worker}: %(message)s"
    )
    try:
        with open(args.setup, encoding="utf-8") as handle:
            setup = TrialSetup(**json.load(handle))
        worker_loop(setup, args.storage, args.worker, args.claims, args.total)
    except KubetradeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
