"""MLflow models-from-code entry of the RL ensemble pyfunc model.

:func:`kubetrade.registry.rl_pyfunc.log_rl_ensemble` logs this file as the model's code, so
the model holds no pickled Python object; loading it imports kubetrade.
"""

import mlflow

from kubetrade.registry.rl_pyfunc import RLEnsemblePyfunc

mlflow.models.set_model(RLEnsemblePyfunc())
