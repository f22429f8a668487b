"""Multi-asset portfolio trading environment (gymnasium), registered as ``kubetrade/Trading-v0``.

Timing. At bar ``t`` the agent sees everything known at bar ``t``'s close: a trailing window of
features for bars ``t-window_size+1 .. t`` and the portfolio state after bar ``t``. Its action is
a set of target weights; the orders **fill at bar t+1's open**, buys at ``open*(1+slippage)``,
sells at ``open*(1-slippage)``, paying ``traded_notional * transaction_cost``. The portfolio is
then marked at bar ``t+1``'s close, the reward is computed and the next observation is bar
``t+1``'s. No observation ever contains a price the order will fill at.

Observation: ``Box(window_size, n_assets*n_features + n_assets + 2)``, float32 in ``[-10, 10]``.
Row ``i`` holds bar ``t-window_size+1+i``'s features (asset-major: asset 0's features, then asset
1's, ...; z-scored with the training period's mean/std, clipped to +-10) followed by the portfolio
state after that bar: weights per asset, cash fraction and unrealised P&L of open positions
(fraction of equity). Bars before the episode's first bar show the initial all-cash state.

Actions:

* ``continuous``: ``Box(-1, 1, (n_assets,))``. With ``allow_short`` the weight is the action;
  long-only maps ``w = (a + 1) / 2``. Weights are capped at ``max_position`` per asset and scaled
  down so ``sum |w| <= max_gross_exposure``; the rest is cash.
* ``discrete``: ``Discrete(n_assets + 2)`` (``2*n_assets + 2`` with ``allow_short``): 0 = all
  cash, ``1..n`` = all-in asset ``i-1`` (at the caps), ``n+1`` = equal weight, then (short only)
  ``n+2..2n+1`` = all-short asset ``i``. :class:`ActionMapper` turns either kind into weights.

Reward (``reward_config``), with ``r`` the step's portfolio return::

    reward = scale * (return_weight * r - drawdown_penalty * max(dd_t - dd_{t-1}, 0))
             + sharpe_weight * mean(r_window) / std(r_window)       # last sharpe_window steps
             - transaction_penalty * traded_notional / equity

``dd`` is the drawdown from the episode's equity peak, so only a deepening drawdown is penalised;
the Sharpe term is 0 until two returns exist. Costs already lower ``r``; the turnover term adds
cost aversion. ``scale`` = 100 puts returns in percent.

Data: ``prices`` is the canonical long table; only timestamps present for every symbol are kept
(a common calendar). ``features`` is a long frame of float columns per (symbol, timestamp),
computed causally by the caller; leading NaNs (indicator warm-up) push the first decision bar
back, NaNs after valid bars are an error.

Episodes run over the whole period, or with ``episode_length`` from a random start bar (drawn with
the env's seeded ``np_random``). End of data or of ``episode_length`` is a truncation; equity
falling to zero terminates. The hot path is one numba kernel
(:func:`kubetrade.rl.step_kernel.step_kernel`) on arrays built in ``__init__``; actions become
weights in :class:`kubetrade.rl.actions.ActionMapper`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from kubetrade.config import load_yaml_model
from kubetrade.errors import ConfigError, DataError, DataSourceError
from kubetrade.rl.actions import ActionMapper
from kubetrade.rl.config import BASIC_FEATURES, RewardConfig, TradingEnvConfig
from kubetrade.rl.step_kernel import (
    CASH,
    EQUITY,
    MODE_LONG,
    MODE_SHORT,
    MODE_WEIGHTS,
    PEAK,
    SHARES,
    step_kernel,
)

__all__ = [
    "ENV_ID",
    "TradingEnvironment",
    "basic_features",
]

ENV_ID = "kubetrade/Trading-v0"
_CLIP = 10.0
_PORTFOLIO_COLUMNS = 2  # cash fraction, unrealised P&L (plus one weight per asset)
_FAST_ACTION_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


def basic_features(prices: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """Small causal feature set per symbol (each value uses bars <= its own timestamp).

    Columns: ``log_return`` (close to close), ``hl_range`` ((high-low)/close),
    ``volume_zscore`` (log volume vs its trailing ``window`` mean/std) and ``sma_ratio_20``
    (close / trailing ``window``-bar mean - 1).
    """
    missing = {"symbol", "timestamp", "high", "low", "close", "volume"} - set(prices.columns)
    if missing:
        raise DataError(f"prices lack column(s) {sorted(missing)}; give the canonical OHLCV table")
    df = prices.sort_values(["symbol", "timestamp"], kind="stable")
    by = df["symbol"]
    close = df["close"].astype(np.float64)
    log_volume = np.log1p(df["volume"].astype(np.float64).clip(lower=0.0))

    def rolling(series: pd.Series, stat: str) -> pd.Series:
        return series.groupby(by).transform(lambda s: getattr(s.rolling(window), stat)())

    out = df[["symbol", "timestamp"]].copy()
    out["log_return"] = np.log(close).groupby(by).diff()
    out["hl_range"] = (df["high"] - df["low"]) / close
    out["volume_zscore"] = (log_volume - rolling(log_volume, "mean")) / rolling(
        log_volume, "std"
    ).replace(0.0, np.nan)
    out["sma_ratio_20"] = close / rolling(close, "mean") - 1.0
    return out.reset_index(drop=True)


class TradingEnvironment(gym.Env):
    """Multi-asset portfolio env; see the module docstring for timing, spaces and reward.

    Args:
        symbols, start_date, end_date, initial_balance, transaction_cost, reward_config: as in
            the guide; ``None`` keeps the value of ``config`` (or the whole frame's symbols/dates).
        prices: canonical long OHLCV table; default the embedded data. Rows before
            ``start_date`` only feed the first observation windows.
        features: long frame (``symbol``, ``timestamp``, float columns); default
            :func:`basic_features` of ``prices``.
        feature_stats: ``(mean, std)`` per observed feature column used to z-score features;
            default computed over this env's own bars. Give the training env's
            :attr:`feature_stats` to validation/test envs.
        feature_columns: the config's ``features`` (columns to observe; ``[]`` = all numeric
            columns of ``features``). Default: all columns when a frame is given without a
            config, else the config's list.
        config: a :class:`TradingEnvConfig` to start from.
        render_mode: ``"human"`` (print) or ``"ansi"`` (return a string).
        **options: any other :class:`TradingEnvConfig` field (``slippage``, ``window_size``,
            ``action_type``, ``episode_length``, ...), overriding ``config``.
    """

    metadata = {"render_modes": ["human", "ansi"], "render_fps": 4}

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        start_date: str | None = None,
        end_date: str | None = None,
        initial_balance: float | None = None,
        transaction_cost: float | None = None,
        reward_config: dict[str, Any] | RewardConfig | None = None,
        *,
        prices: pd.DataFrame | None = None,
        features: pd.DataFrame | None = None,
        feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
        feature_columns: Sequence[str] | None = None,
        config: TradingEnvConfig | None = None,
        render_mode: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode {render_mode!r} is not supported; use one of "
                f"{self.metadata['render_modes']} or None"
            )
        self.render_mode = render_mode
        if isinstance(features, list | tuple):  # the config's name for the column list
            feature_columns, features = list(features), None
        if prices is None:
            from kubetrade.data.sources import load_embedded

            prices = load_embedded()
        base: dict[str, Any] = (
            config.model_dump() if config is not None else {"start_date": None, "end_date": None}
        )
        if isinstance(reward_config, RewardConfig):
            reward_config = reward_config.model_dump()
        given = {
            "symbols": list(symbols) if symbols is not None else None,
            "start_date": start_date,
            "end_date": end_date,
            "initial_balance": initial_balance,
            "transaction_cost": transaction_cost,
            "reward_config": reward_config,
        }
        base.update({k: v for k, v in given.items() if v is not None})
        base.update(options)
        base.setdefault("symbols", sorted(prices["symbol"].astype(str).unique()))
        if feature_columns is not None:
            base["features"] = list(feature_columns)
        elif features is not None and config is None:
            base["features"] = []
        self.config: TradingEnvConfig = load_yaml_model(TradingEnvConfig, data=base)
        self.mapper = ActionMapper.from_config(self.config)
        self._build_arrays(prices, features, feature_stats)

        n = self.n_assets
        self._obs_shape = (self.config.window_size, self._obs_buf.shape[1])
        self.observation_space = spaces.Box(-_CLIP, _CLIP, self._obs_shape, dtype=np.float32)
        if self.config.action_type == "discrete":
            self.action_space: spaces.Space[Any] = spaces.Discrete(self.mapper.n_discrete)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self._discrete = self.config.action_type == "discrete"
        self._action_shape = (n,)
        # everything the step kernel reads, hoisted out of the pydantic models into arrays
        reward = self.config.reward_config
        if self._discrete:
            mode = MODE_WEIGHTS
        else:
            mode = MODE_SHORT if self.config.allow_short else MODE_LONG
        self._params = np.array(
            [
                self.config.transaction_cost,
                self.config.slippage,
                self.config.max_position,
                self.config.max_gross_exposure,
                reward.scale * reward.return_weight,
                reward.scale * reward.drawdown_penalty,
                reward.sharpe_weight,
                reward.transaction_penalty,
                mode,
            ]
        )
        self._episode_length = self.config.episode_length
        self._window = self.config.window_size
        self._state = np.zeros(SHARES + 2 * n)
        self._ret_buf = np.zeros(reward.sharpe_window)
        self._reset_portfolio(self._t0)

    @classmethod
    def from_config(
        cls,
        config: TradingEnvConfig,
        prices: pd.DataFrame | None = None,
        features: pd.DataFrame | None = None,
        feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
        **options: Any,
    ) -> TradingEnvironment:
        """Build from a config; ``options`` override fields (e.g. dates of a split period)."""
        return cls(
            prices=prices, features=features, feature_stats=feature_stats, config=config, **options
        )

    # ------------------------------------------------------------ data
    def _build_arrays(
        self,
        prices: pd.DataFrame,
        features: pd.DataFrame | None,
        feature_stats: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        cfg = self.config
        symbols = list(cfg.symbols)
        missing = {"symbol", "timestamp", "open", "close"} - set(prices.columns)
        if missing:
            raise DataError(
                f"prices lack column(s) {sorted(missing)}; give the canonical OHLCV table"
            )
        available = sorted(prices["symbol"].astype(str).unique())
        unknown = [s for s in symbols if s not in set(available)]
        if unknown:
            raise DataSourceError(f"unknown symbol(s) {unknown}; the prices have {available}")
        px = prices[prices["symbol"].isin(symbols)].copy()
        px["timestamp"] = pd.to_datetime(px["timestamp"], utc=True)
        if px.duplicated(["symbol", "timestamp"]).any():
            raise DataError("prices have duplicate (symbol, timestamp) rows; keep one bar each")
        wide = px.pivot(index="timestamp", columns="symbol", values=["open", "close"])
        wide = wide.dropna(how="any").sort_index()  # common calendar of all symbols
        if cfg.end_date:
            wide = wide[wide.index <= pd.Timestamp(cfg.end_date, tz="UTC")]
        calendar = wide.index
        open_ = wide["open"][symbols].to_numpy(np.float64)
        close = wide["close"][symbols].to_numpy(np.float64)
        if (open_ <= 0.0).any() or (close <= 0.0).any():
            raise DataError("prices have open or close <= 0; the env needs positive prices")

        if features is None:
            unknown_f = [f for f in cfg.features if f not in BASIC_FEATURES]
            if unknown_f:
                raise DataError(
                    f"feature(s) {unknown_f} need a features frame (e.g. FeatureEngineer output); "
                    f"without one the env computes {list(BASIC_FEATURES)}"
                )
            features = basic_features(px)
        columns = list(cfg.features) or [
            c
            for c in features.columns
            if c not in ("symbol", "timestamp") and pd.api.types.is_numeric_dtype(features[c])
        ]
        absent = [c for c in columns if c not in features.columns]
        if absent or not columns:
            have = [c for c in features.columns if c not in ("symbol", "timestamp")]
            raise DataError(
                f"feature column(s) {absent or '[]'} not in the features frame; it has {have}; "
                "set 'features' in trading_env.yaml ([] = all numeric columns)"
            )
        feat = features[["symbol", "timestamp", *columns]].copy()
        feat["timestamp"] = pd.to_datetime(feat["timestamp"], utc=True)
        feat = feat[feat["symbol"].isin(symbols)]
        lacking = [s for s in symbols if s not in set(feat["symbol"].unique())]
        if lacking:
            raise DataError(f"features frame has no rows for symbol(s) {lacking}")
        if feat.duplicated(["symbol", "timestamp"]).any():
            raise DataError("features frame has duplicate (symbol, timestamp) rows")
        grid = feat.set_index(["timestamp", "symbol"])[columns].unstack("symbol")
        grid = grid.reindex(index=calendar)
        grid.columns = grid.columns.swaplevel()
        grid = grid.reindex(columns=pd.MultiIndex.from_product([symbols, columns]))
        raw = grid.to_numpy(np.float64)

        self.feature_columns = columns
        self.calendar = calendar
        self._t0, self._t_end = self._trading_range(raw, calendar, columns)
        lo = self._t0 - cfg.window_size + 1
        if feature_stats is None:
            seen = raw[lo:]
            mean, std = seen.mean(axis=0), seen.std(axis=0)
        else:
            mean, std = (np.asarray(x, dtype=np.float64) for x in feature_stats)
            if mean.shape != (raw.shape[1],) or std.shape != (raw.shape[1],):
                raise ConfigError(
                    f"feature_stats have shape {mean.shape}/{std.shape}; this env observes "
                    f"{raw.shape[1]} columns ({len(symbols)} symbols x {len(columns)} features)"
                )
        std = np.where(std > 1e-12, std, 1.0)
        self.feature_stats: tuple[np.ndarray, np.ndarray] = (mean, std)
        normed = np.clip((raw - mean) / std, -_CLIP, _CLIP)
        normed[:lo] = 0.0  # never observed (warm-up rows may be NaN)
        # one buffer per bar: features (fixed), then the portfolio state (written as bars
        # pass), so an observation is a single slice copy
        self._pcol = normed.shape[1]
        buf = np.zeros((len(calendar), self._pcol + len(symbols) + _PORTFOLIO_COLUMNS), np.float32)
        buf[:, : self._pcol] = normed
        self._obs_buf = buf
        self._open, self._close = open_, close
        self._open_slip = open_ * cfg.slippage
        self._inv_open = 1.0 / open_
        # per bar: open, close, open*slippage, 1/open per asset, contiguous for the step kernel
        self._px = np.ascontiguousarray(
            np.stack([open_, close, self._open_slip, self._inv_open], axis=1)
        )
        self._asset_returns = close / open_ - 1.0
        self._timestamps = calendar.tz_convert(None).to_numpy()

    def _trading_range(
        self, raw: np.ndarray, calendar: pd.DatetimeIndex, columns: list[str]
    ) -> tuple[int, int]:
        """First decision bar and last bar; warm-up NaNs push the start, holes are errors."""
        cfg, w = self.config, self.config.window_size
        start = pd.Timestamp(cfg.start_date, tz="UTC") if cfg.start_date else None
        s = int(calendar.searchsorted(start)) if start is not None else 0
        s = max(s, w - 1)
        finite = np.isfinite(raw).all(axis=1)
        lo = max(s - w + 1, 0)
        used = finite[lo:]
        if not used.all():
            bad = np.flatnonzero(~used)
            first_good = int(np.argmax(used)) if used.any() else len(used)
            holes = bad[bad > first_good]
            if len(holes):
                hole = lo + int(holes[0])
                names = sorted(
                    {columns[c % len(columns)] for c in np.flatnonzero(~np.isfinite(raw[hole]))}
                )
                raise DataError(
                    f"features have NaN/inf at {calendar[hole]:%Y-%m-%d} in {names} after valid "
                    "bars; fill or drop them before building the env"
                )
            s = max(s, lo + int(bad[-1]) + w)  # warm-up prefix: start once a full window is valid
        t_end = len(calendar) - 1
        if s >= t_end:
            raise DataError(
                f"period {cfg.start_date or 'start'}..{cfg.end_date or 'end'} leaves "
                f"{max(t_end - s + 1, 0)} usable bar(s) for symbols {list(cfg.symbols)}; need "
                f"window_size ({w}) bars of history plus at least 2 bars to trade"
            )
        if cfg.episode_length is not None and cfg.episode_length > t_end - s:
            raise ConfigError(
                f"episode_length {cfg.episode_length} is longer than the period "
                f"({t_end - s} steps); lower it or use None for the whole period"
            )
        return s, t_end

    # ------------------------------------------------------------ properties
    @property
    def n_assets(self) -> int:
        return len(self.config.symbols)

    @property
    def decision_start(self) -> int:
        """Index (in :attr:`calendar`) of the first bar an episode can start deciding at."""
        return self._t0

    @property
    def last_bar(self) -> int:
        """Index of the last bar (the last fill/mark bar)."""
        return self._t_end

    @property
    def open_prices(self) -> np.ndarray:
        return self._open

    @property
    def close_prices(self) -> np.ndarray:
        return self._close

    @property
    def current_bar(self) -> int:
        return self._t

    @property
    def equity(self) -> float:
        return float(self._state[EQUITY])

    # ------------------------------------------------------------ gym API
    def _reset_portfolio(self, t: int) -> None:
        n, p = self.n_assets, self._pcol
        self._t = t
        self._steps = 0
        cash = float(self.config.initial_balance)
        state = self._state
        state[:] = 0.0  # no shares, no basis, no returns yet
        state[CASH] = state[EQUITY] = state[PEAK] = cash
        self._ret_buf[:] = 0.0
        rows = slice(t - self._window + 1, t + 1)
        self._obs_buf[rows, p:] = 0.0
        self._obs_buf[rows, p + n] = 1.0  # all cash

    def _observation(self) -> np.ndarray:
        return self._obs_buf[self._t - self._window + 1 : self._t + 1].copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        length = self.config.episode_length
        start = self._t0
        if length is not None:
            start = int(self.np_random.integers(self._t0, self._t_end - length + 1))
        self._reset_portfolio(start)
        info = {"equity": self.equity, "bar": start, "timestamp": self._timestamps[start]}
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        t = self._t
        if t >= self._t_end:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        if self._discrete:
            action = self.mapper.from_discrete(action)
        elif (
            type(action) is not np.ndarray
            or action.shape != self._action_shape
            or action.dtype not in _FAST_ACTION_DTYPES
        ):
            action = np.asarray(action, dtype=np.float64).reshape(self._action_shape)
        # all the arithmetic is in step_kernel (fused; see its docstring)
        (ok, obs, target, weights, fills, equity, ret, traded, fee, slippage_cost, turnover,
         drawdown, reward) = step_kernel(
            action, t, self._window, self._px, self._state, self._params, self._ret_buf,
            self._obs_buf, self._pcol,
        )  # fmt: skip
        if not ok:
            raise ValueError(
                f"action has non-finite values: {np.asarray(action, dtype=np.float64)}"
            )
        nxt = t + 1
        self._t = nxt
        self._steps += 1
        terminated = equity <= 0.0
        truncated = not terminated and (
            nxt >= self._t_end
            or (self._episode_length is not None and self._steps >= self._episode_length)
        )
        info = {
            "equity": equity,
            "portfolio_return": ret,
            "decision_bar": t,
            "fill_bar": nxt,
            "timestamp": self._timestamps[nxt],
            "target_weights": target,
            "weights": weights,
            "fill_prices": fills,
            "traded_notional": traded,
            "transaction_cost_paid": fee,
            "slippage_cost": slippage_cost,
            "turnover": turnover,
            "drawdown": drawdown,
            "asset_returns": self._asset_returns[nxt],
        }
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, truncated, info

    def render(self) -> str | None:  # type: ignore[override]
        row, p, n = self._obs_buf[self._t], self._pcol, self.n_assets
        line = (
            f"{pd.Timestamp(self._timestamps[self._t]):%Y-%m-%d} equity={self.equity:,.2f} "
            f"weights={np.round(row[p : p + n], 3).tolist()} cash={row[p + n]:.3f}"
        )
        if self.render_mode == "ansi":
            return line
        if self.render_mode == "human":
            print(line)
        return None


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="kubetrade.rl.env:TradingEnvironment")
