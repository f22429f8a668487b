"""The trainer on a CUDA device: fp16 autocast + GradScaler, snapshot resume, CPU reload.

Skipped where no GPU is visible (CI, the development machine); run on a GPU host with
``pytest tests/integration/test_training_cuda.py``. ``bench/bench_accelerators.py`` runs the
same checks as part of its CUDA section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kubetrade.config import TrainingConfig
from kubetrade.models import HybridCNNLSTM
from kubetrade.training import fit, load_checkpoint, synthetic_bundle
from kubetrade.training.distributed import DistributedContext
from kubetrade.training.trainer import SNAPSHOT_NAME

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_mixed_precision_fit_resume_and_cpu_reload(tmp_path: Path) -> None:
    cfg = TrainingConfig.model_validate(
        {
            "model": {"cnn": {"hidden_dim": 32, "num_heads": 4},
                      "lstm": {"hidden_dim": 16, "num_layers": 2},
                      "fusion": {"output_dim": 32, "num_heads": 4}},
            "training": {"batch_size": 32, "num_epochs": 2, "early_stopping_patience": 10},
            "data": {"sequence_length": 20},
            "hardware": {"device": "cuda", "mixed_precision": True},
        }
    )  # fmt: skip
    bundle = synthetic_bundle(n_timestamps=300, n_symbols=2, sequence_length=20, n_features=5)
    ctx = DistributedContext(device=torch.device("cuda", 0))
    _, first = fit(cfg, bundle, tmp_path, ctx=ctx, verbose=False)
    assert first.epochs_run == 2
    snapshot = load_checkpoint(tmp_path / SNAPSHOT_NAME)
    assert snapshot["scaler"]["scale"] > 0  # GradScaler state is part of the snapshot
    # resume one more epoch from the snapshot: optimizer, scheduler, scaler and RNG state
    cfg.training.num_epochs = 3
    model, resumed = fit(cfg, bundle, tmp_path, ctx=ctx, verbose=False)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0, 3.0]
    for h in resumed.history:
        assert np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"])
        assert np.isfinite(h["grad_norm"])
    # the final model loads on a CPU-only reader and matches the CUDA model in fp32
    saved = load_checkpoint(resumed.final_model_path, map_location="cpu")
    cpu_model = HybridCNNLSTM(**saved["model_config"]).eval()
    cpu_model.load_state_dict(saved["model_state_dict"])
    model.load_state_dict(saved["model_state_dict"])
    x = torch.from_numpy(np.asarray(bundle.test.X[:64], dtype=np.float32))
    allow = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            gpu = model.eval()(x.cuda(), need_weights=False)["classification"].cpu()
            cpu = cpu_model(x, need_weights=False)["classification"]
    finally:
        torch.backends.cudnn.allow_tf32 = allow
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
