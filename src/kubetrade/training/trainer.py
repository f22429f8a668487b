"""The multi-task trainer: one class, torchrun-ready, resumable.

Per rank: seed ``seed + rank``, shard the train windows with a ``DistributedSampler``
(``set_epoch`` every epoch), run ``batch_size // world_size`` windows per step so the global
batch is the configured one, and average gradients with DDP. Validation runs on every rank
over the whole validation split; rank 0's numbers are broadcast so every rank takes the same
early-stopping / scheduler decision. Only rank 0 writes files, logs or prints.

Loss: ``w_cls * CE(logits, label) + w_reg * MSE(pred / s, y / s)`` where ``s`` is the train
std of the forward return, so both terms are O(1) (raw daily returns are ~1e-2 and their
MSE ~1e-4 would otherwise vanish next to the cross-entropy).

Why this module is long: :class:`Trainer` is one class (~400 lines) whose parts -- batches,
loss, epoch, validation, snapshot save/resume with the RNG state, fault injection -- share
its state and read best together, as in minGPT-ddp's trainer; the process-group setup,
seeding and collectives are already :mod:`kubetrade.training.distributed`, and what remains
outside the class (precision choice, batch augmentation, :func:`fit`) is small.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from kubetrade.config import TrainingConfig
from kubetrade.errors import TrainingError
from kubetrade.models import HybridCNNLSTM
from kubetrade.training.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    atomic_save,
    load_checkpoint,
    resolve_mode,
)
from kubetrade.training.distributed import (
    DistributedContext,
    all_reduce_mean,
    broadcast_object,
    resolve_device,
    seed_everything,
)
from kubetrade.training.evaluation import sharpe_ratio, signal_returns

__all__ = [
    "Trainer",
    "TrainResult",
    "build_model",
    "fit",
    "augment_batch",
    "SNAPSHOT_NAME",
    "cpu_has_native_bf16",
    "resolve_mixed_precision",
]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16`` flags).

    Without them oneDNN emulates bf16 and autocast runs many times slower than fp32. Where
    ``cpuinfo`` cannot be read (not Linux) the answer is False, so ``auto`` stays fp32.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in _BF16_FLAGS)
    return False


def resolve_mixed_precision(
    setting: bool | str, device: torch.device, cpuinfo: str | Path = "/proc/cpuinfo"
) -> tuple[bool, str]:
    """``(use autocast, why)`` for ``hardware.mixed_precision`` on ``device``."""
    if setting is True or setting is False:
        return setting, f"hardware.mixed_precision: {str(setting).lower()}"
    if device.type == "cuda":
        return True, "auto: CUDA AMP (fp16 + GradScaler)"
    if device.type == "cpu" and cpu_has_native_bf16(cpuinfo):
        return True, "auto: the CPU has native bf16 (avx512_bf16/amx_bf16)"
    return False, "auto: no native bf16 on this CPU"


SNAPSHOT_NAME = "snapshot.pt"
FINAL_NAME = "final_model.pth"
RESULT_NAME = "result.json"
#: Fault-injection hook for reliability tests (never set it in production):
#: ``KUBETRADE_FAULT_KILL_AT="<epoch>:<rank>"`` makes that rank SIGKILL itself after the first
#: batch of that epoch, once per run directory (a marker file ``FAULT_MARKER`` in the run
#: directory records that it fired, so a torchrun restart trains on undisturbed).
FAULT_ENV = "KUBETRADE_FAULT_KILL_AT"
FAULT_MARKER = ".fault-injected"


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` hands back (identical on every rank)."""

    best_val_loss: float
    best_epoch: int
    monitor: str
    best_monitor_value: float
    epochs_run: int
    stopped_early: bool
    checkpoint_path: str | None
    final_model_path: str | None
    history: list[dict[str, float]] = field(default_factory=list)


def build_model(cfg: TrainingConfig, n_features: int) -> HybridCNNLSTM:
    """The configured model for ``n_features`` inputs."""
    return HybridCNNLSTM.from_config(cfg.model, n_features)


