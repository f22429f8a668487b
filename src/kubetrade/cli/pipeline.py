"""``kubetrade run``: the whole pipeline locally (kfp local runner), then a summary table.

The run-folder handling (run root and data preflight, a half-written run folder discarded on
failure, summary rows, report paths) is :mod:`kubetrade.pipeline.runner`'s; this module only
prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kubetrade.cli.common import ConfigOpt, ParamOpt, SetOpt, console, out, overrides


def run(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
    run_root: Annotated[Path | None, typer.Option(help="where run folders go")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="stream every task log")] = False,
    param: ParamOpt = None,
) -> None:
    """Run the whole pipeline locally (kfp local runner) and print a summary."""
    from rich.markup import escape

    from kubetrade.pipeline import runner
    from kubetrade.pipeline.run_form import parse_run_params
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config, overrides(set_), parse_run_params(param))

    def ready(run: Any, report: Any) -> None:  # the preflight passed: say what runs
        p = run.pipeline
        console.print(
            f"[bold]kubetrade run[/]: {', '.join(p.symbols)} {p.start_date}..{p.end_date} "
            f"(source: {p.source.type}, backend: {p.backend}, quality "
            f"{report.overall_score:.2f})",
            highlight=False,
            soft_wrap=True,
        )
        for issue in report.issues:  # non-critical checks that failed: worth a look, not a stop
            console.print(f"kubetrade: warning: {escape(issue)}", highlight=False, soft_wrap=True)

    result = runner.run_pipeline(cfg, run_root, verbose=verbose, on_ready=ready)
    print_summary(result)


def print_summary(result: Any) -> None:
    """The finished run as a table (pipeline order), then where its summary, reports and
    full log are."""
    from kubetrade.pipeline.runner import artifact_path, report_paths, summary_rows

    table = Table(title=f"run {result.run_dir.name} finished in {result.seconds:.0f}s")
    table.add_column("step", style="bold")
    table.add_column("metrics")
    for name, metrics in summary_rows(result.run_dir, result.outputs):
        items = metrics.items()
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
        table.add_row(name, text)
    out.print(table)
    summary = artifact_path(result.outputs, "summary-op", "summary")
    if summary:
        out.print(f"summary: {summary}", soft_wrap=True)  # paths stay whole for copy/paste
    reports = [f"{label} {path}" for label, path in report_paths(result.outputs)]
    if reports:
        out.print("reports: " + "; ".join(reports), soft_wrap=True)
    out.print(
        f"artifacts: {result.run_dir}  (full log: {result.run_dir / 'pipeline.log'})",
        soft_wrap=True,
    )
