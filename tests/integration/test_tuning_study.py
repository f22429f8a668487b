"""Local tuning end to end: a real Optuna study in SQLite, real training, a real MLflow store.

A tiny model (widths 8-16, one or two LSTM layers) on at most 256 windows of two synthetic
symbols keeps a trial under a couple of seconds on two CPU cores.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from conftest import tiny_overrides
from kubetrade.config import TrainingConfig, load_training_config
from kubetrade.training.bundle import make_demo_bundle
from kubetrade.tuning import AdvancedTrainingPipeline, TuningResult

torch.set_num_threads(1)

TINY = tiny_overrides(**{
    "model.lstm.hidden_dim": 8, "training.max_train_windows": 256, "training.scheduler.T_max": 3,
    "data.sequence_length": 20, "hardware.device": "cpu",
})  # fmt: skip


def tiny_space(
    num_trials: int, max_t: int, pruner: dict[str, Any] | None = None, concurrent: int = 1
) -> dict[str, Any]:
    return {
        "objective": {"metric": "val_sharpe_ratio", "mode": "max", "num_trials": num_trials,
                      "max_concurrent_trials": concurrent, "max_t": max_t},
        "pruner": pruner or {"type": "none", "grace_period": 1},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 3},
        "links": {"hidden_dim": ["model.cnn.hidden_dim", "model.fusion.output_dim"]},
        "parameters": {
            "training.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
            "training.batch_size": {"type": "choice", "values": [16, 32]},
            "hidden_dim": {"type": "choice", "values": [8, 16]},
            "model.lstm.num_layers": {"type": "int", "low": 1, "high": 2},
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def bundle() -> Any:
    cfg = TrainingConfig.model_validate({"data": {"sequence_length": 20}})
    return make_demo_bundle(2, 2, seed=0, cfg=cfg)


def pipeline(run_dir: Path, name: str = "tiny", **kwargs: Any) -> AdvancedTrainingPipeline:
    return AdvancedTrainingPipeline(
        "config/training.yaml", name, run_dir=run_dir, config_overrides=TINY, **kwargs
    )


def _runs(run_dir: Path, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], max_results=1000))


def test_tiny_study_prunes_tracks_and_writes_a_trainable_best_config(
    tmp_path: Path, bundle: Any
) -> None:
    asha = {"type": "asha", "grace_period": 1, "reduction_factor": 2}
    result = pipeline(tmp_path).optimize_hyperparameters(
        tiny_space(6, 3, asha), metric="val_sharpe_ratio", mode="max", bundle=bundle
    )
    assert isinstance(result, TuningResult)
    report = result.study
    assert report is not None
    assert report.n_trials == 6 and report.n_failed == 0
    assert report.n_pruned >= 1 and report.n_complete >= 1
    assert report.epochs_possible == 3 * 6 and report.epochs_run < report.epochs_possible

    study = optuna.load_study(study_name="tiny", storage=report.storage)
    best = study.best_trial
    assert best.state == optuna.trial.TrialState.COMPLETE and best.params == result.best_params
    assert result.best_value == max(best.intermediate_values.values())  # the best epoch
    for trial in study.trials:
        assert len(trial.intermediate_values) == trial.user_attrs["epochs_run"]
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.user_attrs["epochs_run"] < 3

    # best_config.yaml is training.yaml + the tiny overrides + the best values
    cfg = load_training_config(result.best_config_path)
    assert cfg == result.config
    assert (
        cfg.model.cnn.hidden_dim == cfg.model.fusion.output_dim == result.best_params["hidden_dim"]
    )
    assert cfg.training.learning_rate == result.best_params["training.learning_rate"]
    assert cfg.model.lstm.dropout == result.best_params["dropout"]
    assert cfg.model.cnn.filter_sizes == [2, 3] and cfg.training.num_epochs == 100
    saved = json.loads(result.best_params_path.read_text())
    assert saved["value"] == result.best_value and saved["params"] == result.best_params
    assert (tmp_path / "tuning" / "trials.csv").is_file()
    assert not any((tmp_path / "tuning" / "trials").iterdir())  # trial weights cleaned up

    runs = _runs(tmp_path, "tiny")
    parent = [r for r in runs if r.info.run_id == result.mlflow_run_id]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.mlflow_run_id]
    assert parent and parent[0].info.status == "FINISHED" and len(children) == 6
    assert parent[0].data.metrics["n_pruned"] == report.n_pruned
    states = sorted(c.data.tags["optuna.state"] for c in children)
    assert states.count("PRUNED") == report.n_pruned
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["model.cnn.hidden_dim"] == child.data.params["param.hidden_dim"]
        number = int(child.data.tags["optuna.trial_number"])
        assert child.data.metrics["epochs_run"] == study.trials[number].user_attrs["epochs_run"]


def test_interrupted_study_resumes_to_num_trials(tmp_path: Path, bundle: Any) -> None:
    first = pipeline(tmp_path).optimize_hyperparameters(tiny_space(3, 2), bundle=bundle)
    assert isinstance(first, TuningResult) and first.study is not None
    assert first.study.n_trials == 3

    again = pipeline(tmp_path).optimize_hyperparameters(
        tiny_space(3, 2), num_trials=5, bundle=bundle
    )
    assert isinstance(again, TuningResult) and again.study is not None
    storage = again.study.storage
    assert optuna.get_all_study_names(storage) == ["tiny"]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert again.mlflow_run_id == first.mlflow_run_id  # the same parent run
    children = [
        r for r in _runs(tmp_path, "tiny")
        if r.data.tags.get("mlflow.parentRunId") == first.mlflow_run_id
    ]  # fmt: skip
    assert len(children) == 5

    # nothing left to run: a third call only re-reads the study
    done = pipeline(tmp_path).optimize_hyperparameters(tiny_space(5, 2), bundle=bundle)
    assert isinstance(done, TuningResult) and done.study is not None
    assert done.study.n_trials == 5 and done.best_params == again.best_params


def test_test_split_never_influences_tuning(tmp_path: Path, bundle: Any) -> None:
    poisoned = copy.copy(bundle)
    test = bundle.test
    poisoned.test = dataclasses.replace(
        test,
        X=np.full_like(test.X, np.nan),
        y_cls=np.full_like(test.y_cls, 7),
        y_reg=np.full_like(test.y_reg, np.inf),
    )
    results = []
    for name, data in (("clean", bundle), ("poisoned", poisoned)):
        result = pipeline(tmp_path / name, track=False).optimize_hyperparameters(
            tiny_space(3, 2), bundle=data
        )
        assert isinstance(result, TuningResult) and result.study is not None
        study = optuna.load_study(study_name="tiny", storage=result.study.storage)
        results.append((result.best_params, result.best_value, [t.value for t in study.trials]))
    assert results[0] == results[1]
    assert all(np.isfinite(v) for v in results[0][2])


@pytest.mark.slow
def test_parallel_workers_share_the_study(tmp_path: Path, bundle: Any) -> None:
    result = pipeline(tmp_path).optimize_hyperparameters(
        tiny_space(4, 2, concurrent=2), bundle=bundle
    )
    assert isinstance(result, TuningResult) and result.study is not None
    assert result.study.n_trials == 4 and result.study.n_failed == 0
    study = optuna.load_study(study_name="tiny", storage=result.study.storage)
    assert len(study.trials) == 4  # the claim counter hands out exactly the missing trials
    children = [
        r for r in _runs(tmp_path, "tiny")
        if r.data.tags.get("mlflow.parentRunId") == result.mlflow_run_id
    ]  # fmt: skip
    assert len(children) == 4
