"""The run's configuration: config files + ``--set`` overrides + the run form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetrade.config import run as run_config
from kubetrade.config.run import RunConfig
from kubetrade.pipeline.run_form import apply_run_params, params_from_run

__all__ = ["load_run_config"]


def load_run_config(
    pipeline_path: str | Path | None = "config/pipeline.yaml",
    overrides: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> RunConfig:
    """Load pipeline.yaml and the files it points at into one :class:`RunConfig`.

    ``overrides`` are dotted keys into the pipeline config (``symbols``,
    ``source.type`` ...) applied before validation; ``params`` are run-form values
    (:class:`~kubetrade.pipeline.run_form.RunParams` names, e.g. ``{"epochs": 3}``) applied
    after it, as the pipeline's resolve task applies them.
    """
    run = run_config.load_run_config(pipeline_path, overrides)
    if params:
        return apply_run_params(run, {**params_from_run(run).model_dump(), **params})
    return run
