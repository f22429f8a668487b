"""The ``kubetrade`` command line.

Every user mistake (bad config, unknown symbol, failed quality gate ...) ends
with one line on stderr -- ``kubetrade: error: <what> ... <how to fix>`` -- and
a non-zero exit code; tracebacks are for bugs only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kubetrade.errors import KubetradeError

app = typer.Typer(
    name="kubetrade",
    help="Kubernetes-native MLOps for trading models: data -> quality gate -> features "
    "(Feast) -> splits -> CNN+LSTM / RL ensemble -> backtest -> registry. Runs locally "
    "through kfp's local runner, or on Kubeflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect market data sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="pipeline config (points at the other config files)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a pipeline config key, e.g. --set symbols=[AAPL,IBM]"),
]

ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="run form value KEY=VALUE, as on the Kubeflow form and `submit --param`, e.g. "
        "--param symbols=[AAPL,IBM] --param epochs=3 (repeatable; README: run form)",
    ),
]


def _overrides(
    items: list[str] | None, flag: str = "--set", example: str = "start_date=2010-01-01"
) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict (values parsed as YAML: numbers, lists, booleans)."""
    from kubetrade.config import parse_key_values

    return parse_key_values(items, flag, example)


@app.command()
def run(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
    run_root: Annotated[Path | None, typer.Option(help="where run folders go")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream every task log")] = False,
    param: ParamOpt = None,
) -> None:
    """Run the whole pipeline locally (kfp local runner) and print a summary."""
    from rich.markup import escape

    from kubetrade.pipeline.run_form import parse_run_params
    from kubetrade.pipeline.runner import run_local
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config, _overrides(set_), parse_run_params(param))
    if run_root is not None:  # the run folders *and* the MLflow store (<run_root>/mlflow.db)
        cfg = cfg.model_copy(
            update={"pipeline": cfg.pipeline.model_copy(update={"run_root": str(run_root)})}
        )
    p = cfg.pipeline
    root = Path(run_root or p.run_root)
    # Preflight: every input problem ends here with one line, before any run folder exists
    # (the pipeline's own validate step still runs: it is what gates a cluster run).
    _check_run_root(root)
    report = _preflight_data(cfg)
    console.print(
        f"[bold]kubetrade run[/]: {', '.join(p.symbols)} {p.start_date}..{p.end_date} "
        f"(source: {p.source.type}, backend: {p.backend}, quality {report.overall_score:.2f})",
        highlight=False,
        soft_wrap=True,
    )
    for issue in report.issues:  # non-critical checks that failed: worth a look, not a stop
        console.print(f"kubetrade: warning: {escape(issue)}", highlight=False, soft_wrap=True)
    try:
        result = run_local(cfg, root, verbose=verbose)
    except OSError as exc:  # disk full, permissions changed mid-run ...
        _discard_run_folder(root, exc)
        where = exc.filename or root
        raise KubetradeError(
            f"cannot write {where} ({exc.strerror or exc}); free disk space or choose a "
            "writable run_root in config/pipeline.yaml or --run-root"
        ) from None
    _print_summary(result)


def _check_run_root(root: Path) -> None:
    """Refuse a run root that cannot be created or written (checked before any work)."""
    import errno
    import os

    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a directory ({os.strerror(errno.ENOTDIR)})"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable ({os.strerror(errno.EACCES)})"
    if problem:
        raise KubetradeError(
            f"run_root {root} cannot be used: {problem}; choose a writable run_root in "
            "config/pipeline.yaml or --run-root"
        )


