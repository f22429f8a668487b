"""The RL stage's typed configs; they live in :mod:`kubetrade.config.rl` (one config tree).
This module keeps ``from kubetrade.rl.config import ...`` working."""

from kubetrade.config import rl as _rl
from kubetrade.config.rl import *  # noqa: F403 (a re-export: the names are _rl.__all__)

__all__ = list(_rl.__all__)
