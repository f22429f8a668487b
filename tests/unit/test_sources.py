"""Data sources: embedded real data, files with mapping, synthetic, selection errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubetrade.data.sources import (
    CANONICAL_COLUMNS,
    EMBEDDED_SYMBOLS,
    generate_synthetic,
    load_files,
    select,
)
from kubetrade.errors import DataError, DataSourceError


def test_embedded_is_real_adjusted_daily_data(embedded):
    assert list(embedded.columns) == CANONICAL_COLUMNS
    assert set(EMBEDDED_SYMBOLS) <= set(embedded["symbol"])
    assert str(embedded["timestamp"].dtype) == "datetime64[ns, UTC]"
    aapl = embedded[embedded["symbol"] == "AAPL"]
    assert aapl["timestamp"].min() == pd.Timestamp("2000-03-01", tz="UTC")
    assert aapl["timestamp"].max() == pd.Timestamp("2013-03-01", tz="UTC")
    # split adjustment: raw AAPL halved on 2000-06-21 and 2005-02-28 (2:1 splits);
    # adjusted closes move by a normal daily amount on those days. (The real -52% day,
    # 2000-09-29, was a profit warning, not a split, and stays.)
    ret = aapl.set_index("timestamp")["close"].pct_change()
    for day in ("2000-06-21", "2005-02-28"):
        assert abs(ret[pd.Timestamp(day, tz="UTC")]) < 0.1
    assert (embedded["high"] >= embedded[["open", "close"]].max(axis=1) - 1e-9).all()


def test_files_with_mapping_and_autodetect(tmp_path, embedded):
    goog = embedded[embedded["symbol"] == "GOOG"].head(50)
    raw = pd.DataFrame(
        {
            "Date": goog["timestamp"].dt.strftime("%Y-%m-%d"),
            "O": goog["open"], "High": goog["high"], "Low": goog["low"],
            "Close": goog["close"], "Vol": goog["volume"],
        }
    )  # fmt: skip
    csv = tmp_path / "goog.csv"
    raw.to_csv(csv, index=False)
    df = load_files([csv], column_map={"O": "open", "Vol": "volume"})
    assert list(df.columns) == CANONICAL_COLUMNS
    assert (df["symbol"] == "GOOG").all()
    np.testing.assert_allclose(df["close"].to_numpy(), goog["close"].to_numpy())
    pq = tmp_path / "x.parquet"
    goog.to_parquet(pq)
    assert len(load_files([pq])) == 50


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        (b"", "wb", "empty"),
        ("\xff\xfeD\x00a\x00".encode("latin-1") + bytes(range(128, 256)), "wb", "UTF-8"),
        (b"symbol,timestamp,open,high,low,close\nA,2020-01-01,1,1,1,1\n", "wb", "missing column"),
        (
            b"symbol,timestamp,open,high,low,close,volume\nA,2020-01-01,one,1,1,1,5\n",
            "wb",
            "non-numeric",
        ),
        (b"symbol,timestamp,open,high,low,close,volume\nA,notadate,1,1,1,1,5\n", "wb", "not dates"),
    ],
)
def test_bad_files_clear_errors(tmp_path, content, mode, expected):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        load_files([path])


def test_truncated_parquet(tmp_path, embedded):
    path = tmp_path / "t.parquet"
    embedded.head(100).to_parquet(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_files([path])


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataSourceError, match="not found"):
        load_files([tmp_path / "nope.csv"])
    odd = tmp_path / "x.xlsx"
    odd.write_text("x")
    with pytest.raises(DataSourceError, match="unsupported file type"):
        load_files([odd])


def test_select_errors_name_what_is_available(embedded):
    with pytest.raises(DataSourceError, match=r"unknown symbol\(s\) \['GOOGL'\].*'GOOG'"):
        select(embedded, ["GOOGL"])
    with pytest.raises(DataSourceError, match=r"GOOG: 2004-08-19\.\.2013-03-01"):
        select(embedded, ["GOOG", "IBM"], "2001-01-01", "2003-12-31")
    out = select(embedded, ["IBM"], "2010-01-01", "2010-12-31")
    assert out["timestamp"].min().year == 2010 and out["timestamp"].max().year == 2010


def test_synthetic_is_seeded_realistic_and_scales():
    a = generate_synthetic(5, 2, seed=7)
    b = generate_synthetic(5, 2, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_synthetic(5, 2, seed=8))
    assert list(a.columns) == CANONICAL_COLUMNS
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all()
    assert (a["low"] <= a[["open", "close"]].min(axis=1)).all()
    assert (a[["open", "high", "low", "close"]] > 0).all().all()
    assert a.groupby("symbol").size().eq(504).all()
    big = generate_synthetic(500, 20, seed=0)
    assert big["symbol"].nunique() == 500 and len(big) == 500 * 5040
