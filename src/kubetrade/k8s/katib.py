"""A Katib Experiment whose trials are PyTorchJobs, built from one :class:`SearchSpace`.

The search space itself is backend-neutral (:mod:`kubetrade.tuning.space`);
:func:`katib_parameters` writes it as Katib ``spec.parameters``. :func:`build_experiment`
writes a ``kubeflow.org/v1beta1`` Experiment whose trials are PyTorchJobs from
:func:`~kubetrade.k8s.pytorchjob.build_pytorchjob`. The rules Katib's admission webhook
enforces (``pkg/webhook/v1beta1/experiment/validator/validator.go``) and the suggestion
services' own checks (grid needs a finite grid no smaller than ``maxTrialCount``; CMA-ES
needs two or more numeric parameters) are checked here, so a bad experiment fails with a
:class:`~kubetrade.errors.ConfigError` before it reaches a cluster. Reading an
Experiment's status back is :mod:`kubetrade.k8s.katib_status`.

Metrics reach Katib through its default StdOut collector: the trainer prints one
``name=value ...`` line per epoch on rank 0 (``kubetrade.training.trainer``), which Katib
parses with :data:`KATIB_METRIC_REGEX`.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from kubetrade.config import StrictModel
from kubetrade.errors import ConfigError
from kubetrade.k8s.cluster_profile import ClusterTrainingProfile, current_namespace
from kubetrade.k8s.pytorchjob import CONTAINER_NAME, build_pytorchjob
from kubetrade.k8s.versions import (
    DEFAULT_KATIB_VERSION,
    check_katib_version,
    katib_has_distribution,
)
from kubetrade.tuning.space import (
    Choice,
    IntRange,
    LogUniform,
    SearchSpace,
    Uniform,
    format_number,
)

__all__ = [
    "KATIB_GROUP",
    "KATIB_VERSION",
    "EXPERIMENT_PLURAL",
    "EXPERIMENT_KIND",
    "KATIB_METRIC_REGEX",
    "ALGORITHMS",
    "SUCCESS_CONDITION",
    "FAILURE_CONDITION",
    "TRIAL_NAME_PLACEHOLDER",
    "EXPERIMENT_LABEL",
    "MedianStop",
    "build_experiment",
    "katib_parameters",
]

KATIB_GROUP = "kubeflow.org"
KATIB_VERSION = "v1beta1"
EXPERIMENT_PLURAL = "experiments"
EXPERIMENT_KIND = "Experiment"

#: Katib's default StdOut/File metrics filter (``pkg/metricscollector/v1beta1/common``).
KATIB_METRIC_REGEX = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"

#: Katib's built-in suggestion algorithms that fit a hyper-parameter (not NAS) search.
ALGORITHMS = (
    "tpe",
    "random",
    "grid",
    "bayesianoptimization",
    "multivariate-tpe",
    "cmaes",
    "hyperband",
)

#: GJSON conditions for Kubeflow training jobs (Katib's documented PyTorchJob values).
SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'

#: Put this in trial args to get the trial's own name (e.g. a per-trial output folder).
TRIAL_NAME_PLACEHOLDER = "${trialParameters.trialName}"
#: Pod label on every trial pod: the experiment's name (the launcher finds its pods by it).
EXPERIMENT_LABEL = "kubetrade/experiment"
_TRIAL_NAME_PARAM = {
    "name": "trialName",
    "reference": "${trialSpec.Name}",
    "description": "name of the Katib trial",
}
_EXPERIMENT_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def katib_parameters(
    search_space: SearchSpace, katib_version: str = DEFAULT_KATIB_VERSION
) -> list[dict[str, Any]]:
    """``search_space`` as Katib ``spec.parameters`` (feasibleSpace values are strings, as Katib wants).

    Katib v0.17 (Kubeflow 1.9) has no ``feasibleSpace.distribution``: the webhook's Go
    types drop it and every double is sampled uniformly. For that version a log-scale
    parameter is a ConfigError (it would silently become uniform) and ``uniform`` is
    left implicit.

    Raises:
        ConfigError: a log-scale parameter for a Katib without ``distribution``.
    """
    with_distribution = katib_has_distribution(katib_version)
    out: list[dict[str, Any]] = []
    for name in search_space:
        p = search_space[name]
        if not with_distribution and (
            isinstance(p, LogUniform) or (isinstance(p, IntRange) and p.log)
        ):
            raise ConfigError(
                f"parameter {name!r} is log-scale but Katib {katib_version} has no "
                "feasibleSpace.distribution (it would be sampled uniformly); use Katib "
                ">= v0.18 (Kubeflow 1.10) or make it a 'choice'"
            )
        space: dict[str, Any]
        if isinstance(p, LogUniform):
            kind = "double"
            space = {
                "min": format_number(p.low),
                "max": format_number(p.high),
                "distribution": "logUniform",
            }
        elif isinstance(p, Uniform):
            kind = "double"
            space = {
                "min": format_number(p.low),
                "max": format_number(p.high),
                "distribution": "uniform",
            }
            if p.step is not None:
                space["step"] = format_number(p.step)
        elif isinstance(p, IntRange):
            kind = "int"
            space = {"min": str(p.low), "max": str(p.high)}
            if p.step != 1:
                space["step"] = str(p.step)
            if p.log:
                space["distribution"] = "logUniform"
        else:
            kind = "categorical"
            space = {"list": [format_number(v) if not isinstance(v, str) else v for v in p.values]}
        if not with_distribution:
            space.pop("distribution", None)
        out.append({"name": name, "parameterType": kind, "feasibleSpace": space})
    return out


class MedianStop(StrictModel):
    """Katib's ``medianstop`` early stopping: stop a trial below the median of completed ones."""

    min_trials_required: int = Field(default=3, ge=1)
    start_step: int = Field(default=4, ge=1)

    def to_katib(self) -> dict[str, Any]:
        return {
            "algorithmName": "medianstop",
            "algorithmSettings": [
                {"name": "min_trials_required", "value": str(self.min_trials_required)},
                {"name": "start_step", "value": str(self.start_step)},
            ],
        }


