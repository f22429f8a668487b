"""Integration tests: real torchrun (2 processes, gloo), resume, callbacks, MLflow, evaluation.

Everything runs a tiny model on a few hundred synthetic windows to stay within a couple of
minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_training_config
from kubetrade.errors import ExportError, TrainingError
from kubetrade.training import (
    EarlyStopping,
    ModelCheckpoint,
    ModelEvaluator,
    TrainingPipeline,
    fit,
    load_checkpoint,
    model_from_checkpoint,
    save_bundle,
    synthetic_bundle,
)
from kubetrade.training.callbacks import Callback
from kubetrade.training.trainer import SNAPSHOT_NAME

torch.set_num_threads(1)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bundle() -> Any:
    # 2 symbols x 146 bars -> 144 train windows (divisible by the global batch 16)
    return synthetic_bundle(n_timestamps=146, n_symbols=2, sequence_length=12, n_features=4)


def _run(
    args: list[str], env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_two_processes_match_single_process(tmp_path: Path, bundle: Any) -> None:
    """Same seed, same global batch (8 per rank x 2 = 16), no dropout/augmentation: the
    DistributedSampler interleaves one permutation (rank r takes perm[r::2]), so global batch
    k holds the same windows as single-process batch k and DDP's gradient mean is the same."""
    assert len(bundle.train) % 16 == 0
    cfg = tiny_training_config(num_epochs=3)
    cfg.model.cnn.dropout = 0.0
    config_path = tmp_path / "training.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    bundle_path = save_bundle(bundle, tmp_path / "bundle.npz")
    common = ["--bundle", str(bundle_path), "--config", str(config_path), "--no-augment"]
    _run([sys.executable, "-m", "kubetrade.training.run", *common, "--out", str(tmp_path / "one")])
    proc = _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2",
                 "-m", "kubetrade.training.run", *common, "--out", str(tmp_path / "two")])  # fmt: skip
    assert "epoch=3/3" in proc.stdout and proc.stdout.count("epoch=1/3") == 1  # rank 0 prints
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    for key in ("train_loss", "val_loss", "grad_norm"):
        np.testing.assert_allclose(
            [h[key] for h in two["history"]], [h[key] for h in one["history"]], rtol=1e-4
        )
    single = load_checkpoint(tmp_path / "one" / SNAPSHOT_NAME)["model"]
    multi = load_checkpoint(tmp_path / "two" / SNAPSHOT_NAME)["model"]
    for name, tensor in single.items():
        if name.endswith("in_proj_bias"):
            # the key bias has an exactly-zero gradient (softmax ignores it); AdamW turns
            # float noise there into lr-sized steps, so compare only the query/value biases
            q, _, v = tensor.chunk(3)
            q2, _, v2 = multi[name].chunk(3)
            tensor, multi[name] = torch.cat([q, v]), torch.cat([q2, v2])
        torch.testing.assert_close(multi[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # both ranks' RNG streams are in the snapshot, so each rank resumes its own
    assert len(load_checkpoint(tmp_path / "two" / SNAPSHOT_NAME)["rng"]) == 2


class _Crash(Callback):
    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_kill_equals_uninterrupted(tmp_path: Path, bundle: Any) -> None:
    # dropout and augmentation on: resuming must also restore the RNG streams
    cfg = tiny_training_config(
        num_epochs=4, scheduler={"type": "cosine_annealing_warm_restarts", "T_0": 2}
    )

    def callbacks() -> list[Callback]:
        return [EarlyStopping(patience=100, restore_best_weights=False),
                ModelCheckpoint(monitor="val_loss")]  # fmt: skip

    full_model, full = fit(cfg, bundle, tmp_path / "full", callbacks=callbacks(), verbose=False)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, bundle, tmp_path / "killed", callbacks=callbacks(),
            extra_callbacks=[_Crash(3)], verbose=False)  # fmt: skip
    assert load_checkpoint(tmp_path / "killed" / SNAPSHOT_NAME)["epoch"] == 2
    resumed_model, resumed = fit(
        cfg, bundle, tmp_path / "killed", callbacks=callbacks(), verbose=False
    )
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0, 3.0, 4.0]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    for (name, a), b in zip(
        full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)


