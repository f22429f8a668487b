"""The RL ensemble as an MLflow pyfunc model, logged and registered like the hybrid model.

The model's one artifact is the folder :meth:`EnsembleAgent.save` wrote (each member's SB3
zip and ``ensemble.json``); its SHA-256 per file is recorded in the model config, checked
when the model loads, and again (on the files downloaded back from the store) before a
version is registered.

**Input** (``predict(model_input)``): a DataFrame, one row per decision bar, with columns
``obs_0 .. obs_{D-1}`` (float): the env's observation flattened row-major, i.e.
``obs.reshape(-1)`` of the ``(window_size, n_assets*n_features + n_assets + 2)`` array that
:class:`~kubetrade.rl.env.TradingEnvironment` returns (``D = window_size * width``; the
model config holds ``obs_shape``). A NumPy array shaped ``(n, window_size, width)`` or
``(n, D)`` works too when calling the loaded model from Python. Optional columns
``ret_0 .. ret_{n_assets-1}``: the realised asset returns ``close/open - 1`` of the bar each
row's orders fill on (the env's ``info["asset_returns"]``), used by ``mode="online"``.

**Output**: a DataFrame of target portfolio weights, one column per asset (the symbols given
at logging, else ``w_0 ..``), one row per input row.

**params** ``mode``:

* ``"vote"`` (default): each row on its own, ``prior @ member_weights(obs)``: the members'
  deterministic target weights combined by the validation-Sharpe vote, i.e. the ensemble
  without meta-learning or Thompson sampling. Stateless, so any batch of rows works.
* ``"online"``: the rows are consecutive bars of one episode and the model replays
  :class:`EnsembleAgent` exactly as :func:`~kubetrade.rl.ensemble.run_episode` does:
  ``reset(seed)``, then per row ``act(obs)``, then (when ``ret_*`` columns are present)
  ``observe`` the realised returns to update Hedge and the Thompson posteriors. ``seed``
  (``-1`` = the ensemble config's seed) seeds the Thompson draws.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from kubetrade.errors import RegistryError
from kubetrade.registry.champion import Promotion, register_challenger
from kubetrade.registry.provenance import git_commit, sha256_file
from kubetrade.registry.store import bounded_http, global_tracking_uri, one_line, redact, retry

__all__ = [
    "DEFAULT_RL_NAME",
    "RLEnsemblePyfunc",
    "ensemble_sha256",
    "log_rl_ensemble",
    "register_rl_ensemble",
    "observations_frame",
    "report_baselines",
    "report_data_range",
]

DEFAULT_RL_NAME = "kubetrade-rl-ensemble"
ARTIFACT_KEY = "ensemble"
# models-from-code entry (no pickled Python object in the model): it calls set_model()
MODEL_CODE = Path(__file__).with_name("rl_model_code.py")


def ensemble_sha256(ensemble_dir: str | Path) -> dict[str, str]:
    """SHA-256 of ``ensemble.json`` and every member zip it names (file name -> hex)."""
    root = Path(ensemble_dir)
    meta_path = root / "ensemble.json"
    if not meta_path.is_file():
        raise RegistryError(f"no ensemble.json in {root}; save the ensemble there first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        names = ["ensemble.json", *(str(m["file"]) for m in meta["members"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(
            f"{meta_path} is malformed ({type(exc).__name__}); save it again"
        ) from exc
    outside = [n for n in names if Path(n).name != n or n in (".", "..")]
    if outside:
        raise RegistryError(f"{meta_path} names {outside[0][:80]!r}, not a file of {root}")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise RegistryError(f"{root} lacks {missing} named in ensemble.json; save it again")
    return {n: sha256_file(root / n) for n in names}


def observations_frame(observations: np.ndarray | list[np.ndarray]) -> pd.DataFrame:
    """DataFrame input for the pyfunc model from env observations ``(n, window, width)``."""
    arr = np.asarray(observations, dtype=np.float64)
    flat = arr.reshape(arr.shape[0], -1)
    return pd.DataFrame(flat, columns=[f"obs_{i}" for i in range(flat.shape[1])])


class RLEnsemblePyfunc(PythonModel):  # type: ignore[misc]
    """MLflow pyfunc wrapper of :class:`~kubetrade.rl.ensemble.EnsembleAgent` (see module doc)."""

    def load_context(self, context: Any) -> None:
        from kubetrade.registry.safe_sb3 import load_ensemble_safely

        directory = context.artifacts[ARTIFACT_KEY]
        config = dict(context.model_config or {})
        expected = config.get("sha256") or {}
        if set(expected) != set(ensemble_sha256(directory)):
            raise RegistryError(
                "the logged RL ensemble's files differ from the SHA-256 list in its model "
                "config; the model artifact was altered"
            )
        for name, digest in expected.items():
            actual = sha256_file(Path(directory) / name)
            if actual != digest:
                raise RegistryError(
                    f"{name} of the logged RL ensemble has SHA-256 {actual[:12]}..., "
                    f"expected {digest[:12]}...; the model artifact was altered"
                )
        self.ensemble = load_ensemble_safely(directory)  # no pickle from the zips
        shape = config.get("obs_shape") or self.ensemble.members[0].model.observation_space.shape
        self.obs_shape = tuple(int(s) for s in shape or ())
        n = self.ensemble.mapper.n_assets
        self.columns = list(config.get("symbols") or [f"w_{i}" for i in range(n)])

    def _observations(self, model_input: Any) -> tuple[np.ndarray, np.ndarray | None]:
        n = self.ensemble.mapper.n_assets
        returns = None
        if isinstance(model_input, pd.DataFrame):
            obs_cols = [f"obs_{i}" for i in range(int(np.prod(self.obs_shape)))]
            missing = [c for c in obs_cols if c not in model_input.columns]
            if missing:
                raise RegistryError(
                    f"model input lacks {len(missing)} observation columns (first {missing[0]}); "
                    f"expected obs_0..obs_{len(obs_cols) - 1} = the env observation "
                    f"{self.obs_shape} flattened row-major"
                )
            flat = model_input[obs_cols].to_numpy(dtype=np.float32)
            ret_cols = [f"ret_{i}" for i in range(n)]
            if all(c in model_input.columns for c in ret_cols):
                r = model_input[ret_cols].to_numpy(dtype=np.float64)
                returns = None if np.isnan(r).all() else np.nan_to_num(r)
        else:
            flat = np.asarray(model_input, dtype=np.float32)
        obs = flat.reshape((-1, *self.obs_shape))
        return obs, returns

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        mode = str(params.get("mode", "vote"))
        obs, returns = self._observations(model_input)
        ens = self.ensemble
        if mode == "vote":
            weights = np.asarray([ens.prior @ ens.member_weights(o) for o in obs])
        elif mode == "online":
            seed = int(params.get("seed", -1))
            ens.reset(None if seed < 0 else seed)
            rows = []
            for i, o in enumerate(obs):
                rows.append(ens.act(o))
                if returns is not None:
                    ens.observe({"asset_returns": returns[i]})
            weights = np.asarray(rows)
        else:
            raise RegistryError(f"params mode={mode!r} is unknown; use 'vote' or 'online'")
        weights = weights.reshape(len(obs), ens.mapper.n_assets)
        return pd.DataFrame(weights, columns=self.columns)


def _signature(obs_dim: int, columns: list[str], n_assets: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [ColSpec("double", f"obs_{i}") for i in range(obs_dim)]
    inputs += [ColSpec("double", f"ret_{i}", required=False) for i in range(n_assets)]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema([ColSpec("double", c) for c in columns]),  # type: ignore[arg-type]
        params=ParamSchema([ParamSpec("mode", "string", "vote"), ParamSpec("seed", "long", -1)]),
    )


def _artifact_location(tracking_uri: str) -> str | None:
    """Local SQLite store: artifacts in ``mlartifacts`` beside the database (as MlflowTracker)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :].split("?")[0])
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def log_rl_ensemble(
    ensemble_dir: str | Path,
    tracking_uri: str,
    run_id: str | None = None,
    *,
    experiment_name: str = "kubetrade",
    name: str = "rl_ensemble",
    symbols: list[str] | None = None,
    attempts: int = 3,
    backoff_s: float = 1.0,
    http_timeout_s: int = 120,
) -> str:
    """Log the saved ensemble in ``ensemble_dir`` as a pyfunc model; returns its model URI.

    Attaches to ``run_id`` (its status is left as it was) or creates a run in
    ``experiment_name``. ``symbols`` name the output columns (asset order of the env)."""
    import mlflow
    import stable_baselines3
    import torch
    from mlflow import MlflowClient

    from kubetrade.registry.safe_sb3 import load_ensemble_safely

    digests = ensemble_sha256(ensemble_dir)
    probe = load_ensemble_safely(ensemble_dir)  # replaces every pickled entry of the zips
    obs_shape = [int(s) for s in probe.members[0].model.observation_space.shape or ()]
    n_assets = probe.mapper.n_assets
    if symbols is not None and len(symbols) != n_assets:
        raise RegistryError(f"{len(symbols)} symbols given for an ensemble of {n_assets} assets")
    columns = list(symbols) if symbols else [f"w_{i}" for i in range(n_assets)]
    client = MlflowClient(tracking_uri)

    def log() -> str:
        owner = run_id is None
        if owner:
            exp = client.get_experiment_by_name(experiment_name)
            exp_id = (
                exp.experiment_id
                if exp is not None
                else client.create_experiment(
                    experiment_name, artifact_location=_artifact_location(tracking_uri)
                )
            )
            rid = client.create_run(exp_id, run_name="rl-ensemble").info.run_id
        else:
            rid = str(run_id)
            status = client.get_run(rid).info.status
        with global_tracking_uri(tracking_uri), mlflow.start_run(run_id=rid):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(MODEL_CODE),
                artifacts={ARTIFACT_KEY: str(Path(ensemble_dir).resolve())},
                model_config={"sha256": digests, "obs_shape": obs_shape, "symbols": columns},
                signature=_signature(int(np.prod(obs_shape)), columns, n_assets),
                pip_requirements=[
                    "kubetrade",
                    f"stable-baselines3=={stable_baselines3.__version__}",
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"mlflow=={mlflow.__version__}",
                ],
                metadata={"kubetrade_sha256": digests, "model_kind": "rl_ensemble"},
                input_example=observations_frame(np.zeros((1, *obs_shape))),
            )
        if not owner:  # start_run's exit marked it FINISHED; the owner decides
            client.update_run(rid, status=status)
        return str(info.model_uri)

    with bounded_http(http_timeout_s, 1):
        return retry(log, "log the RL ensemble", tracking_uri, attempts, backoff_s)


