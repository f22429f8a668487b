"""Self-contained HTML report comparing backtests (charts embedded as base64 PNG).

One report holds any number of strategies (the hybrid model, each RL agent,
the ensemble, ...) beside the equal-weight buy & hold of their assets: equity
curves, drawdowns, positions, a metrics table and trade counts by exit reason.
The file has no external references, so it can be opened offline, attached to
an MLflow run or shown as a KFP ``HTML`` artifact.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from kubetrade.backtest.metrics import drawdown_series
from kubetrade.backtest.result import EXIT_REASONS, BacktestResult
from kubetrade.errors import ConfigError

__all__ = ["write_backtest_report", "write_walk_forward_report"]

# (label, result key, format) of the metrics table, in display order.
_TABLE = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility (ann.)", "annual_volatility", "pct"),
    ("Sharpe", "sharpe_ratio", "num"),
    ("Sortino", "sortino_ratio", "num"),
    ("Calmar", "calmar_ratio", "num"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Max DD duration (bars)", "max_drawdown_duration", "int"),
    ("Win rate", "win_rate", "pct"),
    ("Profit factor", "profit_factor", "num"),
    ("Trades", "num_trades", "int"),
    ("Turnover (ann.)", "turnover", "num"),
    ("Exposure", "exposure", "pct"),
    ("Costs", "total_costs", "money"),
    ("Final equity", "final_equity", "money"),
)
_MAX_ASSETS_PLOTTED = 10

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f3f3f3}
tr.benchmark td{color:#555;font-style:italic}img{max-width:100%}.meta{color:#666;font-size:.9em}
"""


def _format(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:.3f}"


def _png(fig: object) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: object, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _benchmarks(results: Mapping[str, BacktestResult]) -> dict[str, tuple[pd.Series, dict]]:
    """Distinct buy & hold curves: one when every strategy trades the same assets and period."""
    distinct: dict[tuple, tuple[str, pd.Series, dict]] = {}
    for name, res in results.items():
        curve = res.buy_and_hold_equity
        key = (
            tuple(res.params.get("symbols", ())),
            curve.index[0],
            curve.index[-1],
            round(float(curve.iloc[-1]), 6),
        )
        distinct.setdefault(key, (name, curve, res.buy_and_hold_metrics))
    if len(distinct) == 1:
        ((_, curve, bench),) = distinct.values()
        return {"buy & hold": (curve, bench)}
    return {f"buy & hold ({name})": (curve, bench) for name, curve, bench in distinct.values()}


