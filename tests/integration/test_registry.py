"""Champion/challenger against a real local MLflow store (SQLite)."""

from __future__ import annotations

import pytest
import torch

from kubetrade.errors import RegistryError
from kubetrade.registry import register_challenger, sha256_file, verify_sha256


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    # set_tracking_uri writes MLFLOW_TRACKING_URI; monkeypatch restores the environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())

    def model_uri() -> str:
        run = client.create_run(exp)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.pytorch.log_model(  # explicit requirements: no inference subprocess
                torch.nn.Linear(2, 1), name="model", serialization_format="pickle",
                pip_requirements=["torch"],
            )  # fmt: skip
        return info.model_uri

    yield uri, client, model_uri
    mlflow.set_tracking_uri(None)


def test_first_version_becomes_champion_and_worse_challenger_does_not(store):
    uri, client, model_uri = store
    first = register_challenger(model_uri(), "m", "sharpe_ratio", 0.8, tracking_uri=uri)
    assert first.promoted and first.champion_version is None
    worse = register_challenger(model_uri(), "m", "sharpe_ratio", 0.3, tracking_uri=uri)
    assert not worse.promoted
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version
    assert str(client.get_model_version_by_alias("m", "challenger").version) == worse.version
    better = register_challenger(model_uri(), "m", "sharpe_ratio", 1.2, tracking_uri=uri,
                                 tags={"git_commit": "abc"})  # fmt: skip
    # the first two recorded no data range: the gate cannot compare, so nothing moves
    assert not better.promoted and "not recorded" in better.reason
    dr = {"kubetrade.test_period": "2012-01-03..2013-03-01", "kubetrade.symbols": "AAPL"}
    client.set_model_version_tag("m", first.version, "kubetrade.test_period", dr[
        "kubetrade.test_period"])  # fmt: skip
    client.set_model_version_tag("m", first.version, "kubetrade.symbols", "AAPL")
    better = register_challenger(model_uri(), "m", "sharpe_ratio", 1.2, tracking_uri=uri,
                                 tags={"git_commit": "abc"}, data_range=dr)  # fmt: skip
    assert better.promoted and better.champion_version == first.version
    champ = client.get_model_version_by_alias("m", "champion")
    assert str(champ.version) == better.version and champ.tags["git_commit"] == "abc"


def test_nan_metric_is_refused_and_champion_untouched(store):
    uri, client, model_uri = store
    first = register_challenger(model_uri(), "m", "sharpe_ratio", 0.5, tracking_uri=uri)
    with pytest.raises(RegistryError, match="not a number"):
        register_challenger(model_uri(), "m", "sharpe_ratio", float("nan"), tracking_uri=uri)
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version
    assert len(client.search_model_versions("name='m'")) == 1


def test_unreachable_store_bounded_retries_then_clear_error(monkeypatch):
    # MLflow's own HTTP client retries too; keep its part short so ours is what is tested
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(RegistryError, match=r"failed to register the model after 2 attempts"):
        register_challenger("runs:/x/model", "m", "sharpe_ratio", 1.0,
                            tracking_uri="http://127.0.0.1:9", attempts=2, backoff_s=0.01)  # fmt: skip


def test_sha256_mismatch_blocks_promotion(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"abc")
    verify_sha256({"onnx": f}, {"onnx": sha256_file(f)})
    f.write_bytes(b"abd")
    with pytest.raises(RegistryError, match="does not match"):
        verify_sha256({"onnx": f}, {"onnx": "0" * 64})


# ---------------------------------------------------------------- RL ensemble as pyfunc
def _tiny_ensemble(directory):
    """Two agents (PPO continuous, DQN discrete), each trained for a few dozen steps."""
    from kubetrade.data.sources import generate_synthetic
    from kubetrade.rl.agents import action_type_for, make_agent
    from kubetrade.rl.ensemble import EnsembleAgent, Member
    from kubetrade.rl.env import TradingEnvironment

    torch.set_num_threads(1)
    prices = generate_synthetic(n_symbols=2, n_years=1.0, seed=11)

    def env(action_type):
        return TradingEnvironment(
            prices=prices, window_size=5, action_type=action_type, episode_length=30
        )

    kwargs = {
        "ppo": {"n_steps": 32, "batch_size": 16},
        "dqn": {"learning_starts": 16, "batch_size": 16, "buffer_size": 128},
    }
    members = []
    for agent_type in ("ppo", "dqn"):
        model = make_agent(agent_type, env(action_type_for(agent_type)), seed=0,
                           policy_kwargs={"net_arch": [8]}, **kwargs[agent_type])  # fmt: skip
        model.learn(total_timesteps=32)
        members.append(Member(agent_type, agent_type, action_type_for(agent_type), model))
    ens = EnsembleAgent(members, {"ppo": 0.7, "dqn": 0.2}, env("continuous").mapper)
    ens.save(directory)
    return ens, env("continuous"), sorted(prices["symbol"].unique())


