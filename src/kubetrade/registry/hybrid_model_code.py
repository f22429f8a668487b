"""MLflow models-from-code entry of the hybrid CNN+LSTM pyfunc model.

:func:`kubetrade.registry.hybrid_pyfunc.log_hybrid` logs this file as the model's code, so
the model holds no pickled Python object: it loads the exported TorchScript file (after
checking its SHA-256); loading it imports kubetrade.
"""

import mlflow

from kubetrade.registry.hybrid_pyfunc import HybridPyfunc

mlflow.models.set_model(HybridPyfunc())
