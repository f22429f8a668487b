"""Load: the whole local pipeline on 50 synthetic symbols (tiny training budget)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from test_local_pipeline import tiny_config  # noqa: E402


@pytest.mark.slow
def test_pipeline_with_fifty_synthetic_symbols(tmp_path, monkeypatch):
    import mlflow

    from kubetrade.pipeline.runner import run_local
    from kubetrade.pipeline.steps import load_run_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = tiny_config(
        tmp_path,
        symbols=["AAPL", "GOOG", "IBM", "MSFT"],  # the defaults mean "every synthetic symbol"
        source={"type": "synthetic", "synthetic_symbols": 50, "synthetic_years": 3, "seed": 7},
        start_date=None,
        end_date=None,
    )
    run = load_run_config(cfg)
    result = run_local(run)
    tasks = {k.rsplit("/", 1)[-1].removesuffix("-op"): v for k, v in result.outputs.items()}
    assert tasks["ingest"]["metrics"]["symbols"] == 50
    assert (result.run_dir / "SUCCEEDED").is_file()
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='kubetrade-hybrid'")
    assert len(versions) == (1 if "register" in tasks else 0)
