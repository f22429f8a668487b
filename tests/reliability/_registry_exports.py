"""Genuine hybrid exports for registry tests, made the way export_step makes them.

A tiny TorchScript module (the same two-output contract as the hybrid model) is written as
``model.pt``, a placeholder ``model.onnx`` beside it; the run logs ``test_<metric>`` and the
``period_test`` / ``symbols`` tags like the train/evaluate steps; :func:`log_hybrid` logs the
pyfunc and :func:`write_export_info` writes ``model_uri.json``. No fakes of MLflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

PERIOD = "2012-01-03..2013-03-01"
SYMBOLS = "AAPL,IBM"


class TinyHybrid(torch.nn.Module):
    """``(n, seq, features) -> [classification (n, 3), regression (n, 1)]``."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 3)
        torch.nn.init.constant_(self.head.weight, 0.1)
        torch.nn.init.constant_(self.head.bias, bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x.mean(dim=1)
        return [self.head(h), h.sum(dim=1, keepdim=True)]


@dataclass
class Export:
    run_id: str
    folder: Path
    results: Path
    model_uri: str


def make_export(
    client,
    experiment_id: str,
    uri: str,
    folder: Path,
    sharpe: float,
    *,
    period: str | None = PERIOD,
    symbols: str | None = SYMBOLS,
    bias: float = 0.0,
    baselines: dict[str, float] | None = None,
) -> Export:
    from kubetrade.registry import write_export_info
    from kubetrade.registry.hybrid_pyfunc import log_hybrid

    folder.mkdir(parents=True)
    run_id = client.create_run(experiment_id).info.run_id
    tags = {}
    if period:
        tags["period_test"] = period
    if symbols:
        tags["symbols"] = symbols
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
    client.log_metric(run_id, "test_sharpe_ratio", sharpe)
    torch.jit.script(TinyHybrid(bias)).save(str(folder / "model.pt"))
    (folder / "model.onnx").write_bytes(f"onnx placeholder {bias}".encode())
    files = {"torchscript": folder / "model.pt", "onnx": folder / "model.onnx"}
    model_uri = log_hybrid(folder, files, uri, run_id, input_shape=(5, 4))
    client.set_terminated(run_id, "FINISHED")
    write_export_info(folder, model_uri, run_id, files)
    results = folder.parent / f"{folder.name}-results.json"
    base = {name: {"sharpe_ratio": v} for name, v in (baselines or {}).items()}
    results.write_text(
        json.dumps({"test": {"model": {"sharpe_ratio": sharpe}, "baselines": base}}),
        encoding="utf-8",
    )
    return Export(run_id, folder, results, model_uri)
