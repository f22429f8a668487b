"""The pipeline's steps as plain functions (no kfp import).

Each KFP component in ``components/`` calls exactly one of these. A step takes
the resolved run configuration (:class:`RunConfig`, passed between components as
JSON) and file paths, writes its outputs atomically (temp file, then rename) and
returns a small JSON-able summary that the component logs as KFP ``Metrics``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from kubetrade.config import (
    PipelineConfig,
    StrictModel,
    TrainingConfig,
    load_pipeline_config,
    load_training_config,
)

__all__ = [
    "RunConfig",
    "load_run_config",
    "load_market_data",
    "ingest_step",
    "validate_step",
    "features_step",
    "split_step",
    "atomic_path",
]


class RunConfig(StrictModel):
    """Everything a run needs, resolved once and passed to every step as JSON."""

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    rl: dict[str, Any] = Field(default_factory=dict, description="trading_env + rl_training YAML")

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.model_validate_json(text)


def load_run_config(
    pipeline_path: str | Path | None = "config/pipeline.yaml",
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Load pipeline.yaml and the files it points at into one :class:`RunConfig`.

    ``overrides`` are dotted keys into the pipeline config (``symbols``,
    ``source.type`` ...) applied before validation.
    """
    from kubetrade.config import apply_overrides, load_yaml_model

    if overrides:
        import yaml

        base: dict[str, Any] = {}
        if pipeline_path is not None:
            if not Path(pipeline_path).is_file():
                from kubetrade.errors import ConfigError

                raise ConfigError(f"config file not found: {pipeline_path}")
            base = yaml.safe_load(Path(pipeline_path).read_text(encoding="utf-8")) or {}
        pipe = load_yaml_model(PipelineConfig, data=apply_overrides(base, overrides))
    else:
        pipe = load_pipeline_config(pipeline_path)
    train = load_training_config(pipe.training_config, pipe.training_overrides)
    rl: dict[str, Any] = {}
    for key, path in (("trading_env", pipe.trading_env_config), ("rl_training", pipe.rl_training_config)):
        p = Path(path)
        if p.is_file():
            import yaml

            rl[key] = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    return RunConfig(pipeline=pipe, training=train, rl=rl)


def atomic_path(path: str | Path) -> Path:
    """A sibling temp path; write there, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    tmp = atomic_path(path)
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _write_json(obj: Any, path: str | Path) -> None:
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def load_market_data(cfg: PipelineConfig) -> pd.DataFrame:
    """Read the configured source and select the configured symbols and dates."""
    from kubetrade.data import sources

    src = cfg.source
    if src.type == "embedded":
        df = sources.load_embedded()
    elif src.type == "files":
        df = sources.load_files(src.paths, src.column_map)
    else:
        df = sources.generate_synthetic(
            n_symbols=src.synthetic_symbols, n_years=src.synthetic_years, seed=src.seed
        )
    symbols = cfg.symbols
    if src.type == "synthetic" and symbols == PipelineConfig.model_fields["symbols"].default_factory():  # type: ignore[misc]
        symbols = sorted(df["symbol"].unique())
    return sources.select(df, symbols, cfg.start_date, cfg.end_date)


def ingest_step(run: RunConfig, out_path: str | Path) -> dict[str, Any]:
    """Load OHLCV into one canonical Parquet table."""
    df = load_market_data(run.pipeline)
    _write_parquet(df, out_path)
    return {
        "rows": len(df),
        "symbols": int(df["symbol"].nunique()),
        "start": f"{df['timestamp'].min():%Y-%m-%d}",
        "end": f"{df['timestamp'].max():%Y-%m-%d}",
    }


def validate_step(
    run: RunConfig, data_path: str | Path, docs_path: str | Path, report_path: str | Path | None = None
) -> dict[str, Any]:
    """Great Expectations gate; raises QualityGateError (after writing Data Docs) on failure."""
    from kubetrade.data.quality import DataQualityValidator, write_data_docs

    df = pd.read_parquet(data_path)
    validator = DataQualityValidator.from_config(run.pipeline.quality)
    report = validator.validate_batch(df)
    # the full GE site goes beside the artifacts; the HTML artifact is its validation page
    site_dir = Path(docs_path).parent / "data_docs_site"
    page = write_data_docs(report, site_dir, page="validation")
    shutil.copyfile(page, docs_path)
    if report_path is not None:
        _write_json(report.to_dict(), report_path)
    if not report.passed:
        from kubetrade.data.quality import ensure_quality

        ensure_quality(df, validator, report=report)
    return {"overall_score": report.overall_score, "failed_checks": len(report.issues)}


def features_step(
    run: RunConfig,
    data_path: str | Path,
    features_path: str | Path,
    feast_repo: str | Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Engineer causal features, write them, and build + materialize the Feast repo."""
    from kubetrade.data.feature_store import build_feature_store
    from kubetrade.data.features import FeatureEngineer

    df = pd.read_parquet(data_path)
    fe = FeatureEngineer()
    feats = fe.build_all(
        df, indicators=run.pipeline.indicators, advanced=list(run.pipeline.advanced_features)
    )
    _write_parquet(feats, features_path)
    repo = Path(feast_repo)
    if repo.exists():
        shutil.rmtree(repo)  # rerun of the step: rebuild the store from scratch
    build_feature_store(feats, repo)
    return {"rows": len(feats), "feature_columns": len(feats.columns) - 7}


def split_step(
    run: RunConfig,
    features_path: str | Path,
    feast_repo: str | Path,
    bundle_path: str | Path,
) -> dict[str, Any]:
    """Read the training table from Feast (point-in-time join) and build windows."""
    from kubetrade.data.feature_store import FeatureStoreBuilder, training_table
    from kubetrade.data.splits import prepare_datasets, save_bundle

    feats = pd.read_parquet(features_path)
    store = FeatureStoreBuilder(Path(feast_repo))
    table = training_table(store, feats)
    bundle = prepare_datasets(table, run.training)
    save_bundle(bundle, bundle_path)
    summary: dict[str, Any] = {
        f"{name}_windows": len(getattr(bundle, name)) for name in ("train", "val", "test")
    }
    for name, (a, b) in bundle.periods.items():
        summary[f"{name}_period"] = f"{a}..{b}"
    summary["n_features"] = len(bundle.feature_names)
    return summary
