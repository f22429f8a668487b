"""Shared fixtures. Tests run from the repo root so config/ paths resolve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)
# Two cores here: keep torch and BLAS from oversubscribing when tests run.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def embedded():
    """The embedded real OHLCV table (loaded once)."""
    from kubetrade.data.sources import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