def test_rl_ensemble_pyfunc_round_trip_register_and_promote(store, tmp_path):
    import mlflow
    import numpy as np

    from kubetrade.registry.rl_pyfunc import (
        ensemble_sha256,
        log_rl_ensemble,
        observations_frame,
        register_rl_ensemble,
    )

    uri, client, _ = store
    ens, env, symbols = _tiny_ensemble(tmp_path / "ensemble")
    # one episode as run_episode plays it: record observations, decisions, realised returns
    obs, _ = env.reset(seed=5)
    ens.reset(5)
    observations, decided, realised, done = [], [], [], False
    while not done:
        observations.append(obs)
        w = ens.act(obs)
        decided.append(w)
        obs, _, terminated, truncated, info = env.step(env.mapper.to_continuous(w))
        ens.observe(info)
        realised.append(np.asarray(info["asset_returns"], dtype=np.float64))
        done = terminated or truncated

    model_uri = log_rl_ensemble(tmp_path / "ensemble", uri, symbols=symbols)
    promo = register_rl_ensemble(
        tmp_path / "ensemble", 0.9, model_uri=model_uri, tracking_uri=uri, model_name="rl",
        tags={"data_range": "2020-01-01..2021-01-01", "config_sha256": "c0ffee"},
    )  # fmt: skip
    assert promo.promoted and promo.version == "1"
    champ = client.get_model_version_by_alias("rl", "champion")
    digests = ensemble_sha256(tmp_path / "ensemble")
    assert champ.tags["sha256_ppo.zip"] == digests["ppo.zip"]
    assert champ.tags["data_range"] == "2020-01-01..2021-01-01"
    assert champ.tags["model_kind"] == "rl_ensemble" and champ.tags["oos_sharpe_ratio"] == "0.9"
    assert champ.tags["mlflow_run_id"] == champ.run_id

    mlflow.set_tracking_uri(uri)  # the fixture unsets it again
    loaded = mlflow.pyfunc.load_model("models:/rl@champion")
    frame = observations_frame(observations)
    assert frame.shape[1] == int(np.prod(env.observation_space.shape))
    # vote mode: stateless validation-Sharpe vote of the members, row by row
    voted = loaded.predict(frame)
    assert list(voted.columns) == symbols and len(voted) == len(observations)
    expected = np.asarray([ens.prior @ ens.member_weights(o) for o in observations])
    np.testing.assert_allclose(voted.to_numpy(), expected, rtol=0, atol=1e-12)
    # online mode with the realised returns replays the episode's decisions exactly
    for i in range(len(symbols)):
        frame[f"ret_{i}"] = [r[i] for r in realised]
    online = loaded.predict(frame, params={"mode": "online", "seed": 5})
    np.testing.assert_allclose(online.to_numpy(), np.asarray(decided), rtol=0, atol=1e-12)

    # a worse ensemble is registered as challenger only; a changed file is refused
    worse = register_rl_ensemble(tmp_path / "ensemble", 0.1, tracking_uri=uri, model_name="rl")
    assert not worse.promoted and worse.version == "2"
    assert str(client.get_model_version_by_alias("rl", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("rl", "challenger").version) == "2"
    with pytest.raises(RegistryError, match="differ from the SHA-256 recorded"):
        register_rl_ensemble(tmp_path / "ensemble", 2.0, tracking_uri=uri, model_name="rl",
                             expected_sha256={**digests, "ppo.zip": "0" * 64})  # fmt: skip
    assert str(client.get_model_version_by_alias("rl", "champion").version) == "1"
