"""A tiny, real deployment for tests and the serving benchmark: synthetic bars -> features ->
Feast repo (materialized SQLite online store) -> split bundle -> small hybrid models exported
(TorchScript, ONNX, serving graph, serving spec) -> logged and registered in a SQLite MLflow
store through ``register_export`` (the champion gate), exactly as the pipeline's steps do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY_TRAINING: dict[str, Any] = {
    "model": {
        "cnn": {"hidden_dim": 8, "filter_sizes": [2, 3], "num_heads": 2, "dropout": 0.0},
        "lstm": {"hidden_dim": 4, "num_layers": 1, "dropout": 0.0},
        "fusion": {"output_dim": 8, "num_heads": 2},
    },
    "data": {"sequence_length": 12, "features": ["open", "high", "low", "close", "volume", "rsi"]},
    "hardware": {"mixed_precision": False, "device": "cpu", "nproc_per_node": 1},
}

__all__ = ["Demo", "TINY_TRAINING", "build_demo", "register_demo_model"]


@dataclass
class Demo:
    root: Path
    tracking_uri: str
    feast_repo: Path
    features: Any  # the feature frame the store was built from
    bundle: Any  # DatasetBundle (scaled windows, scaler, feature names)
    training: Any  # TrainingConfig
    model_name: str
    models: dict[str, Any]  # version -> eager HybridCNNLSTM


def register_demo_model(demo: Demo, seed: int, value: float) -> str:
    """Build, export, log and register one small model; returns its version."""
    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from kubetrade.models import HybridCNNLSTM
    from kubetrade.registry import register_export, write_export_info
    from kubetrade.serving.spec import write_serving_spec
    from kubetrade.training.export import export_model

    torch.manual_seed(seed)
    bundle = demo.bundle
    model = HybridCNNLSTM.from_config(demo.training.model, n_features=bundle.n_features)
    flat = bundle.train.X.reshape(-1, bundle.n_features)
    model.set_normalization(torch.from_numpy(flat.mean(0)), torch.from_numpy(flat.std(0)),
                            float(np.std(bundle.train.y_reg)))  # fmt: skip
    model.eval()
    export_dir = demo.root / f"export-{seed}"
    exported = export_model(model, export_dir, bundle.test)
    write_serving_spec(export_dir, bundle, demo.training)
    client = mlflow.MlflowClient(demo.tracking_uri)
    exp = client.get_experiment_by_name("serving-demo")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "serving-demo", artifact_location=(demo.root / "artifacts").as_uri())  # fmt: skip
    run = client.create_run(exp_id)
    run_id = run.info.run_id
    # what the pipeline's evaluate step records: the results and the data range they are for
    client.log_metric(run_id, "test_sharpe_ratio", value)
    first, last = (
        pd.Timestamp(t) for t in (bundle.test.timestamps.min(), bundle.test.timestamps.max())
    )
    period = f"{first:%Y-%m-%d}..{last:%Y-%m-%d}"
    client.set_tag(run_id, "period_test", period)
    client.set_tag(run_id, "symbols", ",".join(sorted(map(str, set(bundle.test.symbols)))))
    client.log_artifacts(run_id, str(export_dir), "export")
    from kubetrade.registry.hybrid_pyfunc import log_hybrid

    # logged like the pipeline's export step: a pyfunc over the exported files (no pickle)
    model_uri = log_hybrid(export_dir, exported.files(), demo.tracking_uri, run_id,
                           input_shape=tuple(bundle.test.X.shape[1:]))  # fmt: skip
    client.set_terminated(run_id, status="FINISHED")
    write_export_info(export_dir, model_uri, run_id, exported.files())
    promo = register_export(export_dir, value, model_name=demo.model_name,
                            tracking_uri=demo.tracking_uri)  # fmt: skip
    demo.models[promo.version] = model
    return promo.version


def build_demo(root: str | Path, n_symbols: int = 2, n_years: float = 2.0, seed: int = 0,
               model_name: str = "kubetrade-hybrid") -> Demo:  # fmt: skip
    """Feast repo + bundle under ``root`` (no model yet: see :func:`register_demo_model`)."""
    from kubetrade.config import TrainingConfig, load_yaml_model
    from kubetrade.data.feature_store import FeatureStoreBuilder
    from kubetrade.data.features import FeatureEngineer
    from kubetrade.data.sources import generate_synthetic
    from kubetrade.data.splits import prepare_datasets

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    prices = generate_synthetic(n_symbols=n_symbols, n_years=n_years, seed=seed)
    features = FeatureEngineer().add_technical_indicators(prices, ["rsi"])
    training = load_yaml_model(TrainingConfig, data=TINY_TRAINING)
    bundle = prepare_datasets(features, training, augment_train=False)
    repo = root / "feast_repo"
    store = FeatureStoreBuilder(repo)
    store.generate(features)
    store.apply()
    # online store as of the last test decision bar: its window is the bundle's last one
    store.materialize(end_date=str(bundle.test.timestamps.max()))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Demo(root, uri, repo, features, bundle, training, model_name, {})
