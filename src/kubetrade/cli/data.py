"""``kubetrade validate`` (the quality gate), ``kubetrade data info`` (what a source holds) and
``kubetrade check-config`` (every config file, resolved)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kubetrade.cli.common import ConfigOpt, SetOpt, out, overrides


def validate(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
    docs: Annotated[Path | None, typer.Option(help="write GE Data Docs HTML here")] = None,
) -> None:
    """Run the Great Expectations quality gate on the configured data."""
    from kubetrade.data.quality import DataQualityValidator, write_data_docs
    from kubetrade.data.sources import load_market_data
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config, overrides(set_))
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


def data_info(
    config: ConfigOpt = Path("config/pipeline.yaml"),
    set_: SetOpt = None,
) -> None:
    """Show the symbols and date ranges a source provides (before any selection)."""
    from kubetrade.data import sources
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config, overrides(set_))
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


def check_config(config: ConfigOpt = Path("config/pipeline.yaml")) -> None:
    """Validate all config files and print the resolved values."""
    from kubetrade.pipeline.steps import load_run_config

    cfg = load_run_config(config)
    out.print_json(cfg.model_dump_json())
