"""MLflow tracking for training runs: params, per-epoch metrics, artifacts, model, registry.

The tracking URI is, in order: the ``tracking_uri`` argument, ``MLFLOW_TRACKING_URI``, or a
local SQLite store ``sqlite:///<run_dir>/mlflow.db`` whose experiments keep artifacts in
``<run_dir>/mlartifacts``. Registration is a separate call so the pipeline can do it only
after training, evaluation and the export parity gate have passed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetrade.errors import RegistryError
from kubetrade.training.callbacks import Callback

if TYPE_CHECKING:
    from torch import nn

    from kubetrade.training.trainer import Trainer

__all__ = ["MlflowTracker", "MLflowEpochLogger", "resolve_tracking_uri", "DEFAULT_MODEL_NAME"]

DEFAULT_MODEL_NAME = "kubetrade-hybrid"


def resolve_tracking_uri(run_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Explicit URI > ``MLFLOW_TRACKING_URI`` > ``sqlite:///<run_dir>/mlflow.db``."""
    if tracking_uri:
        return tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


class MlflowTracker:
    """One MLflow run, driven through ``MlflowClient`` (no global MLflow state is left behind).

    Args:
        run_dir: local run folder (default store location).
        experiment_name: MLflow experiment (created on first use; with a SQLite store its
            artifacts go to ``<run_dir>/mlartifacts``).
        tracking_uri: overrides ``MLFLOW_TRACKING_URI`` and the default.
        run_id: attach to an existing run (e.g. rank 0 of a torchrun job logging epochs into
            the pipeline's run) instead of creating one; an attached tracker never ends it.
        run_name: name of a new run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        experiment_name: str = "kubetrade",
        tracking_uri: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.experiment_name = experiment_name
        self.tracking_uri = resolve_tracking_uri(run_dir, tracking_uri)
        self.run_id = run_id
        self.run_name = run_name
        self.owner = run_id is None
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    # ------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Create the run (or check the attached one exists); returns the run id."""
        if not self.owner:
            self.client.get_run(self.run_id)
            return str(self.run_id)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            location = None
            if self.tracking_uri.startswith("sqlite:"):  # local store: artifacts beside it
                # beside the database file, not the caller's run folder: the experiment
                # outlives that folder (a later run's artifacts must not land in, or
                # depend on, the folder of the run that happened to create it)
                db = Path(self.tracking_uri.removeprefix("sqlite:///"))
                location = (db.resolve().parent / "mlartifacts").as_uri()
            experiment_id = self.client.create_experiment(
                self.experiment_name, artifact_location=location
            )
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        return str(self.run_id)

    def end(self, status: str = "FINISHED") -> None:
        """Mark an owned run ``status`` (FINISHED, FAILED, KILLED); attached runs are left."""
        if self.owner and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> MlflowTracker:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.end("FAILED" if exc_type is not None else "FINISHED")

    # ------------------------------------------------------------ logging
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # the store's batch limit
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    @contextmanager
    def _global_uri(self) -> Iterator[None]:
        """Point MLflow's fluent API at this store, then restore the previous global state."""
        import mlflow

        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it again

    def log_model(self, model: nn.Module, name: str = "model") -> str:
        """Log a PyTorch model (pickle serialization) into the run; returns its model URI."""
        import mlflow
        import mlflow.pytorch
        import torch

        with self._global_uri(), mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                model.cpu().eval(),
                name=name,
                # mlflow 3 defaults to "pt2" (torch.export), which needs an input_example
                serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "kubetrade"],
            )
        # start_run's context marked the run FINISHED; the owner sets the final status in end()
        self.client.update_run(self.run_id, status="RUNNING")
        return str(info.model_uri)

    def register(
        self, model_uri: str, name: str = DEFAULT_MODEL_NAME, tags: dict[str, Any] | None = None
    ) -> str:
        """Register ``model_uri`` as a new version of ``name``; returns the version."""
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            with self._global_uri():
                version = mlflow.register_model(
                    model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()}
                )
        except MlflowException as exc:
            raise RegistryError(
                f"could not register {model_uri} as {name!r} at {self.tracking_uri}: {exc}"
            ) from exc
        return str(version.version)


class MLflowEpochLogger(Callback):
    """Log every epoch's logs as MLflow metrics (step = epoch), from rank 0 only."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if trainer.ctx.is_main:
            self.tracker.log_metrics(logs, step=epoch)
