"""Retraining trigger: the pipeline (champion gate included) through the existing commands."""

from __future__ import annotations

import subprocess
import sys

from kubetrade.errors import KubetradeError
from kubetrade.monitoring.config import RetrainConfig

__all__ = ["retrain_command", "retrain"]


def retrain_command(cfg: RetrainConfig) -> list[str]:
    """``kubetrade run`` (local kfp runner) or ``kubetrade submit`` (Kubeflow) argv."""
    base = [sys.executable, "-m", "kubetrade"]
    if cfg.backend == "local":
        sets = [arg for item in cfg.set for arg in ("--set", item)]
        return [*base, "run", "--config", cfg.pipeline_config, *sets]
    if not cfg.host:
        raise KubetradeError("retrain.backend kubeflow needs retrain.host (the KFP API URL)")
    return [*base, "submit", cfg.package, "--host", cfg.host]


def _execute(argv: list[str]) -> int:
    return subprocess.run(argv, check=False).returncode


def retrain(cfg: RetrainConfig) -> int:
    """Start the pipeline; its register step promotes only a better model (the champion gate)."""
    code = _execute(retrain_command(cfg))
    if code != 0:
        raise KubetradeError(f"retraining ({cfg.backend}) failed with exit code {code}")
    return code
