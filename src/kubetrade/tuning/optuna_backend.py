"""Local tuning: an Optuna study in SQLite, TPE proposals, ASHA/median pruning per epoch.

* **Study**: ``sqlite:///<tuning_dir>/optuna.db``, opened with ``load_if_exists=True``. Trials
  in a finished state (complete, pruned, failed) count toward ``num_trials``, so calling
  again after an interruption runs only what is missing. Heartbeats (every 30 s) let a later
  run fail a trial whose process was killed and retry it once with the same parameters.
* **Trials**: each trial trains with :func:`kubetrade.training.trainer.fit` on train + val
  windows only, reports the objective after every epoch (:class:`~kubetrade.tuning.objective.OptunaReporter`) and stops
  when the pruner says so. Its value is the best per-epoch objective (the epoch early
  stopping keeps). Every trial is a child MLflow run (tag ``mlflow.parentRunId``) with its
  parameters, per-epoch metrics, final value and state.
* **Parallelism**: ``max_concurrent_trials`` > 1 starts that many worker *processes*
  (``python -m kubetrade.tuning.worker``) on the same SQLite study. Processes, not
  ``n_jobs`` threads, because the trainer seeds the global torch/numpy RNGs (threads would
  interleave them and make trials irreproducible) and because small models are bound by
  Python overhead, which threads would serialise on the GIL. A locked counter file hands
  out exactly the missing number of trials. With one worker, trials run in this process
  and the study is deterministic for a given seed.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from optuna.trial import TrialState

from kubetrade.errors import ConfigError, TrainingError
from kubetrade.tuning.spec import PrunerSettings, SamplerSettings, TuningSpec

__all__ = [
    "STUDY_DB",
    "TrialSetup",
    "StudyReport",
    "storage_url",
    "study_parent_run",
    "open_study",
    "make_sampler",
    "make_pruner",
    "run_study",
    "summarize_study",
    "resolve_objective",
    "claim_trial",
    "worker_loop",
]

log = logging.getLogger("kubetrade.tuning")

STUDY_DB = "optuna.db"
TRIALS_DIR = "trials"
WORKER_BUNDLE = "bundle.npz"
WORKER_SETUP = "worker_setup.json"
WORKER_CLAIMS = "claims"
DEFAULT_OBJECTIVE = "kubetrade.tuning.objective:HybridObjective"
HEARTBEAT_S = 30
GRACE_S = 120
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


# ---------------------------------------------------------------- study plumbing
def storage_url(tuning_dir: str | Path) -> str:
    """The SQLite URL of the study database in ``tuning_dir``."""
    return f"sqlite:///{Path(tuning_dir).resolve() / STUDY_DB}"


def _storage(url: str) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            # several processes share one SQLite file: wait for its lock instead of failing
            engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        )


def make_sampler(settings: SamplerSettings, worker: int = 0) -> optuna.samplers.BaseSampler:
    """Seeded TPE or random sampler; each worker process gets ``seed + worker``."""
    seed = settings.seed + worker
    if settings.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.n_startup_trials)


def make_pruner(settings: PrunerSettings) -> optuna.pruners.BasePruner:
    """The configured pruner; steps are 1-based epochs, so ``grace_period`` is the first rung."""
    if settings.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=settings.grace_period, reduction_factor=settings.reduction_factor
        )
    if settings.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=settings.grace_period, reduction_factor=settings.reduction_factor
        )
    if settings.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.grace_period
        )
    return optuna.pruners.NopPruner()


def open_study(spec: TuningSpec, study_name: str, url: str, worker: int = 0) -> optuna.Study:
    """Create or load the study; refuse one made for another search space or objective."""
    direction: Literal["maximize", "minimize"] = (
        "maximize" if spec.objective.mode == "max" else "minimize"
    )
    study = optuna.create_study(
        storage=_storage(url),
        sampler=make_sampler(spec.sampler, worker),
        pruner=make_pruner(spec.pruner),
        study_name=study_name,
        direction=direction,
        load_if_exists=True,
    )
    identity = {"parameters": spec.space.to_dict(), "metric": spec.objective.metric}
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
    elif stored != identity or study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {study_name!r} in {url} was created for another search space or objective "
            f"({stored.get('metric')}); use a new run folder or experiment name to start over"
        )
    return study


def study_parent_run(
    study: optuna.Study,
    run_dir: str | Path,
    name: str,
    tracking_uri: str | None,
    *,
    step: str,
    params: dict[str, Any],
) -> Any:
    """The study's MLflow parent run: reattached on resume (its id is a study attribute),
    otherwise started, tagged with the study and ``step`` and given ``params``."""
    from kubetrade.training.tracking import MlflowTracker

    tracker = MlflowTracker(run_dir, name, tracking_uri, run_name=f"tune-{name}")
    previous = study.user_attrs.get("mlflow_parent_run_id")
    if previous:
        try:
            tracker.client.get_run(previous)
        except Exception:  # another tracking store, or the run was deleted
            previous = None
    if previous:
        tracker.run_id = previous
        tracker.client.update_run(previous, status="RUNNING")
        return tracker
    tracker.start()
    study.set_user_attr("mlflow_parent_run_id", tracker.run_id)
    tracker.set_tags({"optuna.study": name, "kubetrade.step": step})
    tracker.log_params(params)
    return tracker


# ---------------------------------------------------------------- one trial's setup
@dataclass
class TrialSetup:
    """Everything a trial needs besides the data (picklable, for worker processes)."""

    base_config: dict[str, Any]
    spec: dict[str, Any]
    tuning_dir: str
    study_name: str
    tracking_uri: str | None = None
    experiment_name: str = "kubetrade-tuning"
    parent_run_id: str | None = None
    threads_per_trial: int = 1
    keep_trial_files: bool = False
    bundle_path: str | None = None
    objective: str = DEFAULT_OBJECTIVE


# ---------------------------------------------------------------- the study
@dataclass
class StudyReport:
    """Where a study stands, and what pruning saved."""

    study_name: str
    storage: str
    best_params: dict[str, Any]
    best_value: float
    best_trial_number: int
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    epochs_run: int
    epochs_possible: int
    trial_seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def pruning_saving(self) -> float:
        """Fraction of the epoch budget (complete + pruned trials x max_t) not spent."""
        return 1.0 - self.epochs_run / self.epochs_possible if self.epochs_possible else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pruning_saving": self.pruning_saving}


def summarize_study(study: optuna.Study, spec: TuningSpec, storage: str = "") -> StudyReport:
    """Counts, epoch accounting and the best trial.

    Raises:
        TrainingError: no trial completed (with the failed trials' errors).
    """
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in _FINISHED}
    counted = by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    errors = [
        str(t.user_attrs["error"]) for t in by_state[TrialState.FAIL] if "error" in t.user_attrs
    ]
    if not by_state[TrialState.COMPLETE]:
        detail = "; ".join(dict.fromkeys(errors)) or "every trial was pruned or is still running"
        raise TrainingError(f"study {study.study_name!r}: no trial completed ({detail[:1500]})")
    best = study.best_trial
    return StudyReport(
        study_name=study.study_name,
        storage=storage,
        best_params=dict(best.params),
        best_value=float(best.value) if best.value is not None else math.nan,
        best_trial_number=best.number,
        n_trials=sum(len(v) for v in by_state.values()),
        n_complete=len(by_state[TrialState.COMPLETE]),
        n_pruned=len(by_state[TrialState.PRUNED]),
        n_failed=len(by_state[TrialState.FAIL]),
        epochs_run=sum(int(t.user_attrs.get("epochs_run", 0)) for t in counted),
        epochs_possible=len(counted) * spec.objective.max_t,
        trial_seconds=sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials),
        errors=errors,
    )


def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    attrs = trial.user_attrs
    value = f"{trial.value:.4g}" if trial.value is not None else "-"
    log.info(
        "trial %d %s value=%s epochs=%s %.1fs %s",
        trial.number,
        trial.state.name,
        value,
        attrs.get("epochs_run", "?"),
        float(attrs.get("seconds", 0.0)),
        trial.params,
    )


class TrialProgress:
    """Optuna callback: a ``[kubetrade] tune:`` console line per finished trial, with the
    count, the best value so far and an ETA from the mean trial time."""

    def __init__(self, total: int, done: int = 0) -> None:
        self.total, self.done, self.start = total, done, time.perf_counter()
        self._ran = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        self._ran += 1
        elapsed = time.perf_counter() - self.start
        left = max(self.total - self.done, 0)
        value = f"{trial.value:.4g}" if trial.value is not None else "-"
        try:
            best = f", best {study.best_value:.4g}"
        except ValueError:  # no completed trial yet
            best = ""
        eta = f", ETA {elapsed / self._ran * left:.0f}s" if left else ""
        print(
            f"[kubetrade] tune: trial {self.done}/{self.total} {trial.state.name} value={value}"
            f"{best}, {elapsed:.0f}s elapsed{eta}",
            flush=True,
        )


def resolve_objective(path: str) -> Callable[[TrialSetup, Any], Callable[[optuna.Trial], float]]:
    """Import ``"package.module:Name"`` (an objective factory)."""
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"objective {path!r} cannot be imported ({exc}); use 'package.module:Name'"
        ) from exc
    if not callable(factory):
        raise ConfigError(f"objective {path!r} is not callable")
    return cast(Callable[[TrialSetup, Any], Callable[[optuna.Trial], float]], factory)


def run_study(spec: TuningSpec, setup: TrialSetup, bundle: Any) -> StudyReport:
    """Run the missing trials of ``setup.study_name`` and summarise the study.

    Args:
        spec: the tuning spec (``objective.num_trials`` counts resumed trials too).
        setup: per-trial settings; ``tuning_dir`` holds ``optuna.db``; ``setup.objective``
            names the objective factory (default
            :class:`~kubetrade.tuning.objective.HybridObjective`).
        bundle: train + val windows (``bundle.test`` is never read).
    """
    factory = resolve_objective(setup.objective)
    tuning_dir = Path(setup.tuning_dir)
    tuning_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(tuning_dir)
    study = open_study(spec, setup.study_name, url)
    finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
    remaining = max(spec.objective.num_trials - finished, 0)
    workers = min(spec.objective.max_concurrent_trials, remaining)
    log.info(
        "study %s: %d finished, %d to run on %d worker(s)",
        setup.study_name, finished, remaining, max(workers, 1),
    )  # fmt: skip
    if workers == 1:
        progress = TrialProgress(finished + remaining, finished)
        study.optimize(
            factory(setup, bundle),
            n_trials=remaining,
            catch=(Exception,),
            callbacks=[_log_trial, progress],
        )
    elif workers > 1:
        _run_workers(setup, bundle, url, workers, remaining)
    return summarize_study(
        optuna.load_study(study_name=setup.study_name, storage=_storage(url)), spec, url
    )


def _run_workers(setup: TrialSetup, bundle: Any, url: str, workers: int, total: int) -> None:
    """Start ``workers`` processes (``python -m kubetrade.tuning.worker``) and wait for them.

    Subprocesses rather than ``multiprocessing``: nothing is re-imported from the caller's
    ``__main__`` (scripts and notebooks without a main guard work) and no forked torch state.
    """
    from kubetrade.data.splits import save_bundle

    tuning_dir = Path(setup.tuning_dir)
    path = save_bundle(bundle.without_test(), tuning_dir / WORKER_BUNDLE)
    setup_path = tuning_dir / WORKER_SETUP
    setup_path.write_text(
        json.dumps({**asdict(setup), "bundle_path": str(path)}, default=str), encoding="utf-8"
    )
    claims = tuning_dir / WORKER_CLAIMS
    claims.write_text("0", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(setup.threads_per_trial)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetrade.tuning.worker",
                "--setup",
                str(setup_path),
                "--storage",
                url,
                "--worker",
                str(index),
                "--claims",
                str(claims),
                "--total",
                str(total),
            ],
            env=env,
        )  # fmt: skip
        for index in range(workers)
    ]
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for proc in procs:  # only after an interrupt: stop our own workers
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    failed = [index for index, code in enumerate(codes) if code != 0]
    if failed:
        raise TrainingError(
            f"tuning worker(s) {failed} exited with an error; see their output above "
            f"(the study in {url} keeps every finished trial; rerun to resume)"
        )


def claim_trial(claims: str | Path, total: int) -> bool:
    """Take one of ``total`` trial slots from the shared counter file (False when none left)."""
    with open(claims, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        taken = int(handle.read().strip() or 0)
        if taken >= total:
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(taken + 1))
        return True


def worker_loop(setup: TrialSetup, url: str, index: int, claims: str | Path, total: int) -> None:
    """One worker process: load the study and run trials while slots are left."""
    import torch

    from kubetrade.data.splits import load_bundle

    torch.set_num_threads(setup.threads_per_trial)
    assert setup.bundle_path is not None
    spec = TuningSpec.from_dict(setup.spec)
    study = open_study(spec, setup.study_name, url, worker=index)
    objective = resolve_objective(setup.objective)(setup, load_bundle(setup.bundle_path))
    while claim_trial(claims, total):
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[_log_trial])
