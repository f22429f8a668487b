"""What the Kubeflow UI shows beside the steps' own outputs: the summary's MLflow link."""

from __future__ import annotations

import json
from pathlib import Path

from kubetrade.pipeline.steps import RunConfig

__all__ = ["mlflow_run_url", "append_mlflow_link"]


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run when the store is an MLflow server (http[s]), else None."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def append_mlflow_link(run: RunConfig, model_dir: str | Path, summary_path: str | Path) -> str:
    """Append the training's MLflow run (a link on an MLflow server) to the Markdown summary.

    ``model_dir`` is the train step's output (``train_result.json`` names the run).
    Returns the line appended.
    """
    from kubetrade.pipeline.steps.common import EXPERIMENT, run_tracker

    info = json.loads((Path(model_dir) / "train_result.json").read_text(encoding="utf-8"))
    run_id = str(info["run_id"])
    tracker = run_tracker(run, run_id=run_id)
    experiment_id = tracker.client.get_run(run_id).info.experiment_id
    url = mlflow_run_url(tracker.tracking_uri, experiment_id, run_id)
    where = f"[{run_id}]({url})" if url else f"`{run_id}` (store `{tracker.tracking_uri}`)"
    line = f"\n**MLflow run** (experiment `{EXPERIMENT}`, model, reports, metrics): {where}\n"
    with open(summary_path, "a", encoding="utf-8") as fh:
        fh.write(line)
    return line