def augment_batch(x: Tensor, mean: Tensor, std: Tensor, aug: Any) -> Tensor:
    """The guide's augmentation, applied in standardised units (torch RNG, so resumable).

    ``time_shift_max``: shift each window right by 0..max bars, repeating its first bar
    (uses only older data: no lookahead); ``magnitude_warp``: multiply each feature by a
    smooth random ramp around 1 (sd 0.1); ``noise_std``: add Gaussian noise.
    """
    z = (x - mean) / std
    batch, length, n_feat = z.shape
    if aug.time_shift_max > 0:
        shift = torch.randint(0, aug.time_shift_max + 1, (batch, 1), device=z.device)
        index = (torch.arange(length, device=z.device).unsqueeze(0) - shift).clamp_min(0)
        z = z.gather(1, index.unsqueeze(-1).expand(batch, length, n_feat))
    if aug.magnitude_warp:
        ends = 1.0 + 0.1 * torch.randn(batch, 2, n_feat, device=z.device, dtype=z.dtype)
        ramp = torch.linspace(0.0, 1.0, length, device=z.device, dtype=z.dtype).view(1, length, 1)
        z = z * (ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * ramp)
    if aug.noise_std > 0:
        z = z + aug.noise_std * torch.randn_like(z)
    return z * std + mean


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": list(random.getstate()[1]),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    # ``state`` comes from a snapshot read on the CPU (see _load_snapshot): generator states
    # must be CPU ByteTensors
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((3, tuple(state["python"]), None))


