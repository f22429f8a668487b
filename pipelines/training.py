"""The kubetrade training pipeline: one definition for the local runner and Kubeflow.

resolve (run form + config files) -> ingest -> validate -> features (Feast) -> split -+-> tune -> train -> evaluate -> export ---+
                                                 +-> RL agents (ParallelFor) -> ensemble ---+
    -> backtest (test period, beside buy-and-hold)
    -> walk-forward folds (ParallelFor) -> walk-forward (intervals, deflated Sharpe)
    -> summary (Markdown)
    -> [If evaluation gate] register (MLflow: hybrid model + RL ensemble)

The run form (the pipeline's parameters: symbols, dates, epochs, model size, RL agents ...)
is :class:`kubetrade.pipeline.run_form.RunParams`; everything else comes from the config
files baked into the image, resolved once by the ``resolve`` task.
``training_pipeline`` is the definition ``kubetrade run`` executes locally and
``kubetrade compile`` writes for the cluster. Its Kubernetes settings (kfp-kubernetes:
the shared data PVC, environment from a ConfigMap, credentials from Secrets, GPU node
selector and toleration) live in the compiled YAML's platform section; the local runner
ignores them. :func:`build_pipeline` makes the GPU variant.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl, kubernetes

from kubetrade.components.data import features_op, ingest_op, resolve_op, split_op, validate_op
from kubetrade.components.evaluation import fold_op, walk_forward_op
from kubetrade.components.images import TRAINER_IMAGE
from kubetrade.components.model import (
    backtest_op,
    evaluate_op,
    export_op,
    register_op,
    summary_op,
    train_op,
    tune_op,
)
from kubetrade.components.rl import ensemble_op, rl_agent_op

__all__ = [
    "PIPELINE_NAME",
    "DISPLAY_NAMES",
    "CACHED_STEPS",
    "PlatformOptions",
    "build_pipeline",
    "training_pipeline",
    "retarget_platform_spec",
    "POD_ENV",
]

PIPELINE_NAME = "kubetrade-training"
PIPELINE_DESCRIPTION = (
    "Trading models from daily OHLCV: quality gate (Great Expectations) -> causal features "
    "(Feast) -> purged splits -> tuning (Optuna/Katib) -> hybrid CNN+LSTM (torchrun/"
    "PyTorchJob) and an RL ensemble -> backtest and walk-forward folds -> MLflow "
    "champion/challenger. The form sets what changes per run; the rest is config/*.yaml."
)

#: What the run graph shows for each task (issue #20: names a person can read).
DISPLAY_NAMES = {
    "resolve": "Resolve run config",
    "ingest": "Ingest OHLCV",
    "validate": "Validate data (Great Expectations)",
    "features": "Features (Feast)",
    "split": "Split train/val/test (purged)",
    "tune": "Tune hybrid (Optuna / Katib)",
    "train": "Train hybrid (PyTorchJob / torchrun)",
    "evaluate": "Evaluate hybrid (test split)",
    "export": "Export hybrid (TorchScript + ONNX)",
    "rl_agent": "RL agent",
    "ensemble": "RL ensemble",
    "backtest": "Backtest vs buy-and-hold",
    "fold": "Walk-forward fold",
    "walk_forward": "Walk-forward summary (significance)",
    "summary": "Run summary",
    "register": "Register (MLflow champion/challenger)",
}
#: Steps whose outputs depend on their inputs alone: Kubeflow may reuse a cached result.
#: The others never cache: they train with the cluster or log to MLflow (tune, train,
#: evaluate, export, walk_forward, register) or read those steps' fresh outputs.
CACHED_STEPS = frozenset({"resolve", "ingest", "validate", "features", "split"})


def _pipeline_doc() -> str:
    """The pipeline's docstring; kfp turns its Args into the run form's descriptions."""
    from kubetrade.pipeline.run_form import RunParams

    lines = ["The kubetrade training pipeline.", "", "Args:"]
    for name, info in RunParams.model_fields.items():
        lines.append(f"    {name}: {info.description}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PlatformOptions:
    """Kubernetes settings compiled into the pipeline (kfp-kubernetes).

    Args:
        pvc_name: the shared data claim (``manifests/base/storage.yaml``), mounted into the
            tasks that stage files for PyTorchJobs and Katib trials.
        mount_path: where; must equal the cluster profile's ``data_mount_path``.
        env_config_map: ConfigMap whose keys (``env_config_keys``) become environment
            variables of every task that talks to MLflow; ``manifests/base`` creates it with
            every key listed here. References are *required*: the KFP backends of Kubeflow
            1.9/1.10 ignore ``optional`` (honoured from KFP 2.15), so whatever the pipeline
            references must exist.
        env_config_keys: the ConfigMap keys (= variable names) passed on.
        secret_env: Secret name -> {key: ENV_VAR} for those tasks. Empty by default: the
            MLflow server of ``manifests/base`` proxies artifacts (``--serve-artifacts``)
            and has no auth, so tasks need no credentials. A Secret named here must exist.
        gpu_steps: task kinds (``train``, ``tune``) that get one ``nvidia.com/gpu``, the GPU
            node selector and the GPU taint toleration. Only meaningful with ``backend:
            local`` (training inside the task's pod); with ``backend: kubeflow`` GPUs belong
            to the PyTorchJob pods (the cluster profile of ``overlays/gpu``).
    """

    pvc_name: str = "kubetrade-data"
    mount_path: str = "/data"
    env_config_map: str = "kubetrade-pipeline-env"
    env_config_keys: tuple[str, ...] = ("MLFLOW_TRACKING_URI",)
    secret_env: dict[str, dict[str, str]] = field(default_factory=dict)
    gpu_steps: tuple[str, ...] = ()
    gpu_node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    gpu_toleration_key: str = "nvidia.com/gpu"


#: Downward-API environment of the tasks that create cluster jobs: the launcher makes the
#: step's pod the owner of the PyTorchJob / Experiment it creates (deleted with the pod).
POD_ENV = {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid"}


def _mlflow_env(task: Any, opts: PlatformOptions) -> None:
    kubernetes.use_config_map_as_env(
        task, opts.env_config_map, {key: key for key in opts.env_config_keys}
    )
    for secret, keys in sorted(opts.secret_env.items()):
        kubernetes.use_secret_as_env(task, secret, dict(keys))


def _pod_env(task: Any) -> None:
    for env, path in POD_ENV.items():
        kubernetes.use_field_path_as_env(task, env, path)


def _gpu(task: Any, opts: PlatformOptions) -> None:
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.add_node_selector(task, *opts.gpu_node_selector)
    kubernetes.add_toleration(
        task, key=opts.gpu_toleration_key, operator="Exists", effect="NoSchedule"
    )


def build_pipeline(options: "PlatformOptions | None" = None) -> Any:
    """The pipeline with ``options``' Kubernetes settings (default: CPU, shared PVC)."""
    opts = options or PlatformOptions()
    unknown = set(opts.gpu_steps) - {"train", "tune"}
    if unknown:
        raise ValueError(f"gpu_steps {sorted(unknown)}: only 'train' and 'tune' train models")

    # GPU steps run in the CUDA trainer image (the base image's torch is CPU-only, so a GPU
    # requested for it would idle): the same component functions, another base image.
    gpu_tune_op = (
        dsl.component(tune_op.python_func, base_image=TRAINER_IMAGE, install_kfp_package=False)
        if "tune" in opts.gpu_steps
        else tune_op
    )
    gpu_train_op = (
        dsl.component(train_op.python_func, base_image=TRAINER_IMAGE, install_kfp_package=False)
        if "train" in opts.gpu_steps
        else train_op
    )

    def step(task: Any, kind: str, *, volume: bool = False, mlflow: bool = False) -> Any:
        """Display name, caching and the Kubernetes settings of one task."""
        task.set_display_name(DISPLAY_NAMES[kind]).set_caching_options(kind in CACHED_STEPS)
        if volume:
            kubernetes.mount_pvc(task, pvc_name=opts.pvc_name, mount_path=opts.mount_path)
            _pod_env(task)  # the steps that launch PyTorchJobs / Experiments
        if mlflow:
            _mlflow_env(task, opts)
        if kind in opts.gpu_steps:
            _gpu(task, opts)
        return task

    def training_pipeline(
        symbols: list,
        start_date: str,
        end_date: str,
        data_source: str,
        epochs: int,
        model_size: str,
        rl_agents: list,
        rl_timesteps: int,
        tuning_trials: int,
        walk_forward_folds: int,
        backend: str,
    ) -> None:
        resolve = step(
            resolve_op(
                symbols=symbols, start_date=start_date, end_date=end_date,
                data_source=data_source, epochs=epochs, model_size=model_size,
                rl_agents=rl_agents, rl_timesteps=rl_timesteps, tuning_trials=tuning_trials,
                walk_forward_folds=walk_forward_folds, backend=backend,
            ),
            "resolve",
        )  # fmt: skip
        run_config = resolve.outputs["run_config"]
        ingest = step(ingest_op(run_config=run_config), "ingest")
        validate = step(
            validate_op(run_config=run_config, ohlcv=ingest.outputs["ohlcv"]), "validate"
        )
        features = step(
            features_op(run_config=run_config, ohlcv=ingest.outputs["ohlcv"]).after(validate),
            "features",
        )
        split = step(
            split_op(
                run_config=run_config,
                features=features.outputs["features"],
                feast_repo=features.outputs["feast_repo"],
            ),
            "split",
        )
        bundle = split.outputs["bundle"]
        tune = step(
            gpu_tune_op(run_config=run_config, bundle=bundle), "tune", volume=True, mlflow=True
        )
        train = step(
            gpu_train_op(
                run_config=run_config, bundle=bundle, best_config=tune.outputs["best_config"]
            ),
            "train", volume=True, mlflow=True,
        )  # fmt: skip
        model = train.outputs["model"]
        evaluate = step(
            evaluate_op(run_config=run_config, bundle=bundle, model=model),
            "evaluate", mlflow=True,
        )  # fmt: skip
        export = step(
            export_op(run_config=run_config, bundle=bundle, model=model).after(evaluate),
            "export", mlflow=True,
        )  # fmt: skip

        # No ParallelFor(name=...): with dsl.Collected a named loop fails at run time even on
        # KFP 2.14-2.16 (kubeflow/pipelines#13239: the loop DAG's taskInfo.name becomes the
        # name while consumers name the producer by its task key, for-loop-N; the SDK fix,
        # PR #13707, is not in kfp 2.17.3). tests/contracts/test_fan_in.py checks it.
        with dsl.ParallelFor(items=rl_agents) as agent_type:
            agent = step(
                rl_agent_op(
                    run_config=run_config,
                    agent_type=agent_type,
                    ohlcv=ingest.outputs["ohlcv"],
                    features=features.outputs["features"],
                    bundle=bundle,
                ),
                "rl_agent",
            )
        ensemble = step(
            ensemble_op(
                run_config=run_config,
                agents=dsl.Collected(agent.outputs["agent"]),
                ohlcv=ingest.outputs["ohlcv"],
                features=features.outputs["features"],
                bundle=bundle,
            ),
            "ensemble",
        )
        backtest = step(
            backtest_op(
                run_config=run_config,
                ohlcv=ingest.outputs["ohlcv"],
                bundle=bundle,
                model=model,
                ensemble_evaluation=ensemble.outputs["evaluation"],
            ),
            "backtest",
        )
        # --- walk-forward folds (issue #16): one task per fold, then the aggregate
        with dsl.ParallelFor(items=resolve.outputs["Output"]) as fold_index:  # no name: #13239
            fold = step(
                fold_op(
                    run_config=run_config, fold=fold_index, ohlcv=ingest.outputs["ohlcv"],
                    bundle=bundle, model=model,
                    ensemble_evaluation=ensemble.outputs["evaluation"],
                ),
                "fold",
            )  # fmt: skip
        walk_forward = step(
            walk_forward_op(
                run_config=run_config, folds=dsl.Collected(fold.outputs["result"]),
                tuning=tune.outputs["tuning"], model=model,
                ensemble_evaluation=ensemble.outputs["evaluation"],
                backtest_report=backtest.outputs["report"], backtest=backtest.outputs["results"],
                data_docs=validate.outputs["data_docs"],
            ).after(export),
            "walk_forward", mlflow=True,
        )  # fmt: skip
        # --- end walk-forward
        step(
            summary_op(
                run_config=run_config,
                tuning=tune.outputs["tuning"],
                evaluation=evaluate.outputs["results"],
                backtest=backtest.outputs["results"],
                ensemble_evaluation=ensemble.outputs["evaluation"],
                gate=evaluate.outputs["Output"],
                walk_forward=walk_forward.outputs["results"],
                model=model,
            ),
            "summary", mlflow=True,
        )  # fmt: skip
        with dsl.If(
            evaluate.outputs["Output"] == "pass", name="Evaluation gate (register if pass)"
        ):
            step(
                register_op(
                    run_config=run_config,
                    exported=export.outputs["exported"],
                    evaluation=evaluate.outputs["results"],
                    ensemble=ensemble.outputs["ensemble"],
                    ensemble_evaluation=ensemble.outputs["evaluation"],
                ).after(backtest),
                "register", mlflow=True,
            )  # fmt: skip

    training_pipeline.__doc__ = _pipeline_doc()
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(training_pipeline)


def gpu_options(steps: Sequence[str] = ("train", "tune")) -> PlatformOptions:
    """Platform options that put ``steps`` on GPU nodes (``backend: local`` on a GPU pool)."""
    return PlatformOptions(gpu_steps=tuple(steps))


_NAME_PARAMETERS = {
    "secretAsEnv": ("secretNameParameter", "secretName"),
    "secretAsVolume": ("secretNameParameter", "secretName"),
    "configMapAsEnv": ("configMapNameParameter", "configMapName"),
    "configMapAsVolume": ("configMapNameParameter", "configMapName"),
    "pvcMount": ("pvcNameParameter", "constant"),
}


def retarget_platform_spec(doc: dict[str, Any], kfp_version: str) -> dict[str, Any]:
    """Keep only the kubernetes executor fields that the KFP backend ``kfp_version`` handles.

    kfp-kubernetes 2.x writes each Secret/ConfigMap/PVC name twice: the plain field
    (``secretName``, ``configMapName``, ``constant``; deprecated but still read by every
    driver up to 2.16) and ``*NameParameter`` (in the proto from 2.5.0); drivers parse the
    config strictly and fail the task on an unknown field. ``optional`` on secretAsEnv is
    neither in the proto nor honoured before 2.15, so it is dropped there (2.14.0, the
    default target). The parameter forms go (only constant names allowed) for backends
    before 2.5; ``kubetrade compile`` refuses those (no ``dsl.Collected`` before 2.14,
    :func:`kubetrade.k8s.versions.check_kfp_version`), so only the contract tests'
    negative control reaches that branch.

    Raises:
        ConfigError: a name that is a runtime parameter (not a constant) for a backend that
            cannot resolve it.
    """
    from kubetrade.errors import ConfigError
    from kubetrade.k8s.versions import kfp_features

    features = kfp_features(kfp_version)
    executors = (
        doc.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors")
    ) or {}
    for executor, config in executors.items():
        for section, (param_key, plain_key) in _NAME_PARAMETERS.items():
            for entry in config.get(section) or []:
                if not features.name_parameters and param_key in entry:
                    param = entry.pop(param_key)
                    constant = (param.get("runtimeValue") or {}).get("constant")
                    if entry.get(plain_key) in (None, "") and constant is None:
                        raise ConfigError(
                            f"{executor}: {section} takes its name from a pipeline parameter, "
                            f"which KFP {kfp_version} cannot resolve; use a constant name"
                        )
                    entry.setdefault(plain_key, constant)
                if not features.optional_honoured:
                    entry.pop("optional", None)
    return doc


training_pipeline = build_pipeline()
