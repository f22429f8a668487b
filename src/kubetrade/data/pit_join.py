"""Point-in-time joins through Feast's file (Dask) offline store, made affordable and exact.

The file offline store has two traits that :class:`PointInTimeJoin` covers for
:meth:`~kubetrade.data.feature_store.FeatureStoreBuilder.get_training_frame` (see
:mod:`kubetrade.data.feature_store` for the whole story):

* it pairs every entity row with *every* source row of its symbol before filtering, so the
  join is run in time-ordered chunks bounded by ``max_join_pairs``, each against a copy of
  the registered views whose source holds only the rows that can match (``prune=True``);
* it silently drops entity rows without a match; :meth:`PointInTimeJoin.check_lost_rows`
  raises when a dropped row did have a source row inside its TTL window.

Also here: the timestamp and logging helpers every Feast call of kubetrade needs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytz

from kubetrade.errors import FeatureStoreError

__all__ = [
    "EVENT_TIMESTAMP",
    "SOURCE_NAME",
    "PointInTimeJoin",
    "for_feast",
    "quiet_feast",
    "utc_ns",
]

logger = logging.getLogger(__name__)

EVENT_TIMESTAMP = "event_timestamp"
SOURCE_NAME = "feature_frame"
_PROGRESS_EVERY = 10.0  # seconds between "Feast join chunk" console lines


@contextlib.contextmanager
def quiet_feast() -> Iterator[None]:
    """Silence Feast's progress bars, prints and deprecation chatter for one call."""
    feast_logger = logging.getLogger("feast")
    level = feast_logger.level
    feast_logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", module=r"feast(\.|$)")
            yield
    finally:
        feast_logger.setLevel(level)


def utc_ns(column: pd.Series, what: str) -> pd.Series:
    """Return ``column`` as canonical ``datetime64[ns, UTC]``; naive or NaT values raise."""
    if not isinstance(column.dtype, pd.DatetimeTZDtype):
        raise FeatureStoreError(
            f"{what} must be timezone-aware datetimes, got dtype {column.dtype}; "
            "convert with pd.to_datetime(col, utc=True) or col.dt.tz_localize('UTC')"
        )
    if column.isna().any():
        raise FeatureStoreError(f"{what} has {int(column.isna().sum())} missing (NaT) values")
    return column.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def for_feast(column: pd.Series) -> pd.Series:
    """Label a UTC column with ``pytz.UTC``.

    Feast's file store compares the column's tz with ``pytz.UTC`` and otherwise falls back
    to a row-by-row Python ``apply`` (pandas' default UTC is ``datetime.timezone.utc``).
    """
    return column.dt.tz_convert(pytz.UTC)


