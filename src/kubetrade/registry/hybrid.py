"""Register the exported hybrid CNN+LSTM model from an export folder.

``export_step`` writes ``<export_dir>/model_uri.json``::

    {"model_uri": "models:/m-...", "run_id": "...",
     "sha256": {"torchscript": "...", "onnx": "...", "onnx_serving": "..."},
     "files": {"torchscript": "model.pt", "onnx": "model.onnx",
               "onnx_serving": "model_serving.onnx"}}

File names are relative to the export folder: :func:`register_export` hashes the files in
the folder it is given, checks the logged model (a pyfunc wrapping those same bytes, see
:mod:`kubetrade.registry.hybrid_pyfunc`) is the export's own, then registers it through
:func:`~kubetrade.registry.champion.register_challenger`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from kubetrade.errors import RegistryError
from kubetrade.registry.champion import Promotion, register_challenger
from kubetrade.registry.provenance import git_commit, sha256_file, verify_sha256
from kubetrade.registry.store import one_line, redact

__all__ = [
    "DEFAULT_HYBRID_NAME",
    "read_export_info",
    "read_oos_metric",
    "read_results",
    "results_baselines",
    "register_export",
    "verify_export",
    "write_export_info",
]

DEFAULT_HYBRID_NAME = "kubetrade-hybrid"


def write_export_info(
    export_dir: str | Path, model_uri: str, run_id: str, files: Mapping[str, str | Path]
) -> Path:
    """Write ``<export_dir>/model_uri.json`` (the logged model, its run and the SHA-256 of
    each exported file, by name relative to ``export_dir``) atomically;
    :func:`register_export` reads it."""
    root = Path(export_dir).resolve()
    names: dict[str, str] = {}
    for key, file in files.items():
        path = Path(file).resolve()
        if path.parent != root:
            raise RegistryError(f"{file} is not a file of the export folder {export_dir}")
        names[key] = path.name
    path = Path(export_dir) / "model_uri.json"
    info = {
        "model_uri": model_uri,
        "run_id": run_id,
        "sha256": {key: sha256_file(root / name) for key, name in names.items()},
        "files": names,
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
        raise RegistryError(
            f"cannot read {path} ({type(exc).__name__}); run the export step first"
        ) from exc
    if not isinstance(info, dict):
        raise RegistryError(f"{path} is not a JSON object; rerun the export step")
    missing = [k for k in ("model_uri", "run_id", "sha256", "files") if k not in info]
    if missing:
        raise RegistryError(f"{path} lacks {missing}; rerun the export step")
    files, digests = info["files"], info["sha256"]
    if not (isinstance(files, dict) and isinstance(digests, dict)) or set(files) != set(digests):
        raise RegistryError(f"{path}: files and sha256 do not name the same formats; re-export")
    for key, name in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise RegistryError(
                f"{path}: file {str(name)[:80]!r} of {key!r} is not a plain file name in the "
                "export folder (written by an older kubetrade?); re-export the run"
            )
    if "torchscript" not in files:
        raise RegistryError(f"{path} names no torchscript file; re-export the run")
    return dict(info)


def verify_export(export_dir: str | Path) -> dict[str, Any]:
    """:func:`read_export_info` plus the SHA-256 of every named file *in ``export_dir``*
    checked against the recorded one; returns the info."""
    info = read_export_info(export_dir)
    root = Path(export_dir)
    verify_sha256({key: root / name for key, name in info["files"].items()}, info["sha256"])
    return info


def read_results(results_path: str | Path) -> dict[str, Any]:
    """The evaluation results JSON (RegistryError, one line, when unreadable)."""
    path = Path(results_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"cannot read {path} ({type(exc).__name__}); run the evaluate step first"
        ) from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{path} is not a JSON object; pass the evaluate step's results")
    return data


def results_baselines(results: Mapping[str, Any], metric: str) -> dict[str, float]:
    """``{baseline: its test <metric>}`` of the evaluation results (those that have it)."""
    out: dict[str, float] = {}
    for name, values in ((results.get("test") or {}).get("baselines") or {}).items():
        if isinstance(values, dict) and isinstance(values.get(metric), int | float):
            out[str(name)] = float(values[metric])
    return out


def read_oos_metric(results_path: str | Path, metric: str = "sharpe_ratio") -> float:
    """``results["test"]["model"][metric]`` of the evaluation results JSON."""
    path = Path(results_path)
    try:
        return float(read_results(path)["test"]["model"][metric])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(
            f"cannot read test.model.{metric} from {path} ({type(exc).__name__}); "
            "run the evaluate step first"
        ) from exc


def _run_link(client: Any, run_id: str, metric: str, value: float, uri: str) -> dict[str, str]:
    """Check ``value`` is what the export's run logged as ``test_<metric>`` (the results belong
    to this export); return the run's data range tags."""
    import math

    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RegistryError(
            f"the export's run {run_id} is not in the store {redact(uri)} ({one_line(exc)}); register "
            "against the store the run was tracked in (--tracking-uri)"
        ) from exc
    logged = run.data.metrics.get(f"test_{metric}")
    if logged is None:
        raise RegistryError(
            f"run {run_id} logged no test_{metric}; the results cannot be tied to this export"
        )
    if not math.isclose(float(logged), value, rel_tol=1e-9, abs_tol=1e-12):
        raise RegistryError(
            f"the results' {metric} {value:.6g} is not the {logged:.6g} run {run_id} logged "
            "for this export; pass the results of the same run"
        )
    tags = run.data.tags
    period = tags.get("period_test")
    symbols = tags.get("symbols")
    if not period or not symbols:
        raise RegistryError(
            f"run {run_id} records no test period / symbols (tags period_test, symbols); "
            "retrain with this version of kubetrade to register it"
        )
    ordered = ",".join(sorted(s.strip() for s in symbols.split(",") if s.strip()))
    return {"kubetrade.test_period": period, "kubetrade.symbols": ordered}


