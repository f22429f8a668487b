"""Model evaluation: classification, regression and trading metrics, always beside baselines.

The model's signal is a position per window: +1 buy, 0 hold, -1 sell
(:data:`~kubetrade.models.CLASS_POSITIONS`), earning the window's realised forward return
``y_reg``. With several symbols the per-timestamp portfolio return is the mean over the
symbols that have a window at that timestamp (equal weight). Ratios are annualised with
``periods_per_year`` (252 trading days / prediction horizon).

Baselines on the same split: ``majority_class`` (train's most frequent label; regression =
train mean return), ``logistic_regression`` (scikit-learn on the last bar's features, fit on
train; regression = ridge on the same features) and ``buy_and_hold`` (always long; trading
metrics only).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kubetrade.backtest import metrics as bt_metrics
from kubetrade.errors import TrainingError
from kubetrade.models import CLASS_NAMES, CLASS_POSITIONS, HybridCNNLSTM

__all__ = [
    "ALL_METRICS",
    "ModelEvaluator",
    "predict",
    "signal_returns",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "calmar_ratio",
    "financial_metrics",
    "flat_metrics",
    "interpretability_summary",
]

ALL_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "mse",
    "mae",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "calmar_ratio",
)
_FINANCIAL = ("sharpe_ratio", "sortino_ratio", "max_drawdown", "calmar_ratio")
_ALIASES = {"f1": "f1_score"}


# ---------------------------------------------------------------- trading metrics
def signal_returns(
    predicted_class: np.ndarray, forward_return: np.ndarray, timestamps: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-timestamp portfolio returns of the class signal -> (sorted timestamps, returns)."""
    positions = np.asarray(CLASS_POSITIONS)[np.asarray(predicted_class, dtype=np.int64)]
    pnl = positions * np.asarray(forward_return, dtype=np.float64)
    if timestamps is None:
        return np.arange(len(pnl)), pnl
    keys, inverse = np.unique(np.asarray(timestamps), return_inverse=True)
    sums = np.bincount(inverse, weights=pnl, minlength=len(keys))
    counts = np.bincount(inverse, minlength=len(keys))
    return keys, sums / np.maximum(counts, 1)


# The trading metrics of a signal are the backtest's (one definition, one sign convention:
# max_drawdown <= 0 as in backtest results and RL reports). What is kept here is the
# training side's "0 when undefined" for short or flat series, so a validation metric used
# as an early-stopping monitor is never nan or inf.


def _finite_or_zero(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _equity(returns: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(returns, dtype=np.float64))])


def sharpe_ratio(returns: np.ndarray, periods_per_year: float = 252.0) -> float:
    """Annualised mean / std of per-period returns (0 when flat or shorter than 2)."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2 or r.std(ddof=1) <= 1e-12:
        return 0.0
    return _finite_or_zero(bt_metrics.sharpe_ratio(r, periods_per_year=periods_per_year))


def sortino_ratio(returns: np.ndarray, periods_per_year: float = 252.0) -> float:
    """Annualised mean / downside deviation (root mean square of negative returns)."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return 0.0
    return _finite_or_zero(bt_metrics.sortino_ratio(r, periods_per_year=periods_per_year))


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough fall of the compounded equity curve, as a fraction <= 0
    (``[0.1, -0.5, 0.2]`` -> ``-0.5``), the backtest's convention."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) == 0:
        return 0.0
    return _finite_or_zero(bt_metrics.max_drawdown(_equity(r)))


def calmar_ratio(returns: np.ndarray, periods_per_year: float = 252.0) -> float:
    """Compound annual growth / |max drawdown| (0 when there is no drawdown)."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) == 0 or max_drawdown(r) > -1e-12:
        return 0.0
    return _finite_or_zero(bt_metrics.calmar_ratio(_equity(r), periods_per_year))


def financial_metrics(returns: np.ndarray, periods_per_year: float = 252.0) -> dict[str, float]:
    """Sharpe, Sortino, max drawdown, Calmar and total return of a return series."""
    r = np.asarray(returns, dtype=np.float64)
    return {
        "sharpe_ratio": sharpe_ratio(r, periods_per_year),
        "sortino_ratio": sortino_ratio(r, periods_per_year),
        "max_drawdown": max_drawdown(r),
        "calmar_ratio": calmar_ratio(r, periods_per_year),
        "total_return": float(np.prod(1.0 + r) - 1.0) if len(r) else 0.0,
    }


# ---------------------------------------------------------------- predictions
@torch.no_grad()
def predict(
    model: nn.Module, X: np.ndarray, batch_size: int = 512, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Eager predictions in eval mode -> (class probabilities (N, 3), regression (N,))."""
    was_training = model.training
    model.eval()
    probs, regs = [], []
    try:
        for start in range(0, len(X), batch_size):
            batch = torch.as_tensor(
                X[start : start + batch_size], dtype=torch.float32, device=device
            )
            out = (
                model(batch, need_weights=False)
                if isinstance(model, HybridCNNLSTM)
                else model(batch)
            )
            probs.append(torch.softmax(out["classification"].float(), dim=-1).cpu().numpy())
            regs.append(out["regression"].float().cpu().numpy())
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return np.concatenate(probs), np.concatenate(regs)


