"""The Optuna objective for the hybrid CNN+LSTM: sample, train on train + validation, report.

:class:`HybridObjective` is what :attr:`~kubetrade.tuning.optuna_backend.TrialSetup.objective`
names by default; :class:`OptunaReporter` reports the objective after every epoch and stops
training when Optuna prunes the trial. The study around them (storage, samplers, pruners,
worker processes) is :mod:`kubetrade.tuning.optuna_backend`; the RL agents' objective is
:class:`kubetrade.tuning.rl_objective.RLObjective`.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import optuna

from kubetrade.errors import TrainingError
from kubetrade.training.callbacks import Callback, EarlyStopping
from kubetrade.tuning.optuna_backend import TRIALS_DIR, TrialSetup
from kubetrade.tuning.spec import TuningSpec, build_config

__all__ = ["HybridObjective", "OptunaReporter"]


class OptunaReporter(Callback):
    """Report ``metric`` to an Optuna trial after every epoch; stop training when pruned.

    Training is stopped (not interrupted by an exception) so the trainer ends cleanly; the
    objective raises :class:`optuna.TrialPruned` afterwards.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned_epoch: int | None = None

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        value = float(logs.get(self.metric, math.nan))
        print(
            f"[kubetrade] tune: trial {self.trial.number} epoch {epoch} {self.metric}={value:.4g}",
            flush=True,
        )  # progress: an epoch of a make-run trial takes seconds
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.stop_training = True


class HybridObjective:
    """The Optuna objective for the hybrid CNN+LSTM: sample, train, report, return the value."""

    def __init__(self, setup: TrialSetup, bundle: Any) -> None:
        self.setup = setup
        self.spec = TuningSpec.from_dict(setup.spec)
        self.bundle = bundle

    def __call__(self, trial: optuna.Trial) -> float:
        import torch

        from kubetrade.training.trainer import fit

        spec, setup = self.spec, self.setup
        metric, mode = spec.objective.metric, spec.objective.mode
        params = spec.space.suggest(trial)
        overrides = spec.trial_overrides(params)
        trial.set_user_attr("overrides", overrides)
        trial_dir = Path(setup.tuning_dir) / TRIALS_DIR / f"{trial.number:04d}"
        tracker = self._start_run(trial, params, overrides, trial_dir)
        reporter = OptunaReporter(trial, metric)
        threads = torch.get_num_threads()
        torch.set_num_threads(setup.threads_per_trial)
        started = time.perf_counter()
        state, value, epochs = "FAIL", math.nan, 0
        try:
            cfg = build_config(setup.base_config, overrides, f"trial {trial.number}")
            callbacks: list[Callback] = [
                EarlyStopping(
                    cfg.training.monitor,
                    cfg.training.early_stopping_patience,
                    restore_best_weights=False,  # the weights are thrown away
                ),
                reporter,
            ]
            if tracker is not None:
                from kubetrade.training.tracking import MLflowEpochLogger

                callbacks.append(MLflowEpochLogger(tracker))
            _, result = fit(
                cfg, self.bundle, trial_dir, callbacks=callbacks, resume=False, verbose=False
            )
            epochs = result.epochs_run
            values = [h[metric] for h in result.history if math.isfinite(h.get(metric, math.nan))]
            if not values:
                raise TrainingError(f"{metric} was never finite; the run diverged")
            value = max(values) if mode == "max" else min(values)
            state = "PRUNED" if reporter.pruned_epoch is not None else "COMPLETE"
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            torch.set_num_threads(threads)
            seconds = time.perf_counter() - started
            self._finish_trial(
                trial,
                trial_dir,
                tracker,
                state=state,
                epochs=epochs,
                seconds=seconds,
                metrics={
                    f"best_{metric}": value,
                    "epochs_run": epochs,
                    "pruned": float(state == "PRUNED"),
                },
            )
        if state == "PRUNED":
            raise optuna.TrialPruned(f"pruned after epoch {reporter.pruned_epoch}")
        return value

    def _finish_trial(
        self,
        trial: optuna.Trial,
        trial_dir: Path,
        tracker: Any,
        *,
        state: str,
        epochs: int,
        seconds: float,
        metrics: dict[str, float],
    ) -> None:
        """Record how a trial ended (user attributes, its MLflow child run), drop its files."""
        trial.set_user_attr("epochs_run", epochs)
        trial.set_user_attr("seconds", round(seconds, 3))
        trial.set_user_attr("state", state)
        if not self.setup.keep_trial_files:
            shutil.rmtree(trial_dir, ignore_errors=True)
        if tracker is not None:
            tracker.log_metrics(metrics)
            tracker.set_tags({"optuna.state": state})
            tracker.end("FAILED" if state == "FAIL" else "FINISHED")

    def _start_run(
        self, trial: optuna.Trial, params: dict[str, Any], overrides: dict[str, Any], run_dir: Path
    ) -> Any:
        if self.setup.parent_run_id is None:
            return None
        from kubetrade.training.tracking import MlflowTracker

        tracker = MlflowTracker(
            run_dir,
            self.setup.experiment_name,
            self.setup.tracking_uri,
            run_name=f"trial-{trial.number:04d}",
        )
        tracker.start()
        tracker.set_tags(
            {
                "mlflow.parentRunId": self.setup.parent_run_id,
                "optuna.study": self.setup.study_name,
                "optuna.trial_number": trial.number,
            }
        )
        tracker.log_params({**{f"param.{k}": v for k, v in params.items()}, **overrides})
        trial.set_user_attr("mlflow_run_id", tracker.run_id)
        return tracker
