"""kubetrade.tuning without training: the tuning file, links, validation, the Katib Experiment.

Generic search-space parsing (bounds, unknown distributions, names) is covered in
``test_k8s.py``; these tests cover what tuning adds on top.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import FakeKubernetesApi
from kubetrade.config import load_training_config
from kubetrade.errors import ConfigError, SplitError, TrainingError
from kubetrade.k8s.cluster_profile import ClusterTrainingProfile
from kubetrade.k8s.launcher import CustomResourceLauncher
from kubetrade.tuning import (
    AdvancedTrainingPipeline,
    KatibDryRun,
    KatibOptions,
    TuningResult,
    TuningSpec,
    as_tuning_bundle,
    build_tuning_experiment,
    katib_experiment_name,
)
from kubetrade.tuning.api import _read_training_dict
from kubetrade.tuning.optuna_backend import claim_trial, make_pruner

SPACE_FILE = Path("config/search_space.yaml")
IMAGE = "ghcr.io/example/kubetrade-trainer:0.1.0"
GUIDE_SPACE = {  # the guide's search_space, with dicts for Ray's tune.* objects
    "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "batch_size": {"type": "choice", "values": [16, 32, 64, 128]},
    "hidden_dim": {"type": "choice", "values": [128, 256, 512]},
    "dropout": {"type": "uniform", "low": 0.1, "high": 0.5},
}


def base_config() -> dict[str, Any]:
    return _read_training_dict("config/training.yaml")


def spec_with(**sections: Any) -> TuningSpec:
    data: dict[str, Any] = {"parameters": copy.deepcopy(GUIDE_SPACE)}
    data.update(sections)
    return TuningSpec.from_dict(data)


# ------------------------------------------------------------------ the tuning file
def test_search_space_file_is_the_guides_space_and_validates_against_training_yaml() -> None:
    spec = TuningSpec.from_yaml(SPACE_FILE)
    assert spec.space.names == [
        "training.learning_rate",
        "training.batch_size",
        "hidden_dim",
        "model.lstm.num_layers",
        "dropout",
    ]
    lr = spec.space["training.learning_rate"]
    assert (lr.type, lr.low, lr.high) == ("loguniform", 1e-5, 1e-2)  # type: ignore[union-attr]
    assert spec.space["training.batch_size"].values == [16, 32, 64, 128]  # type: ignore[union-attr]
    assert spec.probe_values("model.lstm.num_layers") == [1, 2, 3, 4]
    objective = spec.objective
    assert (objective.metric, objective.mode, objective.max_t) == (
        "val_fold_mean_sharpe_ratio",
        "max",
        100,
    )
    assert (spec.pruner.type, spec.pruner.grace_period, spec.pruner.reduction_factor) == (
        "asha",
        10,
        2,
    )
    reference = spec.validate(base_config())  # every choice and both range ends build
    assert reference.training.num_epochs == 100
    assert reference.training.monitor == "val_fold_mean_sharpe_ratio"
    assert TuningSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()


def test_links_write_one_value_to_every_target_path() -> None:
    spec = TuningSpec.from_yaml(SPACE_FILE)
    params = {
        "training.learning_rate": 3e-4,
        "training.batch_size": 64,
        "hidden_dim": 512,
        "model.lstm.num_layers": 3,
        "dropout": 0.25,
    }
    trial = spec.trial_overrides(params)
    assert trial["model.cnn.hidden_dim"] == trial["model.fusion.output_dim"] == 512
    assert trial["model.cnn.dropout"] == trial["model.lstm.dropout"] == 0.25
    assert trial["training.num_epochs"] == 100
    assert trial["training.monitor"] == "val_fold_mean_sharpe_ratio"
    final = spec.final_overrides(params)
    assert "training.num_epochs" not in final  # best_config keeps training.yaml's epochs
    assert final["training.learning_rate"] == 3e-4 and final["model.lstm.num_layers"] == 3


def test_guide_bare_names_get_default_links() -> None:
    spec = TuningSpec.from_dict(GUIDE_SPACE)
    overrides = spec.overrides(
        {"learning_rate": 1e-3, "batch_size": 32, "hidden_dim": 256, "dropout": 0.2}
    )
    assert overrides == {
        "training.learning_rate": 1e-3,
        "training.batch_size": 32,
        "model.cnn.hidden_dim": 256,
        "model.fusion.output_dim": 256,
        "model.cnn.dropout": 0.2,
        "model.lstm.dropout": 0.2,
    }
    spec.validate(base_config())


def test_hidden_dim_must_divide_by_num_heads_and_by_filter_count() -> None:
    bad_heads = spec_with(parameters={"hidden_dim": {"type": "choice", "values": [128, 100]}})
    with pytest.raises(ConfigError, match=r"'hidden_dim' = 100.*divisible by num_heads"):
        bad_heads.validate(base_config())

    # 3 conv branches: 120 works (120 % 8 == 0, 120 % 3 == 0); 128 leaves uneven branches
    three = base_config()
    three["model"]["cnn"]["filter_sizes"] = [3, 5, 7]
    ok = spec_with(parameters={"hidden_dim": {"type": "choice", "values": [120, 240]}})
    ok.validate(three)
    uneven = spec_with(parameters={"hidden_dim": {"type": "choice", "values": [120, 128]}})
    with pytest.raises(
        ConfigError, match=r"= 128: model.cnn.hidden_dim \(128\).*filter_sizes \(3\)"
    ):
        uneven.validate(three)

    # the fusion side of the link is checked too (fusion num_heads 8)
    fusion_heads = base_config()
    fusion_heads["model"]["cnn"]["num_heads"] = 4
    odd = spec_with(parameters={"hidden_dim": {"type": "choice", "values": [4, 12]}})
    with pytest.raises(ConfigError, match=r"output_dim \(4\) must be divisible"):
        odd.validate(fusion_heads)


def test_ranges_are_checked_at_their_ends() -> None:
    layers = spec_with(parameters={"model.lstm.num_layers": {"type": "int", "low": 1, "high": 9}})
    with pytest.raises(ConfigError, match=r"'model.lstm.num_layers' = 9.*less than or equal to 8"):
        layers.validate(base_config())
    dropout = spec_with(parameters={"dropout": {"type": "uniform", "low": 0.1, "high": 1.5}})
    with pytest.raises(ConfigError, match=r"'dropout' = 1.5"):
        dropout.validate(base_config())


LR = GUIDE_SPACE["learning_rate"]


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({"parameters": {"learnin_rate": LR}}, "neither a dotted"),
        ({"links": {"hidden": ["x"]}}, r"links \['hidden'\] name no parameter"),
        ({"fixed": {"training.batch_size": 32}}, r"\['training.batch_size'\] are set by more"),
        (
            {"links": {"dropout": ["model.cnn.dropout", "training.learning_rate"]}},
            r"\['training.learning_rate'\] are set by more than one",
        ),
        ({"objective": {"metric": "test_sharpe_ratio"}}, "never reads the test"),
        ({"objective": {"metric": "sharpe"}}, "not a per-epoch validation"),
        ({"objective": {"metric": "val_loss", "mode": "max"}}, "worst val_loss; use mode 'min'"),
        ({"objective": {"mode": "maximize"}}, r"objective.mode"),
        ({"objective": {"max_t": 5}}, r"grace_period \(10\) exceeds objective.max_t \(5\)"),
        ({"pruner": {"type": "asha", "reduction_factor": 1}}, "pruner.reduction_factor"),
        ({"sampler": {"type": "cmaes"}}, "sampler.type"),
        ({"objectve": {}}, "objectve: unknown key"),
        ({"parameters": {}}, "parameters"),
    ],
)
def test_tuning_file_errors_name_the_problem(sections: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        TuningSpec.from_dict({"parameters": copy.deepcopy(GUIDE_SPACE), **sections})


def test_unknown_config_paths_fail_before_any_trial() -> None:
    typo = spec_with(
        parameters={"training.learning_rat": GUIDE_SPACE["learning_rate"]},
    )
    with pytest.raises(ConfigError, match=r"'training.learning_rat' is not a training-config path"):
        typo.validate(base_config())
    fixed = spec_with(fixed={"model.cnn.hiden_dim": 64})
    with pytest.raises(ConfigError, match=r"fixed: 'model.cnn.hiden_dim'.*allowed: input_channels"):
        fixed.validate(base_config())


def test_pipeline_overrides_objective_and_rejects_bad_calls(tmp_path: Path) -> None:
    spec = TuningSpec.from_yaml(SPACE_FILE).with_objective(num_trials=7, metric=None)
    assert spec.objective.num_trials == 7 and spec.objective.metric == "val_fold_mean_sharpe_ratio"
    with pytest.raises(ConfigError, match="Ray Tune"):
        AdvancedTrainingPipeline(use_ray_tune=True)
    pipeline = AdvancedTrainingPipeline(run_dir=tmp_path)
    with pytest.raises(ConfigError, match="mode 'min'"):
        pipeline.optimize_hyperparameters(SPACE_FILE, metric="val_loss", mode="max")
    with pytest.raises(ConfigError, match="backend 'ray'"):
        pipeline.optimize_hyperparameters(SPACE_FILE, backend="ray")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dry_run is for backend='katib'"):
        pipeline.optimize_hyperparameters(SPACE_FILE, dry_run=True)
    with pytest.raises(TrainingError, match="no data to tune on"):
        pipeline.optimize_hyperparameters(SPACE_FILE)


def test_batch_sizes_larger_than_the_training_windows_are_refused(tmp_path: Path) -> None:
    from kubetrade.training.bundle import synthetic_bundle

    bundle = synthetic_bundle(n_timestamps=150, n_symbols=1, sequence_length=8, n_features=3)
    pipeline = AdvancedTrainingPipeline(run_dir=tmp_path, bundle=bundle, track=False)
    with pytest.raises(ConfigError, match=r"batch size\(s\) \[128\] exceed the \d+ training"):
        pipeline.optimize_hyperparameters(SPACE_FILE)
    assert not (tmp_path / "tuning" / "optuna.db").exists()  # nothing started


# ------------------------------------------------------------------ data
class _SealedSplit:
    """A split that fails the test on any attribute access."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"tuning read the test split ({name})")


