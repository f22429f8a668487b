"""Feature and prediction drift (Evidently) and realized performance of served predictions.

* **Feature drift**: Evidently's ``DataDriftPreset`` between the training reference (Feast
  offline source rows in ``[reference_start, reference_end]``) and the recent window (the
  ``current_days`` before the newest bar) -- the rows the online store was materialized from.
* **Prediction drift**: Evidently's ``ValueDrift`` (K-S) of ``predicted_return`` between the
  newest ``recent_predictions`` log entries and the entries before them.
* **Performance**: each logged answer joined with its realized forward return (close at bar
  + ``horizon`` over close at bar, from the same source); hit rate of the non-flat signals and
  mean ``signal x return``, per served variant (the online A/B comparison).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.errors import KubetradeError
from kubetrade.monitoring.config import MonitoringConfig

__all__ = ["MonitoringAlert", "MonitorResult", "run_monitor", "realized_performance"]


class MonitoringAlert(KubetradeError):
    """A monitoring threshold was crossed (drift or decay)."""

    exit_code = 4


@dataclass
class MonitorResult:
    drifted_share: float
    drifted_features: list[str]
    prediction_drift_p: float | None
    performance: dict[str, dict[str, float]]
    alerts: list[str] = field(default_factory=list)
    report_html: str = ""
    summary_json: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _source(repo: str) -> pd.DataFrame:
    from kubetrade.data.feature_store import EVENT_TIMESTAMP, FeatureStoreBuilder

    builder = FeatureStoreBuilder(repo)
    if not builder.parquet_path.exists():
        raise KubetradeError(f"no Feast repo at {repo} ({builder.parquet_path} missing)")
    frame = pd.read_parquet(builder.parquet_path).rename(columns={EVENT_TIMESTAMP: "timestamp"})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def _read_log(path: str | None) -> pd.DataFrame:
    if not path:
        return pd.DataFrame()
    p = Path(path)
    if not p.is_file():
        raise KubetradeError(f"predictions log {p} does not exist; set serving predictions_log")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise KubetradeError(f"{p}:{n} is not JSON ({exc})") from exc
    return pd.DataFrame(rows)


def realized_performance(log: pd.DataFrame, source: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Logged answers with a known outcome: ``realized_return`` added, one row per answer."""
    if log.empty or "bar_timestamp" not in log:
        return pd.DataFrame()
    prices = source[["symbol", "timestamp", "close"]].copy()
    prices["future"] = prices.groupby("symbol")["close"].shift(-horizon)
    prices["realized_return"] = prices["future"] / prices["close"] - 1.0
    prices["bar_timestamp"] = prices["timestamp"].dt.strftime("%Y-%m-%d")
    known = log.dropna(subset=["bar_timestamp"]).merge(
        prices[["symbol", "bar_timestamp", "realized_return"]], on=["symbol", "bar_timestamp"]
    )
    return known.dropna(subset=["realized_return"])


def _score(known: pd.DataFrame) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (alias, version), g in known.groupby(["alias", "model_version"]):
        active = g[g["signal"] != 0]
        hits = np.sign(active["signal"]) == np.sign(active["realized_return"])
        out[f"{alias}_v{version}"] = {
            "outcomes": float(len(g)),
            "active_signals": float(len(active)),
            "hit_rate": float(hits.mean()) if len(active) else float("nan"),
            "mean_signal_return": float((g["signal"] * g["realized_return"]).mean()),
        }
    return out