def _logged_sha256(model_uri: str, tracking_uri: str) -> tuple[dict[str, str], str | None]:
    """SHA-256 of the ensemble files as stored with the logged model (downloaded back), and
    the model's run id."""
    import mlflow
    import yaml

    with tempfile.TemporaryDirectory() as tmp, global_tracking_uri(tracking_uri):
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        )
        mlmodel = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
        flavors = mlmodel.get("flavors") or {}
        pyfunc = flavors.get("python_function") or {}
        code = local / Path(str(pyfunc.get("model_code_path"))).name
        if (
            set(flavors) != {"python_function"}
            or pyfunc.get("loader_module") != "mlflow.pyfunc.loaders.code_model"
            or "python_model" in pyfunc
            or pyfunc.get("code")
            or not code.is_file()
            or code.read_bytes() != MODEL_CODE.read_bytes()
        ):
            raise RegistryError(
                f"{model_uri} is not a kubetrade RL ensemble pyfunc model (its code is not "
                "kubetrade's or it holds a pickle); refusing to register it"
            )
        spec = pyfunc["artifacts"][ARTIFACT_KEY]
        run = mlmodel.get("run_id")
        return ensemble_sha256(local / spec["path"]), (str(run) if run else None)


def report_data_range(report: Mapping[str, Any]) -> dict[str, str]:
    """The gate's data range tags from an ensemble report: its test period (first..last
    decision timestamp) and symbols."""
    stamps = report.get("timestamps") or []
    symbols = report.get("symbols") or []
    if not stamps or not symbols:
        raise RegistryError(
            "the ensemble report records no test timestamps / symbols; rerun the ensemble step"
        )
    return {
        "kubetrade.test_period": f"{str(stamps[0])[:10]}..{str(stamps[-1])[:10]}",
        "kubetrade.symbols": ",".join(sorted(str(s) for s in symbols)),
    }


