"""Run the pipeline locally with kfp's real local runner, or compile it.

``run_local`` makes a run folder ``<run_root>/<UTC timestamp>/``, points
``kfp.local`` at it (``SubprocessRunner(use_venv=False)``: every task is a real
subprocess in this environment) and calls the pipeline function. On failure it
raises a one-line :class:`~kubetrade.errors.KubetradeError` naming the failed
step and the cause, and removes the run's partial outputs (the error and the
log stay, in ``FAILED.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetrade.errors import KubetradeError
from kubetrade.pipeline.component_runtime import ERROR_FILE_ENV
from kubetrade.pipeline.steps import RunConfig

__all__ = ["RunResult", "run_local", "compile_pipeline", "PipelineRunError"]


class PipelineRunError(KubetradeError):
    """A pipeline step failed."""


@dataclass
class RunResult:
    run_dir: Path
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


def _new_run_dir(run_root: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_root / stamp
    n = 1
    while run_dir.exists():
        run_dir = run_root / f"{stamp}-{n}"
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _collect_outputs(run_dir: Path) -> dict[str, Any]:
    """Task name -> {artifact name: path} for everything kfp wrote under run_dir."""
    outputs: dict[str, Any] = {}
    for pipeline_dir in run_dir.iterdir():
        if not pipeline_dir.is_dir() or pipeline_dir.name.startswith("."):
            continue
        for task_dir in sorted(p for p in pipeline_dir.iterdir() if p.is_dir()):
            outputs[task_dir.name] = {p.name: str(p) for p in sorted(task_dir.iterdir())}
    return outputs


def run_local(run: RunConfig, run_root: str | Path | None = None) -> RunResult:
    """Run the whole pipeline locally through ``kfp.local``; raise on failure."""
    from kfp import local

    from kubetrade.pipelines.training import training_pipeline

    root = Path(run_root or run.pipeline.run_root)
    try:
        run_dir = _new_run_dir(root)
    except OSError as exc:
        raise KubetradeError(
            f"cannot create a run folder under {root} ({exc.strerror}); "
            "choose a writable run_root in config/pipeline.yaml or --run-root"
        ) from None
    (run_dir / "run_config.json").write_text(run.model_dump_json(indent=2), encoding="utf-8")
    error_file = run_dir / ".error.json"
    os.environ[ERROR_FILE_ENV] = str(error_file)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir),
        raise_on_error=True,
    )
    start = time.perf_counter()
    try:
        training_pipeline(run_config=run.to_json())
    except Exception as exc:  # kfp raises RuntimeError for a failed task
        _fail(run_dir, error_file, exc)
    finally:
        os.environ.pop(ERROR_FILE_ENV, None)
    result = RunResult(run_dir=run_dir, seconds=time.perf_counter() - start)
    result.outputs = _collect_outputs(run_dir)
    (run_dir / "SUCCEEDED").write_text(f"{result.seconds:.1f}s\n", encoding="utf-8")
    return result


def _fail(run_dir: Path, error_file: Path, exc: BaseException) -> None:
    if error_file.is_file():
        info = json.loads(error_file.read_text(encoding="utf-8"))
        message = info["message"]
        step = info["step"]
    else:
        step, message = "pipeline", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    # nothing half-written survives a failed run: drop every task output
    for child in run_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
    with contextlib.suppress(OSError):
        error_file.unlink()
    (run_dir / "FAILED.json").write_text(
        json.dumps({"step": step, "message": message}, indent=2), encoding="utf-8"
    )
    raise PipelineRunError(f"step '{step}' failed: {message}") from None


def compile_pipeline(path: str | Path, run: RunConfig | None = None) -> Path:
    """Compile the pipeline to KFP IR YAML with ``run``'s config as the default parameter."""
    from kfp import compiler

    from kubetrade.pipelines.training import training_pipeline

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = run or RunConfig()
    compiler.Compiler().compile(
        training_pipeline,
        package_path=str(path),
        pipeline_parameters={"run_config": run.to_json()},
    )
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the 'kubetrade' command")
