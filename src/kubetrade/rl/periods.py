"""RL data periods: prices and features of the configured symbols, cut into train <
validation < test, and the env of one period. In a pipeline run every model is tested on one
test period, so the RL split starts validation and test where the hybrid model's dataset
bundle does (:func:`bundle_periods`, :func:`align_split`).

See :mod:`kubetrade.rl.pipeline` for how the periods are used (train on train, choose on
validation, report on test).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.config.base import load_yaml_model
from kubetrade.config.rl import RLTrainingConfig, TradingEnvConfig
from kubetrade.errors import ConfigError, DataError
from kubetrade.rl.env import TradingEnvironment, basic_features

__all__ = [
    "PERIOD_NAMES",
    "Periods",
    "align_split",
    "bundle_periods",
    "period_env",
    "prepare_data",
    "split_periods",
]

PERIOD_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Periods:
    """Inclusive ``(start, end)`` ISO dates of each period; never overlapping."""

    train: tuple[str, str]
    validation: tuple[str, str]
    test: tuple[str, str]

    def __getitem__(self, name: str) -> tuple[str, str]:
        if name not in PERIOD_NAMES:
            raise ConfigError(f"period {name!r} is unknown; use one of {PERIOD_NAMES}")
        value: tuple[str, str] = getattr(self, name)
        return value


def prepare_data(
    env_config: TradingEnvConfig,
    prices: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prices of the configured symbols up to ``end_date`` (earlier history kept for look-back)
    and their features (default :func:`basic_features`, computed on that whole history)."""
    from kubetrade.data.sources import load_embedded, select

    if prices is None:
        prices = load_embedded()
    prices = select(prices, env_config.symbols, None, env_config.end_date)
    if features is None:
        features = basic_features(prices)
    return prices.reset_index(drop=True), features


def split_periods(
    env_config: TradingEnvConfig, training_config: RLTrainingConfig, prices: pd.DataFrame
) -> Periods:
    """Cut the common calendar of ``start_date..end_date`` into train/validation/test."""
    px = prices[prices["symbol"].isin(env_config.symbols)]
    counts = px.groupby("timestamp")["symbol"].nunique()
    calendar = pd.DatetimeIndex(counts.index[counts == len(env_config.symbols)]).sort_values()
    if env_config.start_date:
        calendar = calendar[calendar >= pd.Timestamp(env_config.start_date, tz="UTC")]
    if env_config.end_date:
        calendar = calendar[calendar <= pd.Timestamp(env_config.end_date, tz="UTC")]
    n, split = len(calendar), training_config.split
    v0 = int(n * (1.0 - split.validation_fraction - split.test_fraction))
    t0 = int(n * (1.0 - split.test_fraction))
    if split.validation_start:
        v0 = int(calendar.searchsorted(pd.Timestamp(split.validation_start, tz="UTC")))
    if split.test_start:
        t0 = int(calendar.searchsorted(pd.Timestamp(split.test_start, tz="UTC")))
    minimum = 3
    if v0 < minimum or t0 - v0 < minimum or n - t0 < minimum:
        raise DataError(
            f"{n} common bars in {env_config.start_date}..{env_config.end_date} for "
            f"{env_config.symbols} give train/validation/test of {v0}/{t0 - v0}/{n - t0} bars; "
            f"each needs >= {minimum}: widen the dates or change split"
        )

    def day(i: int) -> str:
        return f"{calendar[i]:%Y-%m-%d}"

    return Periods(
        train=(day(0), day(v0 - 1)),
        validation=(day(v0), day(t0 - 1)),
        test=(day(t0), day(n - 1)),
    )


def period_env(
    env_config: TradingEnvConfig,
    prices: pd.DataFrame,
    features: pd.DataFrame,
    period: tuple[str, str],
    action_type: str,
    training: bool = False,
    feature_stats: tuple[Any, Any] | None = None,
) -> TradingEnvironment:
    """The env of one period; ``feature_stats`` (the train period's) z-score its features.

    Evaluation envs run the whole period; only training uses random-start episodes.
    """
    return TradingEnvironment.from_config(
        env_config,
        prices=prices,
        features=features,
        feature_stats=feature_stats,
        start_date=period[0],
        end_date=period[1],
        action_type=action_type,
        episode_length=env_config.episode_length if training else None,
    )


def bundle_periods(bundle_path: str | Path) -> dict[str, tuple[str, str]]:
    """``{"train"|"val"|"test": (first day, last day)}`` of a dataset bundle, read without
    loading its windows."""
    with np.load(bundle_path, allow_pickle=False) as z:
        return {str(r[0]): (str(r[1]), str(r[2])) for r in z["periods"]}


def align_split(config: RLTrainingConfig, periods: dict[str, tuple[str, str]]) -> RLTrainingConfig:
    """``config`` with its split's validation and test starting where ``periods`` (a
    bundle's) do; validated like the file."""
    data = config.model_dump(mode="json")
    data["split"].update(validation_start=periods["val"][0], test_start=periods["test"][0])
    return load_yaml_model(RLTrainingConfig, data=data)
