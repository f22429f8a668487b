"""Actions to target portfolio weights: :class:`ActionMapper` (shared by env and ensemble).

The action spaces are those of :mod:`kubetrade.rl.env`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from kubetrade.rl.config import TradingEnvConfig

__all__ = ["ActionMapper"]


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
