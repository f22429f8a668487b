"""Run the pipeline locally with kfp's real local runner, or compile it.

``run_local`` makes a run folder ``<run_root>/<UTC timestamp>/``, points
``kfp.local`` at it (``SubprocessRunner(use_venv=False)``: every task is a real
subprocess in this environment) and calls the pipeline function. On failure it
raises a one-line :class:`~kubetrade.errors.KubetradeError` naming the failed
step and the cause, and removes the run's partial outputs (the error and the
log stay, in ``FAILED.json``).

``run_pipeline`` is ``kubetrade run`` without the console: the run root and data preflight
before any run folder exists, then ``run_local``, discarding a half-written run folder on an
OS error. ``summary_rows`` / ``artifact_path`` / ``report_paths`` read a finished run's
outputs for the summary. The console progress lines are :mod:`kubetrade.pipeline.progress`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetrade.config.run import RunConfig
from kubetrade.errors import KubetradeError
from kubetrade.pipeline.component_runtime import ERROR_FILE_ENV, step_metrics
from kubetrade.pipeline.progress import ANSI, ProgressTee
from kubetrade.pipeline.run_form import BASE_CONFIG_ENV, RunParams, params_from_run
from kubetrade.process import pid_alive

__all__ = [
    "RunResult",
    "run_local",
    "run_pipeline",
    "compile_pipeline",
    "PipelineRunError",
    "check_run_root",
    "preflight_data",
    "discard_run_folder",
    "summary_rows",
    "artifact_path",
    "report_paths",
]


class PipelineRunError(KubetradeError):
    """A pipeline step failed."""


@dataclass
class RunResult:
    run_dir: Path
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


def _new_run_dir(run_root: Path) -> Path:
    """A new run folder ``<UTC stamp>[-n]``; ``mkdir`` without ``exist_ok`` is the atomic
    claim, so runs started in the same second get different folders."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_root.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        run_dir = run_root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise KubetradeError(f"could not create a new run folder under {run_root}")


def _collect_outputs(run_dir: Path) -> dict[str, Any]:
    """Task name -> {"artifacts": {name: path}, "metrics": {...}} from kfp's outputs."""
    outputs: dict[str, Any] = {}
    for pipeline_dir in sorted(run_dir.iterdir()):
        if not pipeline_dir.is_dir() or pipeline_dir.name.startswith("."):
            continue
        for task_dir in sorted(
            p for p in pipeline_dir.rglob("*") if (p / "executor_output.json").is_file()
        ):
            executor = json.loads((task_dir / "executor_output.json").read_text(encoding="utf-8"))
            metrics: dict[str, Any] = {}
            artifacts: dict[str, str] = {}
            for name, entry in executor.get("artifacts", {}).items():
                for art in entry.get("artifacts", []):
                    artifacts[name] = art.get("uri", "")
                    if name == "metrics":
                        metrics.update(step_metrics(art.get("metadata", {})))
            key = str(task_dir.relative_to(pipeline_dir))
            outputs[key] = {"artifacts": artifacts, "metrics": metrics}
    return outputs


# ------------------------------------------------------------------- a run, as `kubetrade run`


def with_run_root(run: RunConfig, run_root: str | Path | None) -> RunConfig:
    """``run`` with ``pipeline.run_root`` replaced: the run folders *and* the MLflow store
    (``<run_root>/mlflow.db``) move; ``None`` keeps the config's."""
    if run_root is None:
        return run
    return run.model_copy(
        update={"pipeline": run.pipeline.model_copy(update={"run_root": str(run_root)})}
    )


def check_run_root(root: Path) -> None:
    """Refuse a run root that cannot be created or written (checked before any work)."""
    import errno

    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a directory ({os.strerror(errno.ENOTDIR)})"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable ({os.strerror(errno.EACCES)})"
    if problem:
        raise KubetradeError(
            f"run_root {root} cannot be used: {problem}; choose a writable run_root in "
            "config/pipeline.yaml or --run-root"
        )