def run_monitor(cfg: MonitoringConfig) -> MonitorResult:
    """Compute drift and performance, write ``report.html`` + ``summary.json`` (and MLflow
    metrics when ``tracking_uri`` is set); the caller decides what an alert means."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry off
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    source = _source(cfg.feast_repo)
    skip = {"symbol", "timestamp", "created", "created_timestamp"}
    columns = cfg.features or [c for c in source.columns if c not in skip]
    unknown = [c for c in columns if c not in source.columns]
    if unknown:
        raise KubetradeError(f"features {unknown} are not in the Feast repo {cfg.feast_repo}")
    end = pd.Timestamp(cfg.reference_end, tz="UTC") + pd.Timedelta(days=1)
    ref_mask = source["timestamp"] < end
    if cfg.reference_start is not None:
        ref_mask &= source["timestamp"] >= pd.Timestamp(cfg.reference_start, tz="UTC")
    newest = source["timestamp"].max()
    cur_mask = source["timestamp"] > newest - pd.Timedelta(days=cfg.current_days)
    reference = source.loc[ref_mask, columns].dropna()
    current = source.loc[cur_mask & ~ref_mask, columns].dropna()
    if len(reference) < 10 or len(current) < 10:
        raise KubetradeError(f"too few rows to compare: reference {len(reference)}, current "
                             f"{len(current)} (need 10 each); check reference_end/current_days")  # fmt: skip
    metrics: list[Any] = [DataDriftPreset(columns=columns)]
    log = _read_log(cfg.predictions_log)
    pred_ref = pred_cur = None
    if len(log) >= 2 * 10:
        log = log.sort_values("time", kind="stable")
        recent = min(cfg.recent_predictions, len(log) // 2)
        pred_ref = log.iloc[:-recent][["predicted_return"]]
        pred_cur = log.iloc[-recent:][["predicted_return"]]
    snapshot = Report(metrics).run(reference_data=reference, current_data=current)
    drift = snapshot.dict()["metrics"]
    share = next(
        float(m["value"]["share"]) for m in drift if "DriftedColumnsCount" in m["metric_name"]
    )
    drifted = sorted(
        m["config"]["column"] for m in drift
        if m["config"].get("type", "").endswith("ValueDrift")
        and float(m["value"]) < float(m["config"].get("threshold", 0.05))
    )  # fmt: skip
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / "report.html"))
    p_value = None
    if pred_ref is not None and pred_cur is not None:
        pred = Report([ValueDrift(column="predicted_return", method="ks")]).run(
            reference_data=pred_ref, current_data=pred_cur
        )
        p_value = float(pred.dict()["metrics"][0]["value"])
        pred.save_html(str(out / "prediction_drift.html"))
    known = realized_performance(log, source, cfg.horizon)
    performance = _score(known) if not known.empty else {}
    t = cfg.thresholds
    alerts = []
    if share > t.max_drifted_share:
        alerts.append(f"feature drift: {share:.0%} of features drifted (max "
                      f"{t.max_drifted_share:.0%}): {', '.join(drifted)}")  # fmt: skip
    if p_value is not None and p_value < t.prediction_drift_p:
        alerts.append(f"prediction drift: K-S p={p_value:.2g} < {t.prediction_drift_p:g}")
    for name, perf in performance.items():
        if (name.startswith("champion_") and perf["active_signals"] >= t.min_outcomes
                and perf["hit_rate"] < t.min_hit_rate):  # fmt: skip
            alerts.append(f"decay: {name} hit rate {perf['hit_rate']:.2f} < {t.min_hit_rate:g} "
                          f"over {int(perf['active_signals'])} outcomes")  # fmt: skip
    result = MonitorResult(share, drifted, p_value, performance, alerts,
                           str(out / "report.html"), str(out / "summary.json"))  # fmt: skip
    Path(result.summary_json).write_text(json.dumps(result.as_dict(), indent=2, default=str),
                                         encoding="utf-8")  # fmt: skip
    if cfg.tracking_uri:
        _log_mlflow(cfg, result)
    return result


def _log_mlflow(cfg: MonitoringConfig, result: MonitorResult) -> None:
    import mlflow

    client = mlflow.MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    location = None  # a SQLite store keeps artifacts beside it (MLflow's default is the cwd)
    if cfg.tracking_uri and cfg.tracking_uri.startswith("sqlite:///"):
        db = Path(cfg.tracking_uri.removeprefix("sqlite:///"))
        location = (db.resolve().parent / "mlartifacts").as_uri()
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.experiment, location)
    run = client.create_run(exp_id, run_name="monitor")
    rid = run.info.run_id
    client.log_metric(rid, "drifted_share", result.drifted_share)
    if result.prediction_drift_p is not None:
        client.log_metric(rid, "prediction_drift_p", result.prediction_drift_p)
    for name, perf in result.performance.items():
        for key, value in perf.items():
            if np.isfinite(value):
                client.log_metric(rid, f"{name}_{key}", value)
    client.log_metric(rid, "alerts", float(len(result.alerts)))
    client.log_artifact(rid, result.report_html)
    client.log_artifact(rid, result.summary_json)
    client.set_terminated(rid)
