"""The table ``kubetrade run`` prints: pipeline order, RL tasks named by agent, pointers to the
summary and the reports (issue #17)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubetrade.cli.common import out
from kubetrade.cli.pipeline import print_summary
from kubetrade.pipeline.runner import RunResult, _collect_outputs, summary_rows


def _task(pipeline: Path, key: str, metrics: dict, mtime: float, **artifacts: dict) -> None:
    folder = pipeline / key
    folder.mkdir(parents=True)
    arts = {"metrics": {"artifacts": [{"uri": str(folder / "metrics"), "metadata": metrics}]}}
    for name, meta in artifacts.items():
        arts[name] = {"artifacts": [{"uri": str(folder / name), "metadata": meta}]}
    path = folder / "executor_output.json"
    path.write_text(json.dumps({"artifacts": arts}), encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_rows_keep_pipeline_order_and_name_agents(tmp_path: Path) -> None:
    pipe = tmp_path / "kubetrade-training-x"
    # finish times deliberately out of pipeline order; agents finish td3 first
    _task(pipe, "backtest-op", {"sharpe": 1.0}, 90, report={})
    _task(pipe, "ingest-op", {"rows": 10}, 10)
    _task(pipe, "for-loop-1-iteration-1/rl-agent-op", {"val_sharpe_ratio": 0.5}, 50,
          agent={"agent_type": "td3"})  # fmt: skip
    _task(pipe, "for-loop-1-iteration-0/rl-agent-op", {"val_sharpe_ratio": 0.7}, 60,
          agent={"agent_type": "sac"})  # fmt: skip
    _task(pipe, "ensemble-op", {"test_sharpe_ratio": 0.9}, 70)
    _task(pipe, "train-op", {"epochs": 3}, 40)
    _task(pipe, "summary-op", {}, 95, summary={})
    _task(pipe, "for-loop-2-iteration-0/fold-op", {"x": 1}, 30)
    outputs = _collect_outputs(tmp_path)
    names = [name for name, _ in summary_rows(tmp_path, outputs)]
    assert names == [
        "ingest", "train", "rl-agent sac", "rl-agent td3", "ensemble", "backtest", "summary",
        "fold 1",
    ]  # fmt: skip
    assert not any("for-loop" in n for n in names)

    with out.capture() as captured:
        print_summary(RunResult(run_dir=tmp_path, seconds=12.0, outputs=outputs))
    text = captured.get()
    assert f"summary: {pipe / 'summary-op' / 'summary'}" in text
    assert f"backtest {pipe / 'backtest-op' / 'report'}" in text
    assert "rl-agent sac" in text and "for-loop-1" not in text


def test_console_shows_each_training_epoch_in_one_short_line(tmp_path: Path) -> None:
    import io

    from kubetrade.pipeline.progress import ProgressTee

    console = io.StringIO()
    tee = ProgressTee(tmp_path / "pipeline.log", console, verbose=False)
    tee.write("    [kubetrade] train: started\n")
    tee.write("    epoch=2/6 train_loss=1.04 val_loss=0.852756 val_accuracy=0.394781 "
              "val_sharpe_ratio=1.39 val_fold_mean_sharpe_ratio=1.45735 lr=0.00093 seconds=1.5\n")  # fmt: skip
    tee.write("    some other library chatter\n")
    tee.close()
    assert console.getvalue().splitlines() == [
        "  train: started",
        "  train: epoch 2/6 val_loss=0.852756 val_accuracy=0.394781 "
        "val_fold_mean_sharpe_ratio=1.45735 (1.5 s)",
    ]
    assert "train_loss=1.04" in (tmp_path / "pipeline.log").read_text()  # the full line is logged