@dataclass(frozen=True)
class PointInTimeJoin:
    """One store's point-in-time join, chunked and pruned (see the module docstring).

    Attributes:
        store: the ``feast.FeatureStore`` with the registered views.
        source: the views' Parquet source (``event_timestamp`` as ns UTC).
        ttl: point-in-time lookback of the views.
        max_join_pairs: bound on ``entity rows x source rows`` of one Feast query.
        repo_dir: the repo, named in error messages.
    """

    store: Any
    source: pd.DataFrame
    ttl: timedelta
    max_join_pairs: int
    repo_dir: Path

    def historical(
        self, unique: pd.DataFrame, refs: list[str], names: list[str], prune: bool
    ) -> pd.DataFrame:
        """Query Feast chunk by chunk; return the keys that matched, with their features."""
        unique = unique.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
        columns = ["symbol", EVENT_TIMESTAMP, *names]
        parts: list[pd.DataFrame] = []
        chunks = self.plan_chunks(unique, prune)
        started = last = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="kubetrade-feast-") as tmp:
            for number, (lo, hi) in enumerate(chunks):
                part = unique.iloc[lo:hi].copy()
                part[EVENT_TIMESTAMP] = for_feast(part[EVENT_TIMESTAMP])
                try:
                    with quiet_feast():
                        if prune:
                            frame = self.query_slice(
                                part, refs, names, Path(tmp) / f"slice_{number}.parquet"
                            )
                        else:
                            frame = self.store.get_historical_features(
                                entity_df=part, features=refs
                            ).to_df()
                except Exception as exc:  # Feast raises many unrelated types
                    raise FeatureStoreError(
                        f"feast get_historical_features failed in {self.repo_dir}: {exc}"
                    ) from exc
                if frame is not None and len(frame):
                    parts.append(frame[columns])
                now = time.perf_counter()
                if now - last >= _PROGRESS_EVERY and number + 1 < len(chunks):
                    last, done = now, number + 1
                    eta = (now - started) / done * (len(chunks) - done)
                    print(
                        f"[kubetrade] features: Feast join chunk {done}/{len(chunks)} "
                        f"({hi:,}/{len(unique):,} entity rows), {now - started:.0f}s elapsed, "
                        f"ETA {eta:.0f}s",
                        flush=True,
                    )
        if not parts:
            empty = {"symbol": pd.Series(dtype="object")}
            empty[EVENT_TIMESTAMP] = pd.Series(dtype="datetime64[ns, UTC]")
            parts.append(pd.DataFrame(empty | {n: pd.Series(dtype="float64") for n in names}))
        joined = pd.concat(parts, ignore_index=True)
        joined = joined.astype(dict.fromkeys(names, "float64"))
        joined[EVENT_TIMESTAMP] = utc_ns(joined[EVENT_TIMESTAMP], "feast output timestamps")
        if joined.duplicated(["symbol", EVENT_TIMESTAMP]).any():
            raise FeatureStoreError(
                "feast returned several rows for one (symbol, event_timestamp); "
                "the source has duplicate keys, regenerate the repo from a clean frame"
            )
        return joined

    def plan_chunks(self, unique: pd.DataFrame, prune: bool) -> list[tuple[int, int]]:
        """Split time-sorted entity rows into ranges whose Feast join stays in budget.

        Feast's file store pairs each entity row with every source row of its symbol
        (or of the pruned slice); a range holds as many rows as keep that pair count
        within ``max_join_pairs`` (at least one row).
        """
        source = self.source[["symbol", EVENT_TIMESTAMP]]
        source_ns = {
            symbol: np.sort(pd.DatetimeIndex(group[EVENT_TIMESTAMP]).asi8)
            for symbol, group in source.groupby("symbol", sort=False)
        }
        entity_ns = pd.DatetimeIndex(unique[EVENT_TIMESTAMP]).asi8
        symbols = unique["symbol"].to_numpy()
        ttl_ns = pd.Timedelta(self.ttl).value

        def pairs(lo: int, hi: int) -> int:
            counts = pd.Series(symbols[lo:hi]).value_counts()
            first, last = entity_ns[lo] - ttl_ns, entity_ns[hi - 1]
            total = 0
            for symbol, count in counts.items():
                times = source_ns.get(str(symbol))
                if times is None:
                    matched = 1  # left join keeps one all-null row
                elif prune:
                    matched = int(
                        np.searchsorted(times, last, "right") - np.searchsorted(times, first)
                    )
                else:
                    matched = len(times)
                total += int(count) * max(matched, 1)
            return total

        # Greedy: from each start, the longest range in budget (pairs grow with the end).
        chunks: list[tuple[int, int]] = []
        lo = 0
        while lo < len(unique):
            fits, too_big = lo + 1, len(unique) + 1
            while too_big - fits > 1:
                mid = (fits + too_big) // 2
                if pairs(lo, mid) <= self.max_join_pairs:
                    fits = mid
                else:
                    too_big = mid
            chunks.append((lo, fits))
            lo = fits
        return chunks

    def query_slice(
        self, part: pd.DataFrame, refs: list[str], names: list[str], path: Path
    ) -> pd.DataFrame | None:
        """Feast point-in-time join of ``part`` against the rows that can match it."""
        from feast import FileSource
        from feast.infra.offline_stores.dask import DaskOfflineStore

        source = self.source
        first = part[EVENT_TIMESTAMP].min() - pd.Timedelta(self.ttl)
        last = part[EVENT_TIMESTAMP].max()
        mask = source["symbol"].isin(part["symbol"].unique()) & source[EVENT_TIMESTAMP].between(
            first, last
        )
        if not mask.any():
            return None  # no source row in reach: every row of the chunk is unmatched
        source.loc[mask, ["symbol", EVENT_TIMESTAMP, *names]].to_parquet(path, index=False)
        sliced = FileSource(name=SOURCE_NAME, path=str(path), timestamp_field=EVENT_TIMESTAMP)
        wanted = {ref.split(":", 1)[0] for ref in refs}
        views = []
        for view in self.store.list_feature_views():
            if view.name in wanted:
                view = copy.copy(view)
                view.batch_source = sliced
                views.append(view)
        job = DaskOfflineStore.get_historical_features(
            config=self.store.config,
            feature_views=views,
            feature_refs=refs,
            entity_df=part,
            registry=self.store.registry,
            project=self.store.project,
            full_feature_names=False,
        )
        frame: pd.DataFrame = job.to_df()
        return frame

    def check_lost_rows(self, unique: pd.DataFrame, joined: pd.DataFrame) -> None:
        """Raise if Feast dropped an entity row that has a source row inside its TTL window."""
        found = pd.MultiIndex.from_frame(joined[["symbol", EVENT_TIMESTAMP]])
        asked = pd.MultiIndex.from_frame(unique[["symbol", EVENT_TIMESTAMP]])
        extra = found.difference(asked)
        if len(extra):
            raise FeatureStoreError(f"feast returned {len(extra)} rows that were not asked for")
        lost = unique[~asked.isin(found)]
        if lost.empty:
            return
        source = self.source[["symbol", EVENT_TIMESTAMP]].copy()
        source["_match"] = source[EVENT_TIMESTAMP]
        latest = pd.merge_asof(
            lost.sort_values(EVENT_TIMESTAMP),
            source.sort_values(EVENT_TIMESTAMP),
            on=EVENT_TIMESTAMP,
            by="symbol",
            direction="backward",
        )
        had_match = latest["_match"].notna() & (
            latest[EVENT_TIMESTAMP] - latest["_match"] <= pd.Timedelta(self.ttl)
        )
        if had_match.any():
            example = latest.loc[had_match, ["symbol", EVENT_TIMESTAMP]].iloc[0].tolist()
            raise FeatureStoreError(
                f"feast dropped {int(had_match.sum())} entity rows that have feature data "
                f"within the TTL, e.g. {example}; the join is unreliable, rebuild the repo"
            )
        logger.debug("%d entity rows have no point-in-time match; returned as NaN", len(lost))
