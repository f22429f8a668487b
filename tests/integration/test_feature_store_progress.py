"""The Feast join prints chunk progress (issue #17); interval forced to 0 s here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_feature_store import GROUPS, _feature_frame

from kubetrade.data import pit_join
from kubetrade.data.feature_store import EVENT_TIMESTAMP, FeatureStoreBuilder, build_feature_store


def test_chunked_join_prints_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = _feature_frame()
    store = build_feature_store(frame, tmp_path / "repo", groups=GROUPS)
    entity_df = pd.DataFrame(
        {"symbol": frame["symbol"].to_numpy()[:120], EVENT_TIMESTAMP: frame["timestamp"][:120]}
    )
    tiny = FeatureStoreBuilder(store.repo_dir, max_join_pairs=2_000)
    n = len(
        tiny.point_in_time_join().plan_chunks(entity_df.sort_values(EVENT_TIMESTAMP), prune=True)
    )
    assert n > 2
    capsys.readouterr()
    monkeypatch.setattr(pit_join, "_PROGRESS_EVERY", 0.0)
    tiny.get_training_frame(entity_df)
    lines = [x for x in capsys.readouterr().out.splitlines() if "Feast join chunk" in x]
    assert len(lines) == n - 1  # every chunk but the last (the step's own line follows)
    assert lines[0].startswith(f"[kubetrade] features: Feast join chunk 1/{n} (")
    assert "ETA" in lines[-1]
