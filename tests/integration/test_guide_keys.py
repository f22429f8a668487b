"""Guide keys that used to be ignored: each changes behaviour or fails with one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from kubetrade.config import PipelineConfig, TrainingConfig
from kubetrade.data.splits import save_bundle
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.models import HybridCNNLSTM
from kubetrade.training.bundle import make_demo_bundle
from kubetrade.training.interpretability import SHAPExplainer
from kubetrade.training.trainer import Trainer, fit
from kubetrade.tuning.api import AdvancedTrainingPipeline

TINY = dict(
    cnn_hidden_dim=8, filter_sizes=(2, 3), cnn_num_heads=2, lstm_hidden_dim=8, lstm_num_layers=1,
    fusion_dim=8, fusion_num_heads=2,
)  # fmt: skip
TINY_CFG = tiny_overrides(**{
    "model.lstm.hidden_dim": 8, "training.max_train_windows": 128, "data.sequence_length": 10,
})  # fmt: skip


def _cfg(**sections: Any) -> TrainingConfig:
    data = {"data": {"sequence_length": 10}, "hardware": {"mixed_precision": False}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return TrainingConfig.model_validate(data)


@pytest.fixture(scope="module")
def bundle() -> Any:
    return make_demo_bundle(2, 2, seed=0, cfg=_cfg())


def _trainer(bundle: Any, tmp_path: Path, cfg: TrainingConfig, **model_kw: Any) -> Trainer:
    model = HybridCNNLSTM(bundle.n_features, **TINY, **model_kw)
    return Trainer(model, cfg, bundle.train, bundle.val, tmp_path, resume=False, verbose=True)


# ------------------------------------------------ HybridCNNLSTM(weight_decay=, gradient_clip=)
def test_model_weight_decay_and_gradient_clip_reach_the_optimiser(bundle, tmp_path) -> None:
    cfg = _cfg(training={"gradient_clip_norm": 1.0}, hardware={"device": "cpu"})
    default = _trainer(bundle, tmp_path / "a", cfg)
    assert default.optimizer.param_groups[0]["weight_decay"] == cfg.training.optimizer.weight_decay
    assert default.gradient_clip == 1.0
    guided = _trainer(bundle, tmp_path / "b", cfg, weight_decay=0.3, gradient_clip=1e-6)
    assert guided.optimizer.param_groups[0]["weight_decay"] == 0.3
    assert guided.gradient_clip == 1e-6
    # behaviour: the gradients the optimiser stepped with were clipped to the model's 1e-6
    x = torch.as_tensor(bundle.train.X[:16])
    yc = torch.as_tensor(bundle.train.y_cls[:16])
    yr = torch.as_tensor(bundle.train.y_reg[:16])
    stats = guided._run_batch(x, yc, yr)
    assert stats["grad_norm"] > 1e-3  # the pre-clip norm
    grads = [p.grad.detach() for p in guided.model.parameters() if p.grad is not None]
    clipped = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    assert clipped <= 1.01e-6


# ------------------------------------------------ hardware.device / hardware.num_workers
def test_hardware_device_is_honoured_in_single_process(bundle, tmp_path, capsys) -> None:
    cpu = _trainer(bundle, tmp_path / "c", _cfg(hardware={"device": "cpu", "num_workers": 0}))
    assert cpu.device.type == "cpu"
    assert "num_workers" not in capsys.readouterr().out
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA device is visible"):
            _trainer(bundle, tmp_path / "d", _cfg(hardware={"device": "cuda"}))
        auto = _trainer(bundle, tmp_path / "e", _cfg(hardware={"device": "auto"}))
        assert auto.device.type == "cpu"
    else:
        auto = _trainer(bundle, tmp_path / "e", _cfg(hardware={"device": "auto"}))
        assert auto.device.type == "cuda"


def test_num_workers_is_refused_in_one_line(bundle, tmp_path, capsys) -> None:
    _trainer(bundle, tmp_path, _cfg(hardware={"device": "cpu", "num_workers": 4}))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "num_workers" in ln]
    assert lines == [
        "[kubetrade] hardware.num_workers=4 is not used: batches are slices of in-memory "
        "tensors, there are no loader workers"
    ]


# ------------------------------------------------ SHAPExplainer(model) without a background
def test_shap_explainer_defaults_to_training_windows(bundle, tmp_path) -> None:
    cfg = _cfg(training={"num_epochs": 1, "batch_size": 32}, hardware={"device": "cpu"})
    cfg = TrainingConfig.model_validate(
        {**cfg.model_dump(), "model": {"cnn": {"hidden_dim": 8, "filter_sizes": [2, 3],
         "num_heads": 2}, "lstm": {"hidden_dim": 8, "num_layers": 1},
         "fusion": {"output_dim": 8, "num_heads": 2}}}
    )  # fmt: skip
    model, _ = fit(cfg, bundle, tmp_path / "fit", verbose=False, resume=False)
    explainer = SHAPExplainer(model, nsamples=8)
    bg = explainer.background.numpy()
    assert bg.shape[0] > 1 and bg.shape[1:] == bundle.train.X.shape[1:]
    # the background rows are training windows (the trainer's train split), not test ones
    train_rows = {row.tobytes() for row in np.asarray(bundle.train.X, np.float32)}
    assert all(row.tobytes() in train_rows for row in bg)
    importance = explainer.feature_importance(bundle.test.X[:4], n_samples=4)
    assert len(importance) == bundle.n_features

    # a rebuilt (checkpoint-style) model: the training split's mean input
    rebuilt = HybridCNNLSTM(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    mean_explainer = SHAPExplainer(rebuilt, nsamples=8)
    values = mean_explainer.explain_prediction(bundle.test.X[:2])["values"]
    assert values.shape[:3] == (2, *bundle.test.X.shape[1:])

    with pytest.raises(TrainingError, match="pass background=bundle.train"):
        SHAPExplainer(HybridCNNLSTM(bundle.n_features, **TINY))


# ------------------------------------------------ validation.metrics
def test_validation_metrics_choose_what_evaluate_logs(tmp_path, bundle) -> None:
    from kubetrade.pipeline.steps import RunConfig, evaluate_step
    from kubetrade.training.callbacks import CHECKPOINT_FORMAT
    from kubetrade.training.tracking import MlflowTracker

    cfg = _cfg(validation={"metrics": ["precision", "mae"]})
    run = RunConfig(pipeline=PipelineConfig(run_root=str(tmp_path / "runs")), training=cfg)
    save_bundle(bundle, tmp_path / "bundle.npz")
    model = HybridCNNLSTM(bundle.n_features, **TINY)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "model_config": model.config,
                "model_state_dict": model.state_dict()}, model_dir / "final.pt")  # fmt: skip
    tracker = MlflowTracker(run.pipeline.run_root, experiment_name="kubetrade")
    run_id = tracker.start()
    (model_dir / "train_result.json").write_text(
        json.dumps({"run_id": run_id, "final_model_path": str(model_dir / "final.pt")})
    )
    out = tmp_path / "evaluate"
    out.mkdir()
    evaluate_step(run, tmp_path / "bundle.npz", model_dir, out / "report", out / "results")
    test = json.loads((out / "results").read_text())["test"]
    # the configured metrics plus the two the gate and summary read; nothing else
    assert set(test["model"]) == {"precision", "mae", "accuracy", "sharpe_ratio", "total_return"}
    logged = tracker.client.get_run(run_id).data.metrics
    assert "test_precision" in logged and "test_mse" not in logged and "test_f1_score" not in logged
    report = (out / "report").read_text()
    assert "SHAP feature importance" in report and "Attention maps" in report
    artifacts = {a.path for a in tracker.client.list_artifacts(run_id, "reports")}
    assert "reports/evaluation_report.html" in artifacts


# ------------------------------------------------ AdvancedTrainingPipeline keyword arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"use_distributed": True}, "use_distributed=True: tuning trials are single-process"),
        ({"num_gpus": 64}, "num_gpus=64 but"),
        ({"num_gpus": -1}, "num_gpus must be >= 0"),
        ({"checkpoint_every": 10}, "checkpoint_every=10: trials snapshot every epoch"),
        ({"save_best_only": False}, "save_best_only=False"),
        ({"use_wandb": True}, "use_wandb=True: kubetrade tracks with MLflow"),
    ],
)
def test_guide_tuner_options_refused_in_one_line(tmp_path, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        AdvancedTrainingPipeline("config/training.yaml", "x", run_dir=tmp_path, **kwargs)
    assert "\n" not in str(info.value)


def test_guide_tuner_options_honoured(tmp_path, bundle) -> None:
    # the guide's own call (minus Ray/W&B/multi-GPU, which this machine cannot honour)
    pipe = AdvancedTrainingPipeline(
        "config/training.yaml", "guide", run_dir=tmp_path, config_overrides=TINY_CFG,
        num_gpus=0, num_trials=1, save_best_only=True, log_gradients=True, log_model_graph=True,
    )  # fmt: skip
    assert pipe.config.hardware.device == "cpu"  # num_gpus=0 -> CPU trials
    space = {
        "objective": {"metric": "val_loss", "mode": "min", "num_trials": 1,
                      "max_concurrent_trials": 1, "max_t": 1},
        "pruner": {"type": "none", "grace_period": 1},
        "parameters": {"training.learning_rate": {"type": "loguniform", "low": 1e-4,
                                                  "high": 1e-2}},
    }  # fmt: skip
    result = pipe.optimize_hyperparameters(space, bundle=bundle)
    graph = (pipe.tuning_dir / "model_graph.txt").read_text()
    assert graph.startswith("HybridCNNLSTM, ") and "LSTM(" in graph
    assert f"{bundle.n_features} input features" in graph
    from mlflow.tracking import MlflowClient

    client = MlflowClient(pipe.tracking_uri or f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    assert result.mlflow_run_id is not None
    names = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert "model_graph.txt" in names
