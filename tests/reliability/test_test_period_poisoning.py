"""Research integrity: the test period is never read before the backtest.

The same real data (AAPL + IBM, 2009-01..2013-03) goes through the pipeline's pre-backtest
computations twice: once clean, once with every row at or after the test start
(``bundle.periods["test"][0]``) poisoned -- prices x10 plus noise, volume x5. Everything
computed before the backtest must come out identical:

* the split periods, the train and validation windows (inputs and labels) and the scaler;
* the trained hybrid model (per-epoch metrics and weights);
* a tiny Optuna study (best value and parameters);
* each RL agent's validation metrics and the ensemble's validation-derived weights.

Only the test windows differ (checked too, so the poisoning is known to have bitten).
Features are causal, and the purge gap sits before the test start, so rows in the gap stay
clean; only rows at/after the test start are changed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from kubetrade.data.features import FeatureEngineer
from kubetrade.data.sources import load_embedded, select
from kubetrade.data.splits import prepare_datasets, save_bundle
from kubetrade.pipeline.steps import RunConfig, load_run_config, rl_agent_step
from kubetrade.training import fit

SYMBOLS = ["AAPL", "IBM"]


def _run_config(tmp_path: Path) -> RunConfig:
    rl = yaml.safe_load(Path("config/rl_training.yaml").read_text())
    rl.update(agent_types=["ppo", "dqn"], total_timesteps=128, eval_freq=0, test_episodes=1)
    rl["agents"]["ppo"]["n_steps"] = 64
    rl["agents"]["dqn"]["learning_starts"] = 32
    (tmp_path / "rl_training.yaml").write_text(yaml.safe_dump(rl))
    pipeline = yaml.safe_load(Path("config/pipeline.yaml").read_text())
    pipeline.update(
        symbols=SYMBOLS,
        start_date="2009-01-01",
        end_date="2013-03-01",
        advanced_features=["fractal", "cross_asset"],
        run_root=str(tmp_path / "runs"),
        rl_training_config=str(tmp_path / "rl_training.yaml"),
        training_overrides={
            **pipeline["training_overrides"],
            "data.sequence_length": 20,
            "training.num_epochs": 2,
            "training.max_train_windows": 300,
            "hardware.nproc_per_node": 1,
            "model.cnn.hidden_dim": 8,
            "model.cnn.num_heads": 2,
            "model.cnn.filter_sizes": [2, 3],
            "model.lstm.hidden_dim": 8,
            "model.fusion.output_dim": 8,
            "model.fusion.num_heads": 2,
        },
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return load_run_config(path)


def _poison(df: pd.DataFrame, test_start: pd.Timestamp) -> pd.DataFrame:
    out = df.copy()
    late = out["timestamp"] >= test_start
    rng = np.random.default_rng(0)
    noise = 1.0 + 0.05 * rng.standard_normal(int(late.sum()))
    for col in ("open", "high", "low", "close"):
        out.loc[late, col] = out.loc[late, col] * 10.0 * noise
    out.loc[late, "volume"] *= 5.0
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Clean and poisoned prices, features and bundles (built once for the module)."""
    tmp = tmp_path_factory.mktemp("poison")
    run = _run_config(tmp)
    prices = select(load_embedded(), SYMBOLS, run.pipeline.start_date, run.pipeline.end_date)
    fe = FeatureEngineer()

    def build(px: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        feats = fe.build_all(px, run.pipeline.indicators, list(run.pipeline.advanced_features))
        return feats, prepare_datasets(feats, run.training, augment_train=False)

    clean_feats, clean_bundle = build(prices)
    test_start = pd.Timestamp(clean_bundle.periods["test"][0], tz="UTC")
    poisoned_prices = _poison(prices, test_start)
    poisoned_feats, poisoned_bundle = build(poisoned_prices)
    world: dict[str, Any] = {"run": run, "tmp": tmp, "test_start": test_start}
    for name, px, feats, bundle in (
        ("clean", prices, clean_feats, clean_bundle),
        ("poisoned", poisoned_prices, poisoned_feats, poisoned_bundle),
    ):
        folder = tmp / name
        folder.mkdir()
        px.to_parquet(folder / "ohlcv.parquet", index=False)
        feats.to_parquet(folder / "features.parquet", index=False)
        save_bundle(bundle, folder / "bundle.npz")
        world[name] = {"prices": px, "features": feats, "bundle": bundle, "dir": folder}
    return world


def test_poisoning_changes_only_rows_from_the_test_start(world):
    clean, poisoned = world["clean"]["prices"], world["poisoned"]["prices"]
    before = clean["timestamp"] < world["test_start"]
    pd.testing.assert_frame_equal(clean[before], poisoned[before])
    assert (poisoned.loc[~before, "close"] > 5 * clean.loc[~before, "close"]).all()


def test_windows_and_scaler_before_the_test_period_are_identical(world):
    a, b = world["clean"]["bundle"], world["poisoned"]["bundle"]
    assert a.periods == b.periods
    for split in ("train", "val"):
        for field in ("X", "y_cls", "y_reg", "timestamps", "symbols"):
            np.testing.assert_array_equal(
                getattr(getattr(b, split), field), getattr(getattr(a, split), field),
                err_msg=f"{split}.{field}",
            )  # fmt: skip
    np.testing.assert_array_equal(a.scaler.center, b.scaler.center)
    np.testing.assert_array_equal(a.scaler.scale, b.scaler.scale)
    # the poison reached the test windows: the equalities above can fail
    assert a.test.X.shape == b.test.X.shape
    assert not np.array_equal(a.test.y_reg, b.test.y_reg)
    # features before the test start are identical (causal features, nothing looks ahead)
    fa, fb = world["clean"]["features"], world["poisoned"]["features"]
    early = fa["timestamp"] < world["test_start"]
    pd.testing.assert_frame_equal(fa[early], fb[early.to_numpy()])


def test_trained_model_is_identical(world):
    torch.set_num_threads(1)
    run: RunConfig = world["run"]
    results = []
    for name in ("clean", "poisoned"):
        model, result = fit(
            run.training, world[name]["bundle"], world["tmp"] / f"train-{name}", verbose=False
        )
        results.append((model.state_dict(), result.history))
    (w_clean, h_clean), (w_poison, h_poison) = results
    assert h_clean == h_poison
    for key, tensor in w_clean.items():
        assert torch.equal(w_poison[key], tensor), key


def test_tuning_is_identical(world):
    from kubetrade.tuning import AdvancedTrainingPipeline

    run: RunConfig = world["run"]
    space = {
        "objective": {"metric": "val_loss", "mode": "min", "num_trials": 2,
                      "max_concurrent_trials": 1, "max_t": 1},
        "pruner": {"type": "none", "grace_period": 1},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
        "parameters": {
            "training.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
            "model.lstm.num_layers": {"type": "int", "low": 1, "high": 2},
        },
    }  # fmt: skip
    outcomes = []
    for name in ("clean", "poisoned"):
        pipeline = AdvancedTrainingPipeline(
            run.training.model_dump(mode="json"), "poison", run_dir=world["tmp"] / f"tune-{name}",
            bundle=world[name]["bundle"], track=False,
        )  # fmt: skip
        result = pipeline.optimize_hyperparameters(copy.deepcopy(space))
        outcomes.append((result.best_value, result.best_params))
    assert np.isfinite(outcomes[0][0])
    assert outcomes[0] == outcomes[1]


def test_rl_validation_metrics_and_ensemble_weights_are_identical(world):
    from kubetrade.pipeline.steps import rl_configs
    from kubetrade.rl.pipeline import build_ensemble

    run: RunConfig = world["run"]
    priors, validations, selections = [], [], []
    for name in ("clean", "poisoned"):
        d = world[name]["dir"]
        paths = {}
        metrics = {}
        for agent in run.agent_types():
            out = d / "agents" / agent
            metrics[agent] = rl_agent_step(
                run, agent, d / "ohlcv.parquet", d / "features.parquet", d / "bundle.npz", out
            )
            paths[agent] = str(out / agent)
        env_cfg, train_cfg = rl_configs(run, d / "bundle.npz", world[name]["features"])
        assert train_cfg.split.test_start == f"{world['test_start']:%Y-%m-%d}"
        prices = pd.read_parquet(d / "ohlcv.parquet")  # ensemble_method auto: validation runs
        ensemble = build_ensemble(
            paths, None, env_cfg, train_cfg, prices=prices, features=world[name]["features"]
        )
        priors.append(dict(zip(ensemble.names, ensemble.prior.tolist(), strict=True)))
        selections.append(ensemble.selection)
        validations.append(metrics)
    assert validations[0] == validations[1]
    assert priors[0] == priors[1]
    assert selections[0] == selections[1] and selections[0]["chosen"]
    assert set(priors[0]) == {"ppo", "dqn"} and abs(sum(priors[0].values()) - 1.0) < 1e-9