def preflight_data(run: RunConfig) -> Any:
    """Load the configured data and run the quality gate the validate step runs, plus the
    checks that need the training config (enough bars per symbol and for the split).
    Returns the quality report; raises a one-line KubetradeError on any problem."""
    from kubetrade.data.quality import DataQualityValidator, ensure_enough_history, ensure_quality
    from kubetrade.data.sources import load_market_data
    from kubetrade.data.splits import TimeSeriesSplitter

    df = load_market_data(run.pipeline)  # unknown symbols / dates / unreadable files
    report = ensure_quality(df, DataQualityValidator.from_config(run.pipeline.quality))
    d = run.training.data
    ensure_enough_history(
        df,
        d.sequence_length + d.prediction_horizon,
        f"(data.sequence_length {d.sequence_length} + prediction_horizon "
        f"{d.prediction_horizon}) to build one training window",
    )
    TimeSeriesSplitter.from_config(run.training).periods(df)  # enough bars for the split
    return report


def discard_run_folder(root: Path, exc: OSError) -> None:
    """After an OS error mid-run, remove the half-written run folder the error points into
    (only a run folder, ``<UTC stamp>[-n]``; never the shared MLflow store beside it)."""
    if not exc.filename:
        return
    try:
        relative = Path(exc.filename).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return
    if len(relative.parts) > 1 and re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", relative.parts[0]):
        folder = root / relative.parts[0]
        if not (folder / "SUCCEEDED").exists():
            shutil.rmtree(folder, ignore_errors=True)


def run_pipeline(
    run: RunConfig,
    run_root: str | Path | None = None,
    verbose: bool = False,
    on_ready: Callable[[RunConfig, Any], None] | None = None,
) -> RunResult:
    """What ``kubetrade run`` does, callable from Python: check the run root and the data
    first (every input problem ends with one line before any run folder exists; the
    pipeline's own validate step still runs, it is what gates a cluster run), call
    ``on_ready(run, quality_report)``, then :func:`run_local`. An OS error mid-run (disk
    full, permissions changed) removes the half-written run folder and raises one line."""
    run = with_run_root(run, run_root)
    root = Path(run.pipeline.run_root)
    check_run_root(root)
    report = preflight_data(run)
    if on_ready is not None:
        on_ready(run, report)
    try:
        return run_local(run, root, verbose=verbose)
    except OSError as exc:
        discard_run_folder(root, exc)
        where = exc.filename or root
        raise KubetradeError(
            f"cannot write {where} ({exc.strerror or exc}); free disk space or choose a "
            "writable run_root in config/pipeline.yaml or --run-root"
        ) from None


#: the pipeline's tasks in DAG order (the summary table keeps it; others follow, by finish time)
TASK_ORDER = (
    "ingest", "validate", "features", "split", "tune", "train", "evaluate", "export",
    "rl-agent", "ensemble", "backtest", "summary", "register",
)  # fmt: skip


def summary_rows(run_dir: Path, outputs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(task name, metrics)`` in pipeline order; an RL task is named by its agent
    (``rl-agent sac``), another loop task by its iteration (``fold 2``)."""
    rows = []
    for key, info in outputs.items():
        parts = Path(key).parts
        base = parts[-1].removesuffix("-op")
        name = base
        loop = re.fullmatch(r"for-loop-\d+-iteration-(\d+)", parts[0]) if len(parts) > 1 else None
        found = sorted(Path(run_dir).glob(f"*/{key}/executor_output.json"))
        mtime = found[0].stat().st_mtime if found else 0.0
        if base == "rl-agent" and found:
            executor = json.loads(found[0].read_text(encoding="utf-8"))
            for entry in executor.get("artifacts", {}).get("agent", {}).get("artifacts", []):
                agent = entry.get("metadata", {}).get("agent_type")
                name = f"rl-agent {agent}" if agent else name
        if name == base and loop is not None:
            name = f"{base} {int(loop.group(1)) + 1}"
        rank = TASK_ORDER.index(base) if base in TASK_ORDER else len(TASK_ORDER)
        rows.append((rank, mtime, name, info["metrics"]))
    rows.sort(key=lambda r: (r[0], r[1] if r[0] == len(TASK_ORDER) else 0.0, r[2]))
    return [(name, metrics) for _, _, name, metrics in rows]


def artifact_path(outputs: dict[str, Any], task: str, artifact: str) -> str | None:
    """The local path of ``task``'s output ``artifact`` (``task`` as kfp names it:
    ``summary-op``), or None."""
    for key, info in outputs.items():
        if Path(key).name == task and artifact in info["artifacts"]:
            return str(info["artifacts"][artifact]).removeprefix("file://")
    return None


def report_paths(outputs: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, path)`` of the run's HTML reports that exist: model evaluation, backtest,
    data quality."""
    return [
        (label, path)
        for label, task, artifact in (
            ("model evaluation", "evaluate-op", "report"),
            ("backtest", "backtest-op", "report"),
            ("data quality", "validate-op", "data_docs"),
        )
        if (path := artifact_path(outputs, task, artifact))
    ]