def test_checkpoints_follow_template_and_final_model_is_best(tmp_path: Path, bundle: Any) -> None:
    cfg = tiny_training_config(num_epochs=6, learning_rate=0.02, early_stopping_patience=1)
    model, result = fit(cfg, bundle, tmp_path, verbose=False)
    files = sorted((tmp_path / "checkpoints").iterdir())
    pattern = re.compile(r"best_model_(\d{2})_(\d+\.\d{4})\.pth")
    improving, best = [], float("inf")
    for h in result.history:
        if h["val_loss"] < best:
            best = h["val_loss"]
            improving.append(f"best_model_{int(h['epoch']):02d}_{h['val_loss']:.4f}.pth")
    assert [f.name for f in files] == improving  # save_best_only: one file per improvement
    assert all(pattern.fullmatch(f.name) for f in files)
    assert result.checkpoint_path == str(files[-1])
    # restore_best_weights: the trained model is the best checkpoint's model
    best_ckpt = model_from_checkpoint(result.checkpoint_path)
    for name, tensor in best_ckpt.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    assert result.best_epoch == int(files[-1].name[11:13])
    if result.stopped_early:
        assert result.epochs_run < 6 and result.epochs_run == result.best_epoch + 1


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, ("/tmp/kubetrade-pwned-by-checkpoint",))


def test_loading_refuses_arbitrary_pickled_objects(tmp_path: Path, bundle: Any) -> None:
    marker = Path("/tmp/kubetrade-pwned-by-checkpoint")
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(TrainingError, match="weights-only"):
        load_checkpoint(path)
    assert not marker.exists()
    # a poisoned snapshot is refused before any weight is loaded
    (tmp_path / "run").mkdir()
    torch.save({"epoch": 1, "payload": _Evil()}, tmp_path / "run" / SNAPSHOT_NAME)
    with pytest.raises(TrainingError, match="refusing"):
        fit(tiny_training_config(), bundle, tmp_path / "run", verbose=False)
    assert not marker.exists()