def _preflight_data(cfg: Any) -> Any:
    """Load the configured data and run the quality gate the validate step runs, plus the
    checks that need the training config (enough bars per symbol and for the split).
    Returns the quality report; raises a one-line KubetradeError on any problem."""
    from kubetrade.data.quality import DataQualityValidator, ensure_enough_history, ensure_quality
    from kubetrade.data.splits import TimeSeriesSplitter
    from kubetrade.pipeline.steps import load_market_data

    df = load_market_data(cfg.pipeline)  # unknown symbols / dates / unreadable files
    report = ensure_quality(df, DataQualityValidator.from_config(cfg.pipeline.quality))
    d = cfg.training.data
    ensure_enough_history(
        df,
        d.sequence_length + d.prediction_horizon,
        f"(data.sequence_length {d.sequence_length} + prediction_horizon "
        f"{d.prediction_horizon}) to build one training window",
    )
    TimeSeriesSplitter.from_config(cfg.training).periods(df)  # enough bars for the split
    return report


def _discard_run_folder(root: Path, exc: OSError) -> None:
    """After an OS error mid-run, remove the half-written run folder the error points into
    (only a run folder, ``<UTC stamp>[-n]``; never the shared MLflow store beside it)."""
    import re
    import shutil

    if not exc.filename:
        return
    try:
        relative = Path(exc.filename).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return
    if len(relative.parts) > 1 and re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", relative.parts[0]):
        folder = root / relative.parts[0]
        if not (folder / "SUCCEEDED").exists():
            shutil.rmtree(folder, ignore_errors=True)


#: the pipeline's tasks in DAG order (the summary table keeps it; others follow, by finish time)
_TASK_ORDER = (
    "ingest", "validate", "features", "split", "tune", "train", "evaluate", "export",
    "rl-agent", "ensemble", "backtest", "summary", "register",
)  # fmt: skip


