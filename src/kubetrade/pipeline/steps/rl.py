"""RL steps: one agent per task (ParallelFor), then the validation-weighted ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from kubetrade.config.base import load_yaml_model
from kubetrade.config.rl import RLTrainingConfig, TradingEnvConfig
from kubetrade.config.run import RunConfig
from kubetrade.pipeline.steps.common import write_json

__all__ = ["rl_configs", "rl_agent_step", "ensemble_step"]


def rl_configs(
    run: RunConfig, bundle_path: str | Path, features: pd.DataFrame
) -> tuple[TradingEnvConfig, RLTrainingConfig]:
    """Env + RL training configs for this run: the run's symbols and dates, the pipeline's
    ``rl_features`` (those the features step made), and the supervised split's
    validation/test starts (one test period for all)."""
    from kubetrade.rl.periods import align_split, bundle_periods

    pipe = run.pipeline
    env_data = run.rl.trading_env.model_dump(mode="json")
    env_data.update(
        symbols=list(pipe.symbols)
        if pipe.source.type != "synthetic"
        else sorted(features["symbol"].unique()),
        start_date=pipe.start_date,
        end_date=pipe.end_date,
        features=[c for c in pipe.rl_features if c in features.columns],
    )
    env_cfg = load_yaml_model(TradingEnvConfig, data=env_data)
    return env_cfg, align_split(run.rl.rl_training, bundle_periods(bundle_path))


def _rl_inputs(
    run: RunConfig, ohlcv_path: str | Path, features_path: str | Path, bundle_path: str | Path
) -> tuple[pd.DataFrame, pd.DataFrame, TradingEnvConfig, RLTrainingConfig]:
    """Prices, features and the two RL configs an RL step reads."""
    prices = pd.read_parquet(ohlcv_path)
    features = pd.read_parquet(features_path)
    return (prices, features, *rl_configs(run, bundle_path, features))


def rl_agent_step(
    run: RunConfig,
    agent_type: str,
    ohlcv_path: str | Path,
    features_path: str | Path,
    bundle_path: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Train one RL agent on the train period, score it on validation (never on test)."""
    from kubetrade.rl.pipeline import train_single_agent

    prices, features, env_cfg, train_cfg = _rl_inputs(run, ohlcv_path, features_path, bundle_path)
    result = train_single_agent(agent_type, env_cfg, train_cfg, prices, features, out_dir)
    return {f"val_{k}": v for k, v in result.validation.items() if isinstance(v, int | float)}


def ensemble_step(
    run: RunConfig,
    agent_dirs: list[str],
    ohlcv_path: str | Path,
    features_path: str | Path,
    bundle_path: str | Path,
    ensemble_dir: str | Path,
    report_path: str | Path,
) -> dict[str, Any]:
    """Combine the trained agents by validation-Sharpe weights; evaluate on the test period."""
    from kubetrade.rl.pipeline import build_ensemble, evaluate_ensemble

    prices, features, env_cfg, train_cfg = _rl_inputs(run, ohlcv_path, features_path, bundle_path)
    paths: dict[str, str] = {}
    for d in agent_dirs:
        for sub in sorted(Path(d).iterdir()):
            if (sub / "model.zip").is_file():
                paths[sub.name] = str(sub)
    if not paths:
        from kubetrade.errors import TrainingError

        raise TrainingError(
            f"no trained agents found in {agent_dirs}; did every rl_agent task fail?"
        )
    ensemble = build_ensemble(paths, None, env_cfg, train_cfg, prices=prices, features=features)
    Path(ensemble_dir).mkdir(parents=True, exist_ok=True)
    ensemble.save(ensemble_dir)
    result = evaluate_ensemble(ensemble, env_cfg, train_cfg, prices, features)
    from kubetrade.registry import ensemble_sha256

    result["sha256"] = ensemble_sha256(ensemble_dir)  # checked again before registration
    write_json(result, report_path)
    summary = {f"test_{k}": result[k] for k in ("sharpe_ratio", "total_return", "max_drawdown")}
    bh = result["buy_and_hold"]
    summary.update(
        {f"buy_and_hold_{k}": bh[k] for k in ("sharpe_ratio", "total_return") if k in bh}
    )
    for name, metrics in result["agents"].items():
        summary[f"{name}_test_sharpe_ratio"] = metrics.get("sharpe_ratio", float("nan"))
    for name, weight in result["weights"].items():
        summary[f"weight_{name}"] = weight
    return summary
