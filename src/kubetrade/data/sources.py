"""Market data sources, all returning one canonical long OHLCV table.

Canonical table (``CANONICAL_COLUMNS``): ``symbol`` (str), ``timestamp``
(``datetime64[ns, UTC]``), ``open``/``high``/``low``/``close``/``volume``
(float64), sorted by ``symbol`` then ``timestamp``, with a fresh RangeIndex.

Sources:

* :func:`load_embedded` -- real daily OHLCV for AAPL, GOOG, IBM, MSFT (and FB,
  2012-2013) from the installed ``bokeh-sampledata`` package. Nothing is
  downloaded. Prices are adjusted for splits and dividends with the file's
  ``Adj Close`` column (raw AAPL halves twice in this period, which would look
  like a -50% return to every model and check downstream).
* :func:`load_files` -- any CSV or Parquet files, with a column-name mapping.
* :func:`generate_synthetic` -- seeded GBM with regime switches and jumps.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from kubetrade.config.pipeline import PipelineConfig
from kubetrade.errors import DataError, DataSourceError

__all__ = [
    "CANONICAL_COLUMNS",
    "PRICE_COLUMNS",
    "EMBEDDED_SYMBOLS",
    "load_embedded",
    "load_files",
    "generate_synthetic",
    "select",
    "to_canonical",
    "load_market_data",
]

PRICE_COLUMNS = ["open", "high", "low", "close"]
CANONICAL_COLUMNS = ["symbol", "timestamp", *PRICE_COLUMNS, "volume"]
EMBEDDED_SYMBOLS = ("AAPL", "GOOG", "IBM", "MSFT")


def _embedded_csv_bytes() -> bytes:
    try:
        root = resources.files("bokeh_sampledata") / "_data" / "stocks.csv.gz"
        return root.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:  # pragma: no cover - install problem
        raise DataSourceError(
            "embedded data not found: the 'bokeh-sampledata' package is not installed "
            "(run 'make setup' or 'pip install bokeh-sampledata')"
        ) from exc


def load_embedded(adjust: bool = True) -> pd.DataFrame:
    """Return the embedded real daily OHLCV table (all symbols in the file).

    Args:
        adjust: scale open/high/low/close by ``Adj Close / Close`` and volume by
            its inverse, so splits and dividends do not appear as price jumps.
    """
    raw = pd.read_csv(io.BytesIO(gzip.decompress(_embedded_csv_bytes())))
    df = raw.rename(
        columns={
            "Ticker": "symbol",
            "Date": "timestamp",
            "Open": "open",
            "High": "high",
            "Low": "low",
            "Close": "close",
            "Volume": "volume",
        }
    )
    if adjust:
        factor = raw["Adj Close"] / raw["Close"]
        for col in PRICE_COLUMNS:
            df[col] = df[col] * factor
        df["volume"] = df["volume"] / factor
    return to_canonical(df[CANONICAL_COLUMNS])


def to_canonical(df: pd.DataFrame, source: str = "data") -> pd.DataFrame:
    """Coerce a frame with the canonical column names to canonical dtypes and order.

    Raises:
        DataError: a column is missing or cannot be converted.
    """
    missing = [c for c in CANONICAL_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; required columns are {CANONICAL_COLUMNS} "
            "(use a column mapping, e.g. --map Date=timestamp, to rename yours)"
        )
    if df.empty:
        raise DataError(f"{source}: no rows; give a file with at least one OHLCV row")
    no_symbol = df["symbol"].isna()
    if no_symbol.any():
        raise DataError(
            f"{source}: column 'symbol' is empty in {int(no_symbol.sum())} row(s), e.g. row "
            f"{int(no_symbol.to_numpy().argmax())}; every row needs a ticker (or drop the "
            "symbol column to name the series after the file)"
        )
    out = pd.DataFrame({"symbol": df["symbol"].astype(str)})
    out["timestamp"] = _parse_timestamps(df["timestamp"], source)
    for col in [*PRICE_COLUMNS, "volume"]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            example = df.loc[bad, col].iloc[0]
            raise DataError(
                f"{source}: column '{col}' has {int(bad.sum())} non-numeric value(s), "
                f"e.g. {example!r}; it must hold numbers"
            )
        out[col] = values.astype("float64")
    return out.sort_values(["symbol", "timestamp"], kind="mergesort").reset_index(drop=True)


# pandas' default missing-value spellings (read_csv's na_values)
_NA_SPELLINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})  # fmt: skip

_TIME_ZONE = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})$")


def _parse_timestamps(values: pd.Series, source: str) -> pd.Series:
    """Dates to ``datetime64[ns, UTC]``; naive values are taken as UTC.

    Raises:
        DataError: numbers instead of dates, unparseable values, or text timestamps that mix
            time zones (naive and offset, or two offsets): daily bars would land on different
            UTC days depending on the row, so the file is refused instead of guessed.
    """
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        example = values.dropna().iloc[0] if values.notna().any() else None
        raise DataError(
            f"{source}: column 'timestamp' holds numbers (e.g. {example}), not dates; "
            "write ISO dates like 2012-01-31 (convert epoch seconds before loading)"
        )
    try:
        ts = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        try:  # e.g. ISO timestamps written two ways ("T" and " ", with and without offset)
            ts = pd.to_datetime(values, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            # report the first error: it names the value pandas tripped on; pandas appends
            # multi-line advice, keep only the line that names the bad value
            text = str(exc).strip()
            reason = text.splitlines()[0].split(" You might want to try")[0] if text else ""
            raise DataError(
                f"{source}: column 'timestamp' has values that are not dates "
                f"({reason or type(exc).__name__}); use ISO dates like 2012-01-31"
            ) from exc
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.dropna().astype(str).str.strip()
        # the UTC offset written after a time of day ('' when there is none)
        zones = text.str.extract(_TIME_ZONE, expand=False).fillna("").str.replace(":", "")
        zones = zones.replace({"Z": "+0000", "-0000": "+0000"})
        distinct = list(dict.fromkeys(zones))
        if len(distinct) > 1:
            shown = ", ".join(repr(z or "no offset") for z in distinct[:3])
            examples = [text[zones == z].iloc[0] for z in distinct[:2]]
            raise DataError(
                f"{source}: column 'timestamp' mixes time zones ({shown}; e.g. "
                f"{', '.join(repr(v) for v in examples)}); write every timestamp in "
                "one zone, e.g. UTC dates like 2012-01-31"
            )
    ts = _keep_local_trading_day(values, ts)
    missing = ts.isna() & values.notna()
    if ts.isna().any():
        count = int(ts.isna().sum())
        raise DataError(
            f"{source}: column 'timestamp' is empty or not a date in {count} row(s)"
            f"{' (e.g. ' + repr(values[missing].iloc[0]) + ')' if missing.any() else ''}; "
            "every bar needs a date like 2012-01-31"
        )
    return ts.astype("datetime64[ns, UTC]")


def _keep_local_trading_day(values: pd.Series, ts: pd.Series) -> pd.Series:
    """Daily bars stamped at local midnight in a zone east of UTC (Asia/Tokyo ``2020-01-06
    00:00+09:00``) are the previous day in UTC; converting would move every bar to the day
    before. When every timestamp is at local midnight, keep the local calendar date (as UTC
    midnight); intraday timestamps are converted to UTC as they are."""
    local: pd.Series | None = None
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        local = values
    elif values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        try:
            parsed = pd.to_datetime(values, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            return ts
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            local = parsed
    if local is None or str(local.dt.tz) in ("UTC", "UTC+00:00"):
        return ts
    naive = local.dt.tz_localize(None)
    valid = naive.dropna()
    if len(valid) == 0 or not (valid == valid.dt.normalize()).all():
        return ts
    return naive.dt.tz_localize("UTC")


def load_files(
    paths: Sequence[str | Path],
    column_map: Mapping[str, str] | None = None,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Load one or more CSV/Parquet files into the canonical table.

    Args:
        paths: ``.csv``, ``.csv.gz`` or ``.parquet`` files.
        column_map: renames from the file's names to canonical names,
            e.g. ``{"Date": "timestamp", "Ticker": "symbol"}``. Column names are
            also matched case-insensitively without a map.
        symbol: symbol to use for files that have no symbol column.
    """
    if not paths:
        raise DataSourceError("no data files given; pass at least one CSV or Parquet path")
    frames = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise DataSourceError(
                f"data file not found: {path}; fix source.paths in the pipeline config"
            )
        name = path.name.lower()
        try:
            if name.endswith(".parquet") or name.endswith(".pq"):
                df = pd.read_parquet(path)
            elif name.endswith(".csv") or name.endswith(".csv.gz"):
                # a ticker may be spelled like a missing value (NA: National Australia Bank,
                # NULL ...): only "" is missing while reading; the usual NA spellings are
                # applied below to every column except the symbol
                df = pd.read_csv(path, keep_default_na=False, na_values=[""])
            else:
                raise DataSourceError(
                    f"{path}: unsupported file type; use .csv, .csv.gz or .parquet"
                )
        except DataSourceError:
            raise
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8"
            ) from exc
        except pd.errors.EmptyDataError as exc:
            raise DataError(
                f"{path}: the file is empty; give a file with a header and rows"
            ) from exc
        except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
            raise DataError(
                f"{path}: cannot be read as {'Parquet' if 'parq' in name else 'CSV'} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "is the file truncated or corrupt? Re-export or re-download it"
            ) from exc
        mapping = dict(column_map or {})
        lower = {c.lower().replace(" ", "_"): c for c in df.columns}
        for canon in CANONICAL_COLUMNS:
            if canon not in df.columns and canon not in mapping.values() and canon in lower:
                mapping[lower[canon]] = canon
        if "timestamp" not in mapping.values() and "timestamp" not in df.columns:
            for alias in ("date", "datetime", "time"):
                if alias in lower:
                    mapping[lower[alias]] = "timestamp"
                    break
        if "symbol" not in mapping.values() and "symbol" not in df.columns:
            for alias in ("ticker",):
                if alias in lower:
                    mapping[lower[alias]] = "symbol"
        df = df.rename(columns=mapping)
        for col in df.columns:
            if col != "symbol" and df[col].dtype == object:
                df[col] = df[col].where(~df[col].isin(_NA_SPELLINGS), np.nan)
        if "symbol" not in df.columns:
            df["symbol"] = symbol or path.name.split(".")[0].upper()
        frames.append(to_canonical(df, source=str(path)))
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(["symbol", "timestamp"], kind="mergesort")
        .reset_index(drop=True)
    )