def test_tuning_bundle_keeps_train_and_val_and_never_reads_test() -> None:
    from kubetrade.data.splits import DatasetBundle, WindowSet

    def split(labels: list[int]) -> WindowSet:
        n = len(labels)
        return WindowSet(
            X=np.zeros((n, 4, 2), np.float32),
            y_cls=np.array(labels),
            y_reg=np.zeros(n, np.float32),
            timestamps=np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"),
            symbols=np.array(["A"] * n),
            feature_names=["a", "b"],
        )

    sealed: Any = _SealedSplit()
    bundle = DatasetBundle(split([0, 1, 2]), split([2, 2]), sealed, ["a", "b"])
    tuning = as_tuning_bundle(bundle)
    assert tuning.train.y_cls.tolist() == [0, 1, 2] and tuning.val.y_cls.tolist() == [2, 2]
    assert len(tuning.test) == 0 and tuning.test.X.shape[1:] == (4, 2)


def test_tuning_bundle_loads_the_split_steps_npz(tmp_path: Path) -> None:
    from kubetrade.data.splits import save_bundle
    from kubetrade.training.bundle import make_demo_bundle

    cfg = load_training_config(None, {"data.sequence_length": 10})
    path = save_bundle(make_demo_bundle(1, 1, cfg=cfg), tmp_path / "bundle.npz")
    tuning = as_tuning_bundle(path)
    assert len(tuning.train) > 0 and len(tuning.val) > 0 and len(tuning.test) == 0
    with pytest.raises(SplitError, match="dataset bundle not found"):
        as_tuning_bundle(tmp_path / "missing.npz")