class Trainer:
    """Train a :class:`HybridCNNLSTM` on in-memory windows.

    Args:
        model: the (unwrapped) model; the trainer fits its normalisation buffers on ``train``
            unless a snapshot is resumed.
        cfg: the training config.
        train: train windows (any object with ``X``, ``y_cls``, ``y_reg``, ``timestamps``).
        val: validation windows.
        run_dir: where the snapshot, checkpoints and final weights go.
        ctx: distributed context (single process when omitted).
        callbacks: defaults to the guide's EarlyStopping + ModelCheckpoint on
            ``training.monitor``.
        extra_callbacks: appended to the defaults (e.g. the MLflow epoch logger).
        resume: continue from ``run_dir/snapshot.pt`` when it exists.
        augment: apply ``data.augmentation`` to training batches.
        verbose: print one ``key=value`` line per epoch on rank 0 (Katib's StdOut format).
    """

    def __init__(
        self,
        model: HybridCNNLSTM,
        cfg: TrainingConfig,
        train: Any,
        val: Any,
        run_dir: str | Path,
        ctx: DistributedContext | None = None,
        callbacks: Sequence[Callback] | None = None,
        extra_callbacks: Sequence[Callback] = (),
        resume: bool = True,
        augment: bool = True,
        verbose: bool = True,
    ) -> None:
        self.cfg = cfg
        # single process: hardware.device decides (auto -> cuda when visible, else cpu)
        self.ctx = ctx or DistributedContext(device=resolve_device(cfg.hardware.device))
        self.run_dir = Path(run_dir)
        self.verbose = verbose and self.ctx.is_main
        self.augment = augment
        tcfg = cfg.training
        if tcfg.batch_size % self.ctx.world_size:
            raise TrainingError(
                f"training.batch_size ({tcfg.batch_size}) must be divisible by WORLD_SIZE "
                f"({self.ctx.world_size}) so the global batch stays {tcfg.batch_size}"
            )
        self.local_batch = tcfg.batch_size // self.ctx.world_size
        if len(train) < tcfg.batch_size or len(val) == 0:
            raise TrainingError(
                f"too few windows: train {len(train)} (need >= batch_size {tcfg.batch_size}), "
                f"val {len(val)} (need > 0); widen the date range or shorten sequence_length"
            )
        self.device = self.ctx.device
        self.model = model.to(self.device)
        # the guide's HybridCNNLSTM(weight_decay=, gradient_clip=) override the config's values
        wd = getattr(model, "weight_decay", None)
        self.weight_decay = float(tcfg.optimizer.weight_decay if wd is None else wd)
        clip = getattr(model, "gradient_clip", None)
        self.gradient_clip = float(tcfg.gradient_clip_norm if clip is None else clip)
        if cfg.hardware.num_workers and self.verbose:
            print(
                f"[kubetrade] hardware.num_workers={cfg.hardware.num_workers} is not used: "
                "batches are slices of in-memory tensors, there are no loader workers",
                flush=True,
            )
        self.monitor = tcfg.monitor
        self.monitor_mode = resolve_mode(self.monitor)
        self.stop_training = False
        self.history: list[dict[str, float]] = []
        self.start_epoch = 1

        self.x_train = torch.as_tensor(np.asarray(train.X), dtype=torch.float32)
        self.yc_train = torch.as_tensor(np.asarray(train.y_cls), dtype=torch.int64)
        self.yr_train = torch.as_tensor(np.asarray(train.y_reg), dtype=torch.float32)
        self.val = val
        flat = self.x_train.reshape(-1, self.x_train.shape[-1]).double()
        self.target_scale = float(self.yr_train.double().std()) or 1.0
        model.set_normalization(flat.mean(0).float(), flat.std(0).float(), self.target_scale)
        from kubetrade.training.interpretability import remember_training_windows

        remember_training_windows(model, train.X)  # SHAPExplainer(model)'s default background
        if self.device.type == "cuda" and cfg.hardware.pin_memory:
            self.x_train = self.x_train.pin_memory()
        # index-only sampler: batches are sliced from in-memory tensors (no per-item collate)
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(len(self.x_train)),  # type: ignore[arg-type]
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            shuffle=True,
            seed=tcfg.seed,
            drop_last=False,
        )

        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.use_amp, why = resolve_mixed_precision(cfg.hardware.mixed_precision, self.device)
        if self.verbose and self.ctx.is_main:
            precision = str(self.amp_dtype).removeprefix("torch.") if self.use_amp else "fp32"
            print(f"[kubetrade] train: precision {precision} ({why})", flush=True)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.device.type == "cuda"
        )
        if callbacks is None:
            callbacks = [
                EarlyStopping(
                    self.monitor, tcfg.early_stopping_patience, restore_best_weights=True
                ),
                ModelCheckpoint(monitor=self.monitor, save_best_only=True),
            ]
        self.callbacks = [*callbacks, *extra_callbacks]
        if resume:
            self._load_snapshot()
        # wrap only after the snapshot is loaded, so every rank starts from the same weights
        self.forward_model: nn.Module = self.model
        if self.ctx.is_distributed:
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if tcfg.compile:
            self.forward_model = torch.compile(self.forward_model)  # type: ignore[assignment]

    # ------------------------------------------------------------ construction
    def _build_optimizer(self) -> torch.optim.Optimizer:
        ocfg, lr = self.cfg.training.optimizer, self.cfg.training.learning_rate
        params = list(self.model.parameters())
        if ocfg.type in ("adamw", "adam"):
            optimizer = torch.optim.AdamW if ocfg.type == "adamw" else torch.optim.Adam
            # fused kernel: one pass over all parameters (CPU and CUDA)
            return optimizer(params, lr=lr, betas=ocfg.betas, weight_decay=self.weight_decay,
                             fused=self.device.type in ("cpu", "cuda"))  # fmt: skip
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=self.weight_decay)

    def _build_scheduler(self) -> Any:
        scfg = self.cfg.training.scheduler
        if scfg.type == "cosine_annealing":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=scfg.T_max, eta_min=scfg.eta_min
            )
        if scfg.type == "cosine_annealing_warm_restarts":
            return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                self.optimizer, T_0=scfg.T_0, T_mult=scfg.T_mult, eta_min=scfg.eta_min
            )
        if scfg.type == "reduce_on_plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode=self.monitor_mode,
                factor=scfg.factor,
                patience=scfg.patience,
                min_lr=scfg.eta_min,
            )
        return None

    # ------------------------------------------------------------ snapshots
    @property
    def snapshot_path(self) -> Path:
        return self.run_dir / SNAPSHOT_NAME

    def _fingerprint(self) -> str:
        return json.dumps(self.model.config, sort_keys=True)

    def _save_snapshot(self, epoch: int) -> None:
        rng = _rng_state()
        per_rank = [rng]
        if self.ctx.is_distributed:
            per_rank = [None] * self.ctx.world_size  # type: ignore[list-item]
            torch.distributed.all_gather_object(per_rank, rng)
        if not self.ctx.is_main:
            return
        atomic_save(
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "callbacks": [cb.state_dict() for cb in self.callbacks],
                "history": self.history,
                "stop_training": self.stop_training,
                "rng": per_rank,
                "world_size": self.ctx.world_size,
                "fingerprint": self._fingerprint(),
            },
            self.snapshot_path,
        )

    def _load_snapshot(self) -> None:
        if not self.snapshot_path.is_file():
            return
        # read on the CPU: load_state_dict copies weights and optimizer state to the
        # parameters' device, and RNG states must stay CPU tensors (a CUDA resume failed
        # with "RNG state must be a torch.ByteTensor" when read with map_location=cuda)
        snap = load_checkpoint(self.snapshot_path, map_location="cpu")
        if snap.get("fingerprint") != self._fingerprint():
            raise TrainingError(
                f"{self.snapshot_path} was written for a different model config; delete it or "
                "use a new run directory"
            )
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if self.scheduler is not None and snap["scheduler"] is not None:
            self.scheduler.load_state_dict(snap["scheduler"])
        self.scaler.load_state_dict(snap["scaler"])
        for callback, state in zip(self.callbacks, snap["callbacks"], strict=False):
            callback.load_state_dict(state)
        self.history = list(snap["history"])
        self.stop_training = bool(snap["stop_training"])
        self.start_epoch = int(snap["epoch"]) + 1
        if snap["world_size"] == self.ctx.world_size:
            _set_rng_state(snap["rng"][self.ctx.rank])
        else:  # a different world size cannot replay the same streams; stay deterministic
            seed_everything(self.cfg.training.seed + self.ctx.rank + 1000 * self.start_epoch)
        if self.verbose:
            print(f"resumed from {self.snapshot_path} at epoch {self.start_epoch}", flush=True)

    # ------------------------------------------------------------ steps
    def _loss(
        self, out: dict[str, Tensor], y_cls: Tensor, y_reg: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        weights = self.cfg.training.loss_weights
        cls_loss = F.cross_entropy(out["classification"].float(), y_cls)
        reg_loss = F.mse_loss(
            out["regression"].float() / self.target_scale, y_reg / self.target_scale
        )
        return weights.classification * cls_loss + weights.regression * reg_loss, cls_loss, reg_loss

    def _run_batch(self, x: Tensor, y_cls: Tensor, y_reg: Tensor) -> dict[str, float]:
        """One optimiser step; returns the batch's losses and pre-clip gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.forward_model(x, need_weights=False)
        loss, cls_loss, reg_loss = self._loss(out, y_cls, y_reg)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {
            "loss": float(loss.detach()),
            "cls_loss": float(cls_loss.detach()),
            "reg_loss": float(reg_loss.detach()),
            "grad_norm": float(grad_norm),
        }

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        for chunk in order.split(self.local_batch):
            yield (
                self.x_train[chunk].to(self.device, non_blocking=True),
                self.yc_train[chunk].to(self.device, non_blocking=True),
                self.yr_train[chunk].to(self.device, non_blocking=True),
            )

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's shard; returns rank-averaged train metrics."""
        self.model.train()
        totals: dict[str, float] = {"loss": 0.0, "cls_loss": 0.0, "reg_loss": 0.0, "grad_norm": 0.0}
        count, steps, finite_steps, max_grad = 0, 0, 0, 0.0
        batches: Any = self._batches(epoch)
        if self.verbose and sys.stderr.isatty():
            from tqdm import tqdm

            batches = tqdm(
                batches,
                total=math.ceil(len(self.sampler) / self.local_batch),
                desc=f"epoch {epoch}",
                leave=False,
            )
        mean, std = self.model.input_mean, self.model.input_std
        for x, y_cls, y_reg in batches:
            if self.augment:
                x = augment_batch(x, mean, std, self.cfg.data.augmentation)
            stats = self._run_batch(x, y_cls, y_reg)
            if steps == 0:
                self._maybe_inject_fault(epoch)
            n = len(x)
            for key in ("loss", "cls_loss", "reg_loss"):
                totals[key] += stats[key] * n
            if math.isfinite(stats["grad_norm"]):
                # fp16 + GradScaler: a step with inf/nan gradients is skipped by the scaler
                # (and the scale lowered); it must not turn the epoch's mean norm into nan
                totals["grad_norm"] += stats["grad_norm"]
                max_grad = max(max_grad, stats["grad_norm"])
                finite_steps += 1
            count, steps = count + n, steps + 1
        logs = {f"train_{k}": totals[k] / max(count, 1) for k in ("loss", "cls_loss", "reg_loss")}
        logs["grad_norm"] = totals["grad_norm"] / finite_steps if finite_steps else math.nan
        logs["nonfinite_grad_steps"] = float(steps - finite_steps)
        logs = all_reduce_mean(logs, self.ctx)
        logs["grad_norm_max"] = max_grad
        return logs

    def _maybe_inject_fault(self, epoch: int) -> None:
        """The test-only :data:`FAULT_ENV` hook: kill this process mid-epoch, once."""
        spec = os.environ.get(FAULT_ENV)
        if not spec:
            return
        try:
            at_epoch, at_rank = (int(part) for part in spec.split(":"))
        except ValueError as exc:
            raise TrainingError(f"{FAULT_ENV}={spec!r}: expected EPOCH:RANK, e.g. 2:1") from exc
        marker = self.run_dir / f"{FAULT_MARKER}-{at_epoch}-{at_rank}"
        if (epoch, self.ctx.rank) != (at_epoch, at_rank) or marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"killed rank {at_rank} in epoch {at_epoch}\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        X, n = self.val.X, len(self.val)
        y_cls_all = torch.as_tensor(np.asarray(self.val.y_cls), dtype=torch.int64)
        y_reg_all = torch.as_tensor(np.asarray(self.val.y_reg), dtype=torch.float32)
        sums = {"loss": 0.0, "cls_loss": 0.0, "reg_loss": 0.0}
        preds = []
        for start in range(0, n, 512):
            x = torch.as_tensor(
                np.asarray(X[start : start + 512]), dtype=torch.float32, device=self.device
            )
            y_cls = y_cls_all[start : start + 512].to(self.device)
            y_reg = y_reg_all[start : start + 512].to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                out = self.model(x, need_weights=False)
            for key, value in zip(sums, self._loss(out, y_cls, y_reg), strict=True):
                sums[key] += float(value) * len(x)
            preds.append(out["classification"].float().argmax(-1).cpu())
        pred = torch.cat(preds).numpy()
        _, returns = signal_returns(
            pred, np.asarray(self.val.y_reg), np.asarray(self.val.timestamps)
        )
        logs = {f"val_{k}": v / n for k, v in sums.items()}
        logs["val_accuracy"] = float((pred == y_cls_all.numpy()).mean())
        logs["val_sharpe_ratio"] = sharpe_ratio(returns)
        # selection on less noise (issue #16): mean Sharpe over validation.cv_folds blocks
        from kubetrade.training.walk_forward import fold_mean_sharpe

        logs["val_fold_mean_sharpe_ratio"] = fold_mean_sharpe(returns, self.cfg.validation.cv_folds)
        return logs

    # ------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        """Run (or finish) training; all ranks return the same result."""
        tcfg = self.cfg.training
        for callback in self.callbacks:
            callback.on_train_begin(self)
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, tcfg.num_epochs + 1):
            if self.stop_training:
                break
            started = time.perf_counter()
            logs = {**self._run_epoch(epoch), **self._validate()}
            logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
            logs = broadcast_object(logs, self.ctx)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(logs[self.monitor])
            elif self.scheduler is not None:
                self.scheduler.step()
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
            logs["epoch"] = float(epoch)
            self.history.append(logs)
            if self.verbose:
                shown = " ".join(f"{k}={v:.6g}" for k, v in logs.items() if k != "epoch")
                print(
                    f"epoch={epoch}/{tcfg.num_epochs} {shown} "
                    f"seconds={time.perf_counter() - started:.1f}",
                    flush=True,
                )
            self._save_snapshot(epoch)
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self._result()

    def _result(self) -> TrainResult:
        if not self.history:
            raise TrainingError("no epoch was run (training.num_epochs already reached?)")
        sign = 1.0 if self.monitor_mode == "min" else -1.0
        best = min(
            self.history,
            key=lambda h: sign * h[self.monitor] if not math.isnan(h[self.monitor]) else math.inf,
        )
        final_path: str | None = str(self.run_dir / FINAL_NAME)
        if self.ctx.is_main:
            atomic_save(
                {
                    "format": "kubetrade-checkpoint-v1",
                    "model_state_dict": self.model.state_dict(),
                    "model_config": dict(self.model.config),
                    "epoch": int(best["epoch"]),
                    "metrics": best,
                    "monitor": self.monitor,
                },
                self.run_dir / FINAL_NAME,
            )
        checkpoint = next(
            (cb.best_path for cb in self.callbacks if isinstance(cb, ModelCheckpoint)), None
        )
        stopped = any(isinstance(cb, EarlyStopping) and cb.stopped_epoch for cb in self.callbacks)
        return TrainResult(
            best_val_loss=float(min(h["val_loss"] for h in self.history)),
            best_epoch=int(best["epoch"]),
            monitor=self.monitor,
            best_monitor_value=float(best[self.monitor]),
            epochs_run=len(self.history),
            stopped_early=stopped,
            checkpoint_path=checkpoint or final_path,
            final_model_path=final_path,
            history=list(self.history),
        )


