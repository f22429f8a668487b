"""Data-quality gate for the canonical OHLCV table, built on Great Expectations 1.x.

``DataQualityValidator().validate_batch(df)`` runs one GE expectation suite on
the table and returns a :class:`QualityReport` (the guide's ``overall_score``
and ``issues``). Per-symbol quantities GE cannot express (timestamp steps,
calendar gaps, close-to-close returns, rows per symbol) are computed
vectorised with pandas as helper columns and checked by ordinary GE column
expectations, so every check appears in GE's validation result and Data Docs.

Critical checks (the gate fails on any): required columns present and typed,
non-empty table, no nulls or infinities, positive prices, non-negative volume,
OHLC consistency, unique and strictly increasing ``(symbol, timestamp)``.
Non-critical checks (they only lower the score): calendar gaps, return
outliers, too few rows per symbol.

The suite itself (the checks and the helper columns) is :mod:`kubetrade.data.quality_suite`.
Why this module is long: it is the validator's whole run (suite, GE plumbing, report, the
issue lines of failed and skipped checks) plus the Data Docs writer, which needs the
validator's own GE context; each part is short and reads best next to the others.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from kubetrade.data.quality_suite import (
    DISTINCT_COLUMN,
    REQUIRED_COLUMNS,
    SKIPPED,
    Check,
    build_checks,
    prepare_frame,
    skip_reason,
)
from kubetrade.errors import DataError, QualityGateError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

    from kubetrade.config import QualityConfig

__all__ = [
    "REQUIRED_COLUMNS",
    "ExpectationResult",
    "QualityReport",
    "DataQualityValidator",
    "ensure_quality",
    "ensure_enough_history",
    "write_data_docs",
]

_N_EXAMPLES = 5
_SUITE_NAME = "kubetrade_ohlcv_quality"


@dataclass(frozen=True)
class ExpectationResult:
    """Outcome of one check.

    Attributes:
        name: stable check name, e.g. ``close_not_null``.
        column: the column checked, or ``None`` for table-level checks.
        success: whether the check passed (a skipped check counts as failed).
        critical: whether a failure fails the gate regardless of the score.
        unexpected_count: number of offending rows (0 for schema/table checks).
        examples: a few offending rows, e.g. ``"AAPL 2000-03-08 (close=nan)"``.
        problem: what a failure means, in words.
        detail: extra context (observed value, why the check was skipped).
    """

    name: str
    column: str | None
    success: bool
    critical: bool
    unexpected_count: int = 0
    examples: list[str] = field(default_factory=list)
    problem: str = ""
    detail: str = ""

    @property
    def skipped(self) -> bool:
        """Whether the check could not run (a column it needs is missing or unusable)."""
        return self.detail.startswith(SKIPPED)

    def issue(self, n_rows: int) -> str:
        """One human-readable line for a failed check."""
        facts = [f"{self.unexpected_count} of {n_rows} rows"] if self.unexpected_count else []
        facts += [self.detail] if self.detail else []
        text = f"{self.name}: {self.problem}" + (f" ({'; '.join(facts)})" if facts else "")
        if self.examples:
            text += ", e.g. " + ", ".join(self.examples)
        return text


@dataclass
class QualityReport:
    """Result of :meth:`DataQualityValidator.validate_batch`."""

    overall_score: float
    passed: bool
    min_score: float
    n_rows: int
    n_symbols: int
    results: list[ExpectationResult]
    issues: list[str]
    validation: ExpectationSuiteValidationResult | None = field(
        default=None, repr=False, compare=False
    )
    validator: DataQualityValidator | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> list[ExpectationResult]:
        """Failed checks, critical ones first."""
        bad = [r for r in self.results if not r.success]
        return sorted(bad, key=lambda r: not r.critical)

    @property
    def critical_failures(self) -> list[ExpectationResult]:
        """Failed critical checks."""
        return [r for r in self.results if r.critical and not r.success]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no GE objects)."""
        return {
            "overall_score": self.overall_score,
            "passed": self.passed,
            "min_score": self.min_score,
            "n_rows": self.n_rows,
            "n_symbols": self.n_symbols,
            "n_checks": len(self.results),
            "n_failed": len(self.failed),
            "issues": list(self.issues),
            "results": [
                {
                    "name": r.name,
                    "column": r.column,
                    "success": r.success,
                    "critical": r.critical,
                    "unexpected_count": int(r.unexpected_count),
                    "examples": list(r.examples),
                    "problem": r.problem,
                    "detail": r.detail,
                }
                for r in self.results
            ],
        }


