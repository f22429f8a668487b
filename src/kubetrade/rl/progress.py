"""Progress lines for long RL steps: timesteps done, rate and ETA, at most every ~10 s.

Lines start with ``[kubetrade]`` so ``kubetrade run`` shows them on the console (the rest of a
task's output goes to ``pipeline.log`` only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["ProgressCallback", "ProgressPrinter", "format_duration"]


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressPrinter:
    """Prints ``label: done/total unit (pct), rate unit/s, ETA`` when ``every`` seconds passed.

    Args:
        label: what runs (``rl sac``).
        total: units to do (0 or None: no percentage or ETA).
        unit: name of the unit (``steps``).
        every: seconds between lines.
        stream: where lines go (default ``sys.stdout`` at print time, so a redirect applies).
        clock: time source (tests pass a fake).
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "steps",
        every: float = 10.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self._stream, self._clock = stream, clock
        self.start = self._last = clock()
        self.lines = 0

    def line(self, done: int) -> str:
        elapsed = self._clock() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100.0 * done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s, {format_duration(elapsed)} elapsed"
        if self.total and rate > 0 and done < self.total:
            text += f", ETA {format_duration((self.total - done) / rate)}"
        return text

    def update(self, done: int, force: bool = False) -> bool:
        """Print a line if ``every`` seconds passed since the last (or ``force``)."""
        now = self._clock()
        if not force and now - self._last < self.every:
            return False
        self._last = now
        stream = self._stream or sys.stdout
        print(f"[kubetrade] {self.line(done)}", file=stream, flush=True)
        self.lines += 1
        return True


class ProgressCallback(BaseCallback):
    """SB3 callback: a :class:`ProgressPrinter` line every ~10 s of ``learn`` and one at the
    end (timesteps counted over all env copies)."""

    def __init__(
        self,
        label: str,
        total_timesteps: int,
        every: float = 10.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(verbose=0)
        self._args = (label, total_timesteps, "steps", every, stream, clock)
        self.printer: ProgressPrinter | None = None

    def _on_training_start(self) -> None:
        self.printer = ProgressPrinter(*self._args)

    def _on_step(self) -> bool:
        assert self.printer is not None
        self.printer.update(self.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        assert self.printer is not None
        self.printer.update(self.num_timesteps, force=True)