def _metrics_table(
    results: Mapping[str, BacktestResult], benchmarks: Mapping[str, tuple[pd.Series, dict]]
) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _, _ in _TABLE)
    rows = []
    for name, res in results.items():
        cells = "".join(f"<td>{_format(res[key], kind)}</td>" for _, key, kind in _TABLE)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    for label, (_, bench) in benchmarks.items():
        cells = "".join(
            f"<td>{_format(bench.get(key, math.nan), kind)}</td>" for _, key, kind in _TABLE
        )
        rows.append(f'<tr class="benchmark"><td>{html.escape(label)}</td>{cells}</tr>')
    return (
        f"<table><thead><tr><th>Strategy</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _trades_table(results: Mapping[str, BacktestResult]) -> str:
    head = "".join(f"<th>{reason}</th>" for reason in EXIT_REASONS)
    rows = []
    for name, res in results.items():
        counts = res.trades["exit_reason"].value_counts()
        cells = "".join(f"<td>{int(counts.get(reason, 0))}</td>" for reason in EXIT_REASONS)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return (
        f"<table><thead><tr><th>Strategy</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _params_table(results: Mapping[str, BacktestResult]) -> str:
    keys = [
        "start_date",
        "end_date",
        "symbols",
        "initial_capital",
        "transaction_costs",
        "slippage",
        "max_position_size",
        "stop_loss_pct",
        "take_profit_pct",
        "rebalance",
    ]
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = []
    for name, res in results.items():
        cells = "".join(
            f"<td>{html.escape(', '.join(v) if isinstance(v, list) else str(v))}</td>"
            for v in (res.params.get(k) for k in keys)
        )
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return (
        f"<table><thead><tr><th>Strategy</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def write_backtest_report(
    results: Mapping[str, BacktestResult] | BacktestResult,
    path: str | Path,
    title: str = "Backtest report",
) -> Path:
    """Write one self-contained HTML file comparing backtests.

    Args:
        results: one result, or strategy name -> result (the names label the
            charts and table rows).
        path: output ``.html`` file; parent folders are created.
        title: page heading.

    Returns:
        The path written.

    Raises:
        ConfigError: no results, or an entry is not a ``BacktestResult``.
    """
    from matplotlib.figure import Figure  # imported here: only reports need matplotlib

    if isinstance(results, BacktestResult):
        results = {results.name: results}
    if not results:
        raise ConfigError("backtest report: no results given; pass {name: BacktestResult}")
    for name, res in results.items():
        if not isinstance(res, BacktestResult):
            raise ConfigError(
                f"backtest report: entry {name!r} is a {type(res).__name__}, not a BacktestResult "
                "(pass what BacktestingEngine.run_backtest returns)"
            )
    benchmarks = _benchmarks(results)

    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    for name, res in results.items():
        ax.plot(res.equity.index, res.equity.to_numpy(), label=name, linewidth=1.2)
    for label, (curve, _) in benchmarks.items():
        ax.plot(
            curve.index, curve.to_numpy(), label=label, linestyle="--", color="0.35", linewidth=1.0
        )
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    equity_img = _img(fig, "equity curves")

    fig = Figure(figsize=(11, 3.5))
    ax = fig.add_subplot()
    for name, res in results.items():
        ax.plot(
            res.equity.index,
            100 * drawdown_series(res.equity.to_numpy()),
            label=name,
            linewidth=1.0,
        )
    for label, (curve, _) in benchmarks.items():
        ax.plot(
            curve.index,
            100 * drawdown_series(curve.to_numpy()),
            label=label,
            linestyle="--",
            color="0.35",
            linewidth=1.0,
        )
    ax.set_ylabel("drawdown (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    drawdown_img = _img(fig, "drawdowns")

    fig = Figure(figsize=(11, 2.4 * len(results)))
    axes = fig.subplots(len(results), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, res) in zip(axes, results.items(), strict=True):
        weights = res.positions
        # Many assets make an unreadable chart: show the most-held ones.
        held = weights.abs().mean().sort_values(ascending=False)
        for symbol in held.index[:_MAX_ASSETS_PLOTTED]:
            ax.plot(weights.index, weights[symbol].to_numpy(), label=str(symbol), linewidth=0.9)
        ax.plot(
            weights.index,
            np.abs(weights.to_numpy()).sum(axis=1),
            color="k",
            linewidth=0.8,
            alpha=0.5,
            label="gross",
        )
        ax.axhline(0.0, color="0.6", linewidth=0.6)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("weight")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, ncol=6)
    positions_img = _img(fig, "positions")

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">Generated {generated} by kubetrade. Signals fill at the next bar's open;
costs are traded notional x transaction cost; max drawdown is negative.</p>
<h2>Metrics</h2>{_metrics_table(results, benchmarks)}
<h2>Equity</h2>{equity_img}
<h2>Drawdown</h2>{drawdown_img}
<h2>Positions (weight of equity)</h2>{positions_img}
<h2>Trades by exit reason</h2>{_trades_table(results)}
<h2>Settings</h2>{_params_table(results)}
</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _ci_cell(ci: Mapping[str, float] | None) -> str:
    if not ci:
        return "—"
    mid = ci.get("mean", ci.get("value"))
    return f"{_format(mid, 'num')} [{_format(ci['low'], 'num')}, {_format(ci['high'], 'num')}]"


def write_walk_forward_report(
    aggregate: Mapping[str, object],
    folds: list[Mapping[str, object]],
    path: str | Path,
    title: str = "Walk-forward evaluation",
) -> Path:
    """Write the walk-forward folds as one self-contained HTML file: fold means with
    intervals beside the baselines, per-fold metrics, bootstrap intervals, the deflated Sharpe
    ratio, and each model's cumulative return over the test period with dates on the x axis
    (fold boundaries marked)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    agg: dict = dict(aggregate)
    names = list(agg["fold_mean"])
    rows = []
    for name in names:
        fm = agg["fold_mean"][name]
        whole = agg["whole_period"][name]
        dsr = whole.get("deflated_sharpe") or {}
        diff = whole.get("sharpe_minus_buy_and_hold_ci")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_ci_cell(fm.get('sharpe_ratio'))}</td>"
            f"<td>{_ci_cell(fm.get('accuracy'))}</td><td>{_ci_cell(whole.get('sharpe_ci'))}</td>"
            f"<td>{_ci_cell(whole.get('accuracy_ci'))}</td><td>{_ci_cell(diff)}</td>"
            f"<td>{_format(dsr.get('psr'), 'num')}</td><td>{_format(dsr.get('dsr'), 'num')}</td></tr>"
        )
    fold_rows = []
    for f in agg["folds"]:
        cells = "".join(
            f"<td>{_format(f['metrics'].get(n, {}).get('sharpe_ratio'), 'num')}</td>" for n in names
        )
        fold_rows.append(
            f"<tr><td>{f['fold']}</td><td>{f['test_period'][0]}..{f['test_period'][1]}</td>"
            f"<td>..{f['train_period'][1]}</td><td>{f['n_windows']}</td>{cells}</tr>"
        )
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    ordered = sorted(folds, key=lambda f: f["fold"])  # type: ignore[arg-type, return-value]
    dates = pd.to_datetime([t for f in ordered for t in f["series"]["timestamps"]])  # type: ignore[index]
    for name in names:
        values = [v for f in ordered for v in f["series"][name]]  # type: ignore[index]
        r = pd.Series([np.nan if v is None else v for v in values], index=dates, dtype=float)
        ax.plot(dates, (1 + r.fillna(0.0)).cumprod() - 1, label=name, linewidth=1.1)
    for f in ordered[1:]:
        ax.axvline(pd.Timestamp(f["test_period"][0]), color="0.6", linestyle=":")  # type: ignore[index]
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel("date (decision bar)")
    ax.set_ylabel("cumulative return")
    ax.legend(fontsize=8)
    trained = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
        for k, v in dict(agg.get("trained_on", {})).items()
    )
    pct = f"{100 * (1 - float(agg['alpha'])):g}%"
    header = "".join(
        f"<th>{h}</th>"
        for h in ("model", f"fold-mean Sharpe [{pct} t-CI]", f"fold-mean accuracy [{pct} t-CI]",
                  f"Sharpe, whole period [{pct} bootstrap]", "accuracy [bootstrap]",
                  "Sharpe − buy-and-hold [bootstrap]", "PSR", "DSR")
    )  # fmt: skip
    fold_header = "".join(f"<th>{html.escape(n)} Sharpe</th>" for n in names)
    body = (
        f"<h1>{html.escape(title)}</h1>"
        f"<p><b>{html.escape(str(agg['verdict']))}</b></p>"
        f"<p class='meta'>{agg['n_folds']} folds; deflated Sharpe counts {agg['n_trials']} "
        "configurations tried (tuning trials, RL agents, ensemble). Hybrid and baselines: "
        "signal returns before costs; RL ensemble: after costs.</p>"
        f"<ul>{trained}</ul>"
        f"<h2>Fold means and intervals</h2><table><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<h2>Per fold</h2><table><thead><tr><th>fold</th><th>test period</th>"
        f"<th>baselines trained</th><th>windows</th>{fold_header}</tr></thead>"
        f"<tbody>{''.join(fold_rows)}</tbody></table>"
        f"<h2>Cumulative return over the test period</h2>{_img(fig, 'cumulative returns')}"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>",
        encoding="utf-8",
    )
    return path
