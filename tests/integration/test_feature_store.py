"""Real local Feast repo: generation, point-in-time joins, online store, bad input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubetrade.data.feature_store import (
    DEFAULT_TTL,
    EVENT_TIMESTAMP,
    FeatureStoreBuilder,
    build_feature_store,
    training_table,
)
from kubetrade.data.pit_join import PointInTimeJoin
from kubetrade.data.sources import load_embedded
from kubetrade.errors import FeatureStoreError

FEATURES = ["sma_5", "sma_20", "ret_1", "range_pct"]
GROUPS = {"technical": ["sma_5", "sma_20"], "returns": ["ret_1", "range_pct"]}


def _feature_frame() -> pd.DataFrame:
    prices = load_embedded()
    frame = prices[
        prices["symbol"].isin(["AAPL", "IBM"])
        & (prices["timestamp"] >= "2010-01-01")
        & (prices["timestamp"] < "2012-01-01")
    ].reset_index(drop=True)
    close = frame.groupby("symbol")["close"]
    frame["sma_5"] = close.transform(lambda s: s.rolling(5).mean())
    frame["sma_20"] = close.transform(lambda s: s.rolling(20).mean())
    frame["ret_1"] = close.pct_change()
    frame["range_pct"] = (frame["high"] - frame["low"]) / frame["close"]
    return frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _feature_frame()


@pytest.fixture(scope="module")
def store(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> FeatureStoreBuilder:
    return build_feature_store(frame, tmp_path_factory.mktemp("feast") / "repo", groups=GROUPS)


def _row(frame: pd.DataFrame, symbol: str, position: int) -> pd.Series:
    return frame[frame["symbol"] == symbol].iloc[position]


def test_repo_layout_and_registry(store: FeatureStoreBuilder, frame: pd.DataFrame) -> None:
    text = store.yaml_path.read_text()
    for line in (
        "provider: local",
        "type: file",
        "type: sqlite",
        "entity_key_serialization_version: 3",
    ):
        assert line in text
    assert (store.repo_dir / "registry.db").exists()
    assert (store.repo_dir / "online.db").exists()
    source = pd.read_parquet(store.parquet_path)
    assert str(source[EVENT_TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert len(source) == len(frame)

    views = {view.name: view for view in store.store.list_feature_views()}
    assert set(views) == {"ohlcv", "technical", "returns"}
    assert [f.name for f in views["technical"].features] == ["sma_5", "sma_20"]
    assert {str(f.dtype) for v in views.values() for f in v.features} == {"Float64"}
    assert all(view.ttl == DEFAULT_TTL for view in views.values())
    assert views["ohlcv"].entities == ["symbol"]

    # A later pipeline step opens the same folder without the frame.
    reopened = FeatureStoreBuilder(store.repo_dir)
    assert sorted(reopened.feature_names) == sorted(
        ["open", "high", "low", "close", "volume", *FEATURES]
    )


def test_training_table_equals_feature_frame(
    store: FeatureStoreBuilder, frame: pd.DataFrame
) -> None:
    table = training_table(store, frame)
    pd.testing.assert_frame_equal(table, frame, check_exact=True)
    assert table[["sma_5", "sma_20", "ret_1"]].isna().any().all(), "warm-up NaNs survive"

    shuffled = frame.sample(frac=1.0, random_state=7)
    table = training_table(store, shuffled, features=["ret_1", "sma_5"])
    pd.testing.assert_frame_equal(
        table, shuffled[["symbol", "timestamp", "ret_1", "sma_5"]], check_exact=True
    )


def test_point_in_time_join(store: FeatureStoreBuilder, frame: pd.DataFrame) -> None:
    aapl = frame[frame["symbol"] == "AAPL"].reset_index(drop=True)
    # A Friday followed by a Monday, so "between" includes a weekend.
    friday = int(np.flatnonzero(aapl["timestamp"].dt.dayofweek == 4)[3])
    earlier, later = aapl.iloc[friday], aapl.iloc[friday + 1]
    first, last = aapl.iloc[0], aapl.iloc[-1]
    cases = [
        ("AAPL", earlier["timestamp"], earlier),  # exact timestamp: that row
        ("AAPL", earlier["timestamp"] + pd.Timedelta(hours=12), earlier),
        ("AAPL", later["timestamp"] - pd.Timedelta(seconds=1), earlier),
        ("AAPL", earlier["timestamp"] + pd.Timedelta(days=2), earlier),  # Sunday
        ("AAPL", first["timestamp"] - pd.Timedelta(days=1), None),  # before any data
        ("AAPL", last["timestamp"] + pd.Timedelta(days=10), last),  # inside the TTL
        ("AAPL", last["timestamp"] + DEFAULT_TTL + pd.Timedelta(days=1), None),  # expired
        ("ZZZZ", earlier["timestamp"], None),  # unknown symbol
        ("AAPL", earlier["timestamp"] + pd.Timedelta(hours=12), earlier),  # duplicate row
    ]
    entity_df = pd.DataFrame(
        {
            "symbol": [c[0] for c in cases],
            EVENT_TIMESTAMP: pd.DatetimeIndex([c[1] for c in cases]),
            "label": np.arange(len(cases)),
        },
        index=pd.Index(np.arange(len(cases))[::-1] * 10, name="row"),
    )
    result = store.get_training_frame(entity_df, FEATURES)

    pd.testing.assert_index_equal(result.index, entity_df.index)
    pd.testing.assert_frame_equal(result[entity_df.columns], entity_df)
    assert result[EVENT_TIMESTAMP].dtype == entity_df[EVENT_TIMESTAMP].dtype
    for position, (_, _, expected) in enumerate(cases):
        got = result.iloc[position][FEATURES].astype("float64")
        if expected is None:
            assert got.isna().all(), f"case {position} must have no features, got {got.to_dict()}"
        else:
            want = expected[FEATURES].astype("float64")
            pd.testing.assert_series_equal(got, want, check_names=False)
    # The later row differs, so matching "earlier" really excludes the future.
    assert not np.allclose(earlier[FEATURES].astype(float), later[FEATURES].astype(float))

    plain = store.get_training_frame(entity_df, FEATURES, prune_source=False)
    pd.testing.assert_frame_equal(result, plain, check_exact=True)


def test_chunked_pruned_join_matches_plain_feast(
    store: FeatureStoreBuilder, frame: pd.DataFrame
) -> None:
    sample = frame.sample(n=80, random_state=3)
    # Shift half the rows between bars to exercise the as-of lookup.
    shift = pd.to_timedelta(np.where(np.arange(80) % 2 == 0, 0, 36), unit="h")
    entity_df = pd.DataFrame(
        {
            "symbol": sample["symbol"].to_numpy(),
            EVENT_TIMESTAMP: sample["timestamp"].reset_index(drop=True) + shift,
        }
    )
    tiny = FeatureStoreBuilder(store.repo_dir, max_join_pairs=2_000)
    chunks = tiny.point_in_time_join().plan_chunks(
        entity_df.sort_values(EVENT_TIMESTAMP).reset_index(drop=True), prune=True
    )
    assert len(chunks) > 1
    pruned = tiny.get_training_frame(entity_df)
    plain = store.get_training_frame(entity_df, prune_source=False)
    pd.testing.assert_frame_equal(pruned, plain, check_exact=True)
    assert pruned["sma_20"].notna().sum() > 40


def test_online_features_are_last_row_per_symbol(
    store: FeatureStoreBuilder, frame: pd.DataFrame
) -> None:
    online = store.get_online_features(["IBM", "AAPL", "ZZZZ"])
    last = frame.groupby("symbol").tail(1).set_index("symbol")
    assert list(online["symbol"]) == ["IBM", "AAPL", "ZZZZ"]
    for symbol in ("IBM", "AAPL"):
        got = online.set_index("symbol").loc[symbol, store.feature_names]
        pd.testing.assert_series_equal(
            got.astype("float64"), last.loc[symbol, store.feature_names].astype("float64")
        )
    assert online.set_index("symbol").loc["ZZZZ"].isna().all()
    assert (online.dtypes.drop("symbol") == "float64").all()


def test_materialize_end_date_limits_online_values(frame: pd.DataFrame, tmp_path: Path) -> None:
    small = frame[frame["timestamp"] < "2010-03-01"].reset_index(drop=True)
    builder = FeatureStoreBuilder(tmp_path / "repo", ttl=timedelta(days=10))
    builder.generate(small[["symbol", "timestamp", "close", "sma_5"]])
    builder.apply()
    builder.materialize(end_date="2010-02-01")
    online = builder.get_online_features(["AAPL"], ["sma_5"])
    expected = small[(small["symbol"] == "AAPL") & (small["timestamp"] <= "2010-02-01")]
    assert online.loc[0, "sma_5"] == expected["sma_5"].iloc[-1]
    assert builder.store.get_feature_view("features").ttl == timedelta(days=10)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["symbol"]), "lacks column(s) ['symbol']"),
        (lambda f: f.assign(sector="tech"), "feature column 'sector' has dtype object"),
        (lambda f: f.assign(flag=True), "feature column 'flag' has dtype bool"),
        (
            lambda f: f.assign(timestamp=f["timestamp"].dt.tz_localize(None)),
            "must be timezone-aware",
        ),
        (lambda f: pd.concat([f, f.head(1)]), "duplicate (symbol, timestamp)"),
        (lambda f: f.iloc[0:0], "empty"),
        (lambda f: f.rename(columns={"sma_5": "sma 5"}), "not a valid Feast name"),
    ],
)
def test_bad_feature_frame_is_rejected(
    frame: pd.DataFrame, tmp_path: Path, mutate: object, message: str
) -> None:
    builder = FeatureStoreBuilder(tmp_path / "repo")
    with pytest.raises(FeatureStoreError) as excinfo:
        builder.generate(mutate(frame))  # type: ignore[operator]
    assert message in str(excinfo.value)
    assert not builder.yaml_path.exists()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"technical": ["sma_5", "nope"]}, "'nope', which is not a feature column"),
        ({"a": ["sma_5"], "b": ["sma_5", "sma_20", "ret_1", "range_pct"]}, "in groups 'a'"),
        ({"technical": ["sma_5", "sma_20"]}, "are in no group"),
    ],
)
def test_bad_groups_are_rejected(
    frame: pd.DataFrame, tmp_path: Path, groups: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(FeatureStoreError) as excinfo:
        FeatureStoreBuilder(tmp_path / "repo").generate(frame, groups)
    assert message in str(excinfo.value)


def test_bad_queries_are_rejected(store: FeatureStoreBuilder, frame: pd.DataFrame) -> None:
    entity_df = frame[["symbol", "timestamp"]].head(3)
    with pytest.raises(FeatureStoreError, match="lacks column"):
        store.get_training_frame(entity_df)
    entity_df = entity_df.rename(columns={"timestamp": EVENT_TIMESTAMP})
    with pytest.raises(FeatureStoreError, match="unknown feature 'rsi_14'"):
        store.get_training_frame(entity_df, ["rsi_14"])
    with pytest.raises(FeatureStoreError, match="timezone-aware"):
        store.get_training_frame(
            entity_df.assign(**{EVENT_TIMESTAMP: entity_df[EVENT_TIMESTAMP].dt.tz_localize(None)})
        )
    with pytest.raises(FeatureStoreError, match="no Feast repo"):
        FeatureStoreBuilder(store.repo_dir / "missing").get_online_features(["AAPL"])


def test_empty_entity_frame_gives_empty_table(store: FeatureStoreBuilder) -> None:
    entity_df = pd.DataFrame(
        {
            "symbol": pd.Series(dtype="object"),
            EVENT_TIMESTAMP: pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )
    result = store.get_training_frame(entity_df, ["sma_5"])
    assert list(result.columns) == ["symbol", EVENT_TIMESTAMP, "sma_5"]
    assert result.empty


def test_row_lost_by_the_join_is_an_error(
    store: FeatureStoreBuilder, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate the file offline store dropping a row that has a match.
    real = PointInTimeJoin.historical

    def lossy(*args: object, **kwargs: object) -> pd.DataFrame:
        return real(*args, **kwargs).iloc[1:]  # type: ignore[arg-type]

    monkeypatch.setattr(PointInTimeJoin, "historical", lossy)
    entity_df = frame[["symbol", "timestamp"]].iloc[30:33]
    entity_df = entity_df.rename(columns={"timestamp": EVENT_TIMESTAMP})
    with pytest.raises(FeatureStoreError, match="dropped 1 entity rows that have feature data"):
        store.get_training_frame(entity_df, ["sma_5"])
