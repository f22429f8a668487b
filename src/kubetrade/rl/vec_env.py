"""``TradingVecEnv``: N copies of :class:`~kubetrade.rl.env.TradingEnvironment` stepped together.

An SB3 :class:`~stable_baselines3.common.vec_env.VecEnv` whose step is a handful of numpy
operations on ``(num_envs, n_assets)`` arrays instead of N Python steps, with the single env's
exact fills, costs, reward and observation (the same formulas, in the same order; tests replay
the golden trajectories of the single env through it). The price and feature arrays are the
template env's; each copy keeps its own portfolio history (the observation's state columns).

SB3 semantics: an episode that ends resets at once; the step returns the new episode's first
observation and puts the last one in ``infos[i]["terminal_observation"]``, with
``infos[i]["TimeLimit.truncated"]`` when the episode was cut by time (end of data or
``episode_length``) rather than by ruin. Copy ``i`` draws its random start bars from its own
generator, seeded ``seed + i`` by :meth:`seed` (what SB3's ``seed=`` does), so copy ``i`` starts
its episodes where ``TradingEnvironment.reset(seed=seed + i)`` would.

Per-step ``infos`` are empty dicts except at episode ends (``equity`` then, plus SB3's keys):
the single env's rich ``info`` is for evaluation (:func:`kubetrade.rl.ensemble.run_episode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from kubetrade.errors import ConfigError
from kubetrade.rl.env import _CLIP, TradingEnvironment

__all__ = ["TradingVecEnv"]


class TradingVecEnv(VecEnv):
    """``num_envs`` trading envs over ``template``'s data and config, stepped in numpy.

    Args:
        template: a built :class:`TradingEnvironment` (its period, features, costs, reward and
            action type are used; it is not stepped).
        num_envs: copies stepped together (>= 1).
    """

    def __init__(self, template: TradingEnvironment, num_envs: int = 1) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.template = template
        super().__init__(num_envs, template.observation_space, template.action_space)
        cfg = template.config
        self.config = cfg
        self.mapper = template.mapper
        self._discrete = cfg.action_type == "discrete"
        self._table = self.mapper.discrete_table
        self._n = template.n_assets
        self._p = template._pcol
        self._w = cfg.window_size
        self._t0, self._t_end = template.decision_start, template.last_bar
        self._episode_length = cfg.episode_length
        # one observation buffer per copy: shared features, own portfolio columns
        base = template._obs_buf.copy()
        base[:, self._p :] = 0.0
        self._buf = np.repeat(base[None], num_envs, axis=0)
        self._rows = np.arange(num_envs)[:, None]
        self._offsets = np.arange(-self._w + 1, 1)
        self._open, self._close = template._open, template._close
        self._open_slip, self._inv_open = template._open_slip, template._inv_open
        self._slip, self._cost = cfg.slippage, cfg.transaction_cost
        reward = cfg.reward_config
        self._reward_terms = (
            reward.scale * reward.return_weight,
            reward.scale * reward.drawdown_penalty,
            reward.sharpe_weight,
            reward.transaction_penalty,
        )
        self._rng: list[np.random.Generator | None] = [None] * num_envs
        k, n = num_envs, self._n
        self._t = np.full(k, self._t0, dtype=np.int64)
        self._cash = np.zeros(k)
        self._shares = np.zeros((k, n))
        self._basis = np.zeros((k, n))
        self._equity = np.zeros(k)
        self._peak = np.zeros(k)
        self._prev_dd = np.zeros(k)
        self._steps = np.zeros(k, dtype=np.int64)
        self._ret_buf = np.zeros((k, reward.sharpe_window))
        self._ret_sum = np.zeros(k)
        self._ret_sq = np.zeros(k)
        self._ret_count = np.zeros(k, dtype=np.int64)
        self._actions: np.ndarray | None = None
        self.render_mode = None  # the copies do not render

    @property
    def equity(self) -> np.ndarray:
        """Each copy's equity after its last step (a reset copy: its initial balance)."""
        return self._equity.copy()

    # ------------------------------------------------------------ episodes
    def _start_bar(self, i: int) -> int:
        if self._episode_length is None:
            return self._t0
        rng = self._rng[i]
        if rng is None:
            rng, _ = seeding.np_random(None)
            self._rng[i] = rng
        return int(rng.integers(self._t0, self._t_end - self._episode_length + 1))

    def _reset_one(self, i: int) -> None:
        t = self._start_bar(i)
        self._t[i] = t
        cash = float(self.config.initial_balance)
        self._cash[i] = self._equity[i] = self._peak[i] = cash
        self._prev_dd[i] = 0.0
        self._shares[i] = 0.0
        self._basis[i] = 0.0
        self._steps[i] = 0
        self._ret_buf[i] = 0.0
        self._ret_sum[i] = self._ret_sq[i] = 0.0
        self._ret_count[i] = 0
        rows = slice(t - self._w + 1, t + 1)
        self._buf[i, rows, self._p :] = 0.0
        self._buf[i, rows, self._p + self._n] = 1.0  # all cash

    def _observations(self) -> np.ndarray:
        return self._buf[self._rows, self._t[:, None] + self._offsets]

    def reset(self) -> np.ndarray:
        for i in range(self.num_envs):
            if self._seeds[i] is not None:
                self._rng[i], _ = seeding.np_random(self._seeds[i])
            self._reset_one(i)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{"equity": float(e)} for e in self._equity]
        return self._observations()

    # ------------------------------------------------------------ actions
    def target_weights(self, actions: np.ndarray) -> np.ndarray:
        """Target weights, shape ``(num_envs, n_assets)``, as :class:`ActionMapper` maps them."""
        m = self.mapper
        if self._discrete:
            return self._table[np.asarray(actions).reshape(self.num_envs).astype(np.int64)]
        a = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, self._n)
        if m.allow_short:
            w = np.minimum(np.maximum(a, -m.max_position), m.max_position)
            gross = np.abs(w).sum(axis=1)
        else:
            w = np.minimum(np.maximum((a + 1.0) * 0.5, 0.0), m.max_position)
            gross = w.sum(axis=1)
        if not np.all(gross < np.inf):
            raise ValueError(f"action has non-finite values: {a[~(gross < np.inf)]}")
        over = gross > m.max_gross_exposure
        if over.any():
            w[over] *= (m.max_gross_exposure / gross[over])[:, None]
        return w

    # ------------------------------------------------------------ step
    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(); call step(actions)")
        target = self.target_weights(self._actions)
        self._actions = None
        nxt = self._t + 1
        open_, close, open_slip = self._open[nxt], self._close[nxt], self._open_slip[nxt]
        shares = self._shares

        # fill at the next bar's open, slipped against the trader, fee on traded notional
        equity_open = self._cash + (shares * open_).sum(axis=1)
        delta = target * self._inv_open[nxt] * equity_open[:, None] - shares
        buy, sell = delta > 0.0, delta < 0.0
        fills = np.where(buy, open_ + open_slip, np.where(sell, open_ - open_slip, open_))
        at_open = (delta * open_).sum(axis=1)
        abs_at_open = (np.abs(delta) * open_).sum(axis=1)
        # cost basis: adds at the fill price, reductions pro rata, a flip or close restarts it
        after = shares + delta
        same_side = shares * delta >= 0.0
        reduce = ~same_side & (after * shares > 0.0)
        ratio = after / np.where(reduce, shares, 1.0)  # shares != 0 where reduce
        self._basis = np.where(
            same_side,
            self._basis + delta * fills,
            np.where(reduce, self._basis * ratio, after * fills),
        )
        slip = self._slip
        traded = abs_at_open + slip * at_open  # = sum |delta| * fill
        fee = traded * self._cost
        slippage_cost = slip * abs_at_open
        self._cash = self._cash - (at_open + slippage_cost + fee)
        self._shares = after

        # mark at the next bar's close; record the state the next observation shows
        held = after * close
        held_value = held.sum(axis=1)
        equity = self._cash + held_value
        positive = equity > 0.0
        scale = np.where(positive, 1.0 / np.where(positive, equity, 1.0), 1.0)
        p, n = self._p, self._n
        state = self._buf[self._rows[:, 0], nxt]  # (num_envs, columns) copy
        # ufuncs, not np.clip: its Python wrapper costs more than the work here
        state[:, p : p + n] = np.minimum(np.maximum(held * scale[:, None], -_CLIP), _CLIP)
        state[:, p + n] = np.minimum(np.maximum(self._cash * scale, -_CLIP), _CLIP)
        unrealised = (held_value - self._basis.sum(axis=1)) * scale
        state[:, p + n + 1] = np.minimum(np.maximum(unrealised, -_CLIP), _CLIP)
        self._buf[self._rows[:, 0], nxt] = state

        # reward: see kubetrade.rl.env's docstring
        ret = equity / self._equity - 1.0
        width = self._ret_buf.shape[1]
        k = self._ret_count % width
        old = self._ret_buf[self._rows[:, 0], k]
        self._ret_buf[self._rows[:, 0], k] = ret
        self._ret_sum += ret - old
        self._ret_sq += ret * ret - old * old
        self._ret_count += 1
        m = np.minimum(self._ret_count, width)
        mean = self._ret_sum / m
        var = self._ret_sq / m - mean * mean
        ok = (m >= 2) & (var > 1e-16)
        sharpe = np.where(ok, mean / np.sqrt(np.where(ok, var, 1.0)), 0.0)
        self._peak = np.maximum(self._peak, equity)
        drawdown = 1.0 - equity / self._peak
        deepening = np.where(drawdown > self._prev_dd, drawdown - self._prev_dd, 0.0)
        self._prev_dd = drawdown
        eo_pos = equity_open > 0.0
        turnover = np.where(eo_pos, traded / np.where(eo_pos, equity_open, 1.0), 0.0)
        w_ret, w_dd, w_sharpe, w_turn = self._reward_terms
        reward = w_ret * ret - w_dd * deepening + w_sharpe * sharpe - w_turn * turnover

        self._equity = equity
        self._t = nxt
        self._steps += 1
        terminated = ~positive
        truncated = ~terminated & (nxt >= self._t_end)
        if self._episode_length is not None:
            truncated |= ~terminated & (self._steps >= self._episode_length)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        obs = self._observations()
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                infos[i] = {
                    "equity": float(equity[i]),
                    "terminal_observation": obs[i].copy(),
                    "TimeLimit.truncated": bool(truncated[i]),
                }
                self._reset_one(i)
                obs[i] = self._buf[i, self._t[i] + self._offsets]
        return obs, reward.astype(np.float32), dones, infos

    # ------------------------------------------------------------ VecEnv plumbing
    def close(self) -> None:
        return None

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.template, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"TradingVecEnv copies share one config; cannot set {attr_name!r}")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        method = getattr(self.template, method_name)
        return [method(*method_args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
