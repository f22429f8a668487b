"""The summary step: one Markdown page (the KFP UI renders it) of what the run did."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubetrade.config.run import RunConfig
from kubetrade.pipeline.steps.common import atomic_path, read_json

__all__ = ["summary_step"]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e9:
            return f"{int(value):,}"  # counts (trades) arrive as floats from JSON metrics
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def summary_step(
    run: RunConfig,
    tuning_dir: str | Path,
    evaluation_path: str | Path,
    backtest_path: str | Path,
    ensemble_eval_path: str | Path,
    gate: str,
    out_path: str | Path,
    walk_forward_path: str | Path | None = None,
) -> dict[str, Any]:
    """A Markdown run summary (the KFP UI renders it): what was trained on which data, the
    tuning outcome, test-split metrics beside the naive baselines, the walk-forward fold means
    with intervals and the deflated Sharpe ratio, one sentence on whether anything beats
    buy-and-hold with significance, the backtest beside buy-and-hold, the RL ensemble's
    weights, and whether the registration gate passed."""
    p = run.pipeline
    evaluation = read_json(evaluation_path)
    test = evaluation["test"]
    lines = [
        f"# kubetrade run summary — {p.name}",
        "",
        f"- data: {', '.join(p.symbols)} ({p.source.type}), {p.start_date} .. {p.end_date}",
        f"- backend: {p.backend}; test windows: {test.get('n_windows', '?')}",
        f"- evaluation gate: **{gate}** (model accuracy vs majority class on the test split); "
        "on pass the register step applies the champion gate (beat every naive baseline, same "
        "test period and symbols as the champion, registry.margin) and tags each version with "
        "its reason (tag kubetrade.gate_decision; gate_reason in the register step's output)",
        "",
        "All metrics below are out-of-sample (the test period, never seen by training, tuning "
        "or ensemble weighting).",
        "",
    ]
    best = Path(tuning_dir) / "tuning" / "best_params.json"
    if best.is_file():
        info = read_json(best)
        lines += ["## Tuning (validation split only)", ""]
        study = info.get("study") or {}
        lines += _table(
            ["metric", "best trial", "configured values (trial 0)", "trials", "pruned", "best"],
            [[
                info.get("metric", "?"), info.get("value"), info.get("default_value", "—"),
                study.get("n_trials", "—"), study.get("n_pruned", "—"),
                json.dumps(info.get("params", {})),
            ]],
        )  # fmt: skip
    metric_keys = ["accuracy", "f1_score", "sharpe_ratio", "max_drawdown", "total_return"]
    rows = [["hybrid_cnn_lstm", *(test["model"].get(k, "—") for k in metric_keys)]]
    for name, values in test["baselines"].items():
        rows.append([name, *(values.get(k, "—") for k in metric_keys)])
    lines += ["## Hybrid CNN+LSTM, test split, beside naive baselines", ""]
    lines += _table(["model", *metric_keys], rows)
    result: dict[str, Any] = {"gate_passed": int(gate == "pass")}
    if walk_forward_path is not None and Path(walk_forward_path).is_file():
        wf = read_json(walk_forward_path)
        lines += _walk_forward_lines(wf)
        result["beats_buy_and_hold_significantly"] = len(wf["beats_buy_and_hold"])
    backtest = read_json(backtest_path)
    bt_keys = ["total_return", "sharpe_ratio", "max_drawdown", "num_trades", "total_costs"]
    rows = [[name, *(m.get(k) for k in bt_keys)] for name, m in backtest.items()]
    first: dict[str, Any] = next(iter(backtest.values()), {})
    if "buy_and_hold_return" in first:
        rows.append(["buy_and_hold (equal weight)", first["buy_and_hold_return"], "—", "—", 0, 0.0])
    lines += ["## Backtest, test period (next-open fills, costs, risk controls)", ""]
    lines += _table(["strategy", *bt_keys], rows)
    ens = read_json(ensemble_eval_path)
    combination = ens.get("combination") or {}
    chosen = combination.get("chosen") or combination.get("method")
    lines += [f"## RL ensemble (combination: {chosen or 'weighted voting'})", ""]
    candidates = combination.get("validation") or {}
    if candidates:  # ensemble_method auto: every candidate scored on validation only
        lines += [
            "Chosen on the validation split only: "
            + ", ".join(
                f"{k} {v.get('sharpe_ratio', float('nan')):.3f}" for k, v in candidates.items()
            )
            + " (validation Sharpe).",
            "",
        ]
    lines += _table(
        ["agent", "weight", "validation sharpe", "test sharpe"],
        [
            [a, w, ens.get("validation_sharpe", {}).get(a, "—"),
             ens.get("agents", {}).get(a, {}).get("sharpe_ratio", "—")]
            for a, w in ens.get("weights", {}).items()
        ],
    )  # fmt: skip
    tmp = atomic_path(out_path)
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out_path)
    return result


def _ci(ci: dict[str, float] | None) -> str:
    if not ci:
        return "—"
    mid = ci.get("mean", ci.get("value", float("nan")))
    return f"{mid:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _walk_forward_lines(wf: dict[str, Any]) -> list[str]:
    """The summary's walk-forward section: the verdict sentence first, then the table."""
    pct = f"{100 * (1 - float(wf['alpha'])):g}%"
    lines = [
        f"## Walk-forward: {wf['n_folds']} folds over the test period",
        "",
        f"**{wf['verdict']}**",
        "",
        f"Fold means with {pct} t-intervals; whole-period {pct} block-bootstrap intervals; "
        f"the deflated Sharpe ratio counts {wf['n_trials']} configurations tried (tuning "
        "trials, RL agents, ensemble). Hybrid and baselines are signal returns before costs, "
        "the RL ensemble is after costs. Who trained on what: "
        + "; ".join(f"{k}: {v}" for k, v in wf.get("trained_on", {}).items())
        + ".",
        "",
    ]
    rows = []
    for name, fm in wf["fold_mean"].items():
        whole = wf["whole_period"].get(name, {})
        dsr = whole.get("deflated_sharpe") or {}
        rows.append([
            name, _ci(fm.get("sharpe_ratio")), _ci(fm.get("accuracy")),
            _ci(whole.get("sharpe_ci")), _ci(whole.get("sharpe_minus_buy_and_hold_ci")),
            dsr.get("psr", "—"), dsr.get("dsr", "—"),
        ])  # fmt: skip
    header = ["model", "fold-mean Sharpe", "fold-mean accuracy", "Sharpe (bootstrap)",
              "Sharpe − buy-and-hold", "PSR", "DSR"]  # fmt: skip
    return lines + _table(header, rows)
