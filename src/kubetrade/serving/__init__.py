"""Model serving: the registered hybrid model behind a KServe model server.

* :class:`~kubetrade.serving.predictor.Predictor`: versions behind aliases (SHA-256
  checked, swapped live), windows from Feast, the A/B split, the predictions log;
* :func:`~kubetrade.serving.server.serve`: KServe's ``ModelServer`` with that model (v1 and
  v2 protocols), locally or as an InferenceService predictor.
"""

from kubetrade.serving.config import ServingConfig, load_serving_config
from kubetrade.serving.spec import ServingError, ServingSpec, read_serving_spec, write_serving_spec

__all__ = [
    "ServingConfig",
    "ServingError",
    "ServingSpec",
    "load_serving_config",
    "read_serving_spec",
    "write_serving_spec",
]
