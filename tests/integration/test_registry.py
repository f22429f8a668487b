"""Champion/challenger against a real local MLflow store (SQLite)."""

from __future__ import annotations

import pytest
import torch

from kubetrade.errors import RegistryError
from kubetrade.registry import register_challenger, sha256_file, verify_sha256


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    # set_tracking_uri writes MLFLOW_TRACKING_URI; monkeypatch restores the environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())

    def model_uri() -> str:
        run = client.create_run(exp)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.pytorch.log_model(
                torch.nn.Linear(2, 1), name="model", serialization_format="pickle"
            )
        return info.model_uri

    yield uri, client, model_uri
    mlflow.set_tracking_uri(None)


def test_first_version_becomes_champion_and_worse_challenger_does_not(store):
    uri, client, model_uri = store
    first = register_challenger(model_uri(), "m", "sharpe_ratio", 0.8, tracking_uri=uri)
    assert first.promoted and first.champion_version is None
    worse = register_challenger(model_uri(), "m", "sharpe_ratio", 0.3, tracking_uri=uri)
    assert not worse.promoted
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version
    assert str(client.get_model_version_by_alias("m", "challenger").version) == worse.version
    better = register_challenger(model_uri(), "m", "sharpe_ratio", 1.2, tracking_uri=uri,
                                 tags={"git_commit": "abc"})  # fmt: skip
    assert better.promoted and better.champion_version == first.version
    champ = client.get_model_version_by_alias("m", "champion")
    assert str(champ.version) == better.version and champ.tags["git_commit"] == "abc"


def test_nan_metric_is_refused_and_champion_untouched(store):
    uri, client, model_uri = store
    first = register_challenger(model_uri(), "m", "sharpe_ratio", 0.5, tracking_uri=uri)
    with pytest.raises(RegistryError, match="not a number"):
        register_challenger(model_uri(), "m", "sharpe_ratio", float("nan"), tracking_uri=uri)
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version
    assert len(client.search_model_versions("name='m'")) == 1


def test_unreachable_store_bounded_retries_then_clear_error(monkeypatch):
    # MLflow's own HTTP client retries too; keep its part short so ours is what is tested
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(RegistryError, match=r"failed to register the model after 2 attempts"):
        register_challenger("runs:/x/model", "m", "sharpe_ratio", 1.0,
                            tracking_uri="http://127.0.0.1:9", attempts=2, backoff_s=0.01)  # fmt: skip


def test_sha256_mismatch_blocks_promotion(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"abc")
    verify_sha256({"onnx": f}, {"onnx": sha256_file(f)})
    f.write_bytes(b"abd")
    with pytest.raises(RegistryError, match="does not match"):
        verify_sha256({"onnx": f}, {"onnx": "0" * 64})
