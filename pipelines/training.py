"""The kubetrade training pipeline: one definition for the local runner and Kubeflow.

ingest -> validate -> features (Feast) -> split -+-> tune -> train -> evaluate -> export ---+
                                                 +-> RL agents (ParallelFor) -> ensemble ---+
    -> backtest (test period, beside buy-and-hold)
    -> walk-forward folds (ParallelFor) -> walk-forward (intervals, deflated Sharpe)
    -> summary (Markdown)
    -> [If evaluation gate] register (MLflow: hybrid model + RL ensemble)

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

from kubetrade.components.data import features_op, ingest_op, split_op, validate_op
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
    "PlatformOptions",
    "build_pipeline",
    "training_pipeline",
    "retarget_platform_spec",
    "POD_ENV",
]

PIPELINE_NAME = "kubetrade-training"


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

    def platform(task: Any, kind: str, *, volume: bool = False, mlflow: bool = False) -> Any:
        if volume:
            kubernetes.mount_pvc(task, pvc_name=opts.pvc_name, mount_path=opts.mount_path)
            _pod_env(task)  # the steps that launch PyTorchJobs / Experiments
        if mlflow:
            _mlflow_env(task, opts)
        if kind in opts.gpu_steps:
            _gpu(task, opts)
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="OHLCV -> quality gate -> causal features (Feast) -> purged splits -> "
        "tuning (Optuna/Katib) -> hybrid CNN+LSTM (torchrun/PyTorchJob) and RL ensemble -> "
        "backtest -> MLflow champion/challenger.",
    )
    def training_pipeline(
        run_config: str,
        agent_types: list = ["ppo", "sac", "td3", "dqn"],  # noqa: B006
        folds: list = [0, 1, 2, 3, 4],  # noqa: B006
    ) -> None:
        """Args:
        run_config: the resolved RunConfig as JSON (``kubetrade compile`` embeds the
            defaults; ``kubetrade run`` passes the local config).
        agent_types: RL agents to train, one task each.
        folds: walk-forward fold indices (``validation.cv_folds``), one task each.
        """
        ingest = ingest_op(run_config=run_config).set_display_name("ingest")
        validate = validate_op(
            run_config=run_config, ohlcv=ingest.outputs["ohlcv"]
        ).set_display_name("validate (Great Expectations)")
        features = (
            features_op(run_config=run_config, ohlcv=ingest.outputs["ohlcv"])
            .after(validate)
            .set_display_name("features (Feast)")
        )
        split = split_op(
            run_config=run_config,
            features=features.outputs["features"],
            feast_repo=features.outputs["feast_repo"],
        ).set_display_name("split")

        tune = platform(
            gpu_tune_op(run_config=run_config, bundle=split.outputs["bundle"]).set_display_name(
                "tune (Optuna / Katib)"
            ),
            "tune", volume=True, mlflow=True,
        )  # fmt: skip
        train = platform(
            gpu_train_op(
                run_config=run_config,
                bundle=split.outputs["bundle"],
                best_config=tune.outputs["best_config"],
            ).set_display_name("train (torchrun / PyTorchJob)"),
            "train", volume=True, mlflow=True,
        )  # fmt: skip
        evaluate = platform(
            evaluate_op(
                run_config=run_config, bundle=split.outputs["bundle"], model=train.outputs["model"]
            ).set_display_name("evaluate"),
            "evaluate", mlflow=True,
        )  # fmt: skip
        export = platform(
            export_op(
                run_config=run_config, bundle=split.outputs["bundle"], model=train.outputs["model"]
            )
            .after(evaluate)
            .set_display_name("export (TorchScript + ONNX)"),
            "export", mlflow=True,
        )  # fmt: skip

        with dsl.ParallelFor(items=agent_types, name="rl-agents") as agent_type:
            agent = rl_agent_op(
                run_config=run_config,
                agent_type=agent_type,
                ohlcv=ingest.outputs["ohlcv"],
                features=features.outputs["features"],
                bundle=split.outputs["bundle"],
            ).set_display_name("rl agent")
        ensemble = ensemble_op(
            run_config=run_config,
            agents=dsl.Collected(agent.outputs["agent"]),
            ohlcv=ingest.outputs["ohlcv"],
            features=features.outputs["features"],
            bundle=split.outputs["bundle"],
        ).set_display_name("rl ensemble")
        backtest = backtest_op(
            run_config=run_config,
            ohlcv=ingest.outputs["ohlcv"],
            bundle=split.outputs["bundle"],
            model=train.outputs["model"],
            ensemble_evaluation=ensemble.outputs["evaluation"],
        ).set_display_name("backtest")
        # --- walk-forward folds (issue #16): one task per fold, then the aggregate
        with dsl.ParallelFor(items=folds, name="walk-forward-folds") as fold_index:
            fold = fold_op(
                run_config=run_config, fold=fold_index, ohlcv=ingest.outputs["ohlcv"],
                bundle=split.outputs["bundle"], model=train.outputs["model"],
                ensemble_evaluation=ensemble.outputs["evaluation"],
            ).set_display_name("walk-forward fold")  # fmt: skip
        walk_forward = platform(
            walk_forward_op(
                run_config=run_config, folds=dsl.Collected(fold.outputs["result"]),
                tuning=tune.outputs["tuning"], model=train.outputs["model"],
                ensemble_evaluation=ensemble.outputs["evaluation"],
                backtest_report=backtest.outputs["report"], backtest=backtest.outputs["results"],
                data_docs=validate.outputs["data_docs"],
            ).after(export).set_display_name("walk-forward (folds, significance)"),
            "walk_forward", mlflow=True,
        )  # fmt: skip
        # --- end walk-forward
        summary_op(
            run_config=run_config,
            tuning=tune.outputs["tuning"],
            evaluation=evaluate.outputs["results"],
            backtest=backtest.outputs["results"],
            ensemble_evaluation=ensemble.outputs["evaluation"],
            gate=evaluate.outputs["Output"],
            walk_forward=walk_forward.outputs["results"],
        ).set_display_name("run summary")
        with dsl.If(evaluate.outputs["Output"] == "pass", name="evaluation-gate"):
            platform(
                register_op(
                    run_config=run_config,
                    exported=export.outputs["exported"],
                    evaluation=evaluate.outputs["results"],
                    ensemble=ensemble.outputs["ensemble"],
                    ensemble_evaluation=ensemble.outputs["evaluation"],
                )
                .after(backtest)
                .set_display_name("register (MLflow champion/challenger)"),
                "register", mlflow=True,
            )  # fmt: skip

    return training_pipeline


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
    driver up to 2.16) and ``*NameParameter`` (in the proto from 2.5.0). The KFP 2.2-2.4
    drivers (Kubeflow 1.9 and 1.10's 2.4.1) parse the config strictly and fail the task on
    an unknown field; ``optional`` on secretAsEnv is not even in the proto before 2.16 and
    not honoured before 2.15. So for those backends the parameter forms go (only constant
    names are allowed) and ``optional`` is dropped where it is not honoured.

    Raises:
        ConfigError: an unsupported version, or a name that is a runtime parameter (not a
            constant) for a backend that cannot resolve it.
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
