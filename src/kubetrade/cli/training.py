"""``kubetrade tune`` (Optuna locally or a Katib Experiment) and ``kubetrade train`` (the
hybrid CNN+LSTM alone: train, evaluate, export)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kubetrade.cli.common import ConfigOpt, SetOpt, out, overrides
from kubetrade.errors import KubetradeError


def tune(
    bundle: Annotated[
        Path,
        typer.Option(
            help="window bundle .npz written by the split step; katib: its path on the data "
            "volume as trial pods see it (relative paths are under the volume's mount)"
        ),
    ],
    search_space: Annotated[Path, typer.Option(help="search space YAML")] = Path(
        "config/search_space.yaml"
    ),
    config: ConfigOpt = Path("config/pipeline.yaml"),
    backend: Annotated[str, typer.Option(help="local (Optuna) or katib")] = "local",
    run_dir: Annotated[Path, typer.Option(help="study + results folder")] = Path("runs/tuning"),
    num_trials: Annotated[int | None, typer.Option(help="override the spec's num_trials")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="parallel trials")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="katib: print the Experiment YAML to stdout")
    ] = False,
    cluster_profile: Annotated[
        Path | None,
        typer.Option(
            help="katib: cluster profile YAML of the trial pods (image, data volume, service "
            "account, resources); default $KUBETRADE_CLUSTER_PROFILE, else the overlay's "
            "ConfigMap kubetrade-cluster-profile (--dry-run: the profile defaults)"
        ),
    ] = None,
    katib_version: Annotated[
        str | None,
        typer.Option(
            help="katib: target Katib (v0.17.0, v0.18.0, v0.19.0); default: the profile's"
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="katib: namespace (default: the profile's, else current)")
    ] = None,
) -> None:
    """Tune hyperparameters on validation metrics only (the test split is dropped first).

    Local: Optuna TPE + pruning, study in <run-dir>/tuning/optuna.db (rerun resumes).
    Katib: the same search space as a kubeflow.org/v1beta1 Experiment.
    """
    from kubetrade.pipeline.steps import load_run_config
    from kubetrade.tuning.api import KatibDryRun
    from kubetrade.tuning.api import tune as run_tune

    if backend not in ("local", "katib"):
        raise KubetradeError(f"--backend {backend!r}: use 'local' or 'katib'")
    cfg = load_run_config(config)
    katib = None
    if backend == "katib":
        katib = _katib_options(bundle, cluster_profile, katib_version, namespace, dry_run)
    result = run_tune(
        cfg.pipeline.training_config, search_space, bundle=str(bundle), run_dir=run_dir,
        overrides=cfg.pipeline.training_overrides, backend=backend,  # type: ignore[arg-type]
        num_trials=num_trials, max_concurrent_trials=max_concurrent, dry_run=dry_run, katib=katib,
    )  # fmt: skip
    if isinstance(result, KatibDryRun):
        # Plain bytes on stdout: Rich would wrap long lines at the terminal width.
        sys.stdout.write(result.yaml)
        sys.stdout.flush()
        return
    out.print(f"best {result.metric} = {result.best_value:.4g} with {result.best_params}")
    out.print(f"best config: {result.best_config_path}")


def _katib_options(
    bundle: Path,
    profile_path: Path | None,
    katib_version: str | None,
    namespace: str | None,
    dry: bool,
) -> Any:
    """KatibOptions for ``kubetrade tune --backend katib`` (ConfigError on a bad choice)."""
    import os
    import posixpath

    from kubetrade.components.images import TRAINER_IMAGE
    from kubetrade.errors import ConfigError
    from kubetrade.k8s import ClusterTrainingProfile, load_cluster_profile
    from kubetrade.k8s.versions import check_katib_version
    from kubetrade.tuning.katib_backend import KatibOptions

    version = check_katib_version(katib_version) if katib_version else None
    path = profile_path or os.environ.get("KUBETRADE_CLUSTER_PROFILE")
    if path:
        profile = load_cluster_profile(path)
    elif dry:
        profile = ClusterTrainingProfile(image=TRAINER_IMAGE)
    else:
        from kubetrade.k8s.train_step import resolve_profile

        profile = resolve_profile()
    if not profile.pvc_name:
        raise ConfigError(
            "katib: the cluster profile has no pvc_name; trial pods read the bundle and write "
            "their results on the shared data volume"
        )
    mount = profile.data_mount_path.rstrip("/") or "/"
    text = bundle.as_posix()
    on_volume = posixpath.normpath(text if text.startswith("/") else f"{mount}/{text}")
    if not on_volume.startswith(mount + "/"):
        raise ConfigError(
            f"--bundle {text}: trial pods mount the data volume at {mount}; give the bundle's "
            f"path there (e.g. {mount}/runs/<run>/bundle.npz) or relative to it"
        )
    return KatibOptions(
        profile=profile,
        namespace=namespace,
        bundle_path=on_volume,
        output_root=f"{mount}/tuning",
        katib_version=version or profile.katib_version,
    )


def train(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="window bundle .npz from a run's split step; default: build the "
            "windows from the pipeline config's data (quality gate, features, split)"
        ),
    ] = None,
    training_config: Annotated[
        Path | None,
        typer.Option(
            help="training YAML used as is; default: the pipeline config's "
            "training_config plus its training_overrides (the short make-run model)"
        ),
    ] = None,
    hparam: Annotated[
        list[str] | None,
        typer.Option(
            help="override a training config value, e.g. "
            "--hparam training.learning_rate=0.0005 (repeatable)"
        ),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            help="processes: 1 trains in this process, N > 1 runs torchrun "
            "--nproc_per_node=N (gloo on CPU, nccl on GPU); default "
            "hardware.nproc_per_node"
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            help="output folder (default <run_root>/train-<UTC time>); rerunning "
            "with the same folder resumes from its snapshot"
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register",
            help="add an MLflow model version without aliases; for the champion gate run "
            "`kubetrade register --export-dir RUN/export --results RUN/metrics.json` instead",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no per-epoch lines")] = False,
) -> None:
    """Train, evaluate and export the hybrid CNN+LSTM model (no RL, no backtest).

    Prints the best epoch, then test-split metrics next to the naive baselines.
    Writes checkpoints, the HTML report, TorchScript + ONNX (parity-checked) and results.json.
    Logs to MLflow: MLFLOW_TRACKING_URI, else <run_root>/mlflow.db (shared with `kubetrade run`).
    """
    import json
    import time

    from kubetrade.config import load_training_config
    from kubetrade.errors import ConfigError
    from kubetrade.pipeline.steps import load_run_config
    from kubetrade.training.pipeline import TrainingPipeline, pipeline_data_loader
    from kubetrade.training.tracking import resolve_tracking_uri

    run = load_run_config(config, overrides(set_))
    pipe = run.pipeline
    hparams = overrides(hparam, flag="--hparam", example="training.learning_rate=0.0005")
    if training_config is not None:
        cfg = load_training_config(training_config, hparams or None)
    else:
        cfg = load_training_config(pipe.training_config, {**pipe.training_overrides, **hparams})
    procs = cfg.hardware.nproc_per_node if nproc is None else nproc
    if procs < 1:
        raise ConfigError(f"--nproc {procs}: use 1 (one process) or more (torchrun)")
    if cfg.training.batch_size % procs:
        raise ConfigError(
            f"--nproc {procs}: training.batch_size {cfg.training.batch_size} is the global batch "
            f"and must be divisible by the number of processes; change one of them"
        )
    folder = run_dir or Path(pipe.run_root) / time.strftime("train-%Y%m%d-%H%M%S", time.gmtime())
    pipeline = TrainingPipeline(
        config=cfg,
        run_dir=folder,
        data_loader=pipeline_data_loader(pipe),
        tracking_uri=resolve_tracking_uri(pipe.run_root),
        register=register,
        nproc_per_node=procs,
        verbose=not quiet,
    )
    if bundle is not None:
        from kubetrade.training.bundle import load_bundle

        data = load_bundle(bundle)  # a missing or foreign file fails before anything is written
        results = pipeline.train_on_bundle(data, tags={"bundle": str(bundle)})
    else:
        results = pipeline.train(pipe.symbols, pipe.start_date, pipe.end_date)
    (folder / "results.json").write_text(
        json.dumps({k: v for k, v in results.items() if k != "history"}, indent=1, default=str),
        encoding="utf-8",
    )
    _print_training(results)


def _print_training(results: dict[str, Any]) -> None:
    metrics = results["metrics"]
    table = Table(title="test split (never seen by training or model selection)")
    for name in ("", "accuracy", "f1", "signal Sharpe"):
        table.add_column(name, justify="left" if not name else "right")
    rows = [("hybrid CNN+LSTM", metrics["test"])]
    rows += [(name.replace("_", " "), m) for name, m in metrics["test_baselines"].items()]
    for name, m in rows:
        cells = [m.get("accuracy"), m.get("f1_score"), m.get("sharpe_ratio")]
        table.add_row(name, *("" if v is None else f"{v:.3f}" for v in cells))
    best = f"best epoch {results['best_epoch']} of {results['epochs_run']}: val_loss "
    best += f"{results['best_val_loss']:.4f}"
    if results["monitor"] != "val_loss":
        best += f", {results['monitor']} {results['best_monitor_value']:.4f} (monitored)"
    out.print(best)
    out.print(table)
    version = results.get("model_version")
    out.print(
        f"MLflow run {results['run_id']}"
        + (f", model version {results['registered_model_name']} v{version}" if version else "")
    )
    for label, path in (
        ("report", results["report_path"]),
        ("TorchScript", results["export"]["torchscript_path"]),
        ("ONNX", results["export"]["onnx_path"]),
        ("ONNX serving", results["export"]["onnx_serving_path"]),
        ("results", Path(results["run_dir"]) / "results.json"),
    ):
        out.print(f"{label:13s}{path}", highlight=False, soft_wrap=True)