def test_evaluator_reports_model_and_baselines(tmp_path: Path, bundle: Any) -> None:
    model, _ = fit(tiny_training_config(num_epochs=1), bundle, tmp_path, verbose=False)
    evaluator = ModelEvaluator(train_data=bundle.train)
    results = evaluator.evaluate(model, bundle.test)
    assert set(results["baselines"]) == {"majority_class", "logistic_regression", "buy_and_hold"}
    assert set(results["model"]) >= {"accuracy", "f1_score", "mse", "sharpe_ratio", "calmar_ratio"}
    # buy-and-hold = equal-weight mean forward return per timestamp
    stamps = bundle.test.timestamps
    expected = [bundle.test.y_reg[stamps == t].mean() for t in np.unique(stamps)]
    np.testing.assert_allclose(results["series"]["buy_and_hold"], expected, rtol=1e-6)
    majority = np.bincount(bundle.train.y_cls).argmax()
    assert results["baselines"]["majority_class"]["accuracy"] == pytest.approx(
        np.mean(bundle.test.y_cls == majority)
    )
    # the synthetic signal sits in the last bar's first feature: the linear baseline finds it
    assert results["baselines"]["logistic_regression"]["accuracy"] > 0.4  # chance: 1/3
    assert np.asarray(results["confusion_matrix"]).sum() == len(bundle.test)
    page = evaluator.generate_report(results, tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "logistic_regression" in page
    with pytest.raises(TrainingError, match="train windows"):
        ModelEvaluator().evaluate(model, bundle.test)


def test_pipeline_logs_to_mlflow_and_registers_after_gates(
    tmp_path: Path, bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_training_config(num_epochs=2)
    pipeline = TrainingPipeline(config=cfg, run_dir=tmp_path / "run", registered_model_name="kt-test",
                                verbose=False)  # fmt: skip
    results = pipeline.train_on_bundle(bundle)
    uri = f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    run = client.get_run(results["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.batch_size"] == "16"
    assert run.data.params["model.cnn.filter_sizes"] == "[2, 3]"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert "test_baseline_buy_and_hold_sharpe_ratio" in run.data.metrics
    assert run.data.metrics["parity_onnx_classification"] <= 1e-4
    artifact_root = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_root.is_relative_to((tmp_path / "run" / "mlartifacts").resolve())
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "reports", "export", "checkpoints"} <= names
    versions = client.search_model_versions("name='kt-test'")
    assert [v.run_id for v in versions] == [results["run_id"]]
    assert results["model_version"] == str(versions[0].version)
    assert set(results["metrics"]) == {"val", "test", "val_baselines", "test_baselines"}
    assert results["best_val_loss"] == min(h["val_loss"] for h in results["history"])

    # a failed parity gate ends the run FAILED and registers nothing
    def broken_export(*args: Any, **kwargs: Any) -> Any:
        raise ExportError("onnx export is not numerically equal to eager PyTorch: 0.3 > 1e-4")

    monkeypatch.setattr("kubetrade.training.evaluate_export.export_model", broken_export)
    failing = TrainingPipeline(config=cfg, run_dir=tmp_path / "run2", tracking_uri=uri,
                               registered_model_name="kt-test", verbose=False)  # fmt: skip
    with pytest.raises(ExportError):
        failing.train_on_bundle(bundle)
    runs = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED"
    assert len(client.search_model_versions("name='kt-test'")) == 1


def test_interpretability_attention_and_shap(tmp_path: Path, bundle: Any) -> None:
    from kubetrade.training import AttentionVisualizer, SHAPExplainer

    model, _ = fit(tiny_training_config(num_epochs=1), bundle, tmp_path, verbose=False)
    maps = AttentionVisualizer(model).visualize_attention(bundle.test.X[0], tmp_path / "att.html")
    assert maps["cross_attention"].shape == (12, 12) and maps["pooling"].shape == (12,)
    assert (tmp_path / "att.html").read_text().count("base64,") == 1
    AttentionVisualizer(model).visualize_attention(bundle.test.X[:2], tmp_path / "att.png")
    assert (tmp_path / "att.png").read_bytes()[:4] == b"\x89PNG"

    explainer = SHAPExplainer(
        model, bundle.train, bundle.feature_names, max_background=40, nsamples=200
    )
    explained = explainer.explain_prediction(bundle.test.X[:4])
    assert explained["values"].shape == (4, 12, 4, 3)
    assert explained["predicted_values"].shape == (4, 12, 4)
    # expected gradients are (approximately) complete: attributions sum to f(x) - E[f(background)]
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(bundle.test.X[:4]))["classification"].numpy()
        background = explainer.background
        base = model(background)["classification"].numpy().mean(0)
    totals = explained["values"].sum(axis=(1, 2))
    assert np.corrcoef(totals.ravel(), (logits - base).ravel())[0, 1] > 0.9
    importance = explainer.feature_importance(bundle.test, n_samples=4)
    assert list(importance) != [] and set(importance) == set(bundle.feature_names)
    assert list(importance.values()) == sorted(importance.values(), reverse=True)


@pytest.mark.parametrize(
    ("scheduler", "monitor", "mixed_precision"),
    [
        ("reduce_on_plateau", "val_sharpe_ratio", True),  # bf16 autocast on CPU
        ("cosine_annealing_warm_restarts", "val_loss", False),
        ("none", "val_loss", False),
    ],
)
def test_schedulers_monitors_and_mixed_precision(
    tmp_path: Path, bundle: Any, scheduler: str, monitor: str, mixed_precision: bool
) -> None:
    cfg = tiny_training_config(num_epochs=2, monitor=monitor, max_train_windows=64,
                      scheduler={"type": scheduler, "T_0": 1, "patience": 0})  # fmt: skip
    cfg.hardware.mixed_precision = mixed_precision
    _, result = fit(cfg, bundle, tmp_path, verbose=False)
    assert result.monitor == monitor and result.epochs_run == 2
    assert all(np.isfinite(h["train_loss"]) and h["grad_norm"] > 0 for h in result.history)
    lrs = [h["lr"] for h in result.history]
    if scheduler == "none":
        assert lrs == [cfg.training.learning_rate] * 2
    if scheduler == "cosine_annealing_warm_restarts":  # T_0=1: restarts every epoch
        assert lrs == [cfg.training.learning_rate] * 2


@pytest.mark.slow
def test_torch_compile_trains(tmp_path: Path, bundle: Any) -> None:
    _, result = fit(
        tiny_training_config(num_epochs=1, compile=True), bundle, tmp_path, verbose=False
    )
    assert np.isfinite(result.history[0]["train_loss"])


def test_skipped_amp_steps_do_not_poison_the_epoch_grad_norm(
    tmp_path: Path, bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp16 + GradScaler skips steps whose gradients overflowed; their inf norm must be
    counted, not averaged (it made the first CUDA epoch log grad_norm=nan)."""
    from kubetrade.training.trainer import Trainer

    real = Trainer._run_batch
    calls = {"n": 0}

    def overflow_first(self: Trainer, *batch: Any) -> dict[str, float]:
        stats = real(self, *batch)
        calls["n"] += 1
        if calls["n"] == 1:
            stats["grad_norm"] = float("inf")
        return stats

    monkeypatch.setattr(Trainer, "_run_batch", overflow_first)
    _, result = fit(tiny_training_config(num_epochs=1), bundle, tmp_path, verbose=False)
    first = result.history[0]
    assert np.isfinite(first["grad_norm"]) and first["grad_norm"] > 0
    assert np.isfinite(first["grad_norm_max"])
    assert first["nonfinite_grad_steps"] == 1.0