def _trial_param_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    candidate, index = base, 2
    while candidate in taken:
        candidate, index = f"{base}_{index}", index + 1
    taken.add(candidate)
    return candidate


def build_experiment(
    name: str,
    *,
    namespace: str | None = None,
    search_space: SearchSpace | Mapping[str, Any],
    objective_metric: str = "val_sharpe_ratio",
    mode: Literal["max", "min", "maximize", "minimize"] = "max",
    goal: float | None = None,
    additional_metrics: Sequence[str] = (),
    algorithm: str = "tpe",
    algorithm_settings: Mapping[str, str | int | float] | None = None,
    parallel_trial_count: int = 2,
    max_trial_count: int = 12,
    max_failed_trial_count: int = 3,
    early_stopping: MedianStop | None = None,
    trial_image: str | None = None,
    trial_args: Sequence[str] = (),
    param_flag: str = "--hparam",
    num_workers: int | None = None,
    nproc_per_node: int | None = None,
    profile: ClusterTrainingProfile | None = None,
    resume_policy: Literal["Never", "LongRunning", "FromVolume"] = "Never",
    katib_version: str = DEFAULT_KATIB_VERSION,
    param_targets: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Build a Katib ``Experiment`` whose trials are PyTorchJobs.

    Each trial runs ``trial_args`` followed by ``param_flag name=${trialParameters.x}`` for
    every parameter, e.g. ``--hparam learning_rate=0.0003 --hparam batch_size=64``. Put
    :data:`TRIAL_NAME_PLACEHOLDER` in ``trial_args`` (e.g. ``--out /data/tune/<it>``) to give
    each trial its own output folder.

    Args:
        name: experiment name (lower-case, starts with a letter, at most 40 characters so
            Katib's trial and pod names stay valid).
        namespace: namespace (default: the one this process runs in,
            :func:`~kubetrade.k8s.pytorchjob.current_namespace`); it must carry ``katib.kubeflow.org/metrics-collector-injection:
            enabled`` (``manifests/base`` sets it).
        search_space: a :class:`SearchSpace` or its dict form.
        objective_metric: metric the trainer prints as ``name=value`` on rank 0.
        mode: ``max``/``maximize`` or ``min``/``minimize``.
        goal: stop once the objective reaches this value (optional).
        additional_metrics: other metrics to record (not the objective).
        algorithm: one of :data:`ALGORITHMS`.
        algorithm_settings: Katib ``algorithmSettings`` (values become strings).
        parallel_trial_count, max_trial_count, max_failed_trial_count: Katib budgets.
        early_stopping: :class:`MedianStop` settings, or None.
        trial_image: trainer image (default: the profile's).
        trial_args: trainer arguments before the hyper-parameter flags.
        param_flag: flag that introduces each ``name=value`` pair.
        num_workers, nproc_per_node: trial job layout (override the profile's).
        profile: the :class:`~kubetrade.k8s.cluster_profile.ClusterTrainingProfile` trials
            run with (default: ``trial_image`` with no PVC and no service account). Trials
            always get ``restartPolicy: Never`` and ``backoffLimit: 0`` (a crashed trial is
            a failed trial, not a retry) and no TTL (Katib cleans up its trials).
        resume_policy: Katib ``resumePolicy`` (``Never`` removes the suggestion service
            when the experiment ends).
        katib_version: the target Katib (:data:`~kubetrade.k8s.versions.KATIB_VERSIONS`);
            v0.17 has no ``feasibleSpace.distribution``.
        param_targets: search-space name -> the flag names its value is passed as (a
            linked parameter feeds several config paths); default: its own name.

    Every trial pod runs ``sh -c '<command line>'`` with each argument shell-quoted: Katib's
    metrics collector rewrites the primary container into ``sh -c "<command and args joined
    with spaces>"`` (``pkg/webhook/v1beta1/pod/utils.go``), so unquoted arguments would be
    split and interpreted by the shell; workers run the same quoted line.

    Raises:
        ConfigError: anything Katib's webhook or suggestion service would reject.
    """
    katib_version = check_katib_version(katib_version)
    namespace = namespace or current_namespace()
    if not isinstance(name, str) or len(name) > 40 or not _EXPERIMENT_NAME.match(name):
        raise ConfigError(
            f"experiment name {name!r} is invalid: at most 40 lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    space = (
        search_space
        if isinstance(search_space, SearchSpace)
        else SearchSpace.from_dict(search_space)
    )
    mode_map = {
        "max": "maximize",
        "maximize": "maximize",
        "min": "minimize",
        "minimize": "minimize",
    }
    if mode not in mode_map:
        raise ConfigError(f"mode {mode!r} is invalid; use 'max' or 'min'")
    objective_type = mode_map[mode]
    for metric in (objective_metric, *additional_metrics):
        if not re.fullmatch(r"[\w|-]+", metric or ""):
            raise ConfigError(f"metric name {metric!r} must match [\\w|-]+ (Katib's StdOut filter)")
    if objective_metric in additional_metrics:
        raise ConfigError(
            f"additional_metrics must not repeat the objective metric {objective_metric!r}"
        )
    if len(set(additional_metrics)) != len(additional_metrics):
        raise ConfigError(f"additional_metrics has duplicates: {list(additional_metrics)}")
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}"
        )
    if max_trial_count < 1:
        raise ConfigError(f"max_trial_count must be > 0, got {max_trial_count}")
    if parallel_trial_count < 1:
        raise ConfigError(f"parallel_trial_count must be > 0, got {parallel_trial_count}")
    if parallel_trial_count > max_trial_count:
        raise ConfigError(
            f"parallel_trial_count ({parallel_trial_count}) must be <= max_trial_count "
            f"({max_trial_count})"
        )
    if not 0 <= max_failed_trial_count <= max_trial_count:
        raise ConfigError(
            f"max_failed_trial_count must be in [0, max_trial_count={max_trial_count}], "
            f"got {max_failed_trial_count}"
        )
    if goal is not None and not math.isfinite(goal):
        raise ConfigError(f"goal must be a finite number, got {goal}")
    settings = {str(k): str(v) for k, v in (algorithm_settings or {}).items()}
    _check_algorithm(algorithm, space, max_trial_count, settings)

    # --- trial template
    if profile is None:
        if trial_image is None:
            raise ConfigError("build_experiment needs trial_image (or a profile)")
        profile = ClusterTrainingProfile(image=trial_image, pvc_name=None, service_account=None)
    trial_updates: dict[str, Any] = {
        "restart_policy": "Never",
        "backoff_limit": 0,
        "ttl_seconds_after_finished": None,
    }
    if trial_image is not None:
        trial_updates["image"] = trial_image
    if num_workers is not None:
        trial_updates["num_workers"] = num_workers
    if nproc_per_node is not None:
        trial_updates["nproc_per_node"] = nproc_per_node
    trial_profile = profile.model_copy(update=trial_updates)

    taken: set[str] = {"trialName"}
    trial_parameters: list[dict[str, str]] = []
    hparam_args: list[str] = []
    for pname in space:
        tp = _trial_param_name(pname, taken)
        trial_parameters.append(
            {"name": tp, "reference": pname, "description": f"search-space parameter {pname}"}
        )
        for target in (param_targets or {}).get(pname) or [pname]:
            hparam_args += [param_flag, f"{target}=${{trialParameters.{tp}}}"]
    args = [str(a) for a in trial_args]
    if any(TRIAL_NAME_PLACEHOLDER in a for a in args):
        trial_parameters.append(dict(_TRIAL_NAME_PARAM))
    leftover = [a for a in args if "${trialParameters." in a.replace(TRIAL_NAME_PLACEHOLDER, "")]
    if leftover:
        raise ConfigError(
            f"trial_args {leftover} reference trial parameters; only {TRIAL_NAME_PLACEHOLDER} "
            "is allowed there (search-space values are added by build_experiment)"
        )
    trial_spec = build_pytorchjob(
        "trial",
        trial_profile,
        args=args + hparam_args,
        include_metadata_name=False,
        labels={"app.kubernetes.io/component": "tuning-trial", EXPERIMENT_LABEL: name},
    )
    _shell_quote_containers(trial_spec)

    objective: dict[str, Any] = {
        "type": objective_type,
        "objectiveMetricName": objective_metric,
        "metricStrategies": [{"name": objective_metric, "value": mode_map[mode][:3]}]
        + [{"name": m, "value": "latest"} for m in additional_metrics],
    }
    if goal is not None:
        objective["goal"] = float(goal)
    if additional_metrics:
        objective["additionalMetricNames"] = list(additional_metrics)

    algorithm_spec: dict[str, Any] = {"algorithmName": algorithm}
    if settings:
        algorithm_spec["algorithmSettings"] = [{"name": k, "value": v} for k, v in settings.items()]

    spec: dict[str, Any] = {
        "objective": objective,
        "algorithm": algorithm_spec,
        "parallelTrialCount": parallel_trial_count,
        "maxTrialCount": max_trial_count,
        "maxFailedTrialCount": max_failed_trial_count,
        "resumePolicy": resume_policy,
        "metricsCollectorSpec": {
            "collector": {"kind": "StdOut"},
            "source": {"filter": {"metricsFormat": [KATIB_METRIC_REGEX]}},
        },
        "parameters": katib_parameters(space, katib_version),
        "trialTemplate": {
            "primaryContainerName": CONTAINER_NAME,
            "primaryPodLabels": {"training.kubeflow.org/job-role": "master"},
            "successCondition": SUCCESS_CONDITION,
            "failureCondition": FAILURE_CONDITION,
            "trialParameters": trial_parameters,
            "trialSpec": trial_spec,
        },
    }
    if early_stopping is not None:
        spec["earlyStopping"] = early_stopping.to_katib()
    return {
        "apiVersion": f"{KATIB_GROUP}/{KATIB_VERSION}",
        "kind": EXPERIMENT_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "kubetrade"},
        },
        "spec": spec,
    }


def _shell_quote_containers(job: dict[str, Any]) -> None:
    """Turn every replica's ``command + args`` into ``sh -c '<quoted command line>'``."""
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        for container in replica["template"]["spec"]["containers"]:
            argv = [*container.get("command", []), *container.get("args", [])]
            container["command"] = ["sh", "-c"]
            container["args"] = [shlex.join(argv)]


def _check_algorithm(
    algorithm: str, space: SearchSpace, max_trial_count: int, settings: Mapping[str, str]
) -> None:
    if algorithm == "grid":
        size = math.prod(len(values) for values in space.grid().values())
        if max_trial_count > size:
            raise ConfigError(
                f"grid search: max_trial_count {max_trial_count} exceeds the {size} grid points; "
                f"lower max_trial_count to <= {size}"
            )
    elif algorithm == "cmaes":
        numeric = [n for n in space if not isinstance(space[n], Choice)]
        if len(numeric) < 2:
            raise ConfigError(
                f"cmaes needs at least two numeric (non-choice) parameters, got {numeric}"
            )
    elif algorithm == "hyperband":
        resource = settings.get("resource_name")
        if resource is None or resource not in space:
            raise ConfigError(
                "hyperband needs algorithm_settings['resource_name'] naming a search-space "
                f"parameter used as the budget (e.g. num_epochs), got {resource!r}"
            )
        if isinstance(space[resource], Choice | LogUniform):
            raise ConfigError(
                f"hyperband resource parameter {resource!r} must be 'int' or 'uniform'"
            )
        if "eta" in settings and not float(settings["eta"]) > 1:
            raise ConfigError(f"hyperband eta must be > 1, got {settings['eta']}")