def fit(
    cfg: TrainingConfig,
    bundle: Any,
    run_dir: str | Path,
    ctx: DistributedContext | None = None,
    extra_callbacks: Sequence[Callback] = (),
    resume: bool = True,
    verbose: bool = True,
    augment: bool = True,
    callbacks: Sequence[Callback] | None = None,
) -> tuple[HybridCNNLSTM, TrainResult]:
    """Build the configured model and train it on ``bundle`` (train + val splits).

    Every rank builds the model from ``training.seed`` (identical initial weights), then
    reseeds with ``seed + rank`` for dropout and augmentation. ``callbacks`` replaces the
    default EarlyStopping + ModelCheckpoint; ``extra_callbacks`` are added to them.
    """
    ctx = ctx or DistributedContext(device=resolve_device(cfg.hardware.device))
    seed = cfg.training.seed
    seed_everything(seed)
    model = build_model(cfg, int(np.asarray(bundle.train.X).shape[-1]))
    seed_everything(seed + ctx.rank)
    train = bundle.train
    cap = cfg.training.max_train_windows
    if cap is not None and len(train) > cap:
        order = np.argsort(np.asarray(train.timestamps), kind="stable")
        keep = np.sort(order[-cap:])
        train = train.take(keep)
    trainer = Trainer(
        model,
        cfg,
        train,
        bundle.val,
        run_dir,
        ctx=ctx,
        callbacks=callbacks,
        extra_callbacks=extra_callbacks,
        resume=resume,
        verbose=verbose,
        augment=augment,
    )
    result = trainer.train()
    return trainer.model, result
