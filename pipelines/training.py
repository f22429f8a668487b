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

__all__ = ["PIPELINE_NAME", "PlatformOptions", "build_pipeline", "training_pipeline"]

PIPELINE_NAME = "kubetrade-training"


@dataclass(frozen=True)
class PlatformOptions:
    """Kubernetes settings compiled into the pipeline (kfp-kubernetes).

    Args:
        pvc_name: the shared data claim (``manifests/base/storage.yaml``), mounted into the
            tasks that stage files for PyTorchJobs and Katib trials.
        mount_path: where; must equal the cluster profile's ``data_mount_path``.
        env_config_map: ConfigMap whose keys become environment variables of every task
            that talks to MLflow (``MLFLOW_TRACKING_URI``...); optional, so a missing map
            leaves the task's defaults.
        secret_env: Secret name -> {key: ENV_VAR} for those tasks (MLflow and S3
            credentials); optional as well.
        gpu_steps: task kinds (``train``, ``tune``) that get one ``nvidia.com/gpu``, the GPU
            node selector and the GPU taint toleration. Only meaningful with ``backend:
            local`` (training inside the task's pod); with ``backend: kubeflow`` GPUs belong
            to the PyTorchJob pods (the cluster profile of ``overlays/gpu``).
    """

    pvc_name: str = "kubetrade-data"
    mount_path: str = "/data"
    env_config_map: str = "kubetrade-pipeline-env"
    secret_env: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "kubetrade-mlflow-auth": {
                "username": "MLFLOW_TRACKING_USERNAME",
                "password": "MLFLOW_TRACKING_PASSWORD",
            },
            "kubetrade-s3": {
                "access-key-id": "AWS_ACCESS_KEY_ID",
                "secret-access-key": "AWS_SECRET_ACCESS_KEY",
            },
        }
    )
    gpu_steps: tuple[str, ...] = ()
    gpu_node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    gpu_toleration_key: str = "nvidia.com/gpu"


def _mlflow_env(task: Any, opts: PlatformOptions) -> None:
    kubernetes.use_config_map_as_env(
        task,
        opts.env_config_map,
        {
            "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
            "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
        },
        optional=True,
    )
    for secret, keys in sorted(opts.secret_env.items()):
        kubernetes.use_secret_as_env(task, secret, dict(keys), optional=True)


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

    def platform(task: Any, kind: str, *, volume: bool = False, mlflow: bool = False) -> Any:
        if volume:
            kubernetes.mount_pvc(task, pvc_name=opts.pvc_name, mount_path=opts.mount_path)
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
            tune_op(run_config=run_config, bundle=split.outputs["bundle"]).set_display_name(
                "tune (Optuna / Katib)"
            ),
            "tune", volume=True, mlflow=True,
        )  # fmt: skip
        train = platform(
            train_op(
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


training_pipeline = build_pipeline()
