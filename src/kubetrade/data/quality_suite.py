"""The Great Expectations suite of the OHLCV quality gate: what is checked, and how.

:func:`build_checks` lists every check (name, criticality, the problem it names and a fresh GE
expectation); :func:`prepare_frame` adds the per-symbol helper columns some of them run on
(timestamp steps, calendar gaps, close-to-close returns, rows and distinct closes per symbol).
:class:`~kubetrade.data.quality.DataQualityValidator` runs them and builds the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

__all__ = [
    "DISTINCT_COLUMN",
    "REQUIRED_COLUMNS",
    "SKIPPED",
    "Check",
    "build_checks",
    "prepare_frame",
    "skip_reason",
]

REQUIRED_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_NUMERIC_COLUMNS = (*_PRICE_COLUMNS, "volume")
_NUMERIC_TYPES = ["float64", "float32", "int64", "int32"]
_TIMESTAMP_TYPE = "datetime64[ns, UTC]"
_FLOAT_MAX = float(np.finfo(np.float64).max)
_OHLC_ORDER = (
    ("high", "low"),
    ("high", "open"),
    ("high", "close"),
    ("open", "low"),
    ("close", "low"),
)
_NON_CRITICAL = frozenset({"calendar_gap", "daily_return_outlier", "rows_per_symbol"})
SKIPPED = "not checked"
_FIX_HINT = "build the table with kubetrade.data.sources.to_canonical or load_files"

# Helper columns handed to GE next to the data; the prefix keeps them apart from user columns.
_STEP = "_kt_timestamp_step_seconds"
_GAP = "_kt_calendar_gap_days"
_RETURN = "_kt_daily_return"
_ROWS = "_kt_rows_in_symbol"
DISTINCT_COLUMN = "_kt_distinct_closes_in_symbol"
# prices outside this range are a unit/scale error, and overflow or underflow in features
_MIN_PRICE, _MAX_PRICE = 1e-6, 1e9
_HELPER_CHECK_COLUMNS = {
    "price_varies": "close",
    "timestamps_increasing": "timestamp",
    "calendar_gap": "timestamp",
    "daily_return_outlier": "close",
    "rows_per_symbol": "symbol",
}
_HELPER_INPUTS = {
    _STEP: ("symbol", "timestamp"),
    _GAP: ("symbol", "timestamp"),
    _RETURN: ("symbol", "close"),
    _ROWS: ("symbol",),
    DISTINCT_COLUMN: ("symbol", "close"),
}


@dataclass(frozen=True)
class Check:
    """One check of the suite; ``needs`` lists the (helper) columns it runs on."""

    name: str
    column: str | None
    critical: bool
    problem: str
    needs: tuple[str, ...]  # columns (or helper columns) that must be usable to run it
    expectation: Expectation


def build_checks(
    max_calendar_gap_days: int, max_abs_daily_return: float, min_rows_per_symbol: int
) -> list[Check]:
    """All checks, each with a fresh GE expectation (a suite takes ownership of its own)."""
    import great_expectations.expectations as gxe

    checks: list[Check] = []

    def add(name: str, problem: str, needs: Sequence[str], expectation: Expectation) -> None:
        critical = name not in _NON_CRITICAL
        expectation.severity = "critical" if critical else "warning"  # type: ignore[assignment]
        expectation.meta = {"check": name}
        column = getattr(expectation, "column", None) or getattr(expectation, "column_A", None)
        if name in _HELPER_CHECK_COLUMNS:
            column = _HELPER_CHECK_COLUMNS[name]
        checks.append(Check(name, column, critical, problem, tuple(needs), expectation))

    between = gxe.ExpectColumnValuesToBeBetween
    gap, ret = max_calendar_gap_days, max_abs_daily_return
    rows = min_rows_per_symbol
    # A table reads better than ruff's one-argument-per-line layout here.
    # fmt: off
    add("table_not_empty", "the table has no rows; need at least 1", (),
        gxe.ExpectTableRowCountToBeBetween(min_value=1))
    for col in REQUIRED_COLUMNS:
        add(f"{col}_present", f"required column '{col}' is missing", (),
            gxe.ExpectColumnToExist(column=col))
    add("timestamp_type", f"'timestamp' is not {_TIMESTAMP_TYPE}", ["timestamp_any"],
        gxe.ExpectColumnTypeToBe(column="timestamp", type_=_TIMESTAMP_TYPE))
    for col in _NUMERIC_COLUMNS:
        add(f"{col}_type", f"'{col}' is not numeric (float64)", [f"{col}_any"],
            gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=_NUMERIC_TYPES))
    for col in REQUIRED_COLUMNS:
        add(f"{col}_not_null", f"null values in '{col}'", [col],
            gxe.ExpectColumnValuesToNotBeNull(column=col))
    for col in _NUMERIC_COLUMNS:
        # +/-inf lie outside the finite float range; NaN is left to the not-null check.
        add(f"{col}_finite", f"infinite values in '{col}'", [col],
            between(column=col, min_value=-_FLOAT_MAX, max_value=_FLOAT_MAX))
    for col in _PRICE_COLUMNS:
        add(f"{col}_positive", f"non-positive prices in '{col}' (must be > 0)", [col],
            between(column=col, min_value=0, strict_min=True))
    add("volume_non_negative", "negative values in 'volume'", ["volume"],
        between(column="volume", min_value=0))
    for big, small in _OHLC_ORDER:
        add(f"{big}_ge_{small}", f"OHLC inconsistent: '{big}' < '{small}'", [big, small],
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=big, column_B=small, or_equal=True,
                ignore_row_if="either_value_is_missing"))
    add("unique_symbol_timestamp", "duplicate (symbol, timestamp) rows",
        ["symbol", "timestamp"],
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "timestamp"]))
    add("timestamps_increasing",
        "timestamps not strictly increasing within a symbol (unsorted or repeated)", [_STEP],
        between(column=_STEP, min_value=0, strict_min=True,
                description="seconds since the symbol's previous bar are > 0"))
    add("calendar_gap", f"calendar gap between bars > {gap} days", [_GAP],
        between(column=_GAP, max_value=gap,
                description=f"calendar days since the symbol's previous bar are <= {gap}"))
    add("daily_return_outlier", f"|close-to-close return| > {ret:g}", [_RETURN],
        between(column=_RETURN, min_value=-ret, max_value=ret,
                description=f"the symbol's close-to-close return is within +/-{ret:g}"))
    add("price_varies", "symbols whose close never changes (a constant series: no "
        "returns, no training windows)", [DISTINCT_COLUMN],
        between(column=DISTINCT_COLUMN, min_value=2,
                description="each symbol has at least 2 distinct closes"))
    add("price_magnitude", f"prices outside {_MIN_PRICE:g}..{_MAX_PRICE:g} (a unit or "
        "scale error)", ["close"],
        between(column="close", min_value=_MIN_PRICE, max_value=_MAX_PRICE))
    add("rows_per_symbol", f"symbols with fewer than {rows} rows", [_ROWS],
        between(column=_ROWS, min_value=rows,
                description=f"each symbol has at least {rows} rows"))
    # fmt: on
    return checks


def prepare_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, set[str], dict[str, str]]:
    """Return the frame handed to GE, the usable column names and dtype problems.

    A column is usable when the checks depending on it can run: present, and for
    ``timestamp`` any datetime64 dtype, for prices/volume a non-bool numeric dtype.
    ``<col>_any`` marks mere presence (the type checks need only that).
    """
    present = [c for c in REQUIRED_COLUMNS if c in df.columns]
    frame = df.loc[:, present].reset_index(drop=True)
    usable = {f"{c}_any" for c in present}
    details: dict[str, str] = {}
    if "symbol" in present:
        usable.add("symbol")
    if "timestamp" in present:
        dtype = frame["timestamp"].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            usable.add("timestamp")
        details["timestamp"] = f"dtype is {dtype}; {_FIX_HINT}"
    for col in _NUMERIC_COLUMNS:
        if col in present:
            dtype = frame[col].dtype
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                usable.add(col)
            details[col] = f"dtype is {dtype}; {_FIX_HINT}"

    # Per-symbol helpers in the given row order, so an unsorted table shows up as steps <= 0.
    if "symbol" in usable:
        groups = frame.groupby("symbol", sort=False)
        # float: rows whose symbol is null (reported by symbol_not_null) get NaN, not a crash
        frame[_ROWS] = groups["symbol"].transform("size").astype("float64")
        usable.add(_ROWS)
        if "timestamp" in usable:
            step = groups["timestamp"].diff()
            frame[_STEP] = step.dt.total_seconds()
            frame[_GAP] = frame[_STEP] / 86_400.0
            usable |= {_STEP, _GAP}
        if "close" in usable:
            close = frame["close"].astype("float64")
            previous = close.groupby(frame["symbol"], sort=False).shift(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                frame[_RETURN] = close / previous - 1.0
            usable.add(_RETURN)
            frame[DISTINCT_COLUMN] = (
                close.groupby(frame["symbol"], sort=False).transform("nunique").astype("float64")
            )
            usable.add(DISTINCT_COLUMN)
    return frame, usable, details


def skip_reason(check: Check, df: pd.DataFrame, usable: set[str]) -> str:
    """Why ``check`` could not run: the missing or unusable columns it needs."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    # (column, token that must be usable); helper columns stand for the columns they need.
    tokens = [(c, c) for n in check.needs for c in _HELPER_INPUTS.get(n, ())]
    tokens += [(n.removesuffix("_any"), n) for n in check.needs if n not in _HELPER_INPUTS]
    blocked = list(dict.fromkeys(c for c, token in tokens if token not in usable))
    reasons = [
        f"'{c}' is missing" if c in missing else f"'{c}' has unusable dtype {df[c].dtype}"
        for c in blocked
    ]
    return f"{SKIPPED}: " + ", ".join(reasons) if reasons else SKIPPED