def test_claim_counter_hands_out_exactly_total(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    claims.write_text("0")
    assert [claim_trial(claims, 3) for _ in range(5)] == [True, True, True, False, False]


def test_pruner_settings_map_to_optuna() -> None:
    import optuna

    spec = TuningSpec.from_yaml(SPACE_FILE)
    assert isinstance(make_pruner(spec.pruner), optuna.pruners.SuccessiveHalvingPruner)
    median = spec_with(pruner={"type": "median", "grace_period": 5}).pruner
    assert isinstance(make_pruner(median), optuna.pruners.MedianPruner)
    assert isinstance(
        make_pruner(spec_with(pruner={"type": "none"}).pruner), optuna.pruners.NopPruner
    )


# ------------------------------------------------------------------ Katib
def _trial_args(experiment: dict[str, Any]) -> list[str]:
    spec = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]
    container = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"]  # one shell-quoted line (issue #13, defect 12)
    return shlex.split(container["args"][0])


def _hparams(args: list[str], values: dict[str, str]) -> dict[str, Any]:
    """Substitute trial values the way Katib does and parse the flags like the trainer would."""
    out: dict[str, Any] = {}
    for flag, pair in zip(args, args[1:], strict=False):
        if flag == "--hparam":
            text = re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: values[m.group(1)], pair)
            key, value = text.split("=", 1)
            out[key] = yaml.safe_load(value)
    return out


