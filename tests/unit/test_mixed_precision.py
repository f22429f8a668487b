"""``hardware.mixed_precision: auto`` (issue #17): bf16 autocast on a CPU with native bf16, AMP on
CUDA, fp32 otherwise; bf16 keeps the hybrid model's outputs and training close to fp32's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kubetrade.config import TrainingConfig
from kubetrade.errors import ConfigError
from kubetrade.training.trainer import build_model, cpu_has_native_bf16, resolve_mixed_precision

_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n"


def _cpuinfo(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(_FLAGS.format(extra=extra), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("extra", "native"), [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512bw", False)]
)
def test_auto_uses_bf16_only_with_native_cpu_support(
    tmp_path: Path, extra: str, native: bool
) -> None:
    info = _cpuinfo(tmp_path, extra)
    assert cpu_has_native_bf16(info) is native
    use, why = resolve_mixed_precision("auto", torch.device("cpu"), info)
    assert use is native and why.startswith("auto:")
    assert cpu_has_native_bf16(tmp_path / "missing") is False  # unreadable: fp32


def test_explicit_settings_and_cuda() -> None:
    cpu = torch.device("cpu")
    assert resolve_mixed_precision(True, cpu)[0] is True
    assert resolve_mixed_precision(False, cpu)[0] is False
    assert resolve_mixed_precision("auto", torch.device("cuda"))[0] is True


def test_config_accepts_auto_and_refuses_other_words() -> None:
    assert TrainingConfig.model_validate({"hardware": {"mixed_precision": "auto"}})
    with pytest.raises((ConfigError, ValueError)):
        TrainingConfig.model_validate({"hardware": {"mixed_precision": "fast"}})


def _small() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    cfg = TrainingConfig.model_validate(
        {
            "model": {
                "cnn": {"hidden_dim": 32, "num_heads": 4},
                "lstm": {"hidden_dim": 32, "num_layers": 1},
                "fusion": {"output_dim": 32, "num_heads": 4},
            }
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg, n_features=8)
    x = torch.randn(48, 20, 8)
    y = (x[:, -5:, 0].sum(1) > 0).long()  # learnable from the inputs
    return model, x, y


def test_bf16_autocast_outputs_and_training_track_fp32() -> None:
    model, x, y = _small()
    model.eval()
    with torch.no_grad():
        ref = model(x)["classification"].float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)["classification"].float()
    # bf16 has an 8-bit mantissa: about 2-3 significant digits survive
    assert torch.allclose(low, ref, rtol=0.05, atol=0.05), (low - ref).abs().max()

    losses = {}
    for amp in (False, True):
        model, x, y = _small()
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(25):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(x)["classification"]
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
        losses[amp] = loss.item()
    first = float(torch.nn.functional.cross_entropy(ref, y))
    assert losses[False] < 0.7 * first and losses[True] < 0.7 * first  # both learn
    assert losses[True] == pytest.approx(losses[False], rel=0.35, abs=0.05)
