"""Cluster side: PyTorchJob and Katib Experiment resources, and a launcher that waits for them.

Nothing here needs a cluster to import or to build objects; only
:func:`~kubetrade.k8s.lifecycle.kube_clients` talks to one.
"""

from kubetrade.k8s.cluster_profile import (
    ClusterTrainingProfile,
    SecretRef,
    Toleration,
    cluster_profile_from_configmap,
    current_namespace,
    load_cluster_profile,
)
from kubetrade.k8s.katib import (
    ALGORITHMS,
    KATIB_METRIC_REGEX,
    TRIAL_NAME_PLACEHOLDER,
    MedianStop,
    build_experiment,
    katib_parameters,
)
from kubetrade.k8s.katib_status import (
    BestTrial,
    ExperimentProgress,
    TrialMetric,
    best_trial_from_status,
    experiment_progress,
)
from kubetrade.k8s.launcher import CustomResourceLauncher, WaitResult
from kubetrade.k8s.lifecycle import kube_clients, run_experiment, run_pytorchjob
from kubetrade.k8s.pods import master_pod_selector
from kubetrade.k8s.pytorchjob import build_pytorchjob, trainer_command
from kubetrade.tuning.space import Choice, IntRange, LogUniform, SearchSpace, Uniform

__all__ = [
    "ALGORITHMS",
    "KATIB_METRIC_REGEX",
    "TRIAL_NAME_PLACEHOLDER",
    "BestTrial",
    "Choice",
    "ClusterTrainingProfile",
    "CustomResourceLauncher",
    "ExperimentProgress",
    "IntRange",
    "LogUniform",
    "MedianStop",
    "SearchSpace",
    "SecretRef",
    "Toleration",
    "TrialMetric",
    "Uniform",
    "WaitResult",
    "best_trial_from_status",
    "build_experiment",
    "build_pytorchjob",
    "cluster_profile_from_configmap",
    "current_namespace",
    "experiment_progress",
    "katib_parameters",
    "kube_clients",
    "load_cluster_profile",
    "master_pod_selector",
    "run_experiment",
    "run_pytorchjob",
    "trainer_command",
]