class DataQualityValidator:
    """Validates OHLCV tables with a Great Expectations suite.

    The GE ephemeral context is created lazily, once per validator, and kept so
    :func:`write_data_docs` can render Data Docs after :meth:`validate_batch`.

    Args:
        min_score: lowest ``overall_score`` (fraction of checks passed) that passes.
        max_abs_daily_return: largest allowed absolute close-to-close return per symbol.
        max_calendar_gap_days: largest allowed calendar gap between a symbol's bars.
        min_rows_per_symbol: fewer rows than this for a symbol is a (non-critical) issue.
    """

    def __init__(
        self,
        min_score: float = 0.8,
        max_abs_daily_return: float = 0.5,
        max_calendar_gap_days: int = 10,
        min_rows_per_symbol: int = 30,
    ) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise DataError(f"min_score must be in [0, 1], got {min_score!r}")
        if not max_abs_daily_return > 0:
            raise DataError(f"max_abs_daily_return must be > 0, got {max_abs_daily_return!r}")
        if max_calendar_gap_days < 1:
            raise DataError(f"max_calendar_gap_days must be >= 1, got {max_calendar_gap_days!r}")
        if min_rows_per_symbol < 1:
            raise DataError(f"min_rows_per_symbol must be >= 1, got {min_rows_per_symbol!r}")
        self.min_score = float(min_score)
        self.max_abs_daily_return = float(max_abs_daily_return)
        self.max_calendar_gap_days = int(max_calendar_gap_days)
        self.min_rows_per_symbol = int(min_rows_per_symbol)
        self._context: AbstractDataContext | None = None
        self._batch_definition: Any = None
        self._docs_sites: dict[Path, str] = {}
        self.last_report: QualityReport | None = None

    @classmethod
    def from_config(cls, config: QualityConfig) -> DataQualityValidator:
        """Build from the ``quality`` section of the pipeline config."""
        return cls(
            min_score=config.min_score,
            max_abs_daily_return=config.max_abs_daily_return,
            max_calendar_gap_days=config.max_calendar_gap_days,
        )

    @property
    def context(self) -> AbstractDataContext:
        """The validator's GE ephemeral context (created on first use)."""
        if self._context is None:
            self._context, self._batch_definition = _new_context()
        return self._context

    def validate_batch(self, df: pd.DataFrame) -> QualityReport:
        """Run every check on ``df`` and return the report (never raises on bad data).

        Extra columns (e.g. engineered features) are ignored; only the canonical
        OHLCV columns are checked.
        """
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"validate_batch expects a pandas DataFrame, got {type(df).__name__}")
        frame, usable, type_details = prepare_frame(df)
        checks = build_checks(
            self.max_calendar_gap_days, self.max_abs_daily_return, self.min_rows_per_symbol
        )
        runnable = [c for c in checks if all(n in usable for n in c.needs)]
        validation = self._run_suite(frame, runnable, usable) if runnable else None

        by_name = _collect(validation) if validation is not None else {}
        results: list[ExpectationResult] = []
        for check in checks:
            if check.name in by_name:
                success, count, examples, detail = by_name[check.name]
            else:
                success, count, examples = False, 0, []
                detail = skip_reason(check, df, usable)
            if check.name.endswith("_type") and not success and check.column in type_details:
                detail = type_details[check.column]
            if check.name.endswith("_present") and not success:
                shown = ", ".join(map(str, list(df.columns)[:10])) or "none"
                detail = f"columns are: {shown}; rename with load_files(column_map=...)"
            if check.name == "rows_per_symbol" and not success and check.name in by_name:
                examples = _short_symbols(frame, self.min_rows_per_symbol)
            if check.name == "price_varies" and not success and check.name in by_name:
                examples = _constant_symbols(frame)
            results.append(
                ExpectationResult(
                    name=check.name,
                    column=check.column,
                    success=success,
                    critical=check.critical,
                    unexpected_count=count,
                    examples=examples,
                    problem=check.problem,
                    detail=detail,
                )
            )

        score = sum(r.success for r in results) / len(results)
        passed = score >= self.min_score and not any(r.critical and not r.success for r in results)
        n_symbols = int(frame["symbol"].nunique()) if "symbol" in usable else 0
        report = QualityReport(
            overall_score=score,
            passed=passed,
            min_score=self.min_score,
            n_rows=len(frame),
            n_symbols=n_symbols,
            results=results,
            issues=[],
            validation=validation,
            validator=self,
        )
        report.issues = _issues(report)
        self.last_report = report
        return report

    # -- GE plumbing -------------------------------------------------------------------------

    def _run_suite(
        self, frame: pd.DataFrame, checks: Sequence[Check], usable: set[str]
    ) -> ExpectationSuiteValidationResult:
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier

        ctx = self.context
        # One suite name per validator: each batch replaces the previous suite, so the Data
        # Docs site lists runs of one suite instead of one suite per call.
        for store in (ctx.validation_definitions, ctx.suites):
            # Absent on the first call; GE raises different types for that.
            with contextlib.suppress(Exception):
                store.delete(_SUITE_NAME)
        suite = gx.ExpectationSuite(
            name=_SUITE_NAME,
            expectations=[c.expectation for c in checks],
        )
        suite = ctx.suites.add(suite)
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=_SUITE_NAME, data=self._batch_definition, suite=suite)
        )
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": _N_EXAMPLES,
        }
        if {"symbol", "timestamp"} <= usable:
            result_format["unexpected_index_column_names"] = ["symbol", "timestamp"]
        run_id = RunIdentifier(run_name="kubetrade-quality", run_time=dt.datetime.now(dt.UTC))
        return definition.run(
            batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id
        )