def generate_synthetic(
    n_symbols: int = 10,
    n_years: float = 5.0,
    start_date: str = "2000-01-03",
    seed: int = 0,
) -> pd.DataFrame:
    """Seeded synthetic daily OHLCV: GBM with two-state regime switching and jumps.

    Business-day calendar; regimes (calm/volatile) switch with a Markov chain;
    jumps are Poisson with normal sizes. Open gaps from the previous close, high
    and low bracket open and close, volume is log-normal and rises with |return|.
    Vectorized over symbols: 500 symbols x 20 years takes a few seconds.
    """
    if n_symbols < 1 or n_years <= 0:
        raise DataSourceError(
            f"synthetic data needs n_symbols >= 1 and n_years > 0, got {n_symbols}, {n_years}"
        )
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start=start_date, periods=int(round(n_years * 252)), tz="UTC")
    n_days = len(dates)
    shape = (n_days, n_symbols)
    # Markov regime: 0 calm, 1 volatile
    switch = rng.random(shape) < 0.01
    regime = np.cumsum(switch, axis=0) % 2
    mu = rng.normal(0.07, 0.05, n_symbols) / 252
    base_vol = rng.uniform(0.15, 0.35, n_symbols) / np.sqrt(252)
    vol = base_vol * np.where(regime == 1, 2.0, 1.0)
    jumps = (rng.random(shape) < 0.005) * rng.normal(-0.01, 0.05, shape)
    log_ret = (mu - 0.5 * vol**2) + vol * rng.standard_normal(shape) + jumps
    start_price = rng.uniform(10, 300, n_symbols)
    close = start_price * np.exp(np.cumsum(log_ret, axis=0))
    prev_close = np.vstack([start_price[None, :], close[:-1]])
    open_ = prev_close * np.exp(0.3 * vol * rng.standard_normal(shape))
    intraday = np.abs(vol * rng.standard_normal(shape)) * 0.8
    high = np.maximum(open_, close) * np.exp(intraday * rng.random(shape))
    low = np.minimum(open_, close) * np.exp(-intraday * rng.random(shape))
    base_volume = rng.uniform(1e5, 5e7, n_symbols)
    volume = np.round(base_volume * np.exp(0.3 * rng.standard_normal(shape) + 20 * np.abs(log_ret)))
    width = max(3, len(str(n_symbols - 1)))
    symbols = np.array([f"SYN{i:0{width}d}" for i in range(n_symbols)])
    df = pd.DataFrame(
        {
            "symbol": np.repeat(symbols, n_days),
            "timestamp": np.tile(dates.values, n_symbols),
            "open": open_.T.ravel(),
            "high": high.T.ravel(),
            "low": low.T.ravel(),
            "close": close.T.ravel(),
            "volume": volume.T.ravel(),
        }
    )
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def select(
    df: pd.DataFrame,
    symbols: Sequence[str] | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
) -> pd.DataFrame:
    """Filter the canonical table to symbols and an inclusive date range.

    Raises:
        DataSourceError: a symbol is absent, or the range holds no rows for a
            symbol; the message names what is available.
    """
    available = sorted(df["symbol"].unique())
    if symbols:
        unknown = [s for s in symbols if s not in set(available)]
        if unknown:
            raise DataSourceError(
                f"unknown symbol(s) {unknown}; this data has {available}; fix symbols in "
                "the pipeline config (or --set symbols=[...])"
            )
        df = df[df["symbol"].isin(list(symbols))]
    start = pd.Timestamp(start_date, tz="UTC") if start_date else None
    end = pd.Timestamp(end_date, tz="UTC") if end_date else None
    if start is not None and end is not None and start > end:
        raise DataSourceError(f"start_date {start_date} is after end_date {end_date}")
    lo, hi = df["timestamp"].min(), df["timestamp"].max()
    mask = pd.Series(True, index=df.index)
    if start is not None:
        mask &= df["timestamp"] >= start
    if end is not None:
        mask &= df["timestamp"] <= end
    out = df[mask]
    wanted = list(symbols) if symbols else available
    empty = [s for s in wanted if s not in set(out["symbol"].unique())]
    if empty:
        ranges = df.groupby("symbol")["timestamp"].agg(["min", "max"]).loc[empty]
        desc = ", ".join(
            f"{s}: {r['min']:%Y-%m-%d}..{r['max']:%Y-%m-%d}" for s, r in ranges.iterrows()
        )
        first = start_date or f"{lo:%Y-%m-%d}"
        last = end_date or f"{hi:%Y-%m-%d}"
        raise DataSourceError(f"no rows between {first} and {last} for {empty}; available: {desc}")
    return out.reset_index(drop=True)


def load_market_data(cfg: PipelineConfig) -> pd.DataFrame:
    """Read the configured source and select the configured symbols and dates."""
    src = cfg.source
    if src.type == "embedded":
        df = load_embedded()
    elif src.type == "files":
        df = load_files(src.paths, src.column_map)
    else:
        df = generate_synthetic(
            n_symbols=src.synthetic_symbols, n_years=src.synthetic_years, seed=src.seed
        )
    symbols = cfg.symbols
    if src.type == "synthetic" and symbols == PipelineConfig().symbols:
        symbols = sorted(df["symbol"].unique())  # default symbols mean "all synthetic ones"
    return select(df, symbols, cfg.start_date, cfg.end_date)
