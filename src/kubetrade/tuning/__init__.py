"""Hyper-parameter tuning: one search space, Optuna locally, a Katib Experiment on the cluster.

:class:`AdvancedTrainingPipeline` (the guide's API) and :func:`tune` read the tuning file
(``config/search_space.yaml``, :class:`TuningSpec`), train trials on train + validation
windows only, and write ``best_config.yaml`` for ``train``.
"""

from kubetrade.tuning.api import (
    BEST_CONFIG_NAME,
    BEST_PARAMS_NAME,
    AdvancedTrainingPipeline,
    KatibDryRun,
    TuningResult,
    as_tuning_bundle,
    tune,
)
from kubetrade.tuning.katib_backend import (
    KatibOptions,
    build_tuning_experiment,
    experiment_yaml,
    katib_experiment_name,
)
from kubetrade.tuning.optuna_backend import (
    HybridObjective,
    OptunaReporter,
    StudyReport,
    TrialSetup,
    run_study,
)
from kubetrade.tuning.rl_objective import RLObjective, RLTuningResult, tune_rl_agent
from kubetrade.tuning.spec import (
    EPOCH_METRICS,
    GUIDE_LINKS,
    ObjectiveSettings,
    PrunerSettings,
    SamplerSettings,
    TuningSpec,
    load_tuning_spec,
)

__all__ = [
    "RLObjective",
    "RLTuningResult",
    "tune_rl_agent",
    "BEST_CONFIG_NAME",
    "BEST_PARAMS_NAME",
    "EPOCH_METRICS",
    "GUIDE_LINKS",
    "AdvancedTrainingPipeline",
    "HybridObjective",
    "KatibDryRun",
    "KatibOptions",
    "ObjectiveSettings",
    "OptunaReporter",
    "PrunerSettings",
    "SamplerSettings",
    "StudyReport",
    "TrialSetup",
    "TuningResult",
    "TuningSpec",
    "as_tuning_bundle",
    "build_tuning_experiment",
    "experiment_yaml",
    "katib_experiment_name",
    "load_tuning_spec",
    "run_study",
    "tune",
]