def report_baselines(report: Mapping[str, Any], metric: str) -> dict[str, float]:
    """``{"buy_and_hold": its <metric>}`` from an ensemble report (after costs), if present."""
    bh = report.get("buy_and_hold") or {}
    value = bh.get(metric) if isinstance(bh, dict) else None
    return {"buy_and_hold": float(value)} if isinstance(value, int | float) else {}


def register_rl_ensemble(
    ensemble_dir: str | Path,
    value: float,
    *,
    tracking_uri: str,
    model_uri: str | None = None,
    run_id: str | None = None,
    model_name: str = DEFAULT_RL_NAME,
    metric: str = "sharpe_ratio",
    mode: Literal["max", "min"] | None = None,
    tags: Mapping[str, Any] | None = None,
    symbols: list[str] | None = None,
    expected_sha256: Mapping[str, str] | None = None,
    margin: float = 0.0,
    data_range: Mapping[str, str] | None = None,
    force_reason: str | None = None,
    baselines: Mapping[str, float] | None = None,
    **retry: Any,
) -> Promotion:
    """Register the RL ensemble as a challenger of ``model_name``; champion only if ``value``
    (its out-of-sample ``metric``, e.g. the test Sharpe) beats the champion's.

    Logs it first (:func:`log_rl_ensemble`) unless ``model_uri`` is given. Before registering,
    the files downloaded back from the store must hash to the same SHA-256 as
    ``ensemble_dir`` (and as ``expected_sha256`` when given, e.g. recorded when the ensemble was
    saved). Tags: ``tags`` plus ``git_commit`` (unless given), ``sha256_<file>``,
    ``model_kind`` and ``mlflow_run_id`` when known. ``retry``: bounds of
    :func:`register_challenger`."""
    local = ensemble_sha256(ensemble_dir)
    if expected_sha256 is not None and dict(expected_sha256) != local:
        changed = sorted(k for k in set(local) | set(expected_sha256)
                         if local.get(k) != expected_sha256.get(k))  # fmt: skip
        raise RegistryError(
            f"{ensemble_dir}: {changed} differ from the SHA-256 recorded when the ensemble was "
            "saved; the artifact changed after evaluation, not registering"
        )
    if model_uri is None:
        model_uri = log_rl_ensemble(ensemble_dir, tracking_uri, run_id, symbols=symbols)
    try:
        with bounded_http(int(retry.get("http_timeout_s", 60)), 1):
            stored, logged_run = _logged_sha256(model_uri, tracking_uri)
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise RegistryError(
            f"could not read back {model_uri} from {redact(tracking_uri)} to verify it "
            f"({one_line(exc)}); check the tracking server and rerun"
        ) from exc
    if stored != local:
        changed = sorted(k for k in set(local) | set(stored) if local.get(k) != stored.get(k))
        raise RegistryError(
            f"{model_uri}: {changed} differ from {ensemble_dir} (SHA-256); the logged model is "
            "not the evaluated ensemble, not registering"
        )
    all_tags: dict[str, Any] = {"git_commit": git_commit(), "model_kind": "rl_ensemble"}
    all_tags.update(tags or {})
    all_tags.update({f"sha256_{k}": v for k, v in local.items()})
    if run_id or logged_run:
        all_tags["mlflow_run_id"] = run_id or logged_run
    return register_challenger(
        model_uri, model_name, metric, float(value), mode=mode, tags=all_tags,
        tracking_uri=tracking_uri, margin=margin, data_range=data_range,
        force_reason=force_reason, baselines=baselines,
        idempotency_key="rl:" + hashlib.sha256(
            json.dumps([local, metric, float(value)], sort_keys=True).encode()).hexdigest(),
        **retry,
    )  # fmt: skip
