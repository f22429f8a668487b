"""What tuning trains on: train + validation only, the test period never reaches a trial.

:func:`as_tuning_bundle` turns a window bundle (or its ``.npz``) into train + validation
windows with an empty test split (the hybrid model's trials; worker processes receive
``DatasetBundle.without_test()``'s copy); :func:`mask_test_period` blanks the test period of the RL
agents' prices and features (:class:`RLTuningData`, what every RL trial trains on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.errors import TrainingError
from kubetrade.rl.config import RLTrainingConfig, TradingEnvConfig

__all__ = ["RLTuningData", "as_tuning_bundle", "mask_test_period"]

_PRICE_COLUMNS = ("open", "high", "low", "close")


# ---------------------------------------------------------------- hybrid model: windows
def as_tuning_bundle(bundle: Any) -> Any:
    """Train + validation windows in the trainer's format; the test split is left out.

    Accepts a :class:`~kubetrade.data.splits.DatasetBundle` (or anything with ``train`` and
    ``val`` splits carrying ``X``, ``y_cls``, ``y_reg``, ``timestamps``, ``symbols``) or the
    path of its ``.npz``. ``bundle.test`` is never read.
    """
    from kubetrade.data.splits import DatasetBundle, WindowSet, load_bundle

    if isinstance(bundle, str | Path):
        bundle = load_bundle(bundle)

    def convert(split: Any) -> WindowSet:
        if not hasattr(split, "y_cls"):
            raise TrainingError(f"{type(split).__name__} has no y_cls labels; not a window split")
        return WindowSet(
            np.asarray(split.X, dtype=np.float32),
            np.asarray(split.y_cls, dtype=np.int64),
            np.asarray(split.y_reg, dtype=np.float32),
            np.asarray(split.timestamps),
            np.asarray(split.symbols).astype(str),
        )

    train, val = convert(bundle.train), convert(bundle.val)
    names = list(getattr(bundle, "feature_names", []) or [])
    return DatasetBundle(train=train, val=val, test=val, feature_names=names).without_test()


# ---------------------------------------------------------------- RL agents: price bars
@dataclass
class RLTuningData:
    """What every trial trains on (the objective factory's ``bundle``); test period blanked."""

    agent_type: str
    env_config: TradingEnvConfig
    prices: pd.DataFrame
    features: pd.DataFrame
    periods: Any  # kubetrade.rl.pipeline.Periods


def mask_test_period(
    env_cfg: TradingEnvConfig,
    rl_cfg: RLTrainingConfig,
    prices: pd.DataFrame | None,
    features: pd.DataFrame | None,
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """Prices and features with every bar of the test period overwritten, and the periods.

    Rows are kept (so the calendar, hence the split, is unchanged) but carry no test
    information: OHLC flat at each symbol's last pre-test close, volume at its last value,
    every feature 0.
    """
    from kubetrade.rl.pipeline import prepare_data, split_periods

    prices, features = prepare_data(env_cfg, prices, features)
    periods = split_periods(env_cfg, rl_cfg, prices)
    cut = pd.Timestamp(periods.test[0], tz="UTC")
    px = prices.copy()
    in_test = px["timestamp"] >= cut
    last = px[~in_test].sort_values("timestamp").groupby("symbol").tail(1).set_index("symbol")
    symbols = px.loc[in_test, "symbol"]
    for column in _PRICE_COLUMNS:
        px.loc[in_test, column] = symbols.map(last["close"]).to_numpy()
    if "volume" in px.columns:
        px.loc[in_test, "volume"] = symbols.map(last["volume"]).to_numpy()
    fx = features.copy()
    numeric = [c for c in fx.select_dtypes("number").columns if c != "timestamp"]
    fx.loc[fx["timestamp"] >= cut, numeric] = 0.0
    if split_periods(env_cfg, rl_cfg, px) != periods:  # pragma: no cover - rows are kept
        raise TrainingError("masking the test period moved the split")
    return px, fx, periods