def summary_rows(run_dir: Path, outputs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(task name, metrics)`` in pipeline order; an RL task is named by its agent
    (``rl-agent sac``), another loop task by its iteration (``fold 2``)."""
    import json
    import re

    rows = []
    for key, info in outputs.items():
        parts = Path(key).parts
        base = parts[-1].removesuffix("-op")
        name = base
        loop = re.fullmatch(r"for-loop-\d+-iteration-(\d+)", parts[0]) if len(parts) > 1 else None
        found = sorted(Path(run_dir).glob(f"*/{key}/executor_output.json"))
        mtime = found[0].stat().st_mtime if found else 0.0
        if base == "rl-agent" and found:
            executor = json.loads(found[0].read_text(encoding="utf-8"))
            for entry in executor.get("artifacts", {}).get("agent", {}).get("artifacts", []):
                agent = entry.get("metadata", {}).get("agent_type")
                name = f"rl-agent {agent}" if agent else name
        if name == base and loop is not None:
            name = f"{base} {int(loop.group(1)) + 1}"
        rank = _TASK_ORDER.index(base) if base in _TASK_ORDER else len(_TASK_ORDER)
        rows.append((rank, mtime, name, info["metrics"]))
    rows.sort(key=lambda r: (r[0], r[1] if r[0] == len(_TASK_ORDER) else 0.0, r[2]))
    return [(name, metrics) for _, _, name, metrics in rows]


def _artifact_path(outputs: dict[str, Any], task: str, artifact: str) -> str | None:
    for key, info in outputs.items():
        if Path(key).name == task and artifact in info["artifacts"]:
            return str(info["artifacts"][artifact]).removeprefix("file://")
    return None


def _print_summary(result: Any) -> None:
    table = Table(title=f"run {result.run_dir.name} finished in {result.seconds:.0f}s")
    table.add_column("step", style="bold")
    table.add_column("metrics")
    for name, metrics in summary_rows(result.run_dir, result.outputs):
        items = metrics.items()
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
        table.add_row(name, text)
    out.print(table)
    summary = _artifact_path(result.outputs, "summary-op", "summary")
    if summary:
        out.print(f"summary: {summary}", soft_wrap=True)  # paths stay whole for copy/paste
    reports = [
        f"{label} {path}"
        for label, task, artifact in (
            ("model evaluation", "evaluate-op", "report"),
            ("backtest", "backtest-op", "report"),
            ("data quality", "validate-op", "data_docs"),
        )
        if (path := _artifact_path(result.outputs, task, artifact))
    ]
    if reports:
        out.print("reports: " + "; ".join(reports), soft_wrap=True)
    out.print(
        f"artifacts: {result.run_dir}  (full log: {result.run_dir / 'pipeline.log'})",
        soft_wrap=True,
    )


@app.command("compile")
def compile_(
    output: Annotated[Path, typer.Option("--output", "-o")] = Path(
        "pipelines/compiled/kubetrade_training.yaml"
    ),
    config: ConfigOpt = Path("config/pipeline.yaml"),
    backend: Annotated[
        str,
        typer.Option(
            help="kubeflow: train/tune as PyTorchJob/Katib (GPUs from the cluster profile); "
            "local: train/tune inside the pipeline task's pod"
        ),
    ] = "kubeflow",
    gpu: Annotated[
        bool,
        typer.Option(
            "--gpu", help="backend local only: put train/tune on GPU nodes (1 nvidia.com/gpu)"
        ),
    ] = False,
    kfp_version: Annotated[
        str,
        typer.Option(
            help="target KFP backend: emit only the kubernetes fields it understands "
            "(2.2.0/2.3.0 = Kubeflow 1.9, 2.4.1/2.5.0 = Kubeflow 1.10, 2.16.1 = kind); the "
            "default, the oldest, runs on all of them"
        ),
    ] = "2.2.0",
    profile: Annotated[
        str | None,
        typer.Option(
            help="run form defaults: demo (config/pipeline.yaml, the `make run` model) or full "
            "(the guide's model, config/run_form.yaml); default full for --backend kubeflow, "
            "demo for local"
        ),
    ] = None,
) -> None:
    """Compile the pipeline to KFP YAML (the run form's defaults from --profile).

    The YAML holds the ParallelFor over RL agents, the evaluation gate and the Kubernetes
    settings (shared data PVC, MLflow env from ConfigMap/Secrets, GPU placement).
    """
    from kubetrade.errors import ConfigError
    from kubetrade.pipeline.steps import load_run_config

    if backend not in ("kubeflow", "local"):
        raise ConfigError(f"--backend {backend!r}: use kubeflow or local")
    if gpu and backend != "local":
        raise ConfigError(
            "--gpu is for --backend local; with kubeflow the PyTorchJob pods get GPUs from the "
            "cluster profile (manifests/overlays/gpu)"
        )
    from kubetrade.k8s.versions import check_kfp_version

    check_kfp_version(kfp_version)
    if output.exists() and not output.is_file():
        # the compiled file replaces the target atomically: a device, FIFO or folder would be
        # swapped for a regular file (as root, /dev/full itself)
        raise ConfigError(
            f"--output {output}: exists and is not a regular file; name a .yaml file path"
        )
    from kubetrade.pipeline.run_form import profile_params

    run = load_run_config(config)
    profile = profile or ("full" if backend == "kubeflow" else "demo")
    form = profile_params(run, profile, backend)
    path = _retargeted_compile(output, form, gpu, kfp_version)
    out.print(
        f"wrote {path} (backend {backend}{', GPU train/tune' if gpu else ''}, profile {profile}, "
        f"KFP backend {kfp_version})"
    )


def _retargeted_compile(output: Path, form: Any, gpu: bool, kfp_version: str) -> Path:
    """Compile into a temporary file, keep the fields ``kfp_version`` knows, then move it."""
    import os
    import tempfile

    import yaml

    from kubetrade.k8s import goyaml
    from kubetrade.pipeline.runner import compile_pipeline
    from kubetrade.pipelines.training import retarget_platform_spec

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".compile-", suffix=".yaml", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        compile_pipeline(tmp, gpu=gpu, params=form)
        text = tmp.read_text(encoding="utf-8")
        lines = text.splitlines(True)
        top = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        header = "".join(lines[:top])  # KFP's "# PIPELINE DEFINITION" comment block
        docs = [retarget_platform_spec(d, kfp_version) for d in yaml.safe_load_all(text)]
        header += f"# KFP backend: {kfp_version} (kubetrade compile --kfp-version)\n"
        tmp.write_text(header + goyaml.dump_all(docs), encoding="utf-8")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


@app.command()
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
        from kubetrade.pipeline.cluster import resolve_profile

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


@app.command()
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

    run = load_run_config(config, _overrides(set_))
    pipe = run.pipeline
    hparams = _overrides(hparam, flag="--hparam", example="training.learning_rate=0.0005")
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


@app.command()
def submit(
    package: Annotated[Path, typer.Argument(help="compiled pipeline YAML")] = Path(
        "pipelines/compiled/kubetrade_training.yaml"
    ),
    host: Annotated[
        str,
        typer.Option(
            help="Kubeflow Pipelines API, e.g. http://localhost:8080 [$KF_PIPELINES_ENDPOINT]"
        ),
    ] = "",
    namespace: Annotated[
        str,
        typer.Option(
            help="profile namespace (multi-user Kubeflow) [$KF_PIPELINES_NAMESPACE, else the "
            "pod's namespace in a cluster, else none: single-user KFP]"
        ),
    ] = "",
    experiment: Annotated[str, typer.Option(help="KFP experiment name")] = "kubetrade",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="pipeline input KEY=VALUE, typed by the spec (repeatable)"),
    ] = None,
    pipeline_name: Annotated[
        str | None, typer.Option(help="upload the package as a version of this pipeline")
    ] = None,
    version_name: Annotated[
        str | None, typer.Option(help="version name (e.g. the commit); an existing one is reused")
    ] = None,
    run_name: Annotated[
        str | None, typer.Option(help="run / recurring-run name (default: the pipeline's)")
    ] = None,
    recurring: Annotated[
        str | None,
        typer.Option(metavar="CRON", help="create or update the recurring run RUN_NAME instead"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="bearer token [$KF_PIPELINES_TOKEN, else the in-cluster SA token]"),
    ] = None,
    cookie: Annotated[
        str | None,
        typer.Option(help="session cookie, e.g. oauth2_proxy_kubeflow=... [$KF_PIPELINES_COOKIE]"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the API calls it would make; send nothing")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="seconds between get_run calls with --wait")
    ] = 10.0,
) -> None:
    """Submit the compiled pipeline to Kubeflow Pipelines: a run, or a pipeline version + run /
    recurring run (the CI loop: .github/workflows/pipeline.yml)."""
    import os

    from kubetrade.k8s import submit as sm

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT", "")
    inputs = sm.read_pipeline_inputs(package)
    params = sm.parse_params(inputs, param or [])
    from kubetrade.pipeline.run_form import check_submitted_form

    check_submitted_form(inputs, params)  # the run form: checked as the resolve task will
    if (pipeline_name is None) != (version_name is None):
        raise sm.SubmitError("--pipeline-name and --version-name go together")
    if recurring is not None and not pipeline_name:
        raise sm.SubmitError("--recurring needs --pipeline-name/--version-name (it runs a version)")
    if recurring is not None and wait:
        raise sm.SubmitError("--wait follows one run; a recurring run has none to follow")
    cron = sm.normalize_cron(recurring) if recurring is not None else None
    auth = sm.resolve_auth(token, cookie)
    ns, ns_source = sm.resolve_namespace(namespace)
    plan = sm.SubmitPlan(
        package=package, host=host, namespace=ns, namespace_source=ns_source,
        experiment=experiment, pipeline_name=pipeline_name, version_name=version_name,
        run_name=run_name or pipeline_name or sm.pipeline_name_of(package) or "kubetrade",
        params=params, auth=auth, recurring=cron, wait=wait,
    )  # fmt: skip
    if dry_run:
        for line in sm.describe_plan(plan):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    if not host:
        raise sm.SubmitError(
            "--host is required (or $KF_PIPELINES_ENDPOINT), e.g. http://localhost:8080"
        )
    on_state = lambda s: console.print(f"run state: {s}")  # noqa: E731
    if pipeline_name:
        info = sm.execute_plan(plan, on_state=on_state, poll_s=poll_interval)
        head = f"pipeline {info['pipeline_id']} version {version_name} ({info['version']})"
        if "recurring" in info:
            out.print(
                f"{head}; recurring run {info['recurring_run_id']}: {info['recurring']}",
                soft_wrap=True,
                markup=False,
            )
        else:
            out.print(
                f"{head}; run {info['run_id']}: {info['state']}", soft_wrap=True, markup=False
            )
        return
    info = sm.submit_pipeline(
        package, host, ns, experiment, params, run_name=run_name, wait=wait,
        on_state=on_state, auth=auth, poll_s=poll_interval,
    )  # fmt: skip
    out.print(f"run {info['run_id']}: {info['state']}", soft_wrap=True, markup=False)


@app.command()
def validate(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
    docs: Annotated[Path | None, typer.Option(help="write GE Data Docs HTML here")] = None,
) -> None:
    """Run the Great Expectations quality gate on the configured data."""
    from kubetrade.data.quality import DataQualityValidator, write_data_docs
    from kubetrade.pipeline.steps import load_market_data, load_run_config

    cfg = load_run_config(config, _overrides(set_))
    df = load_market_data(cfg.pipeline)
    validator = DataQualityValidator.from_config(cfg.pipeline.quality)
    report = validator.validate_batch(df)
    table = Table(title=f"quality score {report.overall_score:.2f} (min {validator.min_score:.2f})")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("details")
    for r in report.results:
        table.add_row(
            r.name, "✔" if r.success else "✘", "" if r.success else str(r.unexpected_count)
        )
    out.print(table)
    if docs:
        out.print(f"data docs: {write_data_docs(validator, docs)}")
    if not report.passed:
        from kubetrade.data.quality import ensure_quality

        ensure_quality(df, validator, report=report)


@data_app.command("info")
def data_info(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
) -> None:
    """Show the symbols and date ranges a source provides (before any selection)."""
    from kubetrade.data import sources
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config, _overrides(set_))
    src = cfg.pipeline.source
    if src.type == "embedded":
        df = sources.load_embedded()
    elif src.type == "files":
        df = sources.load_files(src.paths, src.column_map)
    else:
        df = sources.generate_synthetic(src.synthetic_symbols, src.synthetic_years, seed=src.seed)
    agg = df.groupby("symbol")["timestamp"].agg(["min", "max", "count"])
    table = Table(title=f"source: {src.type}")
    for col in ("symbol", "first", "last", "bars"):
        table.add_column(col)
    for sym, row in agg.iterrows():
        table.add_row(
            str(sym), f"{row['min']:%Y-%m-%d}", f"{row['max']:%Y-%m-%d}", str(row["count"])
        )
    out.print(table)


@app.command("check-config")
def check_config(config: ConfigOpt = Path("config/pipeline.yaml")) -> None:
    """Validate all config files and print the resolved values."""
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config)
    out.print_json(cfg.model_dump_json())


@app.command()
def register(
    export_dir: Annotated[
        Path | None, typer.Option(help="hybrid model: export folder with model_uri.json")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="hybrid model: evaluation results JSON (test.model.*)")
    ] = None,
    ensemble_dir: Annotated[
        Path | None, typer.Option(help="RL ensemble: folder EnsembleAgent.save wrote")
    ] = None,
    ensemble_report: Annotated[
        Path | None, typer.Option(help="RL ensemble: its test-period report JSON")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="registered model name")] = None,
    metric: Annotated[
        str, typer.Option(help="out-of-sample metric that decides (its direction is known)")
    ] = "sharpe_ratio",
    margin: Annotated[
        float | None,
        typer.Option(
            help="improvement over the champion needed (default: pipeline config's "
            "registry.margin / rl_margin)"
        ),
    ] = None,  # fmt: skip
    force: Annotated[
        bool, typer.Option("--force", help="promote even if the gate says no (needs --reason)")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="why --force (recorded as a tag)")] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: env)"),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="extra version tag KEY=VALUE")] = None,
) -> None:
    """Register a model version (alias challenger); promote it to champion only through the
    gate: the results must be the export's own, scored on the champion's test period and
    symbols, better than the baselines and than the champion by more than the margin.
    Prints the outcome (with the gate's reason) as JSON."""
    import json
    import math

    from kubetrade.config import RegistryGateConfig, split_key_value
    from kubetrade.registry import read_oos_metric, register_export
    from kubetrade.registry.champion import metric_direction

    if not tracking_uri:
        raise KubetradeError("no MLflow store: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    if force and not (reason and reason.strip()):
        raise KubetradeError("--force needs --reason '...' (it is recorded on the version)")
    if reason and not force:
        raise KubetradeError("--reason is only used with --force")
    if margin is not None and not (math.isfinite(margin) and margin >= 0):
        raise KubetradeError(f"--margin {margin}: expected a number >= 0")
    metric_direction(metric)  # an unknown metric is refused before anything is read
    defaults = RegistryGateConfig()
    tags: dict[str, str] = {}
    for item in tag or []:
        key, value = split_key_value(item, "--tag", "data_range=a..b")
        if key.startswith(("kubetrade.", "oos_", "sha256_")):
            raise KubetradeError(f"--tag {key!r}: that tag is set by the gate itself")
        tags[key] = value
    force_reason = reason.strip() if force and reason else None
    if export_dir is not None and results is not None and ensemble_dir is None:
        from kubetrade.registry.hybrid import read_results, results_baselines

        promotion = register_export(
            export_dir, read_oos_metric(results, metric), model_name=model_name or
            "kubetrade-hybrid", metric=metric, tags=tags, tracking_uri=tracking_uri,
            margin=defaults.margin if margin is None else margin, force_reason=force_reason,
            baselines=results_baselines(read_results(results), metric),
        )  # fmt: skip
    elif ensemble_dir is not None and ensemble_report is not None and export_dir is None:
        from kubetrade.registry.hybrid import read_results
        from kubetrade.registry.rl_pyfunc import (
            ensemble_sha256,
            register_rl_ensemble,
            report_baselines,
            report_data_range,
        )

        report = read_results(ensemble_report)
        recorded = report.get("sha256")
        if not isinstance(recorded, dict) or not recorded:
            raise KubetradeError(
                f"{ensemble_report} records no SHA-256 of the ensemble files; pass the report "
                "the ensemble step wrote"
            )
        # before anything loads the agents: the report must be this ensemble's
        if ensemble_sha256(ensemble_dir) != recorded:
            raise KubetradeError(
                f"{ensemble_dir} is not the ensemble {ensemble_report} evaluated (SHA-256 "
                "mismatch); nothing registered"
            )
        rl_value = report.get(metric)
        if not isinstance(rl_value, int | float):
            raise KubetradeError(f"{ensemble_report} has no {metric!r}; pass the ensemble report")
        promotion = register_rl_ensemble(
            ensemble_dir, float(rl_value), tracking_uri=tracking_uri, metric=metric,
            model_name=model_name or "kubetrade-rl-ensemble", tags=tags,
            symbols=report.get("symbols"), expected_sha256=recorded,
            margin=defaults.rl_margin if margin is None else margin,
            data_range=report_data_range(report), force_reason=force_reason,
            baselines=report_baselines(report, metric),
        )  # fmt: skip
    else:
        raise KubetradeError(
            "pass either --export-dir and --results (hybrid model) or --ensemble-dir and "
            "--ensemble-report (RL ensemble)"
        )
    out.print_json(json.dumps(promotion.as_dict()))


def redact(text: str) -> str:
    """``text`` with URI passwords and ``password=``/``token=``-style values masked."""
    from kubetrade.registry.champion import redact as _redact

    return _redact(text)


# ---------------------------------------------------------------- serve / monitor (issue #18)
def _merged_config(model: Any, path: Path, items: list[str] | None, example: str) -> Any:
    from kubetrade.config import load_yaml_model, nest_dotted, read_yaml_file

    if not path.is_file():
        raise KubetradeError(f"config file {path} does not exist")
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise KubetradeError(f"{path}: top level must be a mapping")

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    return load_yaml_model(
        model, data=merge(data, nest_dotted(_overrides(items, "--set", example)))
    )


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="serving config")] = Path(
        "config/serving.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="override a key, e.g. --set port=9000 --set ab.challenger_weight=0.1"
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="load and verify the served versions, print them, exit")
    ] = False,
) -> None:
    """Serve the registered model (alias champion) with KServe's model server: v1 :predict and
    v2 infer, by symbol from Feast or by raw window; A/B split with the challenger."""
    from kubetrade.serving.config import ServingConfig

    cfg = _merged_config(ServingConfig, config, set_, "port=9000")
    if check:
        import json

        from kubetrade.serving.predictor import Predictor

        predictor = Predictor(cfg)
        out.print_json(json.dumps({"served": predictor.served(), "model": cfg.model_name}))
        return
    from kubetrade.serving.server import serve as run_server

    run_server(cfg)