def register_export(
    export_dir: str | Path,
    value: float,
    *,
    model_name: str = DEFAULT_HYBRID_NAME,
    metric: str = "sharpe_ratio",
    mode: Literal["max", "min"] | None = None,
    tags: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    margin: float = 0.0,
    force_reason: str | None = None,
    baselines: Mapping[str, float] | None = None,
    **retry: Any,
) -> Promotion:
    """Verify, then register the export's logged model as a challenger (champion if the
    gate passes, see :func:`~kubetrade.registry.champion.gate_decision`).

    Verified before anything is registered (RegistryError, one line, otherwise):

    * every exported file in ``export_dir`` (names relative to it) hashes to the SHA-256
      recorded at export;
    * ``model_uri`` is a logged model of the export's own run, a kubetrade hybrid pyfunc
      (our code file, no pickle) whose stored artifacts hash to the same SHA-256;
    * ``value`` equals the ``test_<metric>`` that run logged (the results are this export's);
    * the run's test period and symbols are recorded (compared with the champion's).

    Tags: ``tags`` plus ``git_commit``, ``sha256_<format>``, ``sha256_logged_model`` (a digest
    over every file of the logged model), ``mlflow_run_id``, the data range."""
    from mlflow import MlflowClient

    from kubetrade.registry.hybrid_pyfunc import inspect_logged_hybrid

    info = verify_export(export_dir)
    uri = tracking_uri or _default_uri()
    try:
        client = MlflowClient(uri)
    except Exception as exc:  # noqa: BLE001 - a bad URI/store: one line
        raise RegistryError(
            f"cannot open the MLflow store {redact(uri)} ({one_line(exc)})"
        ) from exc
    model_uri, run_id = str(info["model_uri"]), str(info["run_id"])
    if not model_uri.startswith("models:/m-"):
        raise RegistryError(
            f"model_uri {model_uri[:80]!r} is not a logged model (models:/m-...); re-export the run"
        )
    logged = inspect_logged_hybrid(model_uri, uri)
    if logged["run_id"] != run_id:
        raise RegistryError(
            f"{model_uri} was logged by run {logged['run_id']}, not the export's run {run_id}; "
            "refusing to register another run's model"
        )
    if logged["artifacts"] != info["sha256"] or logged["config_sha256"] != info["sha256"]:
        raise RegistryError(
            f"{model_uri}'s stored files differ from the export in {export_dir} (SHA-256); "
            "the logged model is not the exported one, not registering"
        )
    data_range = _run_link(client, run_id, metric, float(value), uri)
    manifest = hashlib.sha256(
        "".join(f"{k}\0{v}\n" for k, v in sorted(logged["files"].items())
                if k != "registered_model_meta").encode()
    ).hexdigest()  # fmt: skip
    all_tags: dict[str, Any] = {"git_commit": git_commit(), "model_kind": "hybrid_cnn_lstm"}
    all_tags.update(tags or {})
    all_tags.update({f"sha256_{k}": v for k, v in info["sha256"].items()})
    all_tags["sha256_logged_model"] = manifest
    all_tags["mlflow_run_id"] = run_id
    return register_challenger(
        model_uri, model_name, metric, float(value), mode=mode, tags=all_tags,
        tracking_uri=uri, margin=margin, data_range=data_range, force_reason=force_reason,
        baselines=baselines, idempotency_key=f"hybrid:{model_uri}:{manifest}:{metric}={float(value)!r}", **retry,
    )  # fmt: skip


def _default_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())