def ensure_quality(
    df: pd.DataFrame,
    validator: DataQualityValidator | None = None,
    *,
    report: QualityReport | None = None,
) -> QualityReport:
    """Validate ``df`` and raise :class:`QualityGateError` unless the report passed.

    Args:
        df: the table to gate.
        validator: validator to use (default thresholds when ``None``).
        report: an existing report for ``df``; skips re-validation.

    Raises:
        QualityGateError: one line, ``data quality gate failed (score 0.62 < 0.80): ...``
            followed by the failed checks joined by ``'; '``.
    """
    if report is None:
        report = (validator or DataQualityValidator()).validate_batch(df)
    if not report.passed:
        why = "; ".join(report.issues) or "critical check failed"
        if report.overall_score < report.min_score:
            head = f"score {report.overall_score:.2f} < {report.min_score:.2f}"
        else:  # the score alone would pass; a critical check failed
            head = f"score {report.overall_score:.2f} >= {report.min_score:.2f}, critical failures"
        if report.critical_failures:
            fix = "fix or drop the listed rows in the source data"
        else:  # only non-critical checks failed, but too many of them
            fix = "fix the listed rows in the source data or lower quality.min_score"
        message = f"data quality gate failed ({head}): {why} -- {fix}"
        raise QualityGateError(message.replace("\n", " "))
    return report


def ensure_enough_history(
    df: pd.DataFrame, min_rows: int, reason: str = "to build one training window"
) -> None:
    """Raise :class:`DataError` naming every symbol with fewer than ``min_rows`` rows.

    The quality gate only warns about short symbols (``rows_per_symbol`` is non-critical);
    a symbol too short for a single training window cannot be used at all, so a run
    refuses it before any work starts.
    """
    if df.empty or "symbol" not in df.columns:
        raise DataError("no rows to train on; widen start_date/end_date or add data")
    sizes = df.groupby("symbol", sort=True).size()
    short = sizes[sizes < min_rows]
    if not short.empty:
        shown = ", ".join(f"{sym} ({n} rows)" for sym, n in short.head(_N_EXAMPLES).items())
        raise DataError(
            f"too little history: {shown}; need at least {min_rows} rows per symbol "
            f"{reason}; drop the symbol(s) from symbols or widen start_date/end_date"
        )


def write_data_docs(
    report_or_validation: QualityReport | DataQualityValidator | ExpectationSuiteValidationResult,
    out_dir: str | Path,
    *,
    page: Literal["index", "validation"] = "index",
) -> Path:
    """Build a GE Data Docs site for one validation into ``out_dir``.

    Args:
        report_or_validation: a :class:`QualityReport` (its validator's GE context is
            reused), a :class:`DataQualityValidator` (its last report), or a raw GE
            ``ExpectationSuiteValidationResult``.
        out_dir: directory for the site (created); holds ``index.html``, the
            validation page under ``validations/`` and GE's static assets.
        page: which page's path to return: the site ``index`` or the ``validation``
            page itself (the one to attach as a single-file HTML artifact).

    Returns:
        Path of the requested HTML page.
    """
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    validator: DataQualityValidator | None = None
    if isinstance(report_or_validation, DataQualityValidator):
        if report_or_validation.last_report is None:
            raise DataError(
                "write_data_docs got a DataQualityValidator that has not validated anything; "
                "call validator.validate_batch(df) first or pass its QualityReport"
            )
        report_or_validation = report_or_validation.last_report
    if isinstance(report_or_validation, QualityReport):
        validation = report_or_validation.validation
        validator = report_or_validation.validator
        if validation is None:
            raise DataError(
                "this QualityReport has no GE validation result (no check could run, e.g. "
                "every column is missing); fix the input table and validate again"
            )
    elif isinstance(report_or_validation, ExpectationSuiteValidationResult):
        validation = report_or_validation
    else:
        raise DataError(
            "write_data_docs expects a QualityReport or a GE ExpectationSuiteValidationResult, "
            f"got {type(report_or_validation).__name__}"
        )
    validator = validator or DataQualityValidator()
    ctx = validator.context
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    site = validator._docs_sites.get(out)
    if site is None:
        site = f"kubetrade_docs_{len(validator._docs_sites)}"
        # Typed Any: GE's TypedDict omits the documented show_how_to_buttons key.
        site_config: Any = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(out),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        ctx.add_data_docs_site(site, site_config)
        validator._docs_sites[out] = site

    run_id = validation.meta.get("run_id")
    if not isinstance(run_id, RunIdentifier):
        run_id = RunIdentifier(run_name="kubetrade-quality", run_time=dt.datetime.now(dt.UTC))
    suite_key = ExpectationSuiteIdentifier(name=validation.suite_name)
    key = ValidationResultIdentifier(
        expectation_suite_identifier=suite_key,
        run_id=run_id,
        batch_identifier=validation.batch_id or "__none__",
    )
    # vd.run already stored our own results; storing again is idempotent and makes foreign
    # results renderable too.
    ctx.validation_results_store.set(key, validation)
    resources: list[Any] = [key]
    if validation.suite_name in {s.name for s in ctx.suites.all()}:
        resources.append(suite_key)  # the suite page the index links to
    ctx.build_data_docs(site_names=[site], resource_identifiers=resources)
    index = out / "index.html"
    if page == "index":
        target = index
    else:
        # Same layout as GE's ValidationResultIdentifier.to_tuple: suite/run/time/batch.html
        target = out.joinpath("validations", *key.to_tuple()[:-1], f"{key.to_tuple()[-1]}.html")
    if not target.is_file():  # pragma: no cover - GE contract
        raise DataError(f"GE did not write the Data Docs page {target}")
    return target


