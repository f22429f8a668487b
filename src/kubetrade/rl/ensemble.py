"""Ensemble of trained RL agents: weighted voting, Hedge meta-learning, Thompson sampling.

Every member maps its action to target portfolio weights (discrete actions through the env's
action table, :class:`~kubetrade.rl.actions.ActionMapper`). The ensemble's target weights at step
``t`` are the vote ``sum_i v_t[i] * w_i`` with

``v_t = normalise(prior * hedge_t * thompson_t)``:

* **prior** (``ensemble_method``): ``weighted_voting`` turns each member's *validation* Sharpe
  ``s_i`` into weights, ``softmax(s / temperature)`` (``weighting: softmax``) or
  ``max(s_i, 0) / sum max(s_j, 0)`` (``weighting: positive``; uniform when no Sharpe is
  positive); ``equal`` is uniform; ``best`` puts all weight on the best validation Sharpe.
* **meta-learning** (``meta_learning``; else ``hedge_t = 1``): online Hedge (exponentiated
  gradient) with fixed share. After each step every member is credited with the return its own
  target weights would have earned over the bar just filled, ``r_i = w_i . (close/open - 1)``
  (gross of costs), and ``hedge <- hedge * exp(hedge_learning_rate * 100 * r_i)``, normalised,
  then mixed ``(1 - hedge_fixed_share) * hedge + hedge_fixed_share * prior`` so a member that
  lagged can recover. Only returns already realised enter, never the bar being decided.
* **Thompson sampling** (``thompson_sampling``; else ``thompson_t = 1``): each member has a
  Normal posterior over its mean per-step return ``r_i`` (prior ``N(0, thompson_prior_std^2)``,
  known variance = the member's discounted sample variance), built from its recent realised
  ``r_i`` with forgetting factor ``thompson_discount``. Each step draws ``thompson_draws``
  samples per member; ``thompson_t[i]`` is the share of draws in which member ``i`` has the
  highest sampled mean (probability matching). With ``thompson_draws: 1`` this is classic
  Thompson sampling: one member is picked per step and acts alone.

The sampling uses the ensemble's own seeded generator (``EnsembleConfig.seed``), so runs repeat;
members always act deterministically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from kubetrade.errors import ConfigError
from kubetrade.rl.actions import ActionMapper
from kubetrade.rl.agents import load_agent
from kubetrade.rl.config import EnsembleConfig
from kubetrade.rl.env import TradingEnvironment

__all__ = [
    "EnsembleAgent",
    "Member",
    "buy_and_hold_metrics",
    "performance_metrics",
    "run_episode",
    "validation_weights",
]

ENSEMBLE_METHODS = ("weighted_voting", "equal", "best")


@dataclass
class Member:
    """One trained agent of the ensemble."""

    name: str
    agent_type: str
    action_type: str
    model: BaseAlgorithm


def validation_weights(
    sharpes: Sequence[float],
    method: str = "weighted_voting",
    weighting: str = "softmax",
    temperature: float = 1.0,
) -> np.ndarray:
    """Prior vote weights from validation Sharpe ratios (sum to 1; see the module docstring)."""
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"ensemble_method {method!r} is unknown; use one of {ENSEMBLE_METHODS}")
    s = np.nan_to_num(np.asarray(sharpes, dtype=np.float64), nan=0.0, posinf=10.0, neginf=-10.0)
    if s.size == 0:
        raise ConfigError("an ensemble needs at least one agent")
    if method == "equal":
        return np.full(s.size, 1.0 / s.size)
    if method == "best":
        out = np.zeros(s.size)
        out[int(np.argmax(s))] = 1.0
        return out
    if weighting == "positive":
        pos = np.maximum(s, 0.0)
        return pos / pos.sum() if pos.sum() > 0 else np.full(s.size, 1.0 / s.size)
    z = (s - s.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


class EnsembleAgent:
    """Weighted vote of SB3 agents acting on one :class:`TradingEnvironment`.

    ``predict`` follows SB3's signature and returns a *continuous* action for an env with the
    same config (``action_type: continuous``). Call :meth:`observe` with each step's ``info`` to
    drive meta-learning and Thompson sampling (:func:`run_episode` does).
    """

    def __init__(
        self,
        members: Sequence[Member],
        validation_sharpe: Mapping[str, float],
        mapper: ActionMapper,
        method: str = "weighted_voting",
        meta_learning: bool = True,
        thompson_sampling: bool = True,
        settings: EnsembleConfig | None = None,
    ) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one agent")
        missing = [m.name for m in members if m.name not in validation_sharpe]
        if missing:
            raise ConfigError(f"no validation Sharpe for agent(s) {missing}")
        self.members = list(members)
        self.validation_sharpe = {m.name: float(validation_sharpe[m.name]) for m in members}
        self.mapper = mapper
        self.method = method
        self.meta_learning = meta_learning
        self.thompson_sampling = thompson_sampling
        self.settings = settings or EnsembleConfig()
        #: how ``ensemble_method: auto`` chose this combination (empty when configured)
        self.selection: dict[str, Any] = {}
        s = self.settings
        self.prior = validation_weights(
            [self.validation_sharpe[m.name] for m in members], method, s.weighting, s.temperature
        )
        self.reset()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def reset(self, seed: int | None = None) -> None:
        """Forget online state (start of an episode)."""
        k = len(self.members)
        self._rng = np.random.default_rng(self.settings.seed if seed is None else seed)
        self.hedge = self.prior.copy()
        self._ts_n = np.zeros(k)
        self._ts_sum = np.zeros(k)
        self._ts_sq = np.zeros(k)
        self._member_weights: np.ndarray | None = None
        self.last_vote = self.prior.copy()

    # ------------------------------------------------------------ online weights
    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of each member's posterior over its mean per-step return."""
        s = self.settings
        n = self._ts_n
        mean_r = np.divide(self._ts_sum, n, out=np.zeros_like(n), where=n > 0)
        var = np.divide(self._ts_sq, n, out=np.zeros_like(n), where=n > 0) - mean_r**2
        var = np.where(n >= 2, np.maximum(var, 1e-8), 1e-4)  # 1 % per step until data
        precision = 1.0 / s.thompson_prior_std**2 + n / var
        return (self._ts_sum / var) / precision, precision**-0.5

    def thompson_weights(self) -> np.ndarray:
        """Share of posterior draws in which each member has the highest mean return."""
        mean, sd = self.posterior()
        draws = self._rng.normal(mean, sd, size=(self.settings.thompson_draws, len(mean)))
        return np.bincount(draws.argmax(axis=1), minlength=len(mean)) / len(draws)

    def vote_weights(self) -> np.ndarray:
        """This step's vote ``normalise(prior * hedge * thompson)`` (draws when TS is on)."""
        v = self.hedge.copy() if self.meta_learning else self.prior.copy()
        if self.thompson_sampling:
            v = v * self.thompson_weights()
            if v.sum() <= 0:  # the sampled winners had zero prior weight ('best' method)
                v = self.thompson_weights() + 1e-12
        return v / v.sum()

    def member_weights(self, observation: np.ndarray) -> np.ndarray:
        """Each member's target weights for ``observation``, shape ``(members, assets)``."""
        rows = []
        for m in self.members:
            action, _ = m.model.predict(observation, deterministic=True)
            rows.append(self.mapper.to_weights(action, m.action_type))
        return np.asarray(rows)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Target portfolio weights of the ensemble for one observation."""
        member_w = self.member_weights(observation)
        self.last_vote = self.vote_weights()
        self._member_weights = member_w
        return self.last_vote @ member_w

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """SB3-style: the continuous action (for the ensemble's env) of one observation."""
        return self.mapper.to_continuous(self.act(observation)), None

    def observe(self, info: Mapping[str, Any]) -> np.ndarray:
        """Credit members with the realised returns of the step just taken; returns them."""
        if self._member_weights is None:
            return np.zeros(len(self.members))
        realised = self._member_weights @ np.asarray(info["asset_returns"], dtype=np.float64)
        s = self.settings
        if self.meta_learning:
            logits = (
                np.log(np.maximum(self.hedge, 1e-300)) + s.hedge_learning_rate * 100.0 * realised
            )
            h = np.exp(logits - logits.max())
            h /= h.sum()
            self.hedge = (1.0 - s.hedge_fixed_share) * h + s.hedge_fixed_share * self.prior
            self.hedge = np.maximum(self.hedge, 1e-300)
        g = s.thompson_discount
        self._ts_n = g * self._ts_n + 1.0
        self._ts_sum = g * self._ts_sum + realised
        self._ts_sq = g * self._ts_sq + realised**2
        self._member_weights = None
        return realised

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write each member's SB3 zip and ``ensemble.json`` under ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for m in self.members:
            m.model.save(out / f"{m.name}.zip")
            entries.append(
                {"name": m.name, "agent_type": m.agent_type, "action_type": m.action_type,
                 "file": f"{m.name}.zip"}
            )  # fmt: skip
        meta = {
            "members": entries,
            "validation_sharpe": self.validation_sharpe,
            "weights": dict(zip(self.names, self.prior.tolist(), strict=True)),
            "method": self.method,
            "meta_learning": self.meta_learning,
            "thompson_sampling": self.thompson_sampling,
            "selection": self.selection,
            "settings": self.settings.model_dump(),
            "mapper": {
                "n_assets": self.mapper.n_assets,
                "allow_short": self.mapper.allow_short,
                "max_position": self.mapper.max_position,
                "max_gross_exposure": self.mapper.max_gross_exposure,
            },
        }
        (out / "ensemble.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> EnsembleAgent:
        """Load what :meth:`save` wrote."""
        path = Path(directory) / "ensemble.json"
        if not path.is_file():
            raise ConfigError(f"no ensemble.json in {directory}; save an EnsembleAgent there first")
        meta = json.loads(path.read_text(encoding="utf-8"))
        members = [
            Member(
                name=e["name"],
                agent_type=e["agent_type"],
                action_type=e["action_type"],
                model=load_agent(e["agent_type"], Path(directory) / e["file"], device=device),
            )
            for e in meta["members"]
        ]
        return cls.from_meta(meta, members)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], members: list[Member]) -> EnsembleAgent:
        """The ensemble ``ensemble.json`` describes, over already loaded ``members`` (shared by
        :meth:`load` and the registry's safe loader)."""
        ensemble = cls(
            members,
            meta["validation_sharpe"],
            ActionMapper(**meta["mapper"]),
            method=meta["method"],
            meta_learning=meta["meta_learning"],
            thompson_sampling=meta["thompson_sampling"],
            settings=EnsembleConfig.model_validate(meta["settings"]),
        )
        ensemble.selection = meta.get("selection", {})
        return ensemble


