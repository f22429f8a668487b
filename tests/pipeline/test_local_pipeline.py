"""The whole pipeline through kfp's real local runner (SubprocessRunner), tiny config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kubetrade.data.splits import load_bundle
from kubetrade.pipeline.runner import PipelineRunError, run_local
from kubetrade.pipeline.steps import load_run_config


def tiny_config(tmp_path: Path, **pipeline_overrides) -> Path:
    """Pipeline + training config for a fast run: 2 symbols, 4 years, short windows."""
    rl = yaml.safe_load(Path("config/rl_training.yaml").read_text())
    rl.update(agent_types=["ppo", "dqn"], total_timesteps=256, eval_freq=0, test_episodes=1)
    rl["agents"]["ppo"]["n_steps"] = 64
    (tmp_path / "rl_training.yaml").write_text(yaml.safe_dump(rl))
    pipeline = yaml.safe_load(Path("config/pipeline.yaml").read_text())
    pipeline.update(
        symbols=["AAPL", "IBM"],
        start_date="2009-01-01",
        end_date="2013-03-01",
        advanced_features=["fractal", "cross_asset"],
        run_root=str(tmp_path / "runs"),
        rl_training_config=str(tmp_path / "rl_training.yaml"),
        training_overrides={
            **pipeline["training_overrides"],
            "data.sequence_length": 20,
            "training.num_epochs": 2,
            "training.max_train_windows": 600,
        },
        tuning={
            **pipeline["tuning"],
            "threads_per_trial": 1,
            "overrides": {
                **pipeline["tuning"]["overrides"],
                "objective.num_trials": 2,
                "objective.max_t": 1,
                "sampler.n_startup_trials": 1,
                "parameters.hidden_dim": {"type": "choice", "values": [16, 32]},
                "parameters.model.lstm.num_layers": {"type": "int", "low": 1, "high": 2},
            },
        },
    )
    pipeline.update(pipeline_overrides)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def test_pipeline_runs_end_to_end_on_embedded_data(tmp_path):
    run = load_run_config(tiny_config(tmp_path))
    result = run_local(run)
    assert (result.run_dir / "SUCCEEDED").is_file()
    tasks = {k.rsplit("/", 1)[-1].removesuffix("-op"): v for k, v in result.outputs.items()}
    assert {"ingest", "validate", "features", "split", "tune", "train", "evaluate", "export",
            "rl-agent", "ensemble", "backtest", "summary"} <= set(tasks)  # fmt: skip
    # tune: trial 0 is the configured config, so the best is at least as good on validation
    tune = tasks["tune"]["metrics"]
    assert tune["tuned"] == 1
    metric = run.search_space["objective"]["metric"]
    assert metric == "val_fold_mean_sharpe_ratio"  # selection on the fold-mean objective
    assert tune[f"best_{metric}"] >= tune[f"default_config_{metric}"]
    best = yaml.safe_load(Path(tasks["tune"]["artifacts"]["best_config"]).read_text())
    model_dir = Path(tasks["train"]["artifacts"]["model"])
    trained_with = yaml.safe_load((model_dir / "training_config.yaml").read_text())
    assert trained_with == best  # train used the tuned config
    summary = Path(tasks["summary"]["artifacts"]["summary"]).read_text()
    assert "out-of-sample" in summary and "majority_class" in summary
    mlflow_run = json.loads((model_dir / "train_result.json").read_text())["run_id"]
    assert "**MLflow run**" in summary and mlflow_run in summary  # the training's run
    # the resolve task gave every step exactly the config the run was started with
    from kubetrade.config.run import RunConfig

    resolved = RunConfig.from_file(tasks["resolve"]["artifacts"]["run_config"])
    assert resolved.model_dump() == run.model_dump()
    assert (result.run_dir / "run_config.json").is_file()
    # walk-forward: validation.cv_folds fold tasks, fold means with intervals and the DSR
    wf = tasks["walk-forward"]["metrics"]
    assert wf["folds"] == run.training.validation.cv_folds
    assert wf["trials_counted"] >= 2 + 2 + 1  # tuning trials + 2 agents + the ensemble
    for name in ("hybrid_cnn_lstm", "logistic_regression", "majority_class", "rl_ensemble",
                 "buy_and_hold"):  # fmt: skip
        assert wf[f"{name}_fold_mean_sharpe_ratio_low"] <= wf[f"{name}_fold_mean_sharpe_ratio"]
        assert 0 <= wf[f"{name}_deflated_sharpe"] <= 1
    assert "beat" in summary and "buy-and-hold with significance" in summary
    assert tasks["validate"]["metrics"]["overall_score"] == 1.0
    docs = Path(tasks["validate"]["artifacts"]["data_docs"])
    assert "<html" in docs.read_text(errors="replace").lower()
    ohlcv = pd.read_parquet(tasks["ingest"]["artifacts"]["ohlcv"])
    assert sorted(ohlcv["symbol"].unique()) == ["AAPL", "IBM"]
    feast_repo = Path(tasks["features"]["artifacts"]["feast_repo"])
    assert (feast_repo / "feature_store.yaml").is_file()
    bundle = load_bundle(tasks["split"]["artifacts"]["bundle"])
    assert min(len(bundle.train), len(bundle.val), len(bundle.test)) > 50
    assert bundle.train.timestamps.max() < bundle.val.timestamps.min()
    assert bundle.val.timestamps.max() < bundle.test.timestamps.min()
    assert np.isfinite(bundle.train.X).all()
    assert (result.run_dir / "pipeline.log").stat().st_size > 0
    export = json.loads(
        (Path(tasks["export"]["artifacts"]["exported"]) / "model_uri.json").read_text()
    )
    assert set(export["sha256"]) == {"torchscript", "onnx", "onnx_serving"}
    assert Path(export["files"]["onnx_serving"]).name == "model_serving.onnx"
    backtest = tasks["backtest"]["metrics"]
    assert {"hybrid_cnn_lstm_sharpe_ratio", "rl_ensemble_sharpe_ratio",
            "buy_and_hold_total_return"} <= set(backtest)  # fmt: skip
    # the registry holds a version exactly when the evaluation gate let register run
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}")
    versions = client.search_model_versions("name='kubetrade-hybrid'")
    if "register" in tasks:
        assert len(versions) == 1
        # champion only if the gate let it (it must beat its baselines); the reason is tagged
        hybrid = client.get_model_version("kubetrade-hybrid", "1")
        assert hybrid.tags["sha256_onnx"] == export["sha256"]["onnx"]
        assert hybrid.tags["sha256_onnx_serving"] == export["sha256"]["onnx_serving"]
        assert hybrid.tags["kubetrade.gate_decision"]
        assert hybrid.tags["kubetrade.test_period"] == "..".join(bundle.periods["test"])
        registered = tasks["register"]["metrics"]
        assert registered["promoted_to_champion"] == int("champion" in hybrid.aliases)
        rl = client.get_model_version("kubetrade-rl-ensemble", "1")
        assert rl.tags["git_commit"] and rl.tags["kubetrade.gate_decision"]
        assert registered["rl_ensemble_promoted_to_champion"] == int("champion" in rl.aliases)
    else:
        assert versions == []


def _corrupt(tmp_path: Path, how: str) -> Path:
    from kubetrade.data.sources import load_embedded, select

    df = select(load_embedded(), ["AAPL", "IBM"], "2009-01-01", "2013-03-01")
    if how == "nan":
        df.loc[df.index[::50], "close"] = np.nan
    elif how == "high_below_low":
        df.loc[df.index[::40], "high"] = df.loc[df.index[::40], "low"] * 0.9
    path = tmp_path / f"{how}.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("how", "expected"), [("nan", "null"), ("high_below_low", "high")])
def test_bad_data_stops_at_the_gate_and_leaves_nothing_behind(tmp_path, how, expected):
    cfg = tiny_config(tmp_path, source={"type": "files", "paths": [str(_corrupt(tmp_path, how))]})
    run = load_run_config(cfg)
    with pytest.raises(PipelineRunError) as err:
        run_local(run)
    msg = str(err.value)
    assert msg.startswith("step 'validate' failed: data quality gate failed")
    assert expected in msg.lower()
    run_dir = next((tmp_path / "runs").iterdir())
    failed = json.loads((run_dir / "FAILED.json").read_text())
    assert failed["step"] == "validate"
    # no task output survives (nothing half-written), and features/split never ran
    assert not [p for p in run_dir.iterdir() if p.is_dir()]
    log = (run_dir / "pipeline.log").read_text()
    assert "features: started" not in log and "split: started" not in log


def test_cli_run_failure_is_one_line_and_nonzero(tmp_path):
    cfg = tiny_config(tmp_path, symbols=["AAPL", "TSLA"])
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrade", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "TSLA" in errors[0] and "AAPL" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # failed before any run folder was made


def test_compile_writes_a_loadable_pipeline(tmp_path):
    from kubetrade.pipeline.runner import compile_pipeline

    run = load_run_config(tiny_config(tmp_path))
    path = compile_pipeline(tmp_path / "p.yaml", run)
    spec = next(yaml.safe_load_all(path.read_text()))  # 2nd document: kubernetes platform
    tasks = spec["root"]["dag"]["tasks"]
    assert {"ingest-op", "validate-op", "features-op", "split-op", "tune-op", "train-op",
            "evaluate-op", "export-op", "ensemble-op", "backtest-op", "summary-op"} <= set(tasks)  # fmt: skip
    assert "tune-op" in tasks["train-op"]["dependentTasks"]
    assert tasks["features-op"]["dependentTasks"] == ["ingest-op", "resolve-op", "validate-op"]
    loops = {t["taskInfo"]["name"]: t for t in tasks.values() if "parameterIterator" in t}
    assert set(loops) == {"for-loop-1", "for-loop-2"}  # two ParallelFors, unnamed (#13239)
    agents = loops["for-loop-1"]["parameterIterator"]["items"]["inputParameter"]
    assert agents == "pipelinechannel--rl_agents"  # the form's list (checked by resolve first)
    folds = loops["for-loop-2"]
    items = folds["parameterIterator"]["items"]["inputParameter"]
    source = folds["inputs"]["parameters"][items]["taskOutputParameter"]
    assert source == {"outputParameterKey": "Output", "producerTask": "resolve-op"}
    assert "walk-forward-op" in tasks["summary-op"]["dependentTasks"]
    gates = [t for t in tasks.values() if "triggerPolicy" in t]
    assert gates and "pass" in gates[0]["triggerPolicy"]["condition"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["rl_agents"]["defaultValue"] == ["ppo", "dqn"]
    assert params["symbols"]["defaultValue"] == ["AAPL", "IBM"]
    assert "run_config" not in params
    # compiling twice gives the same bytes (CI compiles it)
    again = compile_pipeline(tmp_path / "q.yaml", run)
    assert again.read_bytes() == path.read_bytes()


COMPILED = {
    "pipelines/compiled/kubetrade_training.yaml": [],
    "pipelines/compiled/kubetrade_training_gpu.yaml": ["--backend", "local", "--gpu"],
}


@pytest.mark.parametrize(("committed", "flags"), list(COMPILED.items()))
def test_committed_compiled_pipeline_is_current(tmp_path, committed, flags):
    """CI compiles the pipeline; the committed YAML must be what `make compile` writes now."""
    from kubetrade.cli import main

    out = tmp_path / "compiled.yaml"
    assert main(["compile", "--output", str(out), *flags]) in (0, None)
    assert out.read_text() == Path(committed).read_text(), (
        f"{committed} is stale: run `make compile` and commit it"
    )
    spec = list(yaml.safe_load_all(out.read_text()))
    platform = spec[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("exec-train-op", "exec-tune-op"):
        assert platform[step]["pvcMount"][0]["mountPath"] == "/data"
        assert platform[step]["configMapAsEnv"][0]["configMapName"] == "kubetrade-pipeline-env"
        gpu = "nodeSelector" in platform[step]
        assert gpu == ("--gpu" in flags)
        if gpu:
            assert platform[step]["tolerations"][0]["key"] == "nvidia.com/gpu"
    form = spec[0]["root"]["inputDefinitions"]["parameters"]
    assert form["backend"]["defaultValue"] == ("local" if "--gpu" in flags else "kubeflow")
    # the cluster YAML defaults to the guide's full model; the local GPU one to the demo
    assert form["model_size"]["defaultValue"] == ("demo" if "--gpu" in flags else "full")


def test_kfp_logger_race_cannot_leak_a_handler_bound_to_the_run_tee():
    """kfp.local's local_logger_context, entered by two overlapping ParallelFor threads
    (A in, B in, A out, B out), leaves A's handler -- bound to sys.stdout, i.e. the run's
    tee -- on the root logger at INFO. run_local's guard puts the root logger back."""
    import contextlib
    import io
    import logging

    from kfp.local import logging_utils

    from kubetrade.pipeline.runner import _root_logger_restored

    root = logging.getLogger()
    before = (root.handlers[:], root.level)

    def overlapping_tasks() -> None:
        a, b = logging_utils.local_logger_context(), logging_utils.local_logger_context()
        with contextlib.redirect_stdout(tee):
            a.__enter__()
            b.__enter__()
            a.__exit__(None, None, None)
            b.__exit__(None, None, None)

    tee = io.StringIO()
    try:
        overlapping_tasks()  # unguarded: the race's outcome, to show the guard is needed
        leaked = [h for h in root.handlers if getattr(h, "stream", None) is tee]
        assert leaked and root.level == logging.INFO
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])

    tee = io.StringIO()
    with _root_logger_restored():
        overlapping_tasks()
    assert (root.handlers, root.level) == before
    assert not any(getattr(h, "stream", None) is tee for h in root.handlers)
