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
import io
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from kubetrade.errors import KubetradeError
from kubetrade.pipeline.component_runtime import ERROR_FILE_ENV
from kubetrade.pipeline.run_form import BASE_CONFIG_ENV, RunParams, params_from_run
from kubetrade.pipeline.steps import RunConfig
from kubetrade.process import pid_alive

__all__ = ["RunResult", "run_local", "compile_pipeline", "PipelineRunError"]


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
                        metrics.update(art.get("metadata", {}))
            key = str(task_dir.relative_to(pipeline_dir))
            outputs[key] = {"artifacts": artifacts, "metrics": metrics}
    return outputs


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_EPOCH_KEYS = ("val_loss", "val_accuracy", "val_fold_mean_sharpe_ratio")


def _epoch_summary(line: str) -> str:
    """``epoch=2/6 ... val_loss=0.85 ... seconds=1.5`` -> ``epoch 2/6 val_loss=0.85 ... (1.5 s)``."""
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    shown = " ".join(f"{k}={fields[k]}" for k in _EPOCH_KEYS if k in fields)
    took = f" ({fields['seconds']} s)" if "seconds" in fields else ""
    return f"epoch {fields.get('epoch', '?')} {shown}{took}".replace("  ", " ")


class _ProgressTee(io.TextIOBase):
    """Stands in for sys.stdout during a run: everything goes to ``pipeline.log``;
    the console gets one line per task start/finish and kubetrade's own step lines
    (or everything, with ``verbose``)."""

    def __init__(self, log_path: Path, console: TextIO, verbose: bool) -> None:
        self._log = log_path.open("a", encoding="utf-8")
        self._console = console
        self._verbose = verbose
        self._buf = ""

    def write(self, s: str) -> int:
        self._log.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(_ANSI.sub("", line))
        return len(s)

    def _emit(self, line: str) -> None:
        text = line.strip()
        if self._verbose:
            self._console.write(line + "\n")
        elif "[kubetrade]" in text:
            self._console.write("  " + text.split("[kubetrade]", 1)[1].strip() + "\n")
        elif text.startswith("epoch="):  # the trainer's per-epoch line (Katib's StdOut format)
            self._console.write("  train: " + _epoch_summary(text) + "\n")
        elif "Executing task" in text:
            self._console.write("▶ " + text.split("Executing task", 1)[1].strip(" '") + "\n")
        elif "finished with status" in text and "Task" in text:
            self._console.write("  " + text.split(" - ", 2)[-1].strip() + "\n")
        else:
            return
        self._console.flush()

    def flush(self) -> None:
        self._log.flush()
        self._console.flush()

    def close(self) -> None:
        if self._buf:
            self._log.write(self._buf)
        self._log.close()


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
    tee = _ProgressTee(run_dir / "pipeline.log", sys.stderr, verbose)
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
        text = _ANSI.sub("", str(exc))
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
    from kubetrade.registry.champion import redact

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
