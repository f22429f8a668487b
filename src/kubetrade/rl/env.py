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
falling to zero terminates. The hot path is one numba kernel (``_step_kernel``) on arrays
built in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from math import sqrt
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from kubetrade.config import load_yaml_model
from kubetrade.errors import ConfigError, DataError, DataSourceError
from kubetrade.rl.config import BASIC_FEATURES, RewardConfig, TradingEnvConfig

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba ships with shap; the fallback is slow but exact

    def njit(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        if args and callable(args[0]):
            return args[0]
        return lambda func: func


__all__ = [
    "ENV_ID",
    "ActionMapper",
    "TradingEnvironment",
    "basic_features",
]

ENV_ID = "kubetrade/Trading-v0"
_CLIP = 10.0
_PORTFOLIO_COLUMNS = 2  # cash fraction, unrealised P&L (plus one weight per asset)

# Layout of the env's float64 state vector (one array so the step kernel takes few arguments:
# numba's per-call dispatch cost grows with each argument it has to type-check).
_CASH, _EQUITY, _PEAK, _PREV_DD, _RET_SUM, _RET_SQ, _RET_COUNT = range(7)
_SHARES = 7  # then n_assets shares, then n_assets cost bases
# Layout of the params vector: costs, caps, the four reward weights, the action mode.
_MODE_LONG, _MODE_SHORT, _MODE_WEIGHTS = 0.0, 1.0, 2.0
_FAST_ACTION_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


@njit(cache=True)
def _step_kernel(action, t, window, px, state, params, ret_buf, obs_buf, pcol):  # type: ignore[no-untyped-def]
    """One env step, fused: action -> weights -> fills -> costs -> equity -> reward -> obs row.

    A numba kernel because at a handful of assets the step is all per-call overhead (dozens of
    ~1 us numpy calls on 4-element arrays); compiled, the whole step costs about one call.
    The arithmetic (and its order) is that of the former numpy/Python step, so rewards match
    the golden trajectories. ``px[t]`` holds ``open, close, open*slippage, 1/open`` per asset.
    Returns ``ok`` = False (state untouched) when the action has NaNs, else the step's results.
    """
    n = px.shape[2]
    cost, slip, max_pos, max_gross = params[0], params[1], params[2], params[3]
    mode = params[8]
    target = np.empty(n)
    gross = 0.0
    for i in range(n):  # ActionMapper.from_continuous (NaN survives the clamps, as in numpy)
        a = float(action[i])
        if mode == 2.0:
            w = a
        elif mode == 1.0:
            w = a
            if w < -max_pos:
                w = -max_pos
            elif w > max_pos:
                w = max_pos
            gross += abs(w)
        else:
            w = (a + 1.0) * 0.5
            if w < 0.0:
                w = 0.0
            if w > max_pos:
                w = max_pos
            gross += w
        target[i] = w
    fills = np.empty(n)
    weights = np.empty(n)
    if not gross < np.inf:  # NaN slipped through
        return (False, obs_buf[0:0].copy(), target, weights, fills,
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # fmt: skip
    if mode != 2.0 and gross > max_gross:
        f = max_gross / gross
        for i in range(n):
            target[i] *= f

    nxt = t + 1
    row = px[nxt]
    # fill at the next bar's open, slipped against the trader, fee on traded notional
    equity_open = 0.0
    for i in range(n):
        equity_open += state[_SHARES + i] * row[0, i]
    equity_open += state[_CASH]
    # cost basis behind unrealised P&L: adds at the fill price, reductions pro rata, a flip or
    # a close restarts it
    at_open = abs_at_open = 0.0
    for i in range(n):
        o, o_slip = row[0, i], row[2, i]
        s = state[_SHARES + i]
        d = target[i] * row[3, i] * equity_open - s
        f = o + o_slip if d > 0.0 else (o - o_slip if d < 0.0 else o)
        fills[i] = f
        at_open += d * o
        abs_at_open += d * o if d > 0.0 else -d * o
        b = _SHARES + n + i
        if s * d >= 0.0:
            state[b] += d * f
        elif (s + d) * s > 0.0:
            state[b] *= (s + d) / s
        else:
            state[b] = (s + d) * f
        state[_SHARES + i] = s + d
    traded = abs_at_open + slip * at_open  # = sum |delta| * fill
    fee = traded * cost
    slippage_cost = slip * abs_at_open
    cash = state[_CASH] - (at_open + slippage_cost + fee)  # delta @ fill = at_open + slippage
    state[_CASH] = cash

    # mark at the next bar's close; record the state the next observation shows
    held_value = basis = 0.0
    for i in range(n):
        h = state[_SHARES + i] * row[1, i]
        weights[i] = h
        held_value += h
        basis += state[_SHARES + n + i]
    equity = cash + held_value
    scale = 1.0 / equity if equity > 0.0 else 1.0
    out = obs_buf[nxt]
    for i in range(n):
        w = weights[i] * scale
        weights[i] = w
        out[pcol + i] = min(max(w, -10.0), 10.0)  # only near ruin
    out[pcol + n] = min(max(cash * scale, -10.0), 10.0)
    out[pcol + n + 1] = min(max((held_value - basis) * scale, -10.0), 10.0)

    # reward: see the module docstring
    ret = equity / state[_EQUITY] - 1.0
    size = ret_buf.shape[0]
    count = int(state[_RET_COUNT])
    k = count % size
    old = ret_buf[k]
    ret_buf[k] = ret
    state[_RET_SUM] += ret - old
    state[_RET_SQ] += ret * ret - old * old
    count += 1
    state[_RET_COUNT] = count
    m = min(count, size)
    sharpe = 0.0
    if m >= 2:
        mean = state[_RET_SUM] / m
        var = state[_RET_SQ] / m - mean * mean
        sharpe = mean / sqrt(var) if var > 1e-16 else 0.0
    if equity > state[_PEAK]:
        state[_PEAK] = equity
    drawdown = 1.0 - equity / state[_PEAK]
    prev_dd = state[_PREV_DD]
    deepening = drawdown - prev_dd if drawdown > prev_dd else 0.0
    state[_PREV_DD] = drawdown
    turnover = traded / equity_open if equity_open > 0.0 else 0.0
    reward = params[4] * ret - params[5] * deepening + params[6] * sharpe - params[7] * turnover
    state[_EQUITY] = equity
    obs = obs_buf[nxt - window + 1 : nxt + 1].copy()
    return (True, obs, target, weights, fills,
            equity, ret, traded, fee, slippage_cost, turnover, drawdown, reward)  # fmt: skip


@dataclass(frozen=True)
class ActionMapper:
    """Pure mapping between actions and target portfolio weights (shared by env and ensemble)."""

    n_assets: int
    allow_short: bool = False
    max_position: float = 1.0
    max_gross_exposure: float = 1.0

    @classmethod
    def from_config(cls, config: TradingEnvConfig) -> ActionMapper:
        return cls(
            n_assets=len(config.symbols),
            allow_short=config.allow_short,
            max_position=config.max_position,
            max_gross_exposure=config.max_gross_exposure,
        )

    @cached_property
    def discrete_table(self) -> np.ndarray:
        """Weights of each discrete action, shape ``(n_actions, n_assets)``."""
        n = self.n_assets
        single = min(self.max_position, self.max_gross_exposure)
        rows = [np.zeros(n)]
        rows += list(np.eye(n) * single)
        rows.append(np.full(n, min(self.max_gross_exposure / n, self.max_position)))
        if self.allow_short:
            rows += list(-np.eye(n) * single)
        return np.asarray(rows, dtype=np.float64)

    @property
    def n_discrete(self) -> int:
        return len(self.discrete_table)

    def from_continuous(self, action: Any) -> np.ndarray:
        """Target weights of a continuous action in ``[-1, 1]^n`` (capped, gross-normalised)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_assets,):
            a = a.reshape(self.n_assets)
        # ufuncs, not np.clip: this runs every step and np.clip's Python wrapper dominates
        if self.allow_short:
            w = np.minimum(np.maximum(a, -self.max_position), self.max_position)
            gross = sum(map(abs, w.tolist()))
        else:
            w = np.minimum(np.maximum((a + 1.0) * 0.5, 0.0), self.max_position)
            gross = sum(w.tolist())  # faster than numpy for a few assets
        if not gross < np.inf:  # NaN or inf slipped through
            raise ValueError(f"action has non-finite values: {a}")
        if gross > self.max_gross_exposure:
            w *= self.max_gross_exposure / gross
        return w

    def from_discrete(self, action: Any) -> np.ndarray:
        """Target weights of a discrete action index."""
        return self.discrete_table[int(np.asarray(action).reshape(()))].copy()

    def to_weights(self, action: Any, action_type: str) -> np.ndarray:
        """Target weights of ``action`` for an agent whose action space is ``action_type``."""
        if action_type == "discrete":
            return self.from_discrete(action)
        return self.from_continuous(action)

    def to_continuous(self, weights: np.ndarray) -> np.ndarray:
        """The continuous action whose target weights are ``weights`` (inverse of the map)."""
        w = np.asarray(weights, dtype=np.float64)
        a = w if self.allow_short else 2.0 * w - 1.0
        return np.clip(a, -1.0, 1.0).astype(np.float32)


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
            mode = _MODE_WEIGHTS
        else:
            mode = _MODE_SHORT if self.config.allow_short else _MODE_LONG
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
        self._state = np.zeros(_SHARES + 2 * n)
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
        return float(self._state[_EQUITY])

    # ------------------------------------------------------------ gym API
    def _reset_portfolio(self, t: int) -> None:
        n, p = self.n_assets, self._pcol
        self._t = t
        self._steps = 0
        cash = float(self.config.initial_balance)
        state = self._state
        state[:] = 0.0  # no shares, no basis, no returns yet
        state[_CASH] = state[_EQUITY] = state[_PEAK] = cash
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
        # all the arithmetic is in _step_kernel (fused; see its docstring)
        (ok, obs, target, weights, fills, equity, ret, traded, fee, slippage_cost, turnover,
         drawdown, reward) = _step_kernel(
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
