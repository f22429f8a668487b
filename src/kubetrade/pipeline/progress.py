"""What ``kubetrade run`` shows on the console while the pipeline runs.

:class:`ProgressTee` stands in for ``sys.stdout`` during a local run: every byte goes to the
run's ``pipeline.log``; the console gets one line per task start/finish, kubetrade's own
``[kubetrade] ...`` step lines and one short line per training epoch (or everything, with
``verbose``).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TextIO

__all__ = ["ANSI", "ProgressTee", "epoch_summary"]

#: terminal colour codes (kfp colours its task lines); stripped before a line is matched
ANSI = re.compile(r"\x1b\[[0-9;]*m")

_EPOCH_KEYS = ("val_loss", "val_accuracy", "val_fold_mean_sharpe_ratio")


def epoch_summary(line: str) -> str:
    """``epoch=2/6 ... val_loss=0.85 ... seconds=1.5`` -> ``epoch 2/6 val_loss=0.85 ... (1.5 s)``."""
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    shown = " ".join(f"{k}={fields[k]}" for k in _EPOCH_KEYS if k in fields)
    took = f" ({fields['seconds']} s)" if "seconds" in fields else ""
    return f"epoch {fields.get('epoch', '?')} {shown}{took}".replace("  ", " ")


class ProgressTee(io.TextIOBase):
    """Stands in for sys.stdout during a run: everything goes to ``pipeline.log``;
    the console gets one line per task start/finish and kubetrade's own step lines
    (or everything, with ``verbose``)."""

    def __init__(self, log_path: Path, console: TextIO, verbose: bool) -> None:
        self._log = log_path.open("a", encoding="utf-8")
        self._console = console
        self._verbose = verbose
        self._buf = ""

    def write(self, s: str) -> int:
        self._log.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(ANSI.sub("", line))
        return len(s)

    def _emit(self, line: str) -> None:
        text = line.strip()
        if self._verbose:
            self._console.write(line + "\n")
        elif "[kubetrade]" in text:
            self._console.write("  " + text.split("[kubetrade]", 1)[1].strip() + "\n")
        elif text.startswith("epoch="):  # the trainer's per-epoch line (Katib's StdOut format)
            self._console.write("  train: " + epoch_summary(text) + "\n")
        elif "Executing task" in text:
            self._console.write("▶ " + text.split("Executing task", 1)[1].strip(" '") + "\n")
        elif "finished with status" in text and "Task" in text:
            self._console.write("  " + text.split(" - ", 2)[-1].strip() + "\n")
        else:
            return
        self._console.flush()

    def flush(self) -> None:
        self._log.flush()
        self._console.flush()

    def close(self) -> None:
        if self._buf:
            self._log.write(self._buf)
        self._log.close()