def test_katib_experiment_comes_from_the_same_search_space() -> None:
    spec = TuningSpec.from_yaml(SPACE_FILE)
    experiment = build_tuning_experiment(
        spec,
        KatibOptions(image=IMAGE, run_id="r1"),
        name="hybrid_model_v2",
        base_overrides={"training.max_train_windows": 5000},
    )
    assert experiment["metadata"]["name"] == "hybrid-model-v2-r1"
    katib = experiment["spec"]
    assert [p["name"] for p in katib["parameters"]] == spec.space.names
    assert katib["parameters"][0]["feasibleSpace"] == {
        "min": "1e-05",
        "max": "0.01",
        "distribution": "logUniform",
    }
    assert katib["parameters"][2]["feasibleSpace"] == {"list": ["128", "256", "512"]}
    assert katib["objective"]["objectiveMetricName"] == "val_fold_mean_sharpe_ratio"
    assert katib["objective"]["type"] == "maximize"
    assert (katib["maxTrialCount"], katib["parallelTrialCount"]) == (50, 4)
    assert katib["algorithm"]["algorithmName"] == "tpe"
    stop = {s["name"]: s["value"] for s in katib["earlyStopping"]["algorithmSettings"]}
    assert stop == {"min_trials_required": "3", "start_step": "10"}

    args = _trial_args(experiment)
    assert args[args.index("--out") + 1] == "/data/tuning/${trialParameters.trialName}"
    assert "hidden_dim=${trialParameters.hidden_dim}" not in args  # links expanded
    assert "model.cnn.hidden_dim=${trialParameters.hidden_dim}" in args
    assert "model.fusion.output_dim=${trialParameters.hidden_dim}" in args
    refs = {tp["reference"] for tp in katib["trialTemplate"]["trialParameters"]}
    assert set(spec.space.names) <= refs

    # a trial's command line, parsed, is the config the local backend would train
    values = {"training_learning_rate": "0.0003", "training_batch_size": "64",
              "hidden_dim": "512", "model_lstm_num_layers": "3", "dropout": "0.25"}  # fmt: skip
    hparams = _hparams(args, values)
    assert hparams == {
        "training.max_train_windows": 5000,
        **spec.trial_overrides(
            {"training.learning_rate": 0.0003, "training.batch_size": 64, "hidden_dim": 512,
             "model.lstm.num_layers": 3, "dropout": 0.25}
        ),
    }  # fmt: skip
    cfg = load_training_config("config/training.yaml", hparams)
    assert cfg.model.fusion.output_dim == 512 and cfg.training.num_epochs == 100


