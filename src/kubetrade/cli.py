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


def _overrides(items: list[str] | None) -> dict[str, Any]:
    import yaml

    result: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise KubetradeError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set start_date=2010-01-01"
            )
        key, value = item.split("=", 1)
        result[key.strip()] = yaml.safe_load(value)
    return result


@app.command()
def run(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
    run_root: Annotated[Path | None, typer.Option(help="where run folders go")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream every task log")] = False,
) -> None:
    """Run the whole pipeline locally (kfp local runner) and print a summary."""
    from kubetrade.pipeline.runner import run_local
    from kubetrade.pipeline.steps import load_market_data, load_run_config

    cfg = load_run_config(config, _overrides(set_))
    p = cfg.pipeline
    console.print(
        f"[bold]kubetrade run[/]: {', '.join(p.symbols)} {p.start_date}..{p.end_date} "
        f"(source: {p.source.type}, backend: {p.backend})"
    )
    load_market_data(p)  # fail fast on unknown symbols / dates, before any run folder exists
    result = run_local(cfg, run_root, verbose=verbose)
    _print_summary(result)


def _print_summary(result: Any) -> None:
    table = Table(title=f"run {result.run_dir.name} finished in {result.seconds:.0f}s")
    table.add_column("step", style="bold")
    table.add_column("metrics")
    for task, info in result.outputs.items():
        items = info["metrics"].items()
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
        table.add_row(task.removesuffix("-op"), text)
    out.print(table)
    out.print(f"artifacts: {result.run_dir}  (full log: {result.run_dir / 'pipeline.log'})")


@app.command("compile")
def compile_(
    output: Annotated[Path, typer.Option("--output", "-o")] = Path(
        "pipelines/compiled/kubetrade_training.yaml"
    ),
    config: ConfigOpt = Path("config/pipeline.yaml"),
) -> None:
    """Compile the pipeline to KFP YAML (the config becomes the default parameter)."""
    from kubetrade.pipeline.runner import compile_pipeline
    from kubetrade.pipeline.steps import load_run_config

    path = compile_pipeline(output, load_run_config(config))
    out.print(f"wrote {path}")


@app.command()
def tune(
    bundle: Annotated[Path, typer.Option(help="window bundle .npz written by the split step")],
    search_space: Annotated[Path, typer.Option(help="search space YAML")] = Path(
        "config/search_space.yaml"
    ),
    config: ConfigOpt = Path("config/pipeline.yaml"),
    backend: Annotated[str, typer.Option(help="local (Optuna) or katib")] = "local",
    run_dir: Annotated[Path, typer.Option(help="study + results folder")] = Path("runs/tuning"),
    num_trials: Annotated[int | None, typer.Option(help="override the spec's num_trials")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="parallel trials")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="katib: print the Experiment YAML")
    ] = False,
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
        from kubetrade.components.images import TRAINER_IMAGE
        from kubetrade.tuning.katib_backend import KatibOptions

        katib = KatibOptions(image=TRAINER_IMAGE)
    result = run_tune(
        cfg.pipeline.training_config, search_space, bundle=str(bundle), run_dir=run_dir,
        overrides=cfg.pipeline.training_overrides, backend=backend,  # type: ignore[arg-type]
        num_trials=num_trials, max_concurrent_trials=max_concurrent, dry_run=dry_run, katib=katib,
    )  # fmt: skip
    if isinstance(result, KatibDryRun):
        out.print(result.yaml, highlight=False)
        return
    out.print(f"best {result.metric} = {result.best_value:.4g} with {result.best_params}")
    out.print(f"best config: {result.best_config_path}")


@app.command()
def submit(
    package: Annotated[Path, typer.Argument(help="compiled pipeline YAML")] = Path(
        "pipelines/compiled/kubetrade_training.yaml"
    ),
    host: Annotated[
        str, typer.Option(help="Kubeflow Pipelines API, e.g. http://localhost:8080")
    ] = "",
    namespace: Annotated[str, typer.Option(help="KFP namespace")] = "kubeflow",
    experiment: Annotated[str, typer.Option(help="KFP experiment name")] = "kubetrade",
    param: Annotated[
        list[str] | None, typer.Option("--param", help="pipeline parameter KEY=VALUE (repeatable)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
) -> None:
    """Submit the compiled pipeline to a Kubeflow Pipelines cluster."""
    from kubetrade.k8s.submit import SubmitError, submit_pipeline

    if not host:
        raise SubmitError("--host is required, e.g. --host http://localhost:8080")
    arguments = {}
    for item in param or []:
        if "=" not in item:
            raise SubmitError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        arguments[key] = value
    info = submit_pipeline(
        package, host, namespace, experiment, arguments, wait=wait,
        on_state=lambda s: console.print(f"run state: {s}"),
    )  # fmt: skip
    out.print(f"run {info['run_id']}: {info['state']}")


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning KubetradeError into a one-line error."""
    try:
        app(args=argv, standalone_mode=False)
    except KubetradeError as exc:
        console.print(f"[bold red]kubetrade: error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        console.print("kubetrade: aborted")
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
