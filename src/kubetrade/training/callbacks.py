"""Training callbacks in the guide's (Keras-like) style, with resumable state.

Callbacks see ``on_train_begin(trainer)``, ``on_epoch_end(trainer, epoch, logs)`` (epochs are
1-based, ``logs`` holds ``train_*`` and ``val_*`` scalars identical on every rank) and
``on_train_end(trainer)``. ``state_dict``/``load_state_dict`` go into the trainer's snapshot
so a resumed run continues with the same patience counter and best value.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from kubetrade.errors import TrainingError

if TYPE_CHECKING:
    from kubetrade.models import HybridCNNLSTM
    from kubetrade.training.trainer import Trainer

__all__ = [
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "resolve_mode",
    "atomic_save",
    "load_checkpoint",
    "model_from_checkpoint",
]

CHECKPOINT_FORMAT = "kubetrade-checkpoint-v1"


def resolve_mode(monitor: str, mode: str = "auto") -> Literal["min", "max"]:
    """``auto``: maximise ratios/accuracy-like metrics, minimise losses."""
    if mode in ("min", "max"):
        return mode  # type: ignore[return-value]
    if mode != "auto":
        raise TrainingError(f"mode {mode!r} is not one of auto, min, max")
    maximise = ("sharpe", "sortino", "calmar", "accuracy", "f1", "precision", "recall")
    return "max" if any(key in monitor for key in maximise) else "min"


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file, then rename: a killed process never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint or snapshot with ``torch.load(weights_only=True)``.

    Raises:
        TrainingError: the file is missing or contains anything but tensors and plain
            containers (an arbitrary pickled object is refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"refusing to load {path}: not a weights-only checkpoint ({first[:200]})"
        ) from exc
    if not isinstance(payload, dict):
        raise TrainingError(f"{path} holds a {type(payload).__name__}, expected a dict checkpoint")
    return payload


def model_from_checkpoint(path: str | Path) -> HybridCNNLSTM:
    """Rebuild a :class:`HybridCNNLSTM` from a full (not weights-only) checkpoint."""
    from kubetrade.models import HybridCNNLSTM

    payload = load_checkpoint(path)
    if payload.get("format") != CHECKPOINT_FORMAT or "model_config" not in payload:
        raise TrainingError(
            f"{path} has no model_config (saved with save_weights_only=True?); build the model "
            "from the training config and load payload['model_state_dict'] instead"
        )
    model = HybridCNNLSTM(**payload["model_config"])
    model.load_state_dict(payload["model_state_dict"])
    return model.eval()


class Callback:
    """Base class: every hook is optional."""

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: B027 - optional hook
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:  # noqa: B027
        pass

    def on_train_end(self, trainer: Trainer) -> None:  # noqa: B027
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs, e.g. ``val_loss`` or ``val_sharpe_ratio``.
        patience: epochs without improvement before stopping.
        mode: ``min``, ``max`` or ``auto`` (from the name).
        restore_best_weights: load the best epoch's weights when training ends (whether it
            stopped early or ran out of epochs), so the trained model is the best one.
        min_delta: smallest change that counts as an improvement.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        mode: str = "auto",
        restore_best_weights: bool = True,
        min_delta: float = 0.0,
    ) -> None:
        self.monitor = monitor
        self.patience = patience
        self.mode = resolve_mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise TrainingError(
                f"EarlyStopping monitor {self.monitor!r} is not logged; available: {sorted(logs)}"
            )
        value = float(logs[self.monitor])
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {
                    k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()
                }
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_weights = state["best_weights"]


class ModelCheckpoint(Callback):
    """Save the model after an epoch, the file name formatted from the epoch and its logs.

    Args:
        filepath: a ``str.format`` template with ``{epoch}`` and any log key, e.g. the guide's
            ``checkpoints/best_model_{epoch:02d}_{val_loss:.4f}.pth``. Relative paths are
            resolved against the trainer's run directory.
        monitor: log key that decides "best".
        save_best_only: save only when ``monitor`` improves (every file is kept, as in Keras).
        save_weights_only: save only the ``state_dict``; otherwise a dict with the state dict,
            the model's constructor arguments, the optimizer state, epoch and metrics (loadable
            with ``weights_only=True``; see :func:`model_from_checkpoint`).
        mode: ``min``, ``max`` or ``auto``.
    """

    def __init__(
        self,
        filepath: str = "checkpoints/best_model_{epoch:02d}_{val_loss:.4f}.pth",
        monitor: str = "val_loss",
        save_best_only: bool = True,
        save_weights_only: bool = False,
        mode: str = "auto",
    ) -> None:
        self.filepath = filepath
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = resolve_mode(monitor, mode)
        self.best: float | None = None
        self.best_path: str | None = None
        self.saved: list[str] = []
        self.root = Path(".")

    def on_train_begin(self, trainer: Trainer) -> None:
        self.root = Path(trainer.run_dir)

    def format_path(self, epoch: int, logs: dict[str, float]) -> Path:
        try:
            name = self.filepath.format(epoch=epoch, **logs)
        except (KeyError, ValueError, IndexError) as exc:
            raise TrainingError(
                f"checkpoint filepath {self.filepath!r} cannot be formatted ({exc!r}); "
                f"available keys: epoch, {', '.join(sorted(logs))}"
            ) from exc
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = float(logs.get(self.monitor, math.nan))
        improved = _improved(value, self.best, self.mode, 0.0)
        if improved:
            self.best = value
        if self.save_best_only and not improved:
            return
        path = self.format_path(epoch, logs)
        if trainer.ctx.is_main:
            model = trainer.model
            payload: dict[str, Any]
            if self.save_weights_only:
                payload = model.state_dict()
            else:
                payload = {
                    "format": CHECKPOINT_FORMAT,
                    "model_state_dict": model.state_dict(),
                    "model_config": dict(getattr(model, "config", {})),
                    "optimizer_state_dict": trainer.optimizer.state_dict(),
                    "epoch": epoch,
                    "metrics": dict(logs),
                    "monitor": self.monitor,
                }
            atomic_save(payload, path)
        self.saved.append(str(path))
        if improved:
            self.best_path = str(path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_path": self.best_path, "saved": list(self.saved)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_path = state["best_path"]
        self.saved = list(state["saved"])
