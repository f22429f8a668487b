"""The guide's ``TrainingPipeline``: train -> evaluate -> export + parity -> log -> register.

Training runs in-process for one process, or as ``torchrun --standalone
--nproc_per_node=N -m kubetrade.training.run`` when ``hardware.nproc_per_node`` > 1 (the
bundle is handed over as ``.npz``). Evaluation, export and registration run here, as rank 0.
A failing step marks the MLflow run FAILED and nothing is registered.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from kubetrade.config import PipelineConfig, TrainingConfig, flatten, load_training_config
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.models import HybridCNNLSTM
from kubetrade.process import pid_alive
from kubetrade.training.bundle import DatasetBundle, save_bundle
from kubetrade.training.callbacks import model_from_checkpoint
from kubetrade.training.evaluate_export import evaluate_model, export_and_log
from kubetrade.training.tracking import DEFAULT_MODEL_NAME, MLflowEpochLogger, MlflowTracker
from kubetrade.training.trainer import RESULT_NAME, TrainResult, fit

__all__ = ["TrainingPipeline", "DataLoaderFn", "pipeline_data_loader"]

#: ``(symbols, start_date, end_date, config) -> DatasetBundle``
DataLoaderFn = Callable[[list[str], str | None, str | None, TrainingConfig], DatasetBundle]


def pipeline_data_loader(pipeline: PipelineConfig | None = None) -> DataLoaderFn:
    """The pipeline's data path as a :data:`DataLoaderFn`: the configured source (default:
    the embedded AAPL/GOOG/IBM/MSFT daily bars), the Great Expectations quality gate, the
    causal features and the purged time split with ``config``'s windows — the bundle the
    ``split`` step builds, without the Feast round trip (which returns the same table).

    ``symbols``, ``start_date`` and ``end_date`` replace the pipeline config's; ``None``
    dates mean the whole history. Raises ``ConfigError`` (not a date, start after end, no
    symbols), ``DataSourceError`` (unknown symbol, empty range), ``QualityGateError`` or
    ``SplitError`` before anything is written.
    """
    base = pipeline if pipeline is not None else PipelineConfig()

    def load(
        symbols: list[str], start_date: str | None, end_date: str | None, config: TrainingConfig
    ) -> DatasetBundle:
        from kubetrade.config import load_yaml_model
        from kubetrade.data.features import FeatureEngineer
        from kubetrade.data.quality import DataQualityValidator, ensure_quality
        from kubetrade.data.sources import load_market_data
        from kubetrade.data.splits import prepare_datasets

        # validated like a config file: a bad date or an empty symbol list is a ConfigError
        selection = {"symbols": list(symbols), "start_date": start_date, "end_date": end_date}
        cfg = load_yaml_model(PipelineConfig, data={**base.model_dump(mode="json"), **selection})
        raw = load_market_data(cfg)
        ensure_quality(raw, DataQualityValidator.from_config(cfg.quality))
        features = FeatureEngineer().build_all(
            raw, indicators=cfg.indicators, advanced=list(cfg.advanced_features)
        )
        # augmentation happens per batch in the trainer, as in the pipeline's split step
        return prepare_datasets(features, config, augment_train=False)

    return load


class TrainingPipeline:
    """Train, evaluate, export and register the hybrid model.

    Args:
        model_type: must match ``model.type`` in the config (only ``hybrid_cnn_lstm``).
        config_path: the guide's ``config/training.yaml`` (ignored when ``config`` is given).
        run_dir: run folder (default ``runs/<timestamp>``).
        config: an already-parsed config.
        data_loader: builds the windows for :meth:`train` (see :data:`DataLoaderFn`);
            default :func:`pipeline_data_loader` (the embedded dataset, the pipeline's
            quality gate, features and split).
        experiment_name: MLflow experiment.
        registered_model_name: MLflow registered model to add a version to.
        tracking_uri: MLflow URI (default: env, else SQLite in ``run_dir``).
        register: register a model version after the gates pass.
        nproc_per_node: overrides ``hardware.nproc_per_node``.
        verbose: per-epoch progress lines.
    """

    def __init__(
        self,
        model_type: str = "hybrid_cnn_lstm",
        config_path: str | Path | None = "config/training.yaml",
        run_dir: str | Path | None = None,
        config: TrainingConfig | None = None,
        data_loader: DataLoaderFn | None = None,
        experiment_name: str = "kubetrade",
        registered_model_name: str = DEFAULT_MODEL_NAME,
        tracking_uri: str | None = None,
        register: bool = True,
        nproc_per_node: int | None = None,
        verbose: bool = True,
    ) -> None:
        self.config = config if config is not None else load_training_config(config_path)
        if model_type != self.config.model.type:
            raise ConfigError(
                f"model_type {model_type!r} does not match model.type {self.config.model.type!r} "
                "in the config (supported: 'hybrid_cnn_lstm')"
            )
        self.config_path = Path(config_path) if config is None and config_path else None
        self.run_dir = Path(run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        self.data_loader = data_loader if data_loader is not None else pipeline_data_loader()
        self.experiment_name = experiment_name
        self.registered_model_name = registered_model_name
        self.tracking_uri = tracking_uri
        self.register = register
        self.nproc = nproc_per_node or self.config.hardware.nproc_per_node
        self.verbose = verbose

    def train(
        self, symbols: list[str], start_date: str | None = None, end_date: str | None = None
    ) -> dict[str, Any]:
        """Load windows for ``symbols`` in the date range (inclusive ``YYYY-MM-DD``; ``None``:
        the whole history) with the data loader, then :meth:`train_on_bundle`. Data errors
        are raised before the run folder or an MLflow run is created."""
        bundle = self.data_loader(list(symbols), start_date, end_date, self.config)
        return self.train_on_bundle(
            bundle,
            tags={"symbols": ",".join(symbols), "start_date": start_date, "end_date": end_date},
        )

    def train_on_bundle(
        self, bundle: DatasetBundle, tags: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run the whole pipeline on prepared windows; returns the results dict."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_dir_lock(self.run_dir):
            try:
                return self._train_on_bundle(bundle, tags)
            except OSError as exc:  # disk full, permissions changed mid-run ...
                for leftover in self.run_dir.glob("*.tmp*"):  # e.g. bundle.npz.tmp.npz
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                where = exc.filename or self.run_dir
                raise TrainingError(
                    f"cannot write {where} ({exc.strerror or type(exc).__name__}); the MLflow "
                    "run was marked FAILED. Free disk space or pass a writable --run-dir"
                ) from None

    def _train_on_bundle(
        self, bundle: DatasetBundle, tags: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        cfg = self.config
        config_file = self.run_dir / "training_config.yaml"
        config_file.write_text(
            yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        tracker = MlflowTracker(self.run_dir, self.experiment_name, self.tracking_uri)
        run_id = tracker.start()
        try:
            tracker.log_params(flatten(cfg))
            periods = {f"period_{k}": f"{a}..{b}" for k, (a, b) in bundle.periods.items()}
            # what the champion gate compares (a --bundle run has no symbols tag otherwise)
            periods["symbols"] = ",".join(sorted({str(s) for s in bundle.test.symbols}))
            if "period_test" not in periods and len(bundle.test.timestamps):
                stamps = sorted(str(t)[:10] for t in bundle.test.timestamps)
                periods["period_test"] = f"{stamps[0]}..{stamps[-1]}"
            tracker.set_tags(
                {"model_type": cfg.model.type, "nproc_per_node": self.nproc, **periods,
                 **(tags or {})}
            )  # fmt: skip
            tracker.log_artifact(config_file, "config")
            if self.config_path is not None and self.config_path.is_file():
                tracker.log_artifact(self.config_path, "config")
            model, result = self.train_model(bundle, tracker)
            results = self._evaluate_export_register(model, result, bundle, tracker)
        except BaseException:
            tracker.end("FAILED")
            raise
        tracker.end("FINISHED")
        results["run_id"] = run_id
        return results

    # ------------------------------------------------------------ steps
    def train_model(
        self, bundle: DatasetBundle, tracker: MlflowTracker
    ) -> tuple[HybridCNNLSTM, TrainResult]:
        """Only the training step (in-process, or torchrun when ``nproc_per_node`` > 1), with
        per-epoch metrics logged into ``tracker``'s run; returns the best model and result."""
        out = self.run_dir / "train"
        from kubetrade.training.bundle import ensure_readable_snapshot, ensure_same_data

        ensure_readable_snapshot(out)  # a truncated snapshot: one line, not a traceback
        ensure_same_data(out, bundle)  # a snapshot of other data is not resumed
        if self.nproc <= 1:
            return fit(
                self.config,
                bundle,
                out,
                extra_callbacks=[MLflowEpochLogger(tracker)],
                verbose=self.verbose,
            )
        bundle_path = save_bundle(bundle, self.run_dir / "bundle.npz")
        command = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            f"--nproc_per_node={self.nproc}",
            "-m",
            "kubetrade.training.run",
            "--bundle",
            str(bundle_path),
            "--config",
            str(self.run_dir / "training_config.yaml"),
            "--out",
            str(out),
            "--mlflow-run-id",
            str(tracker.run_id),
            "--tracking-uri",
            tracker.tracking_uri,
        ]
        if not self.verbose:
            command.append("--quiet")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = _run_forwarding_signals(command, env, capture=not self.verbose)
        if proc.returncode != 0:
            tail = (proc.stderr or "")[-2000:] if not self.verbose else "(see output above)"
            raise TrainingError(
                f"torchrun training failed with exit code {proc.returncode}: {tail}"
            )
        result = TrainResult(**json.loads((out / RESULT_NAME).read_text(encoding="utf-8")))
        assert result.final_model_path is not None
        return model_from_checkpoint(result.final_model_path), result

    def _evaluate_export_register(
        self,
        model: HybridCNNLSTM,
        result: TrainResult,
        bundle: DatasetBundle,
        tracker: MlflowTracker,
    ) -> dict[str, Any]:
        cfg = self.config
        model = model.cpu().eval()
        evaluation = evaluate_model(
            model, bundle, tracker, self.run_dir / "evaluation_report.html",
            cfg.data.prediction_horizon,
            extra_metrics={"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch},
        )  # fmt: skip
        val, test, report = evaluation.val, evaluation.test, evaluation.report_path
        tracker.log_artifact(report, "reports")
        (self.run_dir / "metrics.json").write_text(
            json.dumps({"val": val, "test": test}, default=str, indent=1), encoding="utf-8"
        )
        # parity gate: an ExportError ends the run as FAILED before anything is registered;
        # then the pyfunc over the TorchScript file (no pickle) and export_info.json, what
        # `kubetrade register --export-dir <run>/export --results <run>/metrics.json` reads
        exported = export_and_log(
            model, bundle, self.run_dir / "export", tracker, checkpoint=result.checkpoint_path
        )
        model_uri = exported.model_uri
        version = None
        if self.register:
            version = tracker.register(
                model_uri, self.registered_model_name, tags={"best_val_loss": result.best_val_loss}
            )
        return {
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "monitor": result.monitor,
            "best_monitor_value": result.best_monitor_value,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "metrics": {
                "val": val["model"],
                "test": test["model"],
                "val_baselines": val["baselines"],
                "test_baselines": test["baselines"],
            },
            "checkpoint_path": result.checkpoint_path,
            "final_model_path": result.final_model_path,
            "report_path": str(report),
            "export": asdict(exported.result),
            "model_uri": model_uri,
            "registered_model_name": self.registered_model_name if version else None,
            "model_version": version,
            "history": result.history,
            "run_dir": str(self.run_dir),
        }


def _run_forwarding_signals(
    command: list[str], env: dict[str, str], capture: bool
) -> subprocess.CompletedProcess[str]:
    """Run torchrun in its own process group; SIGTERM/SIGINT to this process are forwarded to
    the whole group (torchrun and every worker), then a TrainingError is raised so the caller
    marks the MLflow run FAILED. Without this, killing ``kubetrade train`` left torchrun and
    its workers running and the MLflow run RUNNING."""
    import signal
    import threading

    proc = subprocess.Popen(  # noqa: S603
        command,
        env=env,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        start_new_session=True,
    )
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
    try:
        try:
            out, err = proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker that ignored SIGTERM
        name = signal.Signals(received[0]).name
        raise TrainingError(
            f"training stopped by {name}; torchrun and its workers were stopped and the MLflow "
            "run marked FAILED"
        )
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


LOCK_NAME = ".kubetrade-train.lock"


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Any:
    """Hold ``<run_dir>/.kubetrade-train.lock`` (created exclusively, holding our pid) while a
    training runs there: a second ``kubetrade train`` on the same ``--run-dir`` is refused in
    one line instead of running beside the first; a lock whose process is gone is broken
    with a message."""
    import logging

    path = Path(run_dir) / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text(encoding="utf-8").strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and pid_alive(pid):
                raise TrainingError(
                    f"{run_dir} is in use by another kubetrade train (process {pid}); wait for "
                    "it to finish or pass another --run-dir"
                ) from None
            logging.getLogger(__name__).warning(
                "breaking the stale training lock %s (process %s is gone)", path, pid or "?"
            )
            print(f"kubetrade: breaking the stale lock {path} (process {pid or '?'} is gone)",
                  file=sys.stderr)  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
        break
    else:
        raise TrainingError(f"could not take the lock {path}; remove it if no training runs")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
