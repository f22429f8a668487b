"""What every step shares: atomic writes, JSON helpers, the run's MLflow tracker and the
trained model of the ``train`` task."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from kubetrade.config.run import RunConfig

__all__ = [
    "EXPERIMENT",
    "atomic_path",
    "write_parquet",
    "write_json",
    "read_json",
    "run_tracker",
    "load_trained",
]

#: the MLflow experiment of every pipeline run (tuning uses ``<EXPERIMENT>-tuning``)
EXPERIMENT = "kubetrade"


def atomic_path(path: str | Path) -> Path:
    """A sibling temp path; write there, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    tmp = atomic_path(path)
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_json(obj: Any, path: str | Path) -> None:
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_tracker(run: RunConfig, run_id: str | None = None) -> Any:
    """The run's MLflow tracker: ``MLFLOW_TRACKING_URI`` if set, else one SQLite store and
    artifact folder under ``run_root`` shared by all runs (the registry spans runs)."""
    from kubetrade.training.tracking import MlflowTracker

    return MlflowTracker(run.pipeline.run_root, experiment_name=EXPERIMENT, run_id=run_id)


def load_trained(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The ``train`` task's final model and its ``train_result.json``."""
    from kubetrade.training.callbacks import model_from_checkpoint

    info = read_json(Path(model_dir) / "train_result.json")
    return model_from_checkpoint(info["final_model_path"]), info
