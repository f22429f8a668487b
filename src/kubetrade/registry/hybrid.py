"""Register the exported hybrid CNN+LSTM model from an export folder.

``export_step`` writes ``<export_dir>/model_uri.json``::

    {"model_uri": "models:/m-...", "run_id": "...",
     "sha256": {"torchscript": "...", "onnx": "...", "onnx_serving": "..."},
     "files": {"torchscript": "/path/model.pt", "onnx": "/path/model.onnx",
               "onnx_serving": "/path/model_serving.onnx"}}

:func:`register_export` checks the files against those hashes, then registers the
logged MLflow model through :func:`~kubetrade.registry.champion.register_challenger`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from kubetrade.errors import RegistryError
from kubetrade.registry.champion import (
    Promotion,
    git_commit,
    register_challenger,
    sha256_file,
    verify_sha256,
)

__all__ = [
    "DEFAULT_HYBRID_NAME",
    "read_export_info",
    "read_oos_metric",
    "register_export",
    "write_export_info",
]

DEFAULT_HYBRID_NAME = "kubetrade-hybrid"


def write_export_info(
    export_dir: str | Path, model_uri: str, run_id: str, files: Mapping[str, str | Path]
) -> Path:
    """Write ``<export_dir>/model_uri.json`` (the logged model, its run and the SHA-256 of
    each exported file) atomically; :func:`register_export` reads it."""
    path = Path(export_dir) / "model_uri.json"
    info = {
        "model_uri": model_uri,
        "run_id": run_id,
        "sha256": {key: sha256_file(file) for key, file in files.items()},
        "files": {key: str(file) for key, file in files.items()},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def read_export_info(export_dir: str | Path) -> dict[str, Any]:
    """The ``model_uri.json`` that export wrote (RegistryError when missing or incomplete)."""
    path = Path(export_dir) / "model_uri.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path} ({exc}); run the export step first") from exc
    missing = [k for k in ("model_uri", "run_id", "sha256", "files") if k not in info]
    if missing:
        raise RegistryError(f"{path} lacks {missing}; rerun the export step")
    return dict(info)


def read_oos_metric(results_path: str | Path, metric: str = "sharpe_ratio") -> float:
    """``results["test"]["model"][metric]`` of the evaluation results JSON."""
    path = Path(results_path)
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["test"]["model"][metric])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(
            f"cannot read test.model.{metric} from {path} ({exc!r}); run the evaluate step first"
        ) from exc


def register_export(
    export_dir: str | Path,
    value: float,
    *,
    model_name: str = DEFAULT_HYBRID_NAME,
    metric: str = "sharpe_ratio",
    mode: Literal["max", "min"] = "max",
    tags: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    **retry: Any,
) -> Promotion:
    """Verify the exported files' SHA-256, then register the logged model as a challenger
    (champion if ``value`` beats the champion's). Tags: ``tags`` plus ``git_commit``
    (unless given), ``sha256_<file>`` and ``mlflow_run_id``. ``retry``: the bounds of
    :func:`register_challenger` (``attempts``, ``backoff_s``, ``http_timeout_s``, ...)."""
    info = read_export_info(export_dir)
    verify_sha256(info["files"], info["sha256"])
    all_tags: dict[str, Any] = {"git_commit": git_commit(), "model_kind": "hybrid_cnn_lstm"}
    all_tags.update(tags or {})
    all_tags.update({f"sha256_{k}": v for k, v in info["sha256"].items()})
    all_tags["mlflow_run_id"] = info["run_id"]
    return register_challenger(
        info["model_uri"], model_name, metric, float(value), mode=mode, tags=all_tags,
        tracking_uri=tracking_uri, **retry,
    )  # fmt: skip
