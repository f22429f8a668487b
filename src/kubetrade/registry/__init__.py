"""MLflow registry: versions with provenance tags, champion/challenger aliases.

* :func:`register_challenger`: any logged model URI (bounded retries, promotion lock), through
  the champion gate (:func:`~kubetrade.registry.champion.gate_decision`: known metric
  direction, same test period and symbols, margin, baselines, ``force_reason``).
* :func:`register_export`: the hybrid model from its export folder: files hashed in that
  folder, the logged model (a pyfunc over the TorchScript file, no pickle,
  :mod:`kubetrade.registry.hybrid_pyfunc`) must be the export run's own with the same bytes.
* :mod:`kubetrade.registry.safe_sb3`: SB3 agent zips loaded without unpickling anything.
* :func:`register_rl_ensemble` / :func:`log_rl_ensemble`: the RL ensemble as a pyfunc
  model (``kubetrade.registry.rl_pyfunc``, imported on first use: it imports MLflow).
"""

from __future__ import annotations

from typing import Any

from kubetrade.registry.champion import Promotion, register_challenger
from kubetrade.registry.hybrid import (
    read_export_info,
    read_oos_metric,
    register_export,
    write_export_info,
)
from kubetrade.registry.provenance import git_commit, sha256_file, verify_sha256
from kubetrade.registry.store import bounded_http

__all__ = [
    "Promotion",
    "RLEnsemblePyfunc",
    "bounded_http",
    "ensemble_sha256",
    "git_commit",
    "log_rl_ensemble",
    "read_export_info",
    "read_oos_metric",
    "register_challenger",
    "register_export",
    "write_export_info",
    "register_rl_ensemble",
    "sha256_file",
    "verify_sha256",
]

_LAZY = {"RLEnsemblePyfunc", "ensemble_sha256", "log_rl_ensemble", "register_rl_ensemble"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kubetrade.registry import rl_pyfunc

        return getattr(rl_pyfunc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
