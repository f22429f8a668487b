"""The run form (issue #20): what a person sees and sets in the Kubeflow UI, the same names
from `kubetrade run --param` / `kubetrade submit --param`, read from the compiled YAML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrade.cli import main
from kubetrade.config import flatten, load_training_config, read_yaml_file
from kubetrade.errors import ConfigError
from kubetrade.pipeline.run_form import (
    BASE_CONFIG_ENV,
    RunParams,
    apply_run_params,
    params_from_run,
    profile_params,
    resolve_step,
)
from kubetrade.pipeline.steps import load_run_config

CLUSTER = Path("pipelines/compiled/kubetrade_training.yaml")
DEMO = Path("pipelines/compiled/kubetrade_training_gpu.yaml")


def _spec(path: Path) -> dict[str, Any]:
    return next(yaml.safe_load_all(path.read_text()))


def _all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the root DAG and of the sub-DAGs (ParallelFor bodies, the If)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for name, comp in spec["components"].items():
        for key, task in (comp.get("dag") or {}).get("tasks", {}).items():
            tasks[f"{name}/{key}"] = task
    return tasks


@pytest.mark.parametrize("path", [CLUSTER, DEMO])
def test_compiled_run_form_is_typed_described_and_has_no_json_blob(path):
    params = _spec(path)["root"]["inputDefinitions"]["parameters"]
    assert list(RunParams.model_fields) == [
        "symbols", "start_date", "end_date", "data_source", "epochs", "model_size",
        "rl_agents", "rl_timesteps", "tuning_trials", "walk_forward_folds", "backend",
    ]  # fmt: skip
    assert set(params) == set(RunParams.model_fields)
    types = {k: v["parameterType"] for k, v in params.items()}
    assert types["symbols"] == types["rl_agents"] == "LIST"
    assert {types[k] for k in ("epochs", "rl_timesteps", "tuning_trials", "walk_forward_folds")} \
        == {"NUMBER_INTEGER"}  # fmt: skip
    for name, p in params.items():
        assert p["description"] == RunParams.model_fields[name].description, name
        assert "defaultValue" in p, name
        value = p["defaultValue"]
        if isinstance(value, str):  # no JSON hiding in a text box
            assert not value.lstrip().startswith(("{", "[")), name
    # the form's defaults are a valid form
    RunParams.model_validate({k: v["defaultValue"] for k, v in params.items()} | {
        k: int(params[k]["defaultValue"]) for k in params if types[k] == "NUMBER_INTEGER"
    })  # fmt: skip


def test_cluster_yaml_defaults_to_the_guides_full_model_and_the_gpu_yaml_to_the_demo():
    full = {k: v["defaultValue"] for k, v in _spec(CLUSTER)["root"]["inputDefinitions"][
        "parameters"].items()}  # fmt: skip
    assert (full["model_size"], int(full["epochs"]), int(full["rl_timesteps"])) == (
        "full",
        100,
        1_000_000,
    )
    assert (int(full["tuning_trials"]), full["backend"]) == (50, "kubeflow")
    demo = {k: v["defaultValue"] for k, v in _spec(DEMO)["root"]["inputDefinitions"][
        "parameters"].items()}  # fmt: skip
    local = params_from_run(load_run_config()).model_dump()
    assert {k: int(v) if isinstance(v, float) else v for k, v in demo.items()} == local
    assert local["model_size"] == "demo" and local["epochs"] == 6


def test_every_task_has_a_display_name_and_stated_caching():
    from kubetrade.pipelines.training import CACHED_STEPS, DISPLAY_NAMES

    spec = _spec(CLUSTER)
    tasks = _all_tasks(spec)
    names = {key: t["taskInfo"]["name"] for key, t in tasks.items()}
    steps = {k: v for k, v in names.items() if "componentRef" in tasks[k] and
             not tasks[k]["componentRef"]["name"].startswith(("comp-for-loop", "comp-condition"))}  # fmt: skip
    assert len(steps) == len(DISPLAY_NAMES)  # one task per step kind
    assert set(steps.values()) == set(DISPLAY_NAMES.values())
    for key, name in names.items():  # generated names only on the loops (kubeflow/pipelines#13239)
        short = key.rsplit("/", 1)[-1]
        assert name == short if "parameterIterator" in tasks[key] else name != short, key
    assert {"RL agent", "Walk-forward fold", "Train hybrid (PyTorchJob / torchrun)"}\
        <= set(names.values())  # fmt: skip
    by_name = {name: tasks[k] for k, name in steps.items()}
    for kind, display in DISPLAY_NAMES.items():
        cached = by_name[display].get("cachingOptions", {}).get("enableCache", False)
        assert cached == (kind in CACHED_STEPS), kind
    bad = {"rl_agents": ["ppo", "rainbow_dqn"]}  # the RL loop's items are checked by resolve
    with pytest.raises(ConfigError, match="rainbow_dqn"):
        resolve_step(params_from_run(load_run_config()).model_dump() | bad, "/nonexistent/x")
    assert {"ingest", "validate", "features", "split"} <= CACHED_STEPS
    assert "register" not in CACHED_STEPS and "train" not in CACHED_STEPS
    assert spec["pipelineInfo"]["description"].startswith("Trading models")


def test_confusion_matrix_is_labelled_buy_hold_sell():
    from kubetrade.models.hybrid import CLASS_NAMES

    assert CLASS_NAMES == ("buy", "hold", "sell")  # evaluate_op's log_confusion_matrix labels


def test_form_filled_from_the_config_changes_nothing():
    """`make run` gets exactly the config it got before the form existed."""
    run = load_run_config()
    form = params_from_run(run)
    assert apply_run_params(run, form).model_dump() == run.model_dump()
    assert load_run_config(params={"epochs": 6}).model_dump() == run.model_dump()


def test_form_values_land_in_the_config():
    run = load_run_config(params={
        "symbols": ["AAPL", "IBM"], "start_date": "2008-01-01", "epochs": 3,
        "rl_agents": ["ppo"], "rl_timesteps": 500, "tuning_trials": 2, "walk_forward_folds": 3,
        "backend": "kubeflow", "data_source": "synthetic",
    })  # fmt: skip
    p, t = run.pipeline, run.training
    assert (p.symbols, p.start_date, p.backend, p.source.type) == (
        ["AAPL", "IBM"],
        "2008-01-01",
        "kubeflow",
        "synthetic",
    )
    assert (t.training.num_epochs, t.training.scheduler.T_max) == (3, 3)  # schedule follows
    assert t.validation.cv_folds == 3 and run.fold_indices() == [0, 1, 2]
    assert run.agent_types() == ["ppo"] and run.rl.rl_training.total_timesteps == 500
    assert run.search_space["objective"]["num_trials"] == 2
    off = load_run_config(params={"tuning_trials": 0})
    assert off.search_space == {} and not off.pipeline.tuning.enabled


def test_model_size_presets_are_the_guides_model_and_the_demo():
    """full = config/training.yaml and config/search_space.yaml as written (no drift)."""
    full = load_run_config(params={"model_size": "full"})
    guide = flatten(load_training_config("config/training.yaml"))
    preset = read_yaml_file("config/run_form.yaml")["model_sizes"]["full"]
    for key in preset["training"]:
        assert flatten(full.training)[key] == guide[key], key
    space = read_yaml_file("config/search_space.yaml")
    assert full.search_space["parameters"]["hidden_dim"] == space["parameters"]["hidden_dim"]
    assert full.search_space["objective"]["max_t"] == space["objective"]["max_t"]
    assert params_from_run(full).model_size == "full"
    # and back: the demo preset is what config/pipeline.yaml trains
    back = apply_run_params(full, params_from_run(load_run_config()))
    assert back.model_dump() == load_run_config().model_dump()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"model_size": "huge"}, "model_size"),
        ({"rl_agents": ["ppo", "rainbow_dqn"]}, "rainbow_dqn"),
        ({"start_date": "2014-01-01"}, "after end_date"),
        ({"nope": 1}, "nope"),
    ],
)
def test_bad_form_values_are_one_line_config_errors(form, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(params=form)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_resolve_step_writes_the_run_config_and_the_loop_items(tmp_path, monkeypatch):
    base = load_run_config()
    (tmp_path / "base.json").write_text(base.to_json())
    monkeypatch.setenv(BASE_CONFIG_ENV, str(tmp_path / "base.json"))
    form = params_from_run(base).model_dump() | {"rl_agents": ["sac", "dqn"], "epochs": 2}
    loops = resolve_step(form, tmp_path / "run_config")
    assert loops == [0, 1, 2, 3, 4]  # the walk-forward folds' ParallelFor items
    written = json.loads((tmp_path / "run_config").read_text())
    assert written["training"]["training"]["num_epochs"] == 2
    assert written["rl"]["rl_training"]["agent_types"] == ["sac", "dqn"]
    assert written == apply_run_params(base, form).model_dump(mode="json")
    monkeypatch.delenv(BASE_CONFIG_ENV)  # default: config/pipeline.yaml (the image's)
    assert resolve_step(form, tmp_path / "again") == loops


def test_compile_profile_option(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--profile", "demo", "--output", str(out)]) == 0
    params = _spec(out)["root"]["inputDefinitions"]["parameters"]
    assert params["model_size"]["defaultValue"] == "demo"
    assert params["backend"]["defaultValue"] == "kubeflow"
    assert main(["compile", "--profile", "huge", "--output", str(tmp_path / "q.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--profile 'huge'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q.yaml").exists()
    assert profile_params(load_run_config(), "full").model_size == "full"


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("nope=1", "the pipeline has no input 'nope'"),
        ("epochs=many", "expected an integer"),
        ("symbols=[AAPL,TSLA]", "TSLA"),
        ("model_size=huge", "model_size"),
    ],
)
def test_cli_run_param_errors_are_one_line_exit_2(tmp_path, param, message):
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrade", "run", "--param", param,
         "--run-root", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_submit_takes_the_same_names_as_run(capsys):
    args = ["submit", str(CLUSTER), "--dry-run", "--param", "symbols=[AAPL,IBM]",
            "--param", "epochs=3"]  # fmt: skip
    assert main(args) == 0
    assert "AAPL" in capsys.readouterr().out
    assert main(["submit", str(CLUSTER), "--dry-run", "--param", "run_config={}"]) == 2
    assert "no input 'run_config'" in capsys.readouterr().err
    # values the form refuses fail here, not in the cluster's resolve task
    for bad, message in (("model_size=huge", "model_size"), ("epochs=0", "epochs")):
        assert main(["submit", str(CLUSTER), "--dry-run", "--param", bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_readme_table_is_generated_from_the_compiled_spec():
    sys.path.insert(0, "scripts")
    try:
        import param_table
    finally:
        sys.path.remove("scripts")
    table = param_table.table()
    assert param_table.readme_table() == table, (
        "README.md's run form table is stale: run `python scripts/param_table.py --write`"
    )
    assert "| `epochs` | integer | 100 | 6 |" in table


def test_summary_links_the_training_mlflow_run(tmp_path):
    from kubetrade.pipeline.ui import append_mlflow_link, mlflow_run_url
    from kubetrade.training.tracking import MlflowTracker

    run = load_run_config()
    run.pipeline.run_root = str(tmp_path)
    tracker = MlflowTracker(str(tmp_path), experiment_name="kubetrade")
    run_id = tracker.start()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "train_result.json").write_text(json.dumps({"run_id": run_id}))
    summary = tmp_path / "summary.md"
    summary.write_text("# run\n")
    line = append_mlflow_link(run, tmp_path / "model", summary)
    assert run_id in line and summary.read_text().endswith(line)
    assert "sqlite:///" in line  # a local store: the run id and where, no dead link
    assert mlflow_run_url("http://mlflow:5000/", "3", "abc") == (
        "http://mlflow:5000/#/experiments/3/runs/abc"
    )
    assert mlflow_run_url("sqlite:///x.db", "3", "abc") is None


def test_form_without_the_presets_file_keeps_the_config(tmp_path, monkeypatch):
    run = load_run_config()
    monkeypatch.chdir(tmp_path)  # a run outside the repo: no config/run_form.yaml
    form = params_from_run(run)
    assert form.model_size == "config"
    assert apply_run_params(run, form).model_dump() == run.model_dump()
    with pytest.raises(ConfigError, match="run_form.yaml"):
        apply_run_params(run, form.model_copy(update={"model_size": "full"}))


@pytest.mark.parametrize("path", [CLUSTER, DEMO])
def test_local_and_cluster_runs_take_the_same_parameters(path):
    """`kubetrade run --param` checks against the in-memory pipeline (and the local runner
    calls it with RunParams' fields); `kubetrade submit --param` against the compiled YAML:
    both have exactly the run form's names, types and descriptions."""
    from kubetrade.pipeline.run_form import parse_run_params, pipeline_inputs

    local = pipeline_inputs()
    cluster = _spec(path)["root"]["inputDefinitions"]["parameters"]
    assert sorted(local) == sorted(cluster) == sorted(RunParams.model_fields)
    for name, spec in cluster.items():
        assert local[name]["parameterType"] == spec["parameterType"], name
        assert local[name]["description"] == spec["description"], name
    # the same KEY=VALUE text gives the same typed values on both paths
    from kubetrade.k8s.submit import parse_params

    items = ["symbols=[AAPL,IBM]", "epochs=3", "rl_agents=[ppo]", "backend=local"]
    assert parse_run_params(items) == parse_params(cluster, items) == {
        "symbols": ["AAPL", "IBM"], "epochs": 3, "rl_agents": ["ppo"], "backend": "local"
    }  # fmt: skip


@pytest.mark.parametrize("path", [CLUSTER, DEMO])
def test_reports_are_typed_for_the_ui_preview(path):
    """The UI previews HTML and Markdown artifacts and charts Metrics/ClassificationMetrics by
    their type; the components name the files (.html/.md, tests/pipeline/test_artifact_names)."""
    comps = _spec(path)["components"]

    def outputs(comp: str) -> dict[str, str]:
        arts = comps[comp].get("outputDefinitions", {}).get("artifacts", {})
        return {k: v["artifactType"]["schemaTitle"] for k, v in arts.items()}

    assert outputs("comp-validate-op")["data_docs"] == "system.HTML"
    assert outputs("comp-evaluate-op")["report"] == "system.HTML"
    assert outputs("comp-evaluate-op")["confusion"] == "system.ClassificationMetrics"
    assert outputs("comp-backtest-op")["report"] == "system.HTML"
    assert outputs("comp-walk-forward-op")["report"] == "system.HTML"
    assert outputs("comp-summary-op")["summary"] == "system.Markdown"
    with_metrics = [c for c in comps if outputs(c).get("metrics") == "system.Metrics"]
    assert len(with_metrics) >= 12  # every step that returns a summary logs it
