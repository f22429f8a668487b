"""Cluster tuning: the same :class:`~kubetrade.tuning.spec.TuningSpec` as a Katib Experiment.

Every trial is a PyTorchJob running ``kubetrade.training.run`` with the trial's values as
``--hparam <config.path>=<value>`` flags. Katib names its parameters after the search space
(``hidden_dim``, ``training.learning_rate``); a linked parameter's flag is repeated for each
of its config paths, all fed by the same ``${trialParameters.hidden_dim}``, so the trainer
only ever sees dotted config paths. The trial pods run the whole command line shell-quoted
in ``sh -c`` (Katib's metrics collector joins it into one anyway). The tuning-only settings (``training.num_epochs = max_t``,
``training.monitor``), the spec's ``fixed`` values and the caller's base overrides are plain
``--hparam`` flags too.

The trainer prints ``val_sharpe_ratio=...`` on every epoch (rank 0); Katib's StdOut collector
records them and ``metricStrategies`` keeps the best epoch, as the local backend does.
Katib has no ASHA; ``katib.early_stopping: medianstop`` stops trials below the median of the
finished ones from epoch ``pruner.grace_period`` on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubetrade.errors import ConfigError
from kubetrade.k8s import goyaml
from kubetrade.k8s.cluster_profile import ClusterTrainingProfile, current_namespace
from kubetrade.k8s.katib import TRIAL_NAME_PLACEHOLDER, MedianStop, build_experiment
from kubetrade.k8s.katib_status import BestTrial
from kubetrade.k8s.versions import DEFAULT_KATIB_VERSION
from kubetrade.tuning.spec import TuningSpec

__all__ = [
    "KatibOptions",
    "katib_experiment_name",
    "build_tuning_experiment",
    "experiment_yaml",
    "run_katib",
    "hparam_value",
]

PARAM_FLAG = "--hparam"


@dataclass
class KatibOptions:
    """Where Katib trials run and what they read.

    Args:
        image: trainer image (or ``profile.image``).
        namespace: namespace (or ``profile.namespace``; default: the namespace this process
            runs in, where the trial PyTorchJobs go too).
        bundle_path: the dataset bundle inside the trial pod (on the data PVC).
        config_path: training config inside the image (``/app/config`` is baked in).
        output_root: each trial writes to ``<output_root>/<trial name>``.
        profile: cluster profile (resources, PVC, GPUs, tolerations) for the trial jobs.
        deadline_s: give up waiting for the experiment after this long.
        poll_s: seconds between status polls.
        stall_polls: fail when trial counters have not moved for this many polls.
        katib_version: target Katib (``kubetrade.k8s.versions.KATIB_VERSIONS``).
        run_id: suffix that makes the Experiment name unique to this run (default: random),
            so a rerun or a retry does not collide with the last one (409).
    """

    image: str | None = None
    namespace: str | None = None
    bundle_path: str = "/data/bundle.npz"
    config_path: str = "config/training.yaml"
    output_root: str = "/data/tuning"
    profile: ClusterTrainingProfile | None = None
    deadline_s: float = 24 * 3600.0
    poll_s: float = 30.0
    stall_polls: int = 120
    extra_args: list[str] = field(default_factory=list)
    katib_version: str = DEFAULT_KATIB_VERSION
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def resolved_namespace(self) -> str:
        profile_ns = self.profile.namespace if self.profile else None
        return self.namespace or profile_ns or current_namespace()


def katib_experiment_name(name: str, run_id: str | None = None) -> str:
    """A Katib-valid experiment name (lower-case DNS label, at most 40 characters).

    With ``run_id`` the name ends in ``-<run_id>`` (kept whole, the prefix is cut instead).
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if not slug or not slug[0].isalpha():
        slug = f"tune-{slug}".rstrip("-")
    if run_id:
        suffix = re.sub(r"[^a-z0-9]+", "", run_id.lower())[:12]
        if suffix:
            return f"{slug[: 39 - len(suffix)].rstrip('-')}-{suffix}"
    return slug[:40].rstrip("-")