def run_local(
    run: RunConfig, run_root: str | Path | None = None, verbose: bool = False
) -> RunResult:
    """Run the whole pipeline locally through ``kfp.local``; raise on failure.

    Full task logs go to ``<run_dir>/pipeline.log``; the console shows progress.
    """
    from kfp import local

    from kubetrade.pipelines.training import training_pipeline

    root = Path(run_root or run.pipeline.run_root)
    sweep_interrupted_runs(root)
    try:
        run_dir = _new_run_dir(root)
    except OSError as exc:
        raise KubetradeError(
            f"cannot create a run folder under {root} ({exc.strerror}); "
            "choose a writable run_root in config/pipeline.yaml or --run-root"
        ) from None
    (run_dir / "run_config.json").write_text(run.model_dump_json(indent=2), encoding="utf-8")
    (run_dir / PID_FILE).write_text(str(os.getpid()), encoding="utf-8")
    form = params_from_run(run).model_dump()
    error_file = run_dir / ".error.json"
    os.environ[ERROR_FILE_ENV] = str(error_file)
    # the resolve task starts from this run's config; the form (filled in from it) is a no-op
    os.environ[BASE_CONFIG_ENV] = str((run_dir / "run_config.json").resolve())
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir),
        raise_on_error=True,
    )
    start = time.perf_counter()
    tee = ProgressTee(run_dir / "pipeline.log", sys.stderr, verbose)
    try:
        with _root_logger_restored(), contextlib.redirect_stdout(tee), warnings.catch_warnings():
            # expected here: display names and our base image are no-ops locally
            warnings.filterwarnings("ignore", module=r"kfp\.local.*")
            training_pipeline(**form)
    except OSError as exc:  # disk full / permissions: often the log write itself
        with contextlib.suppress(OSError):
            tee.close()
        _fail_os(run_dir, error_file, exc)
    except Exception as exc:  # kfp raises RuntimeError for a failed task
        tee.close()
        _fail(run_dir, error_file, exc)
    finally:
        os.environ.pop(ERROR_FILE_ENV, None)
        os.environ.pop(BASE_CONFIG_ENV, None)
    tee.close()
    result = RunResult(run_dir=run_dir, seconds=time.perf_counter() - start)
    result.outputs = _collect_outputs(run_dir)
    (run_dir / "SUCCEEDED").write_text(f"{result.seconds:.1f}s\n", encoding="utf-8")
    with contextlib.suppress(OSError):
        (run_dir / PID_FILE).unlink()
    return result


PID_FILE = ".kubetrade.pid"


