"""Data steps: ingest, validate (Great Expectations), features (+ Feast), split (windows)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from kubetrade.config.run import RunConfig
from kubetrade.data.sources import load_market_data
from kubetrade.pipeline.steps.common import write_json, write_parquet

__all__ = ["ingest_step", "validate_step", "features_step", "split_step"]


def ingest_step(run: RunConfig, out_path: str | Path) -> dict[str, Any]:
    """Load OHLCV into one canonical Parquet table."""
    df = load_market_data(run.pipeline)
    write_parquet(df, out_path)
    return {
        "rows": len(df),
        "symbols": int(df["symbol"].nunique()),
        "start": f"{df['timestamp'].min():%Y-%m-%d}",
        "end": f"{df['timestamp'].max():%Y-%m-%d}",
    }


def validate_step(
    run: RunConfig,
    data_path: str | Path,
    docs_path: str | Path,
    report_path: str | Path | None = None,
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
        write_json(report.to_dict(), report_path)
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
    write_parquet(feats, features_path)
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
    # augmentation happens per batch in the trainer (train split only), not on disk
    bundle = prepare_datasets(table, run.training, augment_train=False)
    save_bundle(bundle, bundle_path)
    summary: dict[str, Any] = {
        f"{name}_windows": len(getattr(bundle, name)) for name in ("train", "val", "test")
    }
    for name, (a, b) in bundle.periods.items():
        summary[f"{name}_period"] = f"{a}..{b}"
    summary["n_features"] = len(bundle.feature_names)
    # every row that did not become a window, counted (warm-up, gaps, no forward label)
    for name, per_symbol in bundle.coverage.items():
        summary[f"{name}_bars_without_window"] = sum(
            c["bars"] - c["windows"] for c in per_symbol.values()
        )
    return summary