# -- pure helpers ------------------------------------------------------------------------------


def _new_context() -> tuple[AbstractDataContext, Any]:
    # GE phones home unless told otherwise; respect an explicit user setting.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx  # imported here: GE takes seconds to import
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        ctx.data_sources.add_pandas("kubetrade")
        .add_dataframe_asset("ohlcv")
        .add_batch_definition_whole_dataframe("whole_table")
    )
    return ctx, batch_definition


def _collect(
    validation: ExpectationSuiteValidationResult,
) -> dict[str, tuple[bool, int, list[str], str]]:
    """Map check name -> (success, unexpected_count, examples, detail) from GE's result."""
    out: dict[str, tuple[bool, int, list[str], str]] = {}
    for res in validation.results:
        config = res.expectation_config
        name = str((config.meta or {}).get("check")) if config is not None else ""
        result = res.result or {}
        detail = ""
        if res.exception_info and res.exception_info.get("raised_exception"):
            detail = f"GE error: {res.exception_info.get('exception_message')}"
        elif "observed_value" in result and not res.success:
            detail = f"observed {result['observed_value']}"
        examples = [_format_example(e) for e in result.get("partial_unexpected_index_list") or []]
        out[name] = (bool(res.success), int(result.get("unexpected_count") or 0), examples, detail)
    return out


def _format_example(entry: Any) -> str:
    if not isinstance(entry, dict):
        return f"row {entry}"
    label = " ".join(_format_value(entry[k]) for k in ("symbol", "timestamp") if k in entry)
    values = ", ".join(
        f"{k.removeprefix('_kt_')}={_format_value(v)}"
        for k, v in entry.items()
        if k not in ("symbol", "timestamp")
    )
    return f"{label} ({values})" if values else label


def _format_value(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat()
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _short_symbols(frame: pd.DataFrame, min_rows: int) -> list[str]:
    sizes = frame.groupby("symbol", sort=False).size()
    short = sizes[sizes < min_rows]
    return [f"{sym} ({n} rows)" for sym, n in short.head(_N_EXAMPLES).items()]


def _constant_symbols(frame: pd.DataFrame) -> list[str]:
    """``SYMBOL (close always X)`` for each symbol whose close never changes."""
    constant = frame[frame[DISTINCT_COLUMN] < 2].groupby("symbol", sort=False)["close"].first()
    return [f"{sym} (close always {v:g})" for sym, v in constant.head(_N_EXAMPLES).items()]


def _issues(report: QualityReport) -> list[str]:
    """Issue lines: one per failed check, plus one line for all skipped checks."""
    lines = [r.issue(report.n_rows) for r in report.failed if not r.skipped]
    skipped = [r for r in report.failed if r.skipped]
    if skipped:
        prefix = f"{SKIPPED}: "
        reasons = dict.fromkeys(
            reason for r in skipped for reason in r.detail.removeprefix(prefix).split(", ")
        )
        lines.append(
            f"{len(skipped)} checks not run (counted as failed) because "
            f"{', '.join(reasons)}: {', '.join(r.name for r in skipped)}"
        )
    return lines
