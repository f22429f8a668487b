"""Typed configuration: one config tree, parsed once from YAML, validated on construction.

- :mod:`kubetrade.config.base`: :class:`StrictModel`, YAML loading, ``KEY=VALUE`` parsing,
  dotted paths, one-line validation errors.
- :mod:`kubetrade.config.training`: ``config/training.yaml`` (the guide's file verbatim).
- :mod:`kubetrade.config.pipeline`: ``config/pipeline.yaml`` (data, quality, tuning step,
  backtest, registry gates, RL features).
- :mod:`kubetrade.config.rl`: ``config/trading_env.yaml`` and ``config/rl_training.yaml``.
- :mod:`kubetrade.config.run`: :class:`~kubetrade.config.run.RunConfig`, all of the above
  resolved once for a pipeline run (imported from there: it reads the tuning file, so it is
  not loaded with this package).
"""

from kubetrade.config import base as _base
from kubetrade.config import pipeline as _pipeline
from kubetrade.config import training as _training
from kubetrade.config.base import *  # noqa: F403 (a facade: the names are listed below)
from kubetrade.config.pipeline import *  # noqa: F403
from kubetrade.config.training import *  # noqa: F403

# every public name of the three modules
__all__ = [*_base.__all__, *_pipeline.__all__, *_training.__all__]
