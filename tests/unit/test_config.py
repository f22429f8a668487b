"""Typed config: the guide's file loads verbatim; bad input fails with path and value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetrade.config import (
    PipelineConfig,
    TrainingConfig,
    flatten,
    load_pipeline_config,
    load_training_config,
    load_yaml_model,
)
from kubetrade.errors import ConfigError

GUIDE = Path("/work/shared/spec/000_52413f17907c1272.txt")


def test_training_yaml_is_the_guides_file_verbatim():
    text = Path("config/training.yaml").read_text()
    if GUIDE.is_file():  # the guide sits beside the repo in development checkouts
        assert text in GUIDE.read_text()
    cfg = load_training_config("config/training.yaml")
    assert cfg.model.cnn.filter_sizes == [3, 5, 7, 11]
    assert cfg.training.optimizer.betas == (0.9, 0.999)
    assert cfg.training.scheduler.T_max == 100
    assert cfg.data.features[-1] == "bollinger_bands"
    assert cfg.data.purge_gap == cfg.data.sequence_length + cfg.data.prediction_horizon


def test_all_shipped_configs_load():
    pipe = load_pipeline_config("config/pipeline.yaml")
    assert pipe.symbols == ["AAPL", "GOOG", "IBM", "MSFT"]


def _guide() -> dict:
    return yaml.safe_load(Path("config/training.yaml").read_text())


def test_misspelled_key_names_its_path_and_allowed_keys():
    data = _guide()
    data["training"]["optimizer"]["wieght_decay"] = 0.1
    with pytest.raises(ConfigError) as err:
        load_yaml_model(TrainingConfig, data=data)
    msg = str(err.value)
    assert "training.optimizer.wieght_decay: unknown key" in msg
    assert "weight_decay" in msg  # what is allowed


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("training", "learning_rate"), -0.1, "training.learning_rate"),
        (("training", "batch_size"), 0, "training.batch_size"),
        (("training", "optimizer", "type"), "adamax", "'adamw', 'adam' or 'sgd'"),
        (("data", "train_split"), 0.9, "must sum to 1"),
        (("data", "features"), ["rsi", "moon_phase"], "moon_phase"),
        (("model", "cnn", "num_heads"), 7, "divisible by num_heads"),
        (("hardware", "device"), "tpu", "hardware.device"),
        (("data", "gap_days"), 3, "gap_days (3) must be >="),
    ],
)
def test_bad_values_name_path_value_and_allowed(path, value, expected):
    data = _guide()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        load_yaml_model(TrainingConfig, data=data)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_pipeline_dates_checked():
    with pytest.raises(ConfigError, match="start_date 2013-01-01 is after end_date 2012-01-01"):
        load_yaml_model(PipelineConfig, data={"start_date": "2013-01-01", "end_date": "2012-01-01"})
    with pytest.raises(ConfigError, match="not a date"):
        load_yaml_model(PipelineConfig, data={"start_date": "yesterday-ish"})


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_training_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_training_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_training_config(listy)


def test_flatten_for_mlflow_params():
    flat = flatten(TrainingConfig())
    assert flat["training.optimizer.weight_decay"] == 0.01
    assert flat["model.cnn.filter_sizes"] == [3, 5, 7, 11]


def test_cli_bad_config_is_one_line_nonzero(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("symbols: [AAPL]\nsourse: {type: embedded}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrade", "check-config", "--config", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "sourse: unknown key" in lines[0]


# The config fuzz tests live in tests/reliability/test_config_fuzz.py.


def test_pipeline_yaml_keeps_the_old_step_literals():
    """config/pipeline.yaml's backtest, gate tolerance and RL features are the values the
    steps once wrote as literals, so the seeded numbers do not move."""
    pipe = load_pipeline_config("config/pipeline.yaml")
    bt = pipe.backtest
    assert (bt.initial_capital, bt.transaction_costs, bt.slippage) == (100_000, 0.001, 0.0005)
    assert (bt.max_position_size, bt.stop_loss_pct, bt.take_profit_pct) == (None, 0.05, 0.15)
    assert pipe.registry.evaluation_tolerance == 0.02
    assert pipe.rl_features[:3] == ["rsi", "macd_hist_norm", "bb_pct"]
    assert len(pipe.rl_features) == 10
    # the file spells out the models' defaults: a config without these keys runs the same
    default = PipelineConfig()
    assert (pipe.backtest, pipe.registry, pipe.rl_features) == (
        default.backtest,
        default.registry,
        default.rl_features,
    )


def test_backtest_section_is_checked():
    with pytest.raises(ConfigError, match=r"backtest.slippage: .*\(got 0.5\)"):
        load_yaml_model(PipelineConfig, data={"backtest": {"slippage": 0.5}})
    with pytest.raises(ConfigError, match=r"backtest.stop_loss: unknown key"):
        load_yaml_model(PipelineConfig, data={"backtest": {"stop_loss": 0.1}})


def test_run_config_rl_section_is_typed_and_round_trips():
    from kubetrade.config.rl import DEFAULT_AGENT_TYPES, RLTrainingConfig, TradingEnvConfig
    from kubetrade.config.run import RunConfig, load_run_config

    run = load_run_config("config/pipeline.yaml")
    assert isinstance(run.rl.trading_env, TradingEnvConfig)
    assert isinstance(run.rl.rl_training, RLTrainingConfig)
    assert run.agent_types() == list(DEFAULT_AGENT_TYPES)
    assert RunConfig.from_json(run.to_json()) == run
    with pytest.raises(ValueError, match="rainbow_dqn"):
        RunConfig.model_validate({"rl": {"rl_training": {"agent_types": ["rainbow_dqn"]}}})


def test_bad_rl_file_fails_when_the_run_config_loads(tmp_path):
    from kubetrade.config.run import load_run_config

    bad = tmp_path / "rl_training.yaml"
    bad.write_text("agent_types: [ppo]\ntotal_timestep: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="total_timestep: unknown key"):
        load_run_config("config/pipeline.yaml", {"rl_training_config": str(bad)})


def test_check_dotted_path():
    from kubetrade.config import check_dotted_path

    check_dotted_path(TrainingConfig, "model.lstm.hidden_dim", "here", "training-config")
    with pytest.raises(ConfigError, match=r"'model.lstm.width' is not a training-config path"):
        check_dotted_path(TrainingConfig, "model.lstm.width", "here", "training-config")
    with pytest.raises(ConfigError, match="nothing: it is a leaf value"):
        check_dotted_path(TrainingConfig, "training.seed.x", "here", "training-config")


def test_rl_config_old_import_path_is_the_same_objects():
    import kubetrade.config.rl as new
    import kubetrade.rl.config as old

    assert old.RLTrainingConfig is new.RLTrainingConfig
    assert old.DEFAULT_AGENT_TYPES is new.DEFAULT_AGENT_TYPES
    assert set(old.__all__) <= set(dir(new))


def test_rl_steps_read_the_typed_config(tmp_path):
    """The RL steps take rl_features and the env settings from the run config; only the
    run's symbols, dates and the bundle's periods are filled in."""
    import numpy as np
    import pandas as pd

    from kubetrade.config.run import load_run_config
    from kubetrade.pipeline.steps import rl_configs

    run = load_run_config("config/pipeline.yaml")
    run.pipeline.rl_features = ["bb_pct", "rsi", "not_made"]
    run.rl.trading_env.window_size = 12
    periods = [["train", "2005-01-03", "2010-01-04"], ["val", "2010-02-01", "2011-06-01"],
               ["test", "2011-07-01", "2013-03-01"]]  # fmt: skip
    np.savez(tmp_path / "bundle.npz", periods=np.array(periods, dtype=str))
    features = pd.DataFrame({"symbol": ["AAPL"], "rsi": [50.0], "bb_pct": [0.5]})
    env, training = rl_configs(run, tmp_path / "bundle.npz", features)
    assert env.features == ["bb_pct", "rsi"] and env.window_size == 12
    assert (env.symbols, env.start_date) == (run.pipeline.symbols, run.pipeline.start_date)
    assert (training.split.validation_start, training.split.test_start) == (
        "2010-02-01",
        "2011-07-01",
    )
    assert training.agent_types == run.agent_types()


def test_evaluation_gate_default_is_the_configs():
    import inspect

    from kubetrade.config.pipeline import RegistryGateConfig
    from kubetrade.pipeline.steps import evaluation_gate

    default = inspect.signature(evaluation_gate).parameters["tolerance"].default
    assert default == RegistryGateConfig().evaluation_tolerance == 0.02