def _classification(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1_score": float(f1),
    }


def _all_metrics(
    y_cls: np.ndarray,
    y_reg: np.ndarray,
    timestamps: np.ndarray,
    pred_cls: np.ndarray,
    pred_reg: np.ndarray | None,
    periods_per_year: float,
) -> tuple[dict[str, float], np.ndarray]:
    metrics: dict[str, float] = {}
    metrics.update(_classification(y_cls, pred_cls))
    if pred_reg is not None:
        err = np.asarray(pred_reg, dtype=np.float64) - y_reg
        metrics["mse"] = float(np.mean(err**2))
        metrics["mae"] = float(np.mean(np.abs(err)))
    _, returns = signal_returns(pred_cls, y_reg, timestamps)
    metrics.update(financial_metrics(returns, periods_per_year))
    return metrics, returns


def flat_metrics(results: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """``{"test_accuracy": ..., "test_baseline_logistic_regression_accuracy": ...}``."""
    out = {f"{prefix}{k}": float(v) for k, v in results["model"].items()}
    for name, values in results["baselines"].items():
        out.update({f"{prefix}baseline_{name}_{k}": float(v) for k, v in values.items()})
    return out


class ModelEvaluator:
    """Evaluate a model on a :class:`~kubetrade.training.bundle.WindowSet` beside baselines.

    Args:
        train_data: the train windows, used only to fit the baselines (required, here or in
            :meth:`evaluate`).
        batch_size: inference batch size.
        device: inference device.
        periods_per_year: annualisation factor (252 / prediction horizon for daily bars).
    """

    def __init__(
        self,
        train_data: Any | None = None,
        batch_size: int = 512,
        device: str | torch.device = "cpu",
        periods_per_year: float = 252.0,
    ) -> None:
        self.train_data = train_data
        self.batch_size = batch_size
        self.device = device
        self.periods_per_year = periods_per_year

    def evaluate(
        self,
        model: nn.Module,
        test_data: Any,
        metrics: Sequence[str] | None = None,
        train_data: Any | None = None,
    ) -> dict[str, Any]:
        """Metrics of ``model`` and the baselines on ``test_data``.

        Returns:
            ``{"model": {metric: value}, "baselines": {name: {metric: value}},
            "confusion_matrix": 3x3 list, "class_names", "n_windows", "series": {...}}``;
            ``series`` holds per-timestamp signal returns for the report's plot.
        """
        from sklearn.metrics import confusion_matrix

        train = train_data if train_data is not None else self.train_data
        if train is None:
            raise TrainingError(
                "baselines need the train windows: ModelEvaluator(train_data=bundle.train) "
                "or evaluate(..., train_data=bundle.train)"
            )
        if len(test_data) == 0:
            raise TrainingError("cannot evaluate on an empty window set")
        wanted = [_ALIASES.get(m, m) for m in (metrics or ALL_METRICS)]
        unknown = [m for m in wanted if m not in ALL_METRICS]
        if unknown:
            raise TrainingError(f"unknown metric(s) {unknown}; allowed: {list(ALL_METRICS)}")
        y_cls = np.asarray(test_data.y_cls, dtype=np.int64)
        y_reg = np.asarray(test_data.y_reg, dtype=np.float64)
        stamps = np.asarray(test_data.timestamps)
        ppy = self.periods_per_year

        probs, reg = predict(model, test_data.X, self.batch_size, self.device)
        pred_cls = probs.argmax(axis=1)
        model_metrics, model_returns = _all_metrics(y_cls, y_reg, stamps, pred_cls, reg, ppy)

        majority = int(np.bincount(np.asarray(train.y_cls, dtype=np.int64), minlength=3).argmax())
        maj_metrics, maj_returns = _all_metrics(
            y_cls,
            y_reg,
            stamps,
            np.full_like(y_cls, majority),
            np.full(len(y_reg), float(np.mean(train.y_reg))),
            ppy,
        )
        lr_cls, lr_reg = self._linear_baselines(train, test_data)
        lr_metrics, lr_returns = _all_metrics(y_cls, y_reg, stamps, lr_cls, lr_reg, ppy)
        times, bh_returns = signal_returns(np.zeros_like(y_cls), y_reg, stamps)
        bh_metrics = financial_metrics(bh_returns, ppy)

        def pick(values: dict[str, float]) -> dict[str, float]:
            keep = [m for m in wanted if m in values] + ["total_return"] * (
                "total_return" in values
            )
            return {m: values[m] for m in keep}

        return {
            "model": pick(model_metrics),
            "baselines": {
                "majority_class": pick(maj_metrics),
                "logistic_regression": pick(lr_metrics),
                "buy_and_hold": pick({k: v for k, v in bh_metrics.items()}),
            },
            "confusion_matrix": confusion_matrix(y_cls, pred_cls, labels=[0, 1, 2]).tolist(),
            "class_names": list(CLASS_NAMES),
            "majority_class": CLASS_NAMES[majority],
            "n_windows": len(y_cls),
            "series": {
                "timestamps": [str(t) for t in times],
                "model": model_returns.tolist(),
                "majority_class": maj_returns.tolist(),
                "logistic_regression": lr_returns.tolist(),
                "buy_and_hold": bh_returns.tolist(),
            },
        }

    @staticmethod
    def _linear_baselines(train: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x_train = np.asarray(train.X[:, -1, :], dtype=np.float64)
        x_test = np.asarray(test.X[:, -1, :], dtype=np.float64)
        labels = np.asarray(train.y_cls, dtype=np.int64)
        if len(np.unique(labels)) < 2:
            pred_cls = np.full(len(x_test), labels[0] if len(labels) else 1, dtype=np.int64)
        else:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            pred_cls = clf.fit(x_train, labels).predict(x_test).astype(np.int64)
        reg = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        pred_reg = reg.fit(x_train, np.asarray(train.y_reg, dtype=np.float64)).predict(x_test)
        return pred_cls, pred_reg

    def generate_report(
        self,
        results: dict[str, Any],
        save_path: str | Path = "evaluation_report.html",
        title: str = "kubetrade model evaluation",
        interpretability: dict[str, Any] | None = None,
    ) -> Path:
        """Write a self-contained HTML report (tables plus base64 PNG plots).

        ``interpretability`` (from :func:`interpretability_summary`): SHAP feature importance
        and the attention maps, shown in their own sections.
        """
        path = Path(save_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        metric_names = list(results["model"])
        names = ["model", *results["baselines"]]
        for metric in metric_names:
            cells = []
            for name in names:
                values = results["model"] if name == "model" else results["baselines"][name]
                cells.append(f"<td>{values[metric]:.4f}</td>" if metric in values else "<td>-</td>")
            rows.append(f"<tr><th>{html.escape(metric)}</th>{''.join(cells)}</tr>")
        header = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = (
            f"<h1>{html.escape(title)}</h1>"
            f"<p>{results['n_windows']} windows; majority class in train: "
            f"{html.escape(results['majority_class'])}.</p>"
            f"<h2>Metrics vs baselines</h2><table><tr><th>metric</th>{header}</tr>{''.join(rows)}</table>"
            f"<h2>Confusion matrix</h2>{_img(_confusion_png(results))}"
            f"<h2>Cumulative signal returns</h2>{_img(_returns_png(results))}"
        )
        if interpretability:
            shap_rows = "".join(
                f"<tr><th>{html.escape(name)}</th><td>{score:.5f}</td></tr>"
                for name, score in interpretability["shap_importance"].items()
            )
            body += (
                "<h2>SHAP feature importance</h2><p>mean |SHAP| (expected gradients) over "
                f"{interpretability['shap_windows']} test windows, background "
                f"{interpretability['shap_background']} training windows.</p>"
                f"<table><tr><th>feature</th><th>mean |SHAP|</th></tr>{shap_rows}</table>"
                f"<h2>Attention maps (last test window)</h2>{_img(interpretability['attention_png'])}"
            )
        style = (
            "body{font-family:sans-serif;max-width:960px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        )
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>",
            encoding="utf-8",
        )
        return path


def interpretability_summary(
    model: nn.Module,
    train: Any,
    test: Any,
    feature_names: Sequence[str] | None = None,
    n_windows: int = 16,
    n_background: int = 32,
    nsamples: int = 16,
) -> dict[str, Any]:
    """SHAP feature importance (background: evenly spaced training windows) and the attention
    maps of the last test window, for the evaluation report."""
    from kubetrade.training.interpretability import AttentionVisualizer, SHAPExplainer

    explainer = SHAPExplainer(
        model, train, list(feature_names) if feature_names else None,
        max_background=n_background, nsamples=nsamples,
    )  # fmt: skip
    importance = explainer.feature_importance(test, n_samples=n_windows)
    visual = AttentionVisualizer(model)
    maps = visual.attention_maps(np.asarray(test.X)[-1:])
    return {
        "shap_importance": importance,
        "shap_windows": min(n_windows, len(test)),
        "shap_background": int(len(explainer.background)),
        "attention_png": visual._plot(maps),
    }


def _img(png: bytes) -> str:
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"


def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _confusion_png(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(results["confusion_matrix"])
    names = results["class_names"]
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center")
    ax.set_xticks(range(3), names)
    ax.set_yticks(range(3), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _figure_png(fig)


def _returns_png(results: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    series = results["series"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    dates = pd.to_datetime(series["timestamps"], errors="coerce")
    for name in ("model", "logistic_regression", "majority_class", "buy_and_hold"):
        returns = np.asarray(series[name], dtype=np.float64)
        ax.plot(dates, np.cumprod(1.0 + returns) - 1.0, label=name)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel("date (decision bar)")
    ax.set_ylabel("cumulative return")
    ax.legend()
    return _figure_png(fig)
