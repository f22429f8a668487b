"""The RL stage on the supervised split's periods: in a pipeline run every model is tested
on one test period, so the RL split starts validation and test where the hybrid model's
dataset bundle does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kubetrade.config.base import load_yaml_model
from kubetrade.config.rl import RLTrainingConfig

__all__ = ["bundle_periods", "align_split"]


def bundle_periods(bundle_path: str | Path) -> dict[str, tuple[str, str]]:
    """``{"train"|"val"|"test": (first day, last day)}`` of a dataset bundle, read without
    loading its windows."""
    with np.load(bundle_path, allow_pickle=False) as z:
        return {str(r[0]): (str(r[1]), str(r[2])) for r in z["periods"]}


def align_split(config: RLTrainingConfig, periods: dict[str, tuple[str, str]]) -> RLTrainingConfig:
    """``config`` with its split's validation and test starting where ``periods`` (a
    bundle's) do; validated like the file."""
    data = config.model_dump(mode="json")
    data["split"].update(validation_start=periods["val"][0], test_start=periods["test"][0])
    return load_yaml_model(RLTrainingConfig, data=data)
