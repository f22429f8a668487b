"""Config fuzzing: no config input ends in anything but a one-line KubetradeError (or success).

Moved here from tests/unit/test_config.py and widened: besides values in the guide's
training.yaml sections, it fuzzes the pipeline config the way ``kubetrade run --set`` does
(dotted keys, YAML-parsed values, training overrides), the RL configs, and raw YAML text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kubetrade.config import TrainingConfig, load_yaml_model
from kubetrade.errors import ConfigError, KubetradeError

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(-5, 5), max_size=3),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _guide() -> dict[str, Any]:
    return yaml.safe_load(Path("config/training.yaml").read_text())


def _assert_one_line(exc: KubetradeError) -> None:
    text = str(exc)
    assert text.strip(), "empty error message"
    assert "\n" not in text, text


@settings(max_examples=150, deadline=None)
@given(
    section=st.sampled_from(["model", "training", "data", "validation", "hardware"]),
    key=st.sampled_from(
        ["batch_size", "learning_rate", "features", "cnn", "device", "metrics", "x"]
    ),
    value=_scalars,
)
def test_fuzzed_config_never_raises_anything_but_config_error(section, key, value):
    data = _guide()
    data[section][key] = value
    try:
        load_yaml_model(TrainingConfig, data=data)
    except ConfigError as exc:
        _assert_one_line(exc)


PIPELINE_KEYS = [
    "symbols", "start_date", "end_date", "source", "source.type", "source.paths",
    "source.column_map", "source.synthetic_symbols", "source.synthetic_years", "source.seed",
    "quality", "quality.min_score", "quality.max_abs_daily_return",
    "quality.max_calendar_gap_days", "indicators", "advanced_features", "backend", "run_root",
    "training_config", "trading_env_config", "rl_training_config", "training_overrides",
    "name", "bogus", "source.bogus", "",
]  # fmt: skip
TRAINING_KEYS = [
    "training.batch_size", "training.learning_rate", "training.num_epochs", "training.seed",
    "training.optimizer.type", "training.optimizer.betas", "training.scheduler.type",
    "training.max_train_windows", "model.cnn.dropout", "model.cnn.num_heads",
    "model.cnn.filter_sizes", "model.lstm.num_layers", "model.fusion.output_dim",
    "data.sequence_length", "data.gap_days", "data.features", "data.train_split",
    "hardware.device", "hardware.nproc_per_node", "model", "training", "x.y.z", "model..cnn",
]  # fmt: skip


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    overrides=st.dictionaries(st.sampled_from(PIPELINE_KEYS), _values, max_size=3),
    training=st.dictionaries(st.sampled_from(TRAINING_KEYS), _values, max_size=3),
)
@example(overrides={"source": {"\n": None}}, training={})  # once gave a two-line message
def test_fuzzed_run_overrides_never_escape_as_anything_but_kubetrade_error(overrides, training):
    """What ``kubetrade run --set KEY=VALUE`` feeds load_run_config (pipeline + training +
    RL files): success, or one KubetradeError line."""
    from kubetrade.pipeline.steps import load_run_config

    if training:
        overrides = {**overrides, "training_overrides": training}
    try:
        load_run_config("config/pipeline.yaml", overrides)
    except KubetradeError as exc:
        _assert_one_line(exc)


@settings(max_examples=100, deadline=None)
@given(
    which=st.sampled_from(["trading_env", "rl_training"]),
    key=st.sampled_from(
        [
            "agent_types",
            "total_timesteps",
            "window_size",
            "symbols",
            "split",
            "ensemble",
            "agents",
            "reward",
            "action_type",
            "start_date",
            "seed",
            "nonsense",
        ]
    ),  # fmt: skip
    value=_values,
)
def test_fuzzed_rl_configs_never_raise_anything_but_config_error(which, key, value):
    from kubetrade.rl.config import RLTrainingConfig, TradingEnvConfig

    model = TradingEnvConfig if which == "trading_env" else RLTrainingConfig
    data = yaml.safe_load(Path(f"config/{which}.yaml").read_text())
    data[key] = value
    try:
        load_yaml_model(model, data=data)
    except ConfigError as exc:
        _assert_one_line(exc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=60)))
def test_fuzzed_yaml_files_never_raise_anything_but_config_error(tmp_path_factory, text):
    from kubetrade.pipeline.steps import load_run_config

    path = tmp_path_factory.mktemp("fuzz") / "pipeline.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        load_run_config(path)
    except KubetradeError as exc:
        _assert_one_line(exc)
