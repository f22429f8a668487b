"""torchrun entry point: train the hybrid model on a saved dataset bundle.

    torchrun --standalone --nproc_per_node=2 -m kubetrade.training.run \\
        --bundle run/bundle.npz --config config/training.yaml --out run/train

Every rank reads the bundle; rank 0 writes ``<out>/result.json`` (the :class:`TrainResult`),
the snapshot, checkpoints and ``final_model.pth``, and logs per-epoch metrics to MLflow when
``--mlflow-run-id`` is given. Rerunning the same command resumes from ``<out>/snapshot.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from kubetrade.config import load_training_config, parse_key_values
from kubetrade.errors import KubetradeError
from kubetrade.training.bundle import ensure_readable_snapshot, load_bundle
from kubetrade.training.callbacks import Callback
from kubetrade.training.distributed import destroy_distributed, init_distributed
from kubetrade.training.trainer import RESULT_NAME, fit

__all__ = ["main", "parse_args"]

log = logging.getLogger("kubetrade.training")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubetrade.training.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--bundle", required=True, help="dataset bundle .npz (save_bundle)")
    parser.add_argument("--config", default="config/training.yaml", help="training config YAML")
    parser.add_argument("--out", required=True, help="output directory (snapshot, checkpoints)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing snapshot")
    parser.add_argument("--no-augment", action="store_true", help="disable data augmentation")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads per rank")
    parser.add_argument("--mlflow-run-id", default=None, help="log epoch metrics to this run")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument(
        "--hparam", action="append", default=[], metavar="PATH=VALUE",
        help="override a config value by dotted path (repeatable; Katib trials use this)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank; returns the process exit code (logging is set up by ``__main__`` only,
    so calling this in-process leaves the caller's logging alone)."""
    args = parse_args(argv)
    try:
        overrides = parse_key_values(args.hparam, "--hparam", "training.learning_rate=0.001")
        cfg = load_training_config(args.config, overrides or None)
        if args.threads:
            torch.set_num_threads(args.threads)
        ctx = init_distributed(cfg.hardware.device)
        try:
            bundle = load_bundle(args.bundle)
            if not args.no_resume:
                ensure_readable_snapshot(args.out)  # (the data check: TrainingPipeline)
            callbacks: list[Callback] = []
            if args.mlflow_run_id and ctx.is_main:
                from kubetrade.training.tracking import MLflowEpochLogger, MlflowTracker

                tracker = MlflowTracker(
                    args.out, tracking_uri=args.tracking_uri, run_id=args.mlflow_run_id
                )
                tracker.start()
                callbacks.append(MLflowEpochLogger(tracker))
            _, result = fit(
                cfg,
                bundle,
                args.out,
                ctx,
                extra_callbacks=callbacks,
                resume=not args.no_resume,
                verbose=not args.quiet,
                augment=not args.no_augment,
            )
            if ctx.is_main:
                path = Path(args.out) / RESULT_NAME
                path.write_text(json.dumps(dataclasses.asdict(result), indent=2), encoding="utf-8")
        finally:
            destroy_distributed()
    except KubetradeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