@contextlib.contextmanager
def _root_logger_restored() -> Iterator[None]:
    """Put the root logger's handlers and level back as they were on exit.

    kfp.local's ``local_logger_context`` swaps the root logger's handlers for one bound to
    ``sys.stdout`` (here: the run's tee) and restores them afterwards, but ParallelFor tasks
    run it from worker threads without a lock: two overlapping tasks can restore each other's
    handler, leaving one bound to the tee (closed after the run) and the level at INFO. The
    next INFO record in the same process (e.g. Great Expectations in a second ``run_local``)
    then printed a "Logging error" traceback.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def sweep_interrupted_runs(run_root: str | Path) -> list[Path]:
    """Mark run folders whose ``kubetrade run`` was killed (no ``SUCCEEDED`` or
    ``FAILED.json``, and its process is gone) as ``INTERRUPTED.json`` and delete their task
    outputs, so no half-written artifact is left for anyone to pick up. Returns them."""
    swept: list[Path] = []
    root = Path(run_root)
    if not root.is_dir():
        return swept
    for run_dir in sorted(p for p in root.iterdir() if (p / PID_FILE).is_file()):
        if (run_dir / "SUCCEEDED").exists() or (run_dir / "FAILED.json").exists():
            continue
        try:
            pid = int((run_dir / PID_FILE).read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            continue  # a run in progress
        for child in run_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
        (run_dir / "INTERRUPTED.json").write_text(
            json.dumps({"message": f"run process {pid} ended before the run finished; "
                        "its task outputs were deleted"}, indent=2),
            encoding="utf-8",
        )  # fmt: skip
        swept.append(run_dir)
    return swept


def _fail_os(run_dir: Path, error_file: Path, exc: OSError) -> None:
    """An OS error mid-run (disk full while writing the log, ...): drop the task outputs,
    record ``FAILED.json`` if the disk takes it, raise one line."""
    for child in run_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
    for path in (error_file, run_dir / PID_FILE):
        with contextlib.suppress(OSError):
            path.unlink()
    where = exc.filename or run_dir
    message = f"cannot write {where} ({exc.strerror or type(exc).__name__})"
    with contextlib.suppress(OSError):
        (run_dir / "FAILED.json").write_text(
            json.dumps({"step": "pipeline", "message": message}, indent=2), encoding="utf-8"
        )
    raise PipelineRunError(
        f"{message}; the run's outputs were removed. Free disk space or choose a writable "
        "run_root in config/pipeline.yaml or --run-root"
    ) from None


def _fail(run_dir: Path, error_file: Path, exc: BaseException) -> None:
    if error_file.is_file():
        info = json.loads(error_file.read_text(encoding="utf-8"))
        message = info["message"]
        step = info["step"]
    else:  # a crash, not a user error: name the task and the exception from its log
        text = ANSI.sub("", str(exc))
        task = re.search(r"Inner task failed: '([^']+)'", text)
        step = task.group(1) if task else "pipeline"
        log = run_dir / "pipeline.log"
        lines = (
            log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
        )
        errors = [ln.strip() for ln in lines if re.match(r"\s*[\w.]+(Error|Exception|Exit)\b", ln)]
        cause = errors[-1] if errors else text.splitlines()[0] if text else type(exc).__name__
        message = f"{cause} (full log: {log})"
    # nothing half-written survives a failed run: drop every task output
    for child in run_dir.iterdir():
        if child.is_dir() and child.name != "logs":
            shutil.rmtree(child, ignore_errors=True)
    with contextlib.suppress(OSError):
        error_file.unlink()
    with contextlib.suppress(OSError):
        (run_dir / PID_FILE).unlink()
    from kubetrade.registry.store import redact

    message = redact(message)
    (run_dir / "FAILED.json").write_text(
        json.dumps({"step": step, "message": message}, indent=2), encoding="utf-8"
    )
    raise PipelineRunError(f"step '{step}' failed: {message}") from None


def compile_pipeline(
    path: str | Path,
    run: RunConfig | None = None,
    gpu: bool = False,
    params: RunParams | None = None,
) -> Path:
    """Compile the pipeline to KFP IR YAML; the run form's defaults are ``params`` (default:
    filled in from ``run``, see :func:`~kubetrade.pipeline.run_form.profile_params`).

    ``gpu``: train and tune get a GPU, the GPU node selector and toleration (for
    ``backend: local`` on a GPU node pool).
    """
    from kfp import compiler

    from kubetrade.pipelines.training import build_pipeline, gpu_options, training_pipeline

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    form = params or params_from_run(run or RunConfig())
    compiler.Compiler().compile(
        build_pipeline(gpu_options()) if gpu else training_pipeline,
        package_path=str(path),
        pipeline_parameters=form.model_dump(),
    )
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the 'kubetrade' command")