@app.command()
def monitor(
    config: Annotated[Path, typer.Option("--config", "-c", help="monitoring config")] = Path(
        "config/monitoring.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a key, e.g. --set thresholds.min_hit_rate=0.5"),
    ] = None,
    retrain: Annotated[
        bool, typer.Option(help="start the pipeline (champion gate) when a threshold is crossed")
    ] = False,
) -> None:
    """Feature/prediction drift (Evidently) and realized performance per served version;
    HTML report + MLflow metrics; exit 4 when a threshold is crossed (--retrain: retrain)."""
    import json

    from kubetrade.monitoring import MonitoringAlert, MonitoringConfig, retrain_command, run_monitor
    from kubetrade.monitoring import retrain as start_retraining

    cfg = _merged_config(MonitoringConfig, config, set_, "current_days=30")
    result = run_monitor(cfg)
    out.print_json(json.dumps(result.as_dict(), default=str))
    if not result.alerts:
        return
    if retrain:
        console.print(f"kubetrade monitor: retraining: {' '.join(retrain_command(cfg.retrain))}")
        start_retraining(cfg.retrain)
        return
    raise MonitoringAlert("; ".join(result.alerts) + " (rerun with --retrain to retrain)")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning KubetradeError into a one-line error."""
    from rich.markup import escape

    def error(message: str) -> None:
        # escaped: a message may quote user text with brackets ("[/x]" is rich markup)
        text = escape(redact(" ".join(message.split())))
        console.print(f"[bold red]kubetrade: error:[/] {text}", highlight=False, soft_wrap=True)

    try:
        app(args=argv, standalone_mode=False)
    except KubetradeError as exc:
        error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        console.print("kubetrade: aborted")
        return 130
    except Exception as exc:
        # Usage errors (unknown option, bad value). Typer vendors its own click, so its
        # exceptions are not click's classes: recognise them by their interface.
        format_message = getattr(exc, "format_message", None)
        exit_code = getattr(exc, "exit_code", None)
        if not (callable(format_message) and isinstance(exit_code, int)):
            if type(exc).__module__.split(".")[0] in ("mlflow", "sqlalchemy"):
                # the store itself (bogus URI scheme, corrupt or locked database): not a bug
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                error(f"MLflow store: {first}; check MLFLOW_TRACKING_URI / --tracking-uri")
                return 1
            raise  # a bug: the traceback is wanted
        ctx = getattr(exc, "ctx", None)  # only usage errors carry the command's context
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(f"{format_message()}{hint}")
        return exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
