"""kubetrade.k8s: PyTorchJob and Katib builders, the search space, and the launcher.

The only fake in this file is the Kubernetes API server (``fake_kube``, tests/conftest.py:
scripted object statuses, recorded pod objects and logs) — nothing else can stand in for a
cluster here. Everything else is real: Optuna studies, Katib's metric regex; the objects'
schemas are checked against upstream's CRDs and Go types in tests/contracts/.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

import optuna
import pytest
from kubernetes.client import ApiException, V1ConfigMap

from conftest import FakeClock, FakeKubernetesApi, job_profile, load_pod_fixture
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.k8s import (
    ALGORITHMS,
    KATIB_METRIC_REGEX,
    TRIAL_NAME_PLACEHOLDER,
    ClusterTrainingProfile,
    CustomResourceLauncher,
    MedianStop,
    SearchSpace,
    best_trial_from_status,
    build_experiment,
    build_pytorchjob,
    cluster_profile_from_configmap,
    load_cluster_profile,
    master_pod_selector,
    run_experiment,
    run_pytorchjob,
)

GUIDE_SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "batch_size": {"type": "choice", "values": [16, 32, 64, 128]},
    "hidden_dim": {"type": "choice", "values": [128, 256, 512]},
    "num_layers": {"type": "int", "low": 1, "high": 4},
    "dropout": {"type": "uniform", "low": 0.1, "high": 0.5},
}
IMAGE = "kubetrade/base:0.1.0"

# Env vars the Training Operator v1.9 sets on PyTorchJob pods with a Master
# (pkg/controller.v1/pytorch/envvar.go, master.go).
OPERATOR_ENV = {
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_NNODES",
    "PYTHONUNBUFFERED",
}


# ------------------------------------------------------------------ PyTorchJob
def _gpu_job() -> dict[str, Any]:
    profile = job_profile(
        "kubetrade/trainer:0.1.0",
        num_workers=3,
        nproc_per_node=2,
        gpus_per_worker=2,
        cpu_request="4",
        cpu_limit="8",
        memory_request="16Gi",
        memory_limit="32Gi",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"nvidia.com/gpu.present": "true"},
        env={"MLFLOW_TRACKING_URI": "http://kubetrade-mlflow:5000"},
        secret_env={"AWS_SECRET_ACCESS_KEY": {"secret": "kubetrade-minio", "key": "root-password"}},
        pvc_name="kubetrade-data",
        service_account="kubetrade-trainer",
        active_deadline_seconds=7200,
    )
    args = ["--bundle", "/data/bundle", "--config", "/data/cfg.yaml", "--out", "/data/out"]
    return build_pytorchjob("train-gpu", profile, args=args)


def test_pytorchjob_layout_and_hardening() -> None:
    job = _gpu_job()
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    spec = job["spec"]
    assert spec["nprocPerNode"] == "2"
    assert spec["runPolicy"] == {
        "backoffLimit": 2,
        "cleanPodPolicy": "Running",
        "activeDeadlineSeconds": 7200,
        "ttlSecondsAfterFinished": 86400,
    }
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == "kubetrade-trainer"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["tolerations"] == [
            {"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}
        ]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["ports"][0]["name"] == "pytorchjob-port"
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/tmp"]]["emptyDir"] == {}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert volumes[mounts["/data"]]["persistentVolumeClaim"] == {"claimName": "kubetrade-data"}
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "kubetrade-minio",
            "key": "root-password",
        }
        assert env["HOME"]["value"] == "/tmp"


def test_trainer_command_is_torchrun_fed_by_operator_env() -> None:
    job = build_pytorchjob("t", job_profile(), args=["--bundle", "/data/b", "--out", "/data/o"])
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[0] == "torchrun"
    assert command[-2:] == ["-m", "kubetrade.training.run"]
    referenced = set(re.findall(r"\$\((\w+)\)", " ".join(command)))
    assert referenced and referenced <= OPERATOR_ENV
    assert container["args"] == ["--bundle", "/data/b", "--out", "/data/o"]
    single = build_pytorchjob("t", job_profile(), launcher="python")
    assert single["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "command"
    ] == ["python", "-m", "kubetrade.training.run"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "Bad_Name"}, "not a valid Kubernetes name"),
        ({"image": "kubetrade/base:latest"}, "':latest'"),
        ({"image": "kubetrade/base"}, "has no tag"),
        ({"nproc_per_node": 4, "gpus_per_worker": 2}, "exceeds gpus_per_worker"),
        ({"cpu_request": "4", "cpu_limit": "2"}, "cpu request 4 is larger"),
        ({"memory_limit": "lots"}, "not a Kubernetes quantity"),
        ({"launcher": "python", "nproc_per_node": 2}, "use launcher='torchrun'"),
        ({"restart_policy": "Sometimes"}, "restart_policy"),
        ({"tolerations": [{"operator": "Exists", "value": "x"}]}, "takes no value"),
        ({"env": {"1BAD": "x"}}, "environment variable name"),
        ({"data_mount_path": "/tmp"}, "data_mount_path"),
        ({"shm_size": "8Gi", "memory_limit": "4Gi"}, "exceeds memory limit"),
    ],
)
def test_pytorchjob_rejects_bad_values(kwargs: dict[str, Any], fragment: str) -> None:
    params: dict[str, Any] = {"name": "job", "launcher": "torchrun"} | kwargs
    name, launcher = params.pop("name"), params.pop("launcher")
    with pytest.raises((ConfigError, ValueError), match=re.escape(fragment)):
        build_pytorchjob(name, job_profile(**params), launcher=launcher)


def test_image_digest_is_accepted() -> None:
    digest = "kubetrade/base@sha256:" + "a" * 64
    job = build_pytorchjob("job", job_profile(digest))
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["containers"][0]["image"] == digest


def test_cluster_profile_builds_jobs_and_rejects_unknown_keys(tmp_path: Any) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(
        "image: kubetrade/trainer:0.1.0\nnum_workers: 2\ngpus_per_worker: 1\n"
        "node_selector: {pool: gpu}\n"
        "tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n"
    )
    profile = load_cluster_profile(path)
    job = profile.build("train-x", ["--bundle", "/data/b"], namespace="team-a")
    assert job["metadata"]["namespace"] == "team-a"
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    path.write_text("image: kubetrade/trainer:0.1.0\ngpus: 1\n")
    with pytest.raises(ConfigError, match="gpus: unknown key"):
        load_cluster_profile(path)


def test_cluster_profile_namespace_defaults_to_the_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETRADE_NAMESPACE", "kubeflow")
    profile = ClusterTrainingProfile(image=IMAGE)
    assert profile.build("j", [])["metadata"]["namespace"] == "kubeflow"


def test_cluster_profile_from_configmap() -> None:
    class Core:
        def read_namespaced_config_map(self, name: str, namespace: str) -> V1ConfigMap:
            assert (name, namespace) == ("kubetrade-cluster-profile", "ns1")
            return V1ConfigMap(data={"profile.yaml": f"image: {IMAGE}\nnum_workers: 1\n"})

    profile = cluster_profile_from_configmap(Core(), "ns1")
    assert profile.num_workers == 1 and profile.image == IMAGE


# ------------------------------------------------------------------ search space
def test_search_space_parses_the_guides_space_and_round_trips() -> None:
    space = SearchSpace.from_dict(GUIDE_SPACE)
    assert space.names == list(GUIDE_SPACE)
    assert SearchSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "normal", "low": 0, "high": 1}, "unknown distribution type 'normal'"),
        ({"low": 0, "high": 1}, "unknown distribution type None"),
        ({"type": "loguniform", "low": 0.0, "high": 1.0}, "low > 0"),
        ({"type": "uniform", "low": 0.5, "high": 0.1}, "low < high"),
        ({"type": "int", "low": 4, "high": 4}, "low < high"),
        ({"type": "int", "low": 0, "high": 5, "step": 2}, "multiple of step"),
        ({"type": "choice", "values": []}, "at least 1 item"),
        ({"type": "choice", "values": [1, 1]}, "distinct"),
        ({"type": "uniform", "low": 0, "high": 1, "sigma": 2}, "sigma: unknown key"),
        ("0.1", "must be a mapping"),
    ],
)
def test_search_space_errors_name_the_parameter(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict({"lr": spec})
    assert "'lr'" in str(info.value)
    assert fragment in str(info.value)


def test_search_space_rejects_bad_names_and_empty() -> None:
    with pytest.raises(ConfigError, match="parameter name"):
        SearchSpace.from_dict({"1lr": {"type": "uniform", "low": 0, "high": 1}})
    with pytest.raises(ConfigError, match="empty"):
        SearchSpace.from_dict({})


def test_search_space_from_yaml(tmp_path: Any) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}\n")
    assert SearchSpace.from_yaml(path).names == ["lr"]
    path.write_text("lr: {type: loguniform, low: -1, high: 1}\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        SearchSpace.from_yaml(path)


def test_suggest_with_a_real_optuna_study() -> None:
    space = SearchSpace.from_dict(GUIDE_SPACE)
    seen: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        seen.append(values)
        return -abs(math.log10(values["learning_rate"]) + 3.5) - values["dropout"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=12)
    for values in seen:
        assert 1e-5 <= values["learning_rate"] <= 1e-2
        assert values["batch_size"] in {16, 32, 64, 128} and isinstance(values["batch_size"], int)
        assert values["hidden_dim"] in {128, 256, 512}
        assert isinstance(values["num_layers"], int) and 1 <= values["num_layers"] <= 4
        assert 0.1 <= values["dropout"] <= 0.5
    assert space.cast(study.best_params) == study.best_params
    # ask/tell with fixed distributions (the Katib-style "suggestion service" flow)
    trial = study.ask(fixed_distributions=space.to_optuna_distributions())
    assert set(trial.params) == set(GUIDE_SPACE)


def test_cast_turns_katib_strings_into_typed_values() -> None:
    space = SearchSpace.from_dict(GUIDE_SPACE)
    typed = space.cast(
        {
            "learning_rate": "0.00031",
            "batch_size": "64",
            "hidden_dim": "256",
            "num_layers": "3",
            "dropout": "0.25",
        }
    )
    assert typed == {
        "learning_rate": 0.00031,
        "batch_size": 64,
        "hidden_dim": 256,
        "num_layers": 3,
        "dropout": 0.25,
    }
    good = {"learning_rate": "1e-3", "batch_size": "64", "hidden_dim": "256", "num_layers": "1"}
    with pytest.raises(ConfigError, match="'num_layers'.*outside"):
        space.cast(good | {"num_layers": "9", "dropout": "0.2"})
    with pytest.raises(ConfigError, match="'batch_size'.*not one of"):
        space.cast(good | {"batch_size": "48", "dropout": "0.2"})
    with pytest.raises(ConfigError, match="unknown parameters"):
        space.cast(good | {"dropout": "0.2", "momentum": "0.9"})


def test_grid() -> None:
    space = SearchSpace.from_dict(
        {
            "dropout": {"type": "uniform", "low": 0.1, "high": 0.5, "step": 0.2},
            "num_layers": {"type": "int", "low": 1, "high": 4},
            "batch_size": {"type": "choice", "values": [32, 64]},
        }
    )
    grid = space.grid()
    assert grid["num_layers"] == [1, 2, 3, 4] and grid["batch_size"] == [32, 64]
    assert grid["dropout"] == pytest.approx([0.1, 0.3, 0.5])
    assert space.grid_size() == 24
    assert SearchSpace.from_dict(GUIDE_SPACE).grid_size() is None


# ------------------------------------------------------------------ metrics
@pytest.mark.parametrize("value", [1.0, -0.5, 0.0, 1e-05, 123456789.0, 3.14159e20, -2.5e-12, 7])
def test_trainer_epoch_lines_parse_with_katibs_default_filter(value: float) -> None:
    # The trainer prints ``epoch=<e>/<n> <metric>=<value:.6g> ... seconds=<s>`` on rank 0
    # (kubetrade.training.trainer); Katib's StdOut collector must read every metric back.
    line = f"epoch=2/3 val_sharpe_ratio={value:.6g} val_loss={0.125:.6g} seconds=1.5"
    matches = {m[0]: float(m[1]) for m in re.findall(KATIB_METRIC_REGEX, line)}
    assert matches["val_sharpe_ratio"] == pytest.approx(float(value), rel=1e-5)
    assert matches["val_loss"] == 0.125


# ------------------------------------------------------------------ Katib experiment
def test_build_experiment_structure() -> None:
    exp = build_experiment(
        "tune-hybrid",
        search_space=GUIDE_SPACE,
        trial_image=IMAGE,
        trial_args=["--bundle", "/data/b", "--out", f"/data/tune/{TRIAL_NAME_PLACEHOLDER}"],
        additional_metrics=["val_loss"],
        goal=2.0,
        early_stopping=MedianStop(min_trials_required=3, start_step=5),
        profile=job_profile(pvc_name="kubetrade-data", cpu_limit="1"),
    )
    assert exp["apiVersion"] == "kubeflow.org/v1beta1" and exp["kind"] == "Experiment"
    spec = exp["spec"]
    assert spec["objective"]["type"] == "maximize"
    assert spec["objective"]["objectiveMetricName"] == "val_sharpe_ratio"
    assert spec["objective"]["additionalMetricNames"] == ["val_loss"]
    assert spec["metricsCollectorSpec"]["collector"] == {"kind": "StdOut"}
    params = {p["name"]: p for p in spec["parameters"]}
    assert params["learning_rate"] == {
        "name": "learning_rate",
        "parameterType": "double",
        "feasibleSpace": {"min": "1e-05", "max": "0.01", "distribution": "logUniform"},
    }
    assert params["batch_size"]["parameterType"] == "categorical"
    assert params["batch_size"]["feasibleSpace"]["list"] == ["16", "32", "64", "128"]
    assert params["num_layers"]["feasibleSpace"] == {"min": "1", "max": "4"}
    template = spec["trialTemplate"]
    assert template["primaryContainerName"] == "pytorch"
    assert (
        template["successCondition"] == 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
    )
    assert template["failureCondition"] == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    trial_job = template["trialSpec"]
    assert "name" not in trial_job["metadata"] and "namespace" not in trial_job["metadata"]
    master = trial_job["spec"]["pytorchReplicaSpecs"]["Master"]
    assert master["restartPolicy"] == "Never"
    assert trial_job["spec"]["runPolicy"]["backoffLimit"] == 0
    container = master["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"]
    argv = shlex.split(container["args"][0])
    args = argv[argv.index("kubetrade.training.run") + 1 :]
    assert args[:3] == ["--bundle", "/data/b", "--out"]
    assert "--hparam" in args and "learning_rate=${trialParameters.learning_rate}" in args
    # every trialParameter appears in the trial spec and references a parameter (or meta key)
    text = str(trial_job)
    names = {p["name"] for p in spec["parameters"]}
    for tp in template["trialParameters"]:
        assert "${trialParameters." + tp["name"] + "}" in text
        assert tp["reference"] in names or tp["reference"] == "${trialSpec.Name}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_supported_algorithm_builds(algorithm: str) -> None:
    space: dict[str, Any] = dict(GUIDE_SPACE)
    settings: dict[str, str] = {}
    if algorithm == "grid":
        space = {
            "dropout": {"type": "uniform", "low": 0.1, "high": 0.5, "step": 0.1},
            "num_layers": {"type": "int", "low": 1, "high": 4},
        }
    if algorithm == "hyperband":
        space = dict(space, num_epochs={"type": "int", "low": 5, "high": 40})
        settings = {"resource_name": "num_epochs", "eta": "3", "r_l": "9"}
    exp = build_experiment(
        "tune-" + algorithm,
        search_space=space,
        trial_image=IMAGE,
        algorithm=algorithm,
        algorithm_settings=settings,
        max_trial_count=8,
        parallel_trial_count=2,
    )
    assert exp["spec"]["algorithm"]["algorithmName"] == algorithm


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"algorithm": "pbt"}, "algorithm 'pbt' is not supported"),
        ({"algorithm": "asha"}, "use one of tpe, random, grid"),
        ({"algorithm": "grid"}, "offending: learning_rate, dropout"),
        ({"algorithm": "cmaes", "search_space": {"b": GUIDE_SPACE["batch_size"]}}, "cmaes"),
        ({"algorithm": "hyperband"}, "resource_name"),
        ({"mode": "best"}, "mode 'best'"),
        ({"additional_metrics": ["val_sharpe_ratio"]}, "must not repeat"),
        ({"parallel_trial_count": 5, "max_trial_count": 4}, "parallel_trial_count (5)"),
        ({"max_failed_trial_count": 20}, "max_failed_trial_count"),
        ({"trial_image": None}, "needs trial_image"),
        ({"trial_args": ["--lr=${trialParameters.lr}"]}, "reference trial parameters"),
    ],
)
def test_build_experiment_rejects(kwargs: dict[str, Any], fragment: str) -> None:
    params: dict[str, Any] = {"search_space": GUIDE_SPACE, "trial_image": IMAGE} | kwargs
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        build_experiment("tune-x", **params)
    with pytest.raises(ConfigError, match="experiment name"):
        build_experiment("Tune_X", search_space=GUIDE_SPACE, trial_image=IMAGE)


def test_grid_budget_must_fit_the_grid() -> None:
    space = {"num_layers": {"type": "int", "low": 1, "high": 3}}
    with pytest.raises(ConfigError, match="exceeds the 3 grid points"):
        build_experiment(
            "g", search_space=space, trial_image=IMAGE, algorithm="grid", max_trial_count=4
        )


OPTIMAL_STATUS = {
    "status": {
        "conditions": [
            {"type": "Created", "status": "True"},
            {"type": "Running", "status": "False"},
            {"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached"},
        ],
        "currentOptimalTrial": {
            "bestTrialName": "tune-x-abc123",
            "parameterAssignments": [
                {"name": "learning_rate", "value": "0.0004"},
                {"name": "batch_size", "value": "32"},
                {"name": "hidden_dim", "value": "512"},
                {"name": "num_layers", "value": "2"},
                {"name": "dropout", "value": "0.3"},
            ],
            "observation": {
                "metrics": [
                    {"name": "val_sharpe_ratio", "latest": "1.1", "min": "0.2", "max": "1.4"},
                    {"name": "val_loss", "latest": "unavailable", "min": "0.3", "max": "0.9"},
                ]
            },
        },
        "trials": 8,
        "trialsSucceeded": 8,
    }
}


def test_best_trial_from_status() -> None:
    space = SearchSpace.from_dict(GUIDE_SPACE)
    best = best_trial_from_status(OPTIMAL_STATUS, space)
    assert best is not None and best.name == "tune-x-abc123"
    assert best.parameters["batch_size"] == 32 and best.parameters["learning_rate"] == 0.0004
    assert best.value("val_sharpe_ratio", "max") == 1.4
    with pytest.raises(TrainingError, match="no latest value"):
        best.value("val_loss")
    raw = best_trial_from_status(OPTIMAL_STATUS)
    assert raw is not None and raw.parameters["batch_size"] == "32"
    assert best_trial_from_status({"status": {"currentOptimalTrial": {}}}) is None


# ------------------------------------------------------------------ launcher (fake API)
def _master_pod(exit_code: int | None = None) -> dict[str, Any]:
    pod = load_pod_fixture("running")
    pod["metadata"]["name"] = "job-master-0"
    pod["metadata"]["labels"]["training.kubeflow.org/job-name"] = "job"
    if exit_code is not None:
        pod["status"]["phase"] = "Failed"
        pod["status"]["containerStatuses"][0]["state"] = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Error",
                "message": "CUDA out of memory",
            }
        }
    return pod


def FakeCustomObjectsApi(statuses: list[Any]) -> FakeKubernetesApi:  # noqa: N802
    return FakeKubernetesApi(statuses)


def FakeCoreV1Api(log_chunks: list[str], exit_code: int | None = None) -> FakeKubernetesApi:  # noqa: N802
    return FakeKubernetesApi(pods=[_master_pod(exit_code)], log_chunks=log_chunks)


def _cond(*types: str, message: str = "", reason: str = "") -> dict[str, Any]:
    conditions = [{"type": t, "status": "True"} for t in types]
    if message or reason:
        conditions[-1] |= {"message": message, "reason": reason}
    return {"status": {"conditions": conditions}}


def _launcher(api: Any, core: Any, clock: FakeClock, lines: list[str], **kw: Any) -> Any:
    return CustomResourceLauncher.for_pytorchjobs(
        api, core, "kubetrade", clock=clock, sleep=clock.sleep, log=lines.append, **kw
    )


def test_pytorchjob_success_streams_master_log() -> None:
    api = FakeCustomObjectsApi(
        [
            _cond("Created"),
            _cond("Created", "Running"),
            _cond("Created", "Running"),
            _cond("Succeeded"),
        ]
    )
    core = FakeCoreV1Api(["epoch 1\n", "val_sharpe_ratio=0.5\npartial", " line\n"])
    clock, lines = FakeClock(), list[str]()
    launcher = _launcher(api, core, clock, lines)
    job = build_pytorchjob("job", job_profile())
    launcher.create(job)
    result = launcher.wait("job", deadline_s=600, poll_s=30)
    assert result.state == "Succeeded" and result.polls == 4
    assert api.created[0]["plural"] == "pytorchjobs" and api.created[0]["group"] == "kubeflow.org"
    assert clock.sleeps == [30, 30, 30]
    log_lines = [line for line in lines if line.startswith("[job-master-0]")]
    assert log_lines == [
        "[job-master-0] epoch 1",
        "[job-master-0] val_sharpe_ratio=0.5",
        "[job-master-0] partial line",
    ]
    assert core.selectors[0] == master_pod_selector("job")
    assert "training.kubeflow.org/replica-type=master" in core.selectors[0]


def test_pytorchjob_failure_raises_with_operator_message_and_log() -> None:
    failed = _cond(
        "Created",
        "Running",
        "Failed",
        reason="PyTorchJobFailed",
        message="PyTorchJob kubetrade/job is failed because 1 Master replica(s) failed.",
    )
    api = FakeCustomObjectsApi([_cond("Running"), _cond("Running"), failed])
    core = FakeCoreV1Api(["loading bundle\n", "RuntimeError: boom\n"], exit_code=1)
    clock, lines = FakeClock(), list[str]()
    with pytest.raises(TrainingError) as info:
        _launcher(api, core, clock, lines).wait("job", deadline_s=600, poll_s=5)
    text = str(info.value)
    assert "failed (PyTorchJobFailed)" in text
    assert "1 Master replica(s) failed" in text
    assert "exit code 1" in text and "CUDA out of memory" in text
    assert "RuntimeError: boom" in text
    assert api.deleted == []


def test_pytorchjob_deadline_raises_and_deletes() -> None:
    api = FakeCustomObjectsApi([_cond("Created", "Running")])
    clock, lines = FakeClock(), list[str]()
    with pytest.raises(TrainingError, match=r"did not finish within 100 s \(last state: Running\)"):
        _launcher(api, None, clock, lines).wait("job", deadline_s=100, poll_s=30)
    assert api.deleted == ["job"]
    assert clock.now == pytest.approx(100)  # the last sleep is cut to the deadline
    api2 = FakeCustomObjectsApi([_cond("Running")])
    with pytest.raises(TrainingError, match="did not finish"):
        _launcher(api2, None, FakeClock(), []).wait(
            "job", deadline_s=10, poll_s=5, delete_on_timeout=False
        )
    assert api2.deleted == []


def test_transient_api_errors_are_retried_but_404_is_fatal() -> None:
    flaky = ApiException(status=503, reason="Service Unavailable")
    api = FakeCustomObjectsApi([flaky, flaky, _cond("Succeeded")])
    clock = FakeClock()
    result = _launcher(api, None, clock, []).wait("job", deadline_s=100, poll_s=1)
    assert result.state == "Succeeded" and result.polls == 3
    gone = FakeCustomObjectsApi([ApiException(status=404, reason="Not Found")])
    with pytest.raises(TrainingError, match="disappeared"):
        _launcher(gone, None, FakeClock(), []).wait("job", deadline_s=100, poll_s=1)
    always = FakeCustomObjectsApi([flaky])
    with pytest.raises(TrainingError, match="cannot read"):
        _launcher(always, None, FakeClock(), []).wait(
            "job", deadline_s=100, poll_s=1, max_api_errors=3
        )


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        (409, "already exists"),
        (404, "install the operator"),
        (403, "forbidden"),
        (422, "rejected it"),
    ],
)
def test_create_errors_explain_themselves(status: int, fragment: str) -> None:
    api = FakeCustomObjectsApi([_cond("Running")])
    api.create_error = ApiException(status=status, reason="nope")
    with pytest.raises(TrainingError, match=fragment):
        _launcher(api, None, FakeClock(), []).create(build_pytorchjob("job", job_profile()))
    with pytest.raises(TrainingError, match="namespace 'other'"):
        _launcher(FakeCustomObjectsApi([]), None, FakeClock(), []).create(
            build_pytorchjob("job", job_profile(namespace="other"))
        )


def _exp_status(trials: int, succeeded: int, *conds: str, **extra: Any) -> dict[str, Any]:
    status = _cond(*conds)["status"] | {"trials": trials, "trialsSucceeded": succeeded} | extra
    return {"status": status}


def _exp_launcher(api: Any, clock: FakeClock, lines: list[str]) -> Any:
    return CustomResourceLauncher.for_experiments(
        api,
        None,
        "kubetrade",
        clock=clock,
        sleep=clock.sleep,
        log=lines.append,
        search_space=SearchSpace.from_dict(GUIDE_SPACE),
    )


def test_experiment_success_returns_typed_best_trial() -> None:
    api = FakeCustomObjectsApi(
        [
            _exp_status(0, 0, "Created"),
            _exp_status(2, 0, "Created", "Running", trialsRunning=2),
            _exp_status(4, 2, "Created", "Running", trialsRunning=2),
            OPTIMAL_STATUS,
        ]
    )
    clock, lines = FakeClock(), list[str]()
    launcher = _exp_launcher(api, clock, lines)
    exp = build_experiment("tune-x", search_space=GUIDE_SPACE, trial_image=IMAGE)
    best = run_experiment(exp, deadline_s=3600, poll_s=60, launcher=launcher)
    assert best.name == "tune-x-abc123" and best.parameters["hidden_dim"] == 512
    assert api.created[0]["plural"] == "experiments"
    assert any("trials=4 succeeded=2" in line for line in lines)


def test_experiment_failure_and_stall() -> None:
    failed = _exp_status(
        5, 1, "Created", "Failed", trialsFailed=4, failedTrialList=["tune-x-a", "tune-x-b"]
    )
    failed["status"]["conditions"][-1] |= {"reason": "ExperimentFailed", "message": "max failed"}
    with pytest.raises(TrainingError, match=r"failed \(ExperimentFailed\): max failed.*tune-x-a"):
        _exp_launcher(FakeCustomObjectsApi([failed]), FakeClock(), []).wait("tune-x", 3600, 60)

    stuck = FakeCustomObjectsApi([_exp_status(1, 0, "Created", "Running", trialsPending=1)])
    clock = FakeClock()
    with pytest.raises(TrainingError, match=r"stalled: no trial progress in 5 polls"):
        _exp_launcher(stuck, clock, []).wait("tune-x", 3600, 60, stall_polls=5)
    assert stuck.gets == 6 and stuck.deleted == []

    no_best = FakeCustomObjectsApi([_exp_status(3, 0, "Succeeded")])
    with pytest.raises(TrainingError, match="no best trial"):
        _exp_launcher(no_best, FakeClock(), []).wait("tune-x", 3600, 60)


def test_run_pytorchjob_helper() -> None:
    api = FakeCustomObjectsApi([_cond("Succeeded")])
    clock = FakeClock()
    launcher = _launcher(api, None, clock, [])
    result = run_pytorchjob(
        build_pytorchjob("job", job_profile()), deadline_s=60, poll_s=5, launcher=launcher
    )
    assert result.state == "Succeeded" and result.kind == "PyTorchJob"
