"""RL tuning end to end: a real Optuna study in SQLite training real (tiny) PPO agents.

Two synthetic symbols, 6-bar windows, 256 PPO steps per trial: a trial takes well under a
second on two CPU cores.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from kubetrade.data.sources import generate_synthetic
from kubetrade.errors import ConfigError
from kubetrade.rl.config import RLTrainingConfig, TradingEnvConfig, load_rl_training_config
from kubetrade.rl.pipeline import train_single_agent
from kubetrade.tuning.data import mask_test_period
from kubetrade.tuning.rl_objective import RLTuningResult, tune_rl_agent, validate_rl_spec
from kubetrade.tuning.spec import load_tuning_spec

torch.set_num_threads(1)


@cache
def prices() -> pd.DataFrame:
    return generate_synthetic(n_symbols=2, n_years=1.5, seed=7)


def configs() -> tuple[TradingEnvConfig, RLTrainingConfig]:
    env_cfg = TradingEnvConfig(
        symbols=sorted(prices()["symbol"].unique()),
        start_date=None,
        end_date=None,
        window_size=6,
        episode_length=40,
    )
    rl_cfg = RLTrainingConfig.model_validate(
        {
            "agent_types": ["ppo"],
            "total_timesteps": 256,
            "eval_freq": 0,
            "agents": {
                "ppo": {
                    "n_steps": 64,
                    "batch_size": 32,
                    "n_epochs": 2,
                    "policy_kwargs": {"net_arch": [16, 16]},
                }
            },
        }
    )
    return env_cfg, rl_cfg


def space(num_trials: int, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "objective": {"metric": "val_sharpe_ratio", "mode": "max", "num_trials": num_trials,
                      "max_concurrent_trials": 1, "max_t": 1},
        "pruner": {"type": "none", "grace_period": 1},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
        "parameters": {
            "agents.ppo.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
            "agents.ppo.gamma": {"type": "uniform", "low": 0.9, "high": 0.999},
            "agents.ppo.ent_coef": {"type": "loguniform", "low": 1e-4, "high": 0.05},
        },
    }  # fmt: skip
    data.update(changes)
    return data


def tune(run_dir: Path, num_trials: int, **kwargs: Any) -> RLTuningResult:
    env_cfg, rl_cfg = configs()
    return tune_rl_agent(
        "ppo", env_cfg, rl_cfg, prices(), None, space(3), run_dir, num_trials, **kwargs
    )


def test_rl_study_beats_trial_0_writes_best_config_and_resumes(tmp_path: Path) -> None:
    result = tune(tmp_path, 3, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    report = result.study
    assert report.n_trials == 3 and report.n_complete == 3 and report.n_failed == 0

    study = optuna.load_study(study_name="kubetrade-rl-ppo", storage=report.storage)
    first = study.trials[0]
    env_cfg, rl_cfg = configs()
    assert first.params == {
        "agents.ppo.learning_rate": rl_cfg.agents.ppo.learning_rate,
        "agents.ppo.gamma": rl_cfg.agents.ppo.gamma,
        "agents.ppo.ent_coef": rl_cfg.agents.ppo.ent_coef,
    }  # trial 0 = the configured values
    assert first.value is not None and result.best_value >= first.value
    assert result.best_value == max(t.value for t in study.trials if t.value is not None)
    assert first.user_attrs["validation"]["sharpe_ratio"] == first.value

    # the blanked test period changes nothing: trial 0 equals a plain run on the full data
    plain = train_single_agent("ppo", env_cfg, rl_cfg, prices(), None, tmp_path / "plain")
    assert plain.validation["sharpe_ratio"] == pytest.approx(first.value, abs=1e-12)

    cfg = load_rl_training_config(result.best_config_path)
    assert cfg == result.config
    assert cfg.agents.ppo.learning_rate == result.best_params["agents.ppo.learning_rate"]
    assert cfg.agents.ppo.n_steps == 64 and cfg.total_timesteps == 256  # the rest as configured
    assert not any((tmp_path / "tuning" / "trials").iterdir())  # trial agents cleaned up

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kubetrade-rl-ppo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.mlflow_run_id]
    assert len(children) == 3 and all("val_sharpe_ratio" in c.data.metrics for c in children)

    again = tune(tmp_path, 5)  # same run_dir: the study resumes, two trials more
    assert again.study.n_trials == 5
    assert optuna.get_all_study_names(again.study.storage) == ["kubetrade-rl-ppo"]
    study = optuna.load_study(study_name="kubetrade-rl-ppo", storage=again.study.storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert again.best_value >= result.best_value


def test_test_period_is_blanked_before_any_trial() -> None:
    env_cfg, rl_cfg = configs()
    px, fx, periods = mask_test_period(env_cfg, rl_cfg, prices(), None)
    cut = pd.Timestamp(periods.test[0], tz="UTC")
    raw = prices().sort_values(["symbol", "timestamp"]).reset_index(drop=True)
    masked = px.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
    before = raw["timestamp"] < cut
    pd.testing.assert_frame_equal(masked[before.to_numpy()], raw[before])
    test = masked[~before.to_numpy()]
    assert len(test) > 0
    for _, rows in test.groupby("symbol"):
        assert rows[["open", "high", "low", "close"]].nunique().max() == 1
        assert rows["volume"].nunique() == 1
    numeric = fx.select_dtypes("number")
    assert np.all(numeric[fx["timestamp"] >= cut].to_numpy() == 0.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parameters": {"split.validation_fraction": {"type": "uniform", "low": 0.1,
                                                       "high": 0.2}}}, "cannot be tuned"),
        ({"parameters": {"agents.sac.gamma": {"type": "uniform", "low": 0.9, "high": 0.99}}},
         "another agent"),
        ({"parameters": {"agents.ppo.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}},
         "unknown key 'lr'"),
        ({"parameters": {"agents.ppo.n_steps": {"type": "choice", "values": [1, 64]}}},
         "n_steps"),
        ({"pruner": {"type": "asha", "grace_period": 1}}, "no intermediate values"),
        ({"objective": {"metric": "val_loss", "mode": "min", "max_t": 1}}, "val_sharpe_ratio"),
    ],
)  # fmt: skip
def test_rl_spec_validation_refuses_what_cannot_be_tuned(
    change: dict[str, Any], message: str
) -> None:
    _, rl_cfg = configs()
    spec = load_tuning_spec(space(3, **change))
    with pytest.raises(ConfigError, match=message):
        validate_rl_spec(spec, rl_cfg.model_dump(mode="json"), "ppo")
