"""The hybrid CNN+LSTM model as an MLflow pyfunc model without pickles.

The logged model's artifacts are the exported files (``model.pt`` TorchScript, ``model.onnx``,
``model_serving.onnx``); its code is ``hybrid_model_code.py`` (models-from-code), its model
config the SHA-256 of each artifact. Loading checks every artifact's SHA-256 first, then
``torch.jit.load``-s the TorchScript file (TorchScript's own archive format, not a Python
pickle of a module). ``mlflow.pyfunc.load_model('models:/kubetrade-hybrid@champion')``
returns it.

**Input**: a float array ``(n, sequence_length, n_features)`` (or a DataFrame of ``n`` rows
with ``sequence_length * n_features`` columns, row-major). **Output**: a dict
``{"classification": (n, n_classes) logits, "regression": (n, 1)}``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

from kubetrade.errors import RegistryError
from kubetrade.registry.provenance import sha256_file
from kubetrade.registry.store import bounded_http, global_tracking_uri, one_line, redact, retry

__all__ = ["HybridPyfunc", "log_hybrid", "inspect_logged_hybrid", "HYBRID_CODE"]

HYBRID_CODE = Path(__file__).with_name("hybrid_model_code.py")


class HybridPyfunc(PythonModel):  # type: ignore[misc]
    """Serves the exported TorchScript file (see module doc)."""

    def load_context(self, context: Any) -> None:
        import torch

        config = dict(context.model_config or {})
        expected: Mapping[str, str] = config.get("sha256") or {}
        if "torchscript" not in expected or set(expected) != set(context.artifacts):
            raise RegistryError(
                "the logged hybrid model's artifacts differ from the SHA-256 list in its model "
                "config; the model artifact was altered"
            )
        for key, digest in expected.items():
            actual = sha256_file(context.artifacts[key])
            if actual != digest:
                raise RegistryError(
                    f"{Path(context.artifacts[key]).name} of the logged hybrid model has SHA-256 "
                    f"{actual[:12]}..., expected {digest[:12]}...; the model artifact was altered"
                )
        self.module = torch.jit.load(context.artifacts["torchscript"], map_location="cpu").eval()
        self.input_shape = tuple(int(s) for s in config.get("input_shape") or ())

    def predict(
        self, context: Any, model_input: Any, params: dict[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        import pandas as pd
        import torch

        if isinstance(model_input, pd.DataFrame):
            model_input = model_input.to_numpy(dtype=np.float32)
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == 2 and len(self.input_shape) == 2:
            x = x.reshape((-1, *self.input_shape))
        with torch.no_grad():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(x)))
        cls, reg = (
            (outputs[0], outputs[1]) if isinstance(outputs, list | tuple) else (outputs, None)
        )
        result = {"classification": cls.numpy()}
        if reg is not None:
            result["regression"] = reg.numpy()
        return result


def log_hybrid(
    export_dir: str | Path,
    files: Mapping[str, str | Path],
    tracking_uri: str,
    run_id: str,
    *,
    name: str = "model",
    input_shape: tuple[int, ...] | None = None,
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> str:
    """Log the exported files as a pyfunc model into ``run_id`` (its status is kept); returns
    the model URI. ``files``: format -> path of the export."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    artifacts = {key: str(Path(path).resolve()) for key, path in files.items()}
    digests = {key: sha256_file(path) for key, path in artifacts.items()}
    client = MlflowClient(tracking_uri)

    def log() -> str:
        status = client.get_run(run_id).info.status
        with global_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(HYBRID_CODE),
                artifacts=artifacts,
                model_config={"sha256": digests, "input_shape": list(input_shape or ())},
                pip_requirements=[
                    "kubetrade",
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"mlflow=={mlflow.__version__}",
                ],
                metadata={"kubetrade_sha256": digests, "model_kind": "hybrid_cnn_lstm"},
            )
        client.update_run(run_id, status=status)  # start_run's exit marked it FINISHED
        return str(info.model_uri)

    del export_dir  # the files are named explicitly; kept for the call sites' readability
    with bounded_http(120, 1):
        return retry(log, "log the hybrid model", tracking_uri, attempts, backoff_s)


def inspect_logged_hybrid(
    model_uri: str, tracking_uri: str, attempts: int = 4, backoff_s: float = 0.5
) -> dict[str, Any]:
    """Download ``model_uri`` and describe it: ``run_id``, ``artifacts`` (key -> SHA-256 of the
    stored file), ``files`` (every file of the logged model -> SHA-256), ``config_sha256``.
    RegistryError when it is not a kubetrade hybrid pyfunc model or its code is not ours."""
    import mlflow
    import yaml

    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            global_tracking_uri(tracking_uri),
            bounded_http(60, 1),
        ):
            local = retry(
                lambda: Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
                    )
                ),
                "read back the logged model",
                tracking_uri,
                attempts,
                backoff_s,
            )
            files = {
                str(p.relative_to(local)): sha256_file(p)
                for p in sorted(local.rglob("*"))
                if p.is_file()
            }
            mlmodel = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
            flavors = mlmodel.get("flavors") or {}
            pyfunc = flavors.get("python_function") or {}
            code = pyfunc.get("model_code_path")
            code_file = local / Path(str(code)).name
            code_ok = (
                isinstance(code, str)
                and "python_model" not in pyfunc  # a cloudpickled PythonModel
                and not pyfunc.get("code")  # no extra code paths put on sys.path
                and code_file.is_file()
                and code_file.read_bytes() == HYBRID_CODE.read_bytes()
            )
            artifacts_spec = pyfunc.get("artifacts") or {}
            artifacts = {
                key: sha256_file(local / spec["path"])
                for key, spec in artifacts_spec.items()
                if (local / spec["path"]).is_file()
            }
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise RegistryError(
            f"could not read back {model_uri} from {redact(tracking_uri)} to verify it "
            f"({one_line(exc)}); check the store and rerun"
        ) from exc
    if (
        set(flavors) != {"python_function"}
        or not code_ok
        or pyfunc.get("loader_module") != ("mlflow.pyfunc.loaders.code_model")
    ):
        raise RegistryError(
            f"{model_uri} is not a kubetrade hybrid pyfunc model (flavors {sorted(flavors)}, "
            "code not kubetrade's); refusing to register it. Re-export the run with this "
            "version of kubetrade"
        )
    config = pyfunc.get("config") or {}
    return {
        "run_id": mlmodel.get("run_id"),
        "artifacts": artifacts,
        "files": files,
        "config_sha256": dict(config.get("sha256") or {}),
    }