# ---------------------------------------------------------------- evaluation
def performance_metrics(equity: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``sharpe_ratio`` (annualised, daily bars), ``total_return``, ``max_drawdown`` (<= 0)."""
    from kubetrade.backtest import metrics

    eq = np.asarray(equity, dtype=np.float64)
    returns = metrics.returns_from_equity(eq)
    sharpe = metrics.sharpe_ratio(returns)
    return {
        "sharpe_ratio": float(sharpe) if math.isfinite(sharpe) else 0.0,
        "total_return": float(metrics.total_return(eq)),
        "max_drawdown": float(metrics.max_drawdown(eq)),
    }


def run_episode(
    env: TradingEnvironment, agent: Any, seed: int | None = None, render: bool = False
) -> dict[str, Any]:
    """Run one episode; ``agent`` is an SB3 model or :class:`EnsembleAgent`.

    ``seed`` seeds the env's reset and, for an ensemble, its sampling (None = its config seed).

    Returns the metrics of :func:`performance_metrics` plus ``equity`` (list, starting with the
    initial balance), ``timestamps`` (ISO dates of the marked bars), ``total_reward``,
    ``mean_turnover`` (traded notional / equity per step), ``costs_paid`` (fees + slippage) and
    ``steps``.
    """
    obs, info = env.reset(seed=seed)
    if isinstance(agent, EnsembleAgent):
        agent.reset(seed)
    equity = [info["equity"]]
    stamps = [str(np.datetime_as_string(info["timestamp"], unit="D"))]
    total_reward, turnover, costs, done = 0.0, 0.0, 0.0, False
    targets: list[list[float]] = []  # target weights decided at stamps[i], filled next open
    while not done:
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        targets.append([float(w) for w in np.asarray(info["target_weights"]).ravel()])
        if isinstance(agent, EnsembleAgent):
            agent.observe(info)
        if render:
            print(env.render() if env.render_mode == "ansi" else info["equity"])
        equity.append(info["equity"])
        stamps.append(str(np.datetime_as_string(info["timestamp"], unit="D")))
        total_reward += reward
        turnover += info["turnover"]
        costs += info["transaction_cost_paid"] + info["slippage_cost"]
        done = terminated or truncated
    return {
        **performance_metrics(equity),
        "equity": equity,
        "timestamps": stamps,
        "target_weights": targets,
        "total_reward": total_reward,
        "mean_turnover": turnover / max(len(equity) - 1, 1),
        "costs_paid": costs,
        "steps": len(equity) - 1,
    }


def buy_and_hold_metrics(env: TradingEnvironment) -> dict[str, float]:
    """Equal-weight buy-and-hold over ``env``'s whole period, same fills and costs as the env.

    Buys at the first fill bar's open (slipped, fee paid), never rebalances, marks at closes.
    """
    cfg = env.config
    start, end = env.decision_start + 1, env.last_bar
    n = env.n_assets
    weights = np.full(n, min(cfg.max_gross_exposure / n, cfg.max_position))
    fill = env.open_prices[start] * (1.0 + cfg.slippage)
    budget = cfg.initial_balance / (1.0 + cfg.transaction_cost)
    shares = weights * budget / fill
    cash = cfg.initial_balance - float(shares @ fill) * (1.0 + cfg.transaction_cost)
    equity = np.concatenate(
        [[cfg.initial_balance], cash + env.close_prices[start : end + 1] @ shares]
    )
    return performance_metrics(equity)
