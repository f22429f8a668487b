"""A real local Feast feature store for engineered features.

A *feature frame* is the canonical OHLCV table (see :mod:`kubetrade.data.sources`) plus
any number of numeric feature columns, one row per ``(symbol, timestamp)``.
:class:`FeatureStoreBuilder` turns it into a self-contained Feast repository inside a run
folder::

    repo_dir/
      feature_store.yaml      provider local, file offline store, sqlite online store
      data/features.parquet   the frame, ``timestamp`` renamed to ``event_timestamp``
      registry.db             written by ``apply()``
      online.db               written by ``materialize()``

Paths inside ``feature_store.yaml`` and the registry are relative to ``repo_dir``, so the
folder can be moved or shipped as a pipeline artifact. Definitions are applied from Python
(``FeatureStore.apply``); no ``feast`` CLI is needed.

Entity ``symbol`` (join key ``symbol``, STRING), one ``FileSource`` and one ``FeatureView``
per group of columns, every feature Float64. TTL defaults to :data:`DEFAULT_TTL` (30 days):
a point-in-time lookup takes the latest row at or before the entity timestamp and no older
than the TTL, so daily bars survive weekends, holidays and exchange closures (the longest
gap in daily equity data is under a week) while a symbol that stopped trading a month ago
returns nothing instead of a stale value. Feast does not apply the TTL to online reads.

Point-in-time retrieval (:meth:`FeatureStoreBuilder.get_training_frame`) goes through Feast's
file (Dask) offline store, which has two traits :mod:`kubetrade.data.pit_join` covers for the
caller:

* it joins every entity row with *every* source row of the same symbol before filtering, so
  time and memory grow with ``entity rows x rows per symbol`` (minutes and gigabytes for a
  few thousand daily bars). Entity rows are sent in time-ordered chunks bounded by
  ``max_join_pairs``, and each chunk is joined by Feast's own
  ``DaskOfflineStore.get_historical_features`` against a copy of the registered views whose
  source holds only the rows that can match it (same symbols, ``[first - ttl, last]``);
  ``prune_source=False`` queries the registered source through
  ``FeatureStore.get_historical_features`` instead, with the same result;
* an entity row without a valid match (timestamp before the symbol's first row, or a gap
  longer than the TTL) is dropped from the output, and duplicate entity rows are collapsed.
  The result is re-aligned to the caller's rows: same count, same order, same index; rows
  without a match get NaN features. A row dropped although the source holds a row inside
  its TTL window raises :class:`~kubetrade.errors.FeatureStoreError`.

Why this module is long: it is one object's lifecycle (generate, apply, materialize, query)
plus the checks of the frame and groups it is generated from, whose messages name the bad
column or group; the Feast join workaround itself is :mod:`kubetrade.data.pit_join`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from kubetrade.data.pit_join import (
    EVENT_TIMESTAMP,
    SOURCE_NAME,
    PointInTimeJoin,
    quiet_feast,
    utc_ns,
)
from kubetrade.data.sources import PRICE_COLUMNS
from kubetrade.errors import FeatureStoreError

__all__ = [
    "DEFAULT_TTL",
    "ENTITY_NAME",
    "EVENT_TIMESTAMP",
    "OHLCV_VIEW",
    "DEFAULT_FEATURE_VIEW",
    "FeatureStoreBuilder",
    "build_feature_store",
    "training_table",
]

logger = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(days=30)
"""Point-in-time lookback: covers weekends, holidays and multi-day market closures."""
ENTITY_NAME = "symbol"
OHLCV_VIEW = "ohlcv"
DEFAULT_FEATURE_VIEW = "features"
PARQUET_RELPATH = "data/features.parquet"
_OHLCV_COLUMNS = [*PRICE_COLUMNS, "volume"]
_KEY_COLUMNS = ["symbol", "timestamp"]
_RESERVED = {"symbol", "timestamp", EVENT_TIMESTAMP, "created", "created_timestamp"}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _utc(ts: Any, what: str) -> pd.Timestamp:
    """Parse a timestamp; naive values are taken as UTC."""
    try:
        value = pd.Timestamp(ts)
    except (TypeError, ValueError) as exc:
        raise FeatureStoreError(
            f"{what} {ts!r} is not a timestamp (use e.g. '2013-12-31')"
        ) from exc
    if pd.isna(value):
        raise FeatureStoreError(f"{what} is missing (NaT)")
    return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FeatureStoreError(
            f"{what} {name!r} is not a valid Feast name "
            "(letters, digits and underscores, not starting with a digit)"
        )


def _validate_frame(features_df: pd.DataFrame) -> pd.DataFrame:
    """Check a feature frame and return a sorted copy: float64 features, ns UTC times."""
    if not isinstance(features_df, pd.DataFrame):
        raise FeatureStoreError(
            f"the feature frame must be a pandas DataFrame, got {type(features_df).__name__}"
        )
    missing = [c for c in _KEY_COLUMNS if c not in features_df.columns]
    if missing:
        raise FeatureStoreError(
            f"the feature frame lacks column(s) {missing}; it needs 'symbol' and 'timestamp' "
            f"(got columns {list(features_df.columns)[:12]})"
        )
    if features_df.empty:
        raise FeatureStoreError("the feature frame is empty; there is nothing to store")
    if EVENT_TIMESTAMP in features_df.columns:
        raise FeatureStoreError(
            f"the feature frame has a column {EVENT_TIMESTAMP!r}, which the store reserves; "
            "drop or rename it"
        )
    frame = features_df.copy()
    bad_symbols = [s for s in frame["symbol"].unique() if not isinstance(s, str) or not s]
    if bad_symbols:
        bad = bad_symbols[0]
        raise FeatureStoreError(f"column 'symbol' must hold non-empty strings, found {bad!r}")
    frame["timestamp"] = utc_ns(frame["timestamp"], "column 'timestamp'")
    duplicated = frame.duplicated(_KEY_COLUMNS)
    if duplicated.any():
        first = frame.loc[duplicated, _KEY_COLUMNS].iloc[0].tolist()
        raise FeatureStoreError(
            f"the feature frame has {int(duplicated.sum())} duplicate (symbol, timestamp) rows, "
            f"e.g. {first}; keep one row per symbol and timestamp"
        )
    for column in frame.columns:
        if column in _KEY_COLUMNS:
            continue
        _check_name(column, "feature column")
        if column in _RESERVED:
            raise FeatureStoreError(f"feature column {column!r} uses a reserved name; rename it")
        dtype = frame[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise FeatureStoreError(
                f"feature column {column!r} has dtype {dtype}; every feature must be numeric "
                "(cast it to float64 or drop it from the frame)"
            )
        frame[column] = frame[column].astype("float64")
    return frame.sort_values(_KEY_COLUMNS, kind="stable").reset_index(drop=True)


def _resolve_groups(
    feature_columns: Sequence[str], groups: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """Map view name -> columns. OHLCV columns not grouped explicitly go to ``ohlcv``."""
    if groups is None:
        ohlcv = [c for c in _OHLCV_COLUMNS if c in feature_columns]
        others = [c for c in feature_columns if c not in _OHLCV_COLUMNS]
        default = {OHLCV_VIEW: ohlcv, DEFAULT_FEATURE_VIEW: others}
        return {name: cols for name, cols in default.items() if cols}

    resolved: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for view, columns in groups.items():
        _check_name(view, "feature view name")
        if isinstance(columns, str) or not columns:
            raise FeatureStoreError(
                f"group {view!r} must be a non-empty list of column names, got {columns!r}"
            )
        for column in columns:
            if column not in feature_columns:
                raise FeatureStoreError(
                    f"group {view!r} names column {column!r}, which is not a feature column "
                    f"of the frame (available: {sorted(feature_columns)})"
                )
            if column in owner:
                raise FeatureStoreError(
                    f"column {column!r} is in groups {owner[column]!r} and {view!r}; "
                    "put each column in exactly one group"
                )
            owner[column] = view
        resolved[view] = list(columns)
    leftover_ohlcv = [c for c in _OHLCV_COLUMNS if c in feature_columns and c not in owner]
    if leftover_ohlcv:
        if OHLCV_VIEW in resolved:
            resolved[OHLCV_VIEW].extend(leftover_ohlcv)
        else:
            resolved = {OHLCV_VIEW: leftover_ohlcv, **resolved}
        owner.update(dict.fromkeys(leftover_ohlcv, OHLCV_VIEW))
    ungrouped = [c for c in feature_columns if c not in owner]
    if ungrouped:
        raise FeatureStoreError(
            f"feature column(s) {ungrouped} are in no group; add them to a group or drop "
            "them from the frame"
        )
    return resolved


class FeatureStoreBuilder:
    """Generate, apply, materialize and query a local Feast repo in ``repo_dir``.

    Typical use is :func:`build_feature_store`; the steps are public so a pipeline can
    split them. A builder over an already applied repo (e.g. a later pipeline step) can
    query it straight away: view and feature names are read from the registry.

    Args:
        repo_dir: run folder that holds (or will hold) the Feast repository.
        project: Feast project name (letters, digits, underscores).
        ttl: point-in-time lookback of every feature view.
        max_join_pairs: bound on ``entity rows x source rows per symbol`` handled by one
            Feast historical query (Feast's file store materializes that many rows).
    """

    def __init__(
        self,
        repo_dir: Path | str,
        project: str = "kubetrade",
        ttl: timedelta = DEFAULT_TTL,
        max_join_pairs: int = 500_000,
    ) -> None:
        _check_name(project, "project")
        if ttl <= timedelta(0):
            raise FeatureStoreError(f"ttl must be positive, got {ttl}")
        if max_join_pairs < 1:
            raise FeatureStoreError(f"max_join_pairs must be >= 1, got {max_join_pairs}")
        self.repo_dir = Path(repo_dir).resolve()
        self.project = project
        self.ttl = ttl
        self.max_join_pairs = max_join_pairs
        self._groups: dict[str, list[str]] | None = None
        self._store: Any = None
        self._source_frame: pd.DataFrame | None = None

    # ------------------------------------------------------------------ paths
    @property
    def yaml_path(self) -> Path:
        """``feature_store.yaml`` of the repo."""
        return self.repo_dir / "feature_store.yaml"

    @property
    def parquet_path(self) -> Path:
        """Parquet file behind the ``FileSource``."""
        return self.repo_dir / PARQUET_RELPATH

    @property
    def store(self) -> Any:
        """The ``feast.FeatureStore`` of the repo (created on first use)."""
        if self._store is None:
            if not self.yaml_path.exists():
                raise FeatureStoreError(
                    f"no Feast repo at {self.repo_dir} (feature_store.yaml missing); "
                    "call generate() first or use build_feature_store()"
                )
            from feast import FeatureStore

            with quiet_feast():
                self._store = FeatureStore(repo_path=str(self.repo_dir))
        return self._store

    @property
    def groups(self) -> dict[str, list[str]]:
        """Feature view name -> feature names (from generate() or the registry)."""
        if self._groups is None:
            with quiet_feast():
                views = self.store.list_feature_views()
            if not views:
                raise FeatureStoreError(
                    f"the Feast registry in {self.repo_dir} has no feature views; call apply()"
                )
            self._groups = {v.name: [f.name for f in v.features] for v in views}
        return self._groups

    @property
    def feature_names(self) -> list[str]:
        """All feature names, view by view."""
        return [name for columns in self.groups.values() for name in columns]

    # --------------------------------------------------------------- building
    def generate(
        self, features_df: pd.DataFrame, groups: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Validate the frame, write ``feature_store.yaml`` and the Parquet source.

        Args:
            features_df: canonical columns plus numeric feature columns.
            groups: ``{view_name: [columns]}``. Default: an ``ohlcv`` view with the OHLCV
                columns and a ``features`` view with every other column. With explicit
                groups, OHLCV columns left out go to ``ohlcv``; any other column must be
                in exactly one group.

        Raises:
            FeatureStoreError: the frame or the grouping is invalid.
        """
        frame = _validate_frame(features_df)
        feature_columns = [c for c in frame.columns if c not in _KEY_COLUMNS]
        if not feature_columns:
            raise FeatureStoreError(
                "the feature frame has no feature columns besides 'symbol' and 'timestamp'"
            )
        self._groups = _resolve_groups(feature_columns, groups)
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.parquet_path.parent.mkdir(parents=True, exist_ok=True)
        self.yaml_path.write_text(
            f"project: {self.project}\n"
            "provider: local\n"
            "registry: registry.db\n"
            "offline_store:\n"
            "  type: file\n"
            "online_store:\n"
            "  type: sqlite\n"
            "  path: online.db\n"
            "entity_key_serialization_version: 3\n",
            encoding="utf-8",
        )
        frame.rename(columns={"timestamp": EVENT_TIMESTAMP}).to_parquet(
            self.parquet_path, index=False
        )
        self._store = None
        self._source_frame = None
        logger.info(
            "feature repo written to %s: %d rows, views %s",
            self.repo_dir,
            len(frame),
            {k: len(v) for k, v in self._groups.items()},
        )

    def definitions(self) -> list[Any]:
        """The Feast objects this repo registers: entity, source and feature views."""
        from feast import Entity, FeatureView, Field, FileSource, ValueType
        from feast.types import Float64

        if self._groups is None:
            raise FeatureStoreError("no feature groups known; call generate() first")
        entity = Entity(name=ENTITY_NAME, join_keys=["symbol"], value_type=ValueType.STRING)
        source = FileSource(name=SOURCE_NAME, path=PARQUET_RELPATH, timestamp_field=EVENT_TIMESTAMP)
        views = [
            FeatureView(
                name=view,
                entities=[entity],
                ttl=self.ttl,
                schema=[Field(name=column, dtype=Float64) for column in columns],
                source=source,
                online=True,
            )
            for view, columns in self._groups.items()
        ]
        return [entity, source, *views]

    def apply(self) -> None:
        """Register the entity, source and feature views in ``registry.db``."""
        objects = self.definitions()
        try:
            with quiet_feast():
                self.store.apply(objects)
        except Exception as exc:  # Feast raises many unrelated types for bad repos
            raise FeatureStoreError(f"feast apply failed in {self.repo_dir}: {exc}") from exc

    def materialize(self, end_date: datetime | str | None = None) -> None:
        """Load the latest row per symbol up to ``end_date`` into the SQLite online store.

        Uses ``materialize(start, end)`` over the data range rather than
        ``materialize_incremental``, whose first run starts at ``now - ttl`` and would
        skip historical data.

        Args:
            end_date: inclusive upper bound (naive values are UTC); default: last row.
        """
        keys = self._keys()
        start = keys[EVENT_TIMESTAMP].min().to_pydatetime()
        end = keys[EVENT_TIMESTAMP].max() if end_date is None else _utc(end_date, "end_date")
        if end < start:
            raise FeatureStoreError(
                f"end_date {end} is before the first feature row ({start}); nothing to load"
            )
        try:
            with quiet_feast():
                self.store.materialize(start_date=start, end_date=end.to_pydatetime())
        except Exception as exc:
            raise FeatureStoreError(f"feast materialize failed in {self.repo_dir}: {exc}") from exc

    # --------------------------------------------------------------- querying
    def _source(self) -> pd.DataFrame:
        """The Parquet source (``event_timestamp`` as ns UTC), read once."""
        if self._source_frame is None:
            if not self.parquet_path.exists():
                raise FeatureStoreError(
                    f"no feature data at {self.parquet_path}; call generate() first"
                )
            frame = pd.read_parquet(self.parquet_path)
            frame[EVENT_TIMESTAMP] = utc_ns(frame[EVENT_TIMESTAMP], "source timestamps")
            self._source_frame = frame
        return self._source_frame

    def point_in_time_join(self) -> PointInTimeJoin:
        """The chunked, pruned Feast join over this repo (:mod:`kubetrade.data.pit_join`)."""
        return PointInTimeJoin(
            self.store, self._source(), self.ttl, self.max_join_pairs, self.repo_dir
        )

    def _keys(self) -> pd.DataFrame:
        """(symbol, event_timestamp) of every source row."""
        return self._source()[["symbol", EVENT_TIMESTAMP]]

    def _feature_refs(self, features: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """Return (Feast refs ``view:feature``, output column names) for ``features``."""
        groups = self.groups
        owner = {name: view for view, columns in groups.items() for name in columns}
        wanted = self.feature_names if features is None else list(features)
        if isinstance(features, str) or not wanted:
            raise FeatureStoreError(f"features must be a non-empty list of names, got {features!r}")
        refs: list[str] = []
        names: list[str] = []
        for feature in wanted:
            view, _, name = feature.rpartition(":")
            view = view or owner.get(name, "")
            if name not in groups.get(view, []):
                raise FeatureStoreError(
                    f"unknown feature {feature!r}; known features: {sorted(owner)} "
                    "(optionally as 'view:feature')"
                )
            if name in names:
                raise FeatureStoreError(f"feature {name!r} is requested twice")
            refs.append(f"{view}:{name}")
            names.append(name)
        return refs, names

    def get_training_frame(
        self,
        entity_df: pd.DataFrame,
        features: Sequence[str] | None = None,
        prune_source: bool = True,
    ) -> pd.DataFrame:
        """Point-in-time join of ``features`` onto ``entity_df`` via Feast.

        Args:
            entity_df: ``symbol`` and ``event_timestamp`` (tz-aware) columns; other
                columns are passed through.
            features: feature names (or ``view:feature`` refs); default all.
            prune_source: hand Feast, per chunk of entity rows, only the source rows that
                can match (same symbols, timestamps in ``[first - ttl, last]``) instead of
                the whole table. Same join, same result; the cost falls from
                ``entity rows x rows per symbol`` to about ``entity rows x (chunk + TTL)``.
                ``False`` runs ``FeatureStore.get_historical_features`` on the registered
                source as is.

        Returns:
            ``entity_df``'s columns and index, rows in the same order and count, plus one
            float64 column per feature: the latest value at or before each row's
            timestamp and within the TTL, NaN when there is none.

        Raises:
            FeatureStoreError: bad entity frame, unknown feature, or Feast lost a row that
                has a match.
        """
        missing = [c for c in ("symbol", EVENT_TIMESTAMP) if c not in entity_df.columns]
        if missing:
            raise FeatureStoreError(
                f"the entity frame lacks column(s) {missing}; it needs 'symbol' and "
                f"'{EVENT_TIMESTAMP}' (got {list(entity_df.columns)})"
            )
        refs, names = self._feature_refs(features)
        clash = [n for n in names if n in entity_df.columns]
        if clash:
            raise FeatureStoreError(f"the entity frame already has feature column(s) {clash}")
        keys = pd.DataFrame(
            {
                "symbol": entity_df["symbol"].reset_index(drop=True),
                EVENT_TIMESTAMP: utc_ns(
                    entity_df[EVENT_TIMESTAMP], f"entity column '{EVENT_TIMESTAMP}'"
                ).reset_index(drop=True),
            }
        )
        if keys["symbol"].isna().any():
            raise FeatureStoreError("the entity frame has missing symbols")
        # Feast collapses duplicate entity rows: query each key once, then fan back out.
        unique = keys.drop_duplicates().sort_values(["symbol", EVENT_TIMESTAMP])
        join = self.point_in_time_join()
        joined = join.historical(unique, refs, names, prune_source)
        join.check_lost_rows(unique, joined)
        result = keys.merge(joined, on=["symbol", EVENT_TIMESTAMP], how="left", sort=False)
        assert len(result) == len(entity_df), "left merge on unique keys keeps the row count"
        out = entity_df.copy()
        for name in names:
            out[name] = result[name].to_numpy(dtype="float64")
        return out

    def get_online_features(
        self, symbols: Sequence[str], features: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Latest materialized values for ``symbols`` from the SQLite online store.

        Returns:
            One row per requested symbol, in order: ``symbol`` plus float64 features
            (NaN for unknown symbols or before ``materialize()``).
        """
        if isinstance(symbols, str) or not symbols:
            raise FeatureStoreError(f"symbols must be a non-empty list, got {symbols!r}")
        refs, names = self._feature_refs(features)
        try:
            with quiet_feast():
                response = self.store.get_online_features(
                    features=refs, entity_rows=[{"symbol": str(s)} for s in symbols]
                ).to_dict()
        except Exception as exc:
            raise FeatureStoreError(
                f"feast get_online_features failed in {self.repo_dir}: {exc}"
            ) from exc
        out = pd.DataFrame({"symbol": list(symbols)})
        for name in names:
            out[name] = pd.to_numeric(pd.Series(response[name], dtype="object")).astype("float64")
        return out


def build_feature_store(
    features_df: pd.DataFrame,
    repo_dir: Path | str,
    groups: Mapping[str, Sequence[str]] | None = None,
    project: str = "kubetrade",
    ttl: timedelta = DEFAULT_TTL,
) -> FeatureStoreBuilder:
    """Generate, apply and materialize a Feast repo for ``features_df`` in ``repo_dir``."""
    builder = FeatureStoreBuilder(repo_dir, project=project, ttl=ttl)
    builder.generate(features_df, groups)
    builder.apply()
    builder.materialize()
    return builder


def training_table(
    store: FeatureStoreBuilder,
    features_df: pd.DataFrame,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Point-in-time join for the ``(symbol, timestamp)`` rows of ``features_df``.

    Returns:
        ``symbol``, ``timestamp`` and the features, rows in ``features_df``'s order and
        index, ``timestamp`` with ``features_df``'s dtype. For rows the store was built
        from, this equals the frame itself.
    """
    missing = [c for c in _KEY_COLUMNS if c not in features_df.columns]
    if missing:
        raise FeatureStoreError(
            f"the frame lacks column(s) {missing}; it needs 'symbol' and 'timestamp'"
        )
    if features is None:
        # The frame's own column order, not the view order of the store.
        position = {column: i for i, column in enumerate(features_df.columns)}
        features = sorted(store.feature_names, key=lambda f: position.get(f, len(position)))
    entity_df = features_df[_KEY_COLUMNS].rename(columns={"timestamp": EVENT_TIMESTAMP})
    joined = store.get_training_frame(entity_df, features)
    return joined.rename(columns={EVENT_TIMESTAMP: "timestamp"})
