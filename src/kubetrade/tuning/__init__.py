"""Hyper-parameter tuning: one search space, Optuna locally, a Katib Experiment on the cluster.

:class:`AdvancedTrainingPipeline` (the guide's API) and :func:`tune` read the tuning file
(``config/search_space.yaml``, :class:`TuningSpec`), train trials on train + validation
windows only, and write ``best_config.yaml`` for ``train``.

The names below load on first use (PEP 562), so ``kubetrade.tuning.space`` can be read by
``kubetrade.k8s.katib`` without importing the Katib backend, which imports ``kubetrade.k8s``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetrade._lazy import lazy_exports

if TYPE_CHECKING:
    from kubetrade.tuning.api import (
        BEST_CONFIG_NAME,
        BEST_PARAMS_NAME,
        AdvancedTrainingPipeline,
        KatibDryRun,
        TuningResult,
        tune,
    )
    from kubetrade.tuning.data import as_tuning_bundle
    from kubetrade.tuning.katib_backend import (
        KatibOptions,
        build_tuning_experiment,
        experiment_yaml,
        katib_experiment_name,
    )
    from kubetrade.tuning.objective import HybridObjective, OptunaReporter
    from kubetrade.tuning.optuna_backend import (
        StudyReport,
        TrialSetup,
        run_study,
    )
    from kubetrade.tuning.rl_objective import (
        RLObjective,
        RLTuningResult,
        tune_rl_agent,
    )
    from kubetrade.tuning.space import (
        Choice,
        IntRange,
        LogUniform,
        SearchSpace,
        Uniform,
    )
    from kubetrade.tuning.spec import (
        EPOCH_METRICS,
        GUIDE_LINKS,
        ObjectiveSettings,
        PrunerSettings,
        SamplerSettings,
        TuningSpec,
        load_tuning_spec,
    )

_EXPORTS: dict[str, str] = {
    "AdvancedTrainingPipeline": "kubetrade.tuning.api",
    "BEST_CONFIG_NAME": "kubetrade.tuning.api",
    "BEST_PARAMS_NAME": "kubetrade.tuning.api",
    "KatibDryRun": "kubetrade.tuning.api",
    "TuningResult": "kubetrade.tuning.api",
    "as_tuning_bundle": "kubetrade.tuning.data",
    "tune": "kubetrade.tuning.api",
    "KatibOptions": "kubetrade.tuning.katib_backend",
    "build_tuning_experiment": "kubetrade.tuning.katib_backend",
    "experiment_yaml": "kubetrade.tuning.katib_backend",
    "katib_experiment_name": "kubetrade.tuning.katib_backend",
    "HybridObjective": "kubetrade.tuning.objective",
    "OptunaReporter": "kubetrade.tuning.objective",
    "StudyReport": "kubetrade.tuning.optuna_backend",
    "TrialSetup": "kubetrade.tuning.optuna_backend",
    "run_study": "kubetrade.tuning.optuna_backend",
    "RLObjective": "kubetrade.tuning.rl_objective",
    "RLTuningResult": "kubetrade.tuning.rl_objective",
    "tune_rl_agent": "kubetrade.tuning.rl_objective",
    "Choice": "kubetrade.tuning.space",
    "IntRange": "kubetrade.tuning.space",
    "LogUniform": "kubetrade.tuning.space",
    "SearchSpace": "kubetrade.tuning.space",
    "Uniform": "kubetrade.tuning.space",
    "EPOCH_METRICS": "kubetrade.tuning.spec",
    "GUIDE_LINKS": "kubetrade.tuning.spec",
    "ObjectiveSettings": "kubetrade.tuning.spec",
    "PrunerSettings": "kubetrade.tuning.spec",
    "SamplerSettings": "kubetrade.tuning.spec",
    "TuningSpec": "kubetrade.tuning.spec",
    "load_tuning_spec": "kubetrade.tuning.spec",
}

__all__ = [
    "AdvancedTrainingPipeline",
    "BEST_CONFIG_NAME",
    "BEST_PARAMS_NAME",
    "Choice",
    "EPOCH_METRICS",
    "GUIDE_LINKS",
    "HybridObjective",
    "IntRange",
    "KatibDryRun",
    "KatibOptions",
    "LogUniform",
    "ObjectiveSettings",
    "OptunaReporter",
    "PrunerSettings",
    "RLObjective",
    "RLTuningResult",
    "SamplerSettings",
    "SearchSpace",
    "StudyReport",
    "TrialSetup",
    "TuningResult",
    "TuningSpec",
    "Uniform",
    "as_tuning_bundle",
    "build_tuning_experiment",
    "experiment_yaml",
    "katib_experiment_name",
    "load_tuning_spec",
    "run_study",
    "tune",
    "tune_rl_agent",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