def hparam_value(value: Any) -> str:
    """How a fixed override is written after ``--hparam path=`` (YAML flow, one line)."""
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def build_tuning_experiment(
    spec: TuningSpec,
    options: KatibOptions,
    *,
    name: str,
    base_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Katib Experiment for ``spec`` (budget and objective from ``spec.objective``).

    Raises:
        ConfigError: no image, or anything :func:`~kubetrade.k8s.katib.build_experiment`
            rejects.
    """
    profile = options.profile
    if profile is None:
        if not options.image:
            raise ConfigError(
                "Katib tuning needs a trainer image: pass image=... or a cluster profile"
            )
        # The defaults of a cluster profile: the shared data claim kubetrade-data mounted at
        # /data and the service account kubetrade-trainer (manifests/base creates both).
        profile = ClusterTrainingProfile(image=options.image)
    fixed = {**dict(base_overrides or {}), **spec.fixed, **spec.tuning_only_overrides()}
    args = [
        "--bundle", options.bundle_path,
        "--config", options.config_path,
        "--out", f"{options.output_root.rstrip('/')}/{TRIAL_NAME_PLACEHOLDER}",
        *options.extra_args,
    ]  # fmt: skip
    for path, value in fixed.items():
        args += [PARAM_FLAG, f"{path}={hparam_value(value)}"]
    objective = spec.objective
    early = None
    if spec.katib.early_stopping == "medianstop" and spec.pruner.type != "none":
        early = MedianStop(
            min_trials_required=max(spec.pruner.n_startup_trials, 1),
            start_step=spec.pruner.grace_period,
        )
    settings: dict[str, str | int | float] = {}
    if spec.katib.algorithm in ("tpe", "random", "multivariate-tpe"):
        settings["random_state"] = spec.sampler.seed
    experiment = build_experiment(
        katib_experiment_name(name, options.run_id),
        namespace=options.resolved_namespace(),
        search_space=spec.space,
        objective_metric=objective.metric,
        mode=objective.mode,
        goal=spec.katib.goal,
        additional_metrics=[m for m in ("val_loss",) if m != objective.metric],
        algorithm=spec.katib.algorithm,
        algorithm_settings=settings,
        parallel_trial_count=min(objective.max_concurrent_trials, objective.num_trials),
        max_trial_count=objective.num_trials,
        max_failed_trial_count=min(spec.katib.max_failed_trial_count, objective.num_trials),
        early_stopping=early,
        trial_image=options.image or None,
        trial_args=args,
        param_flag=PARAM_FLAG,
        profile=profile,
        katib_version=options.katib_version,
        param_targets={name: list(spec.targets(name)) for name in spec.space},
    )
    return experiment


def experiment_yaml(experiment: Mapping[str, Any]) -> str:
    """The Experiment as ``kubectl apply -f``-ready YAML: every string that go-yaml v2 (what
    kubectl and the API server use) would read as a number or boolean is quoted."""
    return goyaml.dump(dict(experiment))


def run_katib(
    experiment: Mapping[str, Any],
    spec: TuningSpec,
    options: KatibOptions,
    launcher: Any = None,
) -> BestTrial:
    """Submit the Experiment, wait for it and return ``currentOptimalTrial`` (typed values).

    Raises:
        TrainingError: the experiment failed, stalled or missed ``options.deadline_s``.
    """
    from kubetrade.k8s.lifecycle import run_experiment

    return run_experiment(
        experiment,
        deadline_s=options.deadline_s,
        poll_s=options.poll_s,
        stall_polls=options.stall_polls,
        search_space=spec.space,
        launcher=launcher,
        unschedulable_grace_s=(
            options.profile.unschedulable_grace_s if options.profile is not None else 120.0
        ),
    )