def test_katib_dry_run_writes_the_yaml(tmp_path: Path) -> None:
    profile = ClusterTrainingProfile(image=IMAGE, namespace="team-a", gpus_per_worker=1)
    pipeline = AdvancedTrainingPipeline(
        experiment_name="Hybrid Model V2",
        run_dir=tmp_path,
        katib=KatibOptions(profile=profile, run_id="r1"),
    )
    dry = pipeline.optimize_hyperparameters(
        SPACE_FILE, num_trials=8, max_concurrent_trials=2, backend="katib", dry_run=True
    )
    assert isinstance(dry, KatibDryRun)
    assert dry.path == tmp_path / "tuning" / "katib_experiment.yaml"
    loaded = yaml.safe_load(dry.path.read_text())
    assert loaded == dry.experiment == yaml.safe_load(dry.yaml)
    assert loaded["metadata"] == {
        "name": "hybrid-model-v2-r1",
        "namespace": "team-a",
        "labels": {"app.kubernetes.io/part-of": "kubetrade"},
    }
    assert (loaded["spec"]["maxTrialCount"], loaded["spec"]["parallelTrialCount"]) == (8, 2)
    for name in ("training.learning_rate", "training.batch_size", "hidden_dim", "dropout"):
        assert f"name: {name}" in dry.yaml
    master = loaded["spec"]["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]["Master"]
    container = master["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_katib_needs_an_image_and_names_are_sanitised() -> None:
    with pytest.raises(ConfigError, match="needs a trainer image"):
        build_tuning_experiment(TuningSpec.from_yaml(SPACE_FILE), KatibOptions(), name="x")
    assert katib_experiment_name("2024_Sharpe run!") == "tune-2024-sharpe-run"
    assert len(katib_experiment_name("a" * 80)) == 40


def test_katib_run_reads_the_optimal_trial_and_writes_best_config(tmp_path: Path) -> None:
    spec = TuningSpec.from_yaml(SPACE_FILE)
    assignments = {"training.learning_rate": "0.0004", "training.batch_size": "32",
                   "hidden_dim": "512", "model.lstm.num_layers": "2", "dropout": "0.3"}  # fmt: skip
    status = {
        "conditions": [{"type": "Succeeded", "status": "True"}],
        "currentOptimalTrial": {
            "bestTrialName": "tune-abc",
            "parameterAssignments": [{"name": k, "value": v} for k, v in assignments.items()],
            "observation": {
                "metrics": [{"name": "val_fold_mean_sharpe_ratio", "latest": "1.1", "max": "1.4"}]
            },
        },
    }  # fmt: skip
    api = FakeKubernetesApi([{"status": status}])  # the suite's one fake API (conftest)
    launcher = CustomResourceLauncher.for_experiments(
        api, None, "kubetrade", search_space=spec.space, log=lambda _: None
    )
    pipeline = AdvancedTrainingPipeline(run_dir=tmp_path, katib=KatibOptions(image=IMAGE))
    result = pipeline.optimize_hyperparameters(SPACE_FILE, backend="katib", launcher=launcher)
    assert isinstance(result, TuningResult)
    assert api.created and api.created[0]["kind"] == "Experiment"
    assert api.created[0]["plural"] == "experiments"
    assert result.katib_trial == "tune-abc" and result.best_value == 1.4  # max over epochs
    assert result.best_params["hidden_dim"] == 512
    cfg = load_training_config(result.best_config_path)
    assert cfg.model.cnn.hidden_dim == cfg.model.fusion.output_dim == 512
    assert cfg.model.lstm.dropout == 0.3 and cfg.training.learning_rate == 0.0004
    assert cfg.training.num_epochs == 100  # training.yaml's, not a tuning budget
