"""The Great Expectations quality gate on real and deliberately corrupted OHLCV data."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from kubetrade.config import QualityConfig
from kubetrade.data.quality import (
    DataQualityValidator,
    QualityReport,
    ensure_quality,
    write_data_docs,
)
from kubetrade.data.sources import select
from kubetrade.errors import DataError, QualityGateError


@pytest.fixture(scope="module")
def validator() -> DataQualityValidator:
    # One validator (one GE context) for the module: context creation is the slow part.
    return DataQualityValidator()


@pytest.fixture(scope="module")
def small(embedded: pd.DataFrame) -> pd.DataFrame:
    """Two real symbols over 2012 (about 500 rows): quick to validate."""
    return select(embedded, ["AAPL", "MSFT"], "2012-01-01", "2012-12-31")


@pytest.fixture(scope="module")
def report_of(small, validator) -> Callable[[str], QualityReport]:
    """Report for a named corruption of ``small`` ("clean" for none), computed once per module.

    Validating costs ~1-2 s of GE overhead per call whatever the size, so tests share reports.
    """
    cache: dict[str, QualityReport] = {}
    corruptions = {c[0]: c[1] for c in CORRUPTIONS} | {"clean": lambda df: df}

    def get(case: str) -> QualityReport:
        if case not in cache:
            cache[case] = validator.validate_batch(corruptions[case](small))
        return cache[case]

    return get


def _failed(report: QualityReport) -> set[str]:
    return {r.name for r in report.results if not r.success}


def _result(report: QualityReport, name: str):
    return next(r for r in report.results if r.name == name)


def test_clean_pipeline_range_scores_one(embedded, validator):
    df = select(embedded, ["AAPL", "GOOG", "IBM", "MSFT"], "2005-01-01", "2013-03-01")
    report = validator.validate_batch(df)
    assert report.overall_score == 1.0
    assert report.passed
    assert report.issues == []
    assert report.n_rows == len(df)
    assert report.n_symbols == 4


def test_full_embedded_data_only_flags_the_real_aapl_crash(embedded, validator):
    # AAPL fell 51.9% on 2000-09-29 (profit warning): a real move above the 0.5 bound.
    # The 9/11 market closure (2001-09-10 -> 2001-09-17, 7 days) stays within 10 days.
    report = validator.validate_batch(embedded)
    assert _failed(report) == {"daily_return_outlier"}
    assert report.passed  # non-critical
    assert 0.95 < report.overall_score < 1.0
    (issue,) = report.issues
    assert "AAPL 2000-09-29" in issue
    assert "1 of" in issue


def test_tighter_gap_bound_finds_the_911_closure(embedded):
    df = select(embedded, ["IBM"], "2001-01-01", "2001-12-31")
    report = DataQualityValidator(max_calendar_gap_days=5).validate_batch(df)
    gap = _result(report, "calendar_gap")
    assert not gap.success and not gap.critical
    assert any(e.startswith("IBM 2001-09-17") for e in gap.examples)
    assert report.passed


def _set(col: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def corrupt(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out.loc[row, col] = value
        return out

    return corrupt


def _swap_high_low(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[20, ["high", "low"]] = out.loc[20, ["low", "high"]].to_numpy()
    return out


def _duplicate_rows(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[30:32]]).sort_values(["symbol", "timestamp"], kind="stable")


def _unsorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.iloc[::-1]


def _string_prices(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(close=df["close"].map(lambda v: f"{v:.2f}"))


def _naive_timestamps(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(timestamp=df["timestamp"].dt.tz_localize(None))


# (case id, corruption, failing check, count of bad rows or None, text the issue must contain)
CORRUPTIONS = [
    ("nan_close", _set("close", 10, np.nan), "close_not_null", 1, "null values in 'close'"),
    ("inf_high", _set("high", 11, np.inf), "high_finite", 1, "infinite values in 'high'"),
    ("neg_open", _set("open", 12, -3.0), "open_positive", 1, "non-positive prices in 'open'"),
    ("zero_close", _set("close", 13, 0.0), "close_positive", 1, "non-positive prices in 'close'"),
    ("neg_volume", _set("volume", 14, -1.0), "volume_non_negative", 1, "negative values"),
    ("high_lt_low", _swap_high_low, "high_ge_low", 1, "'high' < 'low'"),
    ("duplicates", _duplicate_rows, "unique_symbol_timestamp", 4, "duplicate (symbol, timestamp)"),
    ("unsorted", _unsorted, "timestamps_increasing", None, "not strictly increasing"),
    ("missing_col", lambda df: df.drop(columns="volume"), "volume_present", None, "missing"),
    ("missing_close", lambda df: df.drop(columns="close"), "close_present", None, "missing"),
    ("str_prices", _string_prices, "close_type", None, "dtype is object"),
    ("naive_ts", _naive_timestamps, "timestamp_type", None, "datetime64[ns, UTC]"),
    ("empty", lambda df: df.iloc[:0], "table_not_empty", None, "no rows"),
]


@pytest.mark.parametrize(
    ("case", "check", "count", "text"),
    [(c[0], *c[2:]) for c in CORRUPTIONS],
    ids=[c[0] for c in CORRUPTIONS],
)
def test_corruptions_fail_the_gate_with_a_named_issue(report_of, case, check, count, text):
    report = report_of(case)
    result = _result(report, check)
    assert not result.success
    assert result.critical
    assert not report.passed
    if count is not None:
        assert result.unexpected_count == count
    issue = next(i for i in report.issues if i.startswith(f"{check}:"))
    assert text in issue


def test_small_clean_sample_passes(report_of):
    report = report_of("clean")
    assert report.passed and report.overall_score == 1.0


def test_nan_close_issue_names_the_row(small, report_of):
    report = report_of("nan_close")
    row = small.loc[10]
    expected = f"{row['symbol']} {row['timestamp']:%Y-%m-%d} (close=nan)"
    assert expected in _result(report, "close_not_null").examples
    # Only the NaN itself is reported: the return and OHLC checks ignore missing values.
    assert _failed(report) == {"close_not_null"}


def test_missing_column_skips_dependent_checks_as_failed(report_of):
    report = report_of("missing_close")
    skipped = {r.name for r in report.results if r.skipped}
    assert {"close_not_null", "close_positive", "high_ge_close", "daily_return_outlier"} <= skipped
    assert all(not r.success for r in report.results if r.skipped)
    n_ok = sum(r.success for r in report.results)
    assert report.overall_score == pytest.approx(n_ok / len(report.results))
    assert any("'close' is missing" in i and "not run" in i for i in report.issues)


def test_string_prices_do_not_reach_value_checks(report_of):
    report = report_of("str_prices")
    assert _result(report, "close_positive").skipped
    assert _result(report, "open_positive").success  # other columns still checked


def test_ten_x_spike_is_a_non_critical_issue(small, validator):
    df = small.copy()
    df.loc[100, ["open", "high", "low", "close"]] *= 10  # stays OHLC-consistent
    report = validator.validate_batch(df)
    assert _failed(report) == {"daily_return_outlier"}
    result = _result(report, "daily_return_outlier")
    assert not result.critical
    assert result.unexpected_count == 2  # the jump up and the fall back
    assert report.passed
    row = small.loc[100]
    assert f"{row['symbol']} {row['timestamp']:%Y-%m-%d}" in report.issues[0]


def test_symbol_with_three_rows_is_flagged(small, validator):
    tiny = small[small["symbol"] == "AAPL"].head(3).assign(symbol="TINY")
    report = validator.validate_batch(pd.concat([small, tiny], ignore_index=True))
    result = _result(report, "rows_per_symbol")
    assert not result.success and not result.critical
    assert result.examples == ["TINY (3 rows)"]
    assert report.passed


def test_ensure_quality_raises_with_failed_checks(small, validator):
    df = small.copy()
    df.loc[[5, 6], "close"] = np.nan
    df.loc[7, "open"] = -1.0
    with pytest.raises(QualityGateError) as info:
        ensure_quality(df, validator)
    message = str(info.value)
    assert message.startswith("data quality gate failed (score ")
    assert "\n" not in message
    failed = message.split("): ", 1)[1].split("; ")
    assert any(f.startswith("close_not_null:") and "2 of" in f for f in failed)
    assert any(f.startswith("open_positive:") for f in failed)


def test_ensure_quality_low_score_message(small):
    strict = DataQualityValidator(min_score=1.0, max_abs_daily_return=0.001)
    with pytest.raises(
        QualityGateError, match=r"^data quality gate failed \(score 0\.\d\d < 1\.00\)"
    ):
        ensure_quality(small, strict)


def test_ensure_quality_reuses_a_report(small, report_of):
    report = report_of("clean")
    assert ensure_quality(small, report=report) is report


def test_report_to_dict_is_json(report_of):
    data = json.loads(json.dumps(report_of("nan_close").to_dict()))
    assert data["passed"] is False
    assert data["n_failed"] == 1
    (bad,) = [r for r in data["results"] if not r["success"]]
    assert bad["name"] == "close_not_null" and bad["critical"] is True


def test_ge_suite_carries_severity(report_of):
    report = report_of("clean")
    assert report.validation is not None
    severities = {
        r.expectation_config.meta["check"]: str(r.expectation_config.severity.value)
        for r in report.validation.results
    }
    assert severities["daily_return_outlier"] == "warning"
    assert severities["close_not_null"] == "critical"
    assert len(severities) == len(report.results)


def test_from_config_and_bad_arguments():
    v = DataQualityValidator.from_config(
        QualityConfig(min_score=0.9, max_abs_daily_return=0.3, max_calendar_gap_days=7)
    )
    assert (v.min_score, v.max_abs_daily_return, v.max_calendar_gap_days) == (0.9, 0.3, 7)
    with pytest.raises(DataError, match="min_score"):
        DataQualityValidator(min_score=1.5)
    with pytest.raises(DataError, match="DataFrame"):
        v.validate_batch([1, 2, 3])  # type: ignore[arg-type]


def test_write_data_docs(report_of, tmp_path):
    report = report_of("nan_close")
    page = write_data_docs(report, tmp_path / "docs", page="validation")
    index = tmp_path / "docs" / "index.html"
    assert "<html" in index.read_text().lower()
    assert page.relative_to(tmp_path / "docs").parts[0] == "validations"
    assert page.relative_to(tmp_path / "docs").as_posix() in index.read_text()
    html = page.read_text()
    assert "<html" in html.lower()
    assert "Failed" in html and "close" in html  # GE rendered the failing not-null check


def test_write_data_docs_from_validator_returns_index(small, tmp_path):
    fresh = DataQualityValidator()
    fresh.validate_batch(small.head(40))
    index = write_data_docs(fresh, tmp_path)
    assert index == tmp_path.resolve() / "index.html"
    assert "<html" in index.read_text().lower()


def test_write_data_docs_needs_a_validation(tmp_path):
    with pytest.raises(DataError, match="validate_batch"):
        write_data_docs(DataQualityValidator(), tmp_path)


def test_frame_without_columns_scores_zero_without_crashing(validator):
    report = validator.validate_batch(pd.DataFrame())
    assert report.overall_score == 0.0
    assert not report.passed
    assert any("'close' is missing" in i for i in report.issues)


def test_null_symbol_is_reported_not_crashing(small, validator):
    df = small.copy()
    df.loc[3, "symbol"] = None
    report = validator.validate_batch(df)
    assert _failed(report) == {"symbol_not_null"}
    assert not report.passed
