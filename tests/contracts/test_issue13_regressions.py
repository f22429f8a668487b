"""Issue #13: one regression test per defect of the cluster path (defect 7, ``kubetrade
submit``, is tested with the submit command). Each failed on the code before the fix.

Defects tested in other files, next to the contract they break:
  3  tests/contracts/test_emitted_yaml.py::test_tune_dry_run_prints_plain_yaml_that_kubectl_reads_as_meant
  10 tests/contracts/test_katib_contracts.py::test_katib_v017_has_no_distribution_and_log_scale_is_refused
  13 tests/manifests/test_manifests_kustomize.py::test_kind_overlay_owns_no_namespace_so_delete_k_keeps_kubeflow
  14 tests/manifests/test_manifests_images.py::test_kind_e2e_builds_and_loads_only_the_images_kind_uses
The Kubernetes API is the one fake of the suite (tests/conftest.py); pods are recorded-shape
fixtures (tests/contracts/fixtures/pods/).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from _contracts import executor_configs, katib_substitute, katib_wrap_primary_container
from typer.testing import CliRunner

from conftest import FakeClock, FakeKubernetesApi, job_profile, load_pod_fixture
from kubetrade.cli import app
from kubetrade.errors import ConfigError, TrainingError
from kubetrade.k8s import (
    ClusterTrainingProfile,
    CustomResourceLauncher,
    build_experiment,
    build_pytorchjob,
    goyaml,
    load_cluster_profile,
    run_pytorchjob,
)
from kubetrade.k8s.pods import owner_reference, pod_problem
from kubetrade.tuning.katib_backend import KatibOptions, build_tuning_experiment
from kubetrade.tuning.spec import TuningSpec

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "kubetrade/base:0.1.0"
SPACE = TuningSpec.from_yaml(ROOT / "config" / "search_space.yaml")


def _pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["template"] for r in job["spec"]["pytorchReplicaSpecs"].values()]


# ---------------------------------------------------------------- 1 namespace
def test_1_experiment_goes_to_the_namespace_the_step_runs_in(monkeypatch: Any) -> None:
    monkeypatch.setenv("KUBETRADE_NAMESPACE", "kubeflow-user-example-com")
    exp = build_tuning_experiment(SPACE, KatibOptions(image=IMAGE), name="t")
    assert exp["metadata"]["namespace"] == "kubeflow-user-example-com"
    profile = ClusterTrainingProfile(image=IMAGE)  # the overlay's profile leaves it unset
    exp = build_tuning_experiment(SPACE, KatibOptions(profile=profile), name="t")
    assert exp["metadata"]["namespace"] == "kubeflow-user-example-com"
    assert (
        build_experiment(
            "x", search_space={"a": {"type": "uniform", "low": 0, "high": 1}}, trial_image=IMAGE
        )["metadata"]["namespace"]
        == "kubeflow-user-example-com"
    )


# ---------------------------------------------------------------- 2 kfp-kubernetes fields
@pytest.mark.parametrize("name", ["kubetrade_training.yaml", "kubetrade_training_gpu.yaml"])
def test_2_compiled_pipeline_has_no_fields_or_references_old_backends_choke_on(name: str) -> None:
    text = (ROOT / "pipelines" / "compiled" / name).read_text()
    configs = executor_configs(text)
    flat = str(configs)
    # the oldest target is KFP 2.14.0 (dsl.Collected): the *NameParameter forms are in its
    # proto (test_kfp_platform checks every field); `optional` is neither there nor honoured
    assert "optional" not in flat
    for missing in ("kubetrade-mlflow-auth", "kubetrade-s3", "MLFLOW_S3_ENDPOINT_URL"):
        assert missing not in flat  # no overlay creates them; required before KFP 2.15


# ---------------------------------------------------------------- 4 tune --backend katib
def test_4_tune_katib_trials_get_volume_service_account_and_the_bundle(
    tmp_path: Path, monkeypatch: Any
) -> None:
    profile_file = tmp_path / "profile.yaml"
    profile_file.write_text(
        "image: kubetrade/base:0.1.0\npvc_name: team-data\ndata_mount_path: /mnt/data\n"
        "service_account: kubetrade-trainer\nnamespace: team-a\n"
    )
    # the metric the configured study optimises (config/search_space.yaml)
    objective = yaml.safe_load(Path("config/search_space.yaml").read_text())["objective"]["metric"]
    assignments = {"training.learning_rate": "0.0004", "training.batch_size": "64",
                   "hidden_dim": "256", "model.lstm.num_layers": "2", "dropout": "0.3"}  # fmt: skip
    succeeded = {
        "status": {
            "conditions": [{"type": "Succeeded", "status": "True"}],
            "currentOptimalTrial": {
                "bestTrialName": "kubetrade-tuning-x-abc",
                "parameterAssignments": [{"name": k, "value": v} for k, v in assignments.items()],
                "observation": {"metrics": [{"name": objective, "latest": "1.1",
                                             "max": "1.3", "min": "0.1"}]},
            },
        }
    }  # fmt: skip
    api = FakeKubernetesApi([succeeded])
    monkeypatch.setattr("kubetrade.k8s.lifecycle.kube_clients", lambda context=None: (api, api))
    result = CliRunner().invoke(
        app,
        ["tune", "--backend", "katib", "--bundle", "runs/r1/bundle.npz", "--run-dir",
         str(tmp_path / "run"), "--cluster-profile", str(profile_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (created,) = api.created
    assert created["namespace"] == "team-a" and created["plural"] == "experiments"
    trial = created["spec"]["trialTemplate"]["trialSpec"]
    for template in _pods(trial):
        pod = template["spec"]
        assert pod["serviceAccountName"] == "kubetrade-trainer"
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v]  # fmt: skip
        assert claims == ["team-data"]
        argv = shlex.split(pod["containers"][0]["args"][0])
        assert argv[argv.index("--bundle") + 1] == "/mnt/data/runs/r1/bundle.npz"
        assert argv[argv.index("--out") + 1].startswith("/mnt/data/tuning/")
    bad = CliRunner().invoke(
        app,
        ["tune", "--backend", "katib", "--dry-run", "--bundle", "/elsewhere/b.npz",
         "--run-dir", str(tmp_path / "run2"), "--cluster-profile", str(profile_file)],
    )  # fmt: skip
    assert isinstance(bad.exception, ConfigError) and "/mnt/data" in str(bad.exception)
    assert not (tmp_path / "run2").exists()


# ---------------------------------------------------------------- 5 unique names
def test_5_every_run_gets_its_own_experiment_name() -> None:
    names = {
        build_tuning_experiment(SPACE, KatibOptions(image=IMAGE), name="kubetrade-tuning")[
            "metadata"
        ]["name"]
        for _ in range(3)
    }
    assert len(names) == 3
    for name in names:
        assert re.fullmatch(r"kubetrade-tuning-[0-9a-f]{8}", name) and len(name) <= 40
    long = build_tuning_experiment(SPACE, KatibOptions(image=IMAGE, run_id="abc123"), name="x" * 80)
    assert long["metadata"]["name"].endswith("-abc123") and len(long["metadata"]["name"]) <= 40


# ---------------------------------------------------------------- 6 Istio
def test_6_trainer_and_trial_pods_opt_out_of_the_istio_sidecar() -> None:
    gpu = load_cluster_profile(ROOT / "manifests/overlays/gpu/cluster-profile/profile.yaml")
    job = gpu.build("train-x", ["--bundle", "/data/b"], namespace="kubetrade")
    exp = build_tuning_experiment(SPACE, KatibOptions(profile=gpu), name="t")
    for template in [*_pods(job), *_pods(exp["spec"]["trialTemplate"]["trialSpec"])]:
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    # and the YAML says the string "false" (a bool would be rejected: annotations are strings)
    assert "sidecar.istio.io/inject: 'false'" in goyaml.dump(job)


# ---------------------------------------------------------------- 8 GPU image
def test_8_gpu_tasks_run_in_the_cuda_trainer_image() -> None:
    docs = goyaml.load_all((ROOT / "pipelines/compiled/kubetrade_training_gpu.yaml").read_text())
    executors = docs[0]["deploymentSpec"]["executors"]
    gpu_tasks = {
        name: spec["container"]["image"]
        for name, spec in executors.items()
        if (spec["container"].get("resources") or {}).get("accelerator")
    }
    assert set(gpu_tasks) == {"exec-train-op", "exec-tune-op"}
    assert all(image.startswith("kubetrade/trainer:") for image in gpu_tasks.values())
    dockerfile = (ROOT / "images/trainer/Dockerfile").read_text()
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu1\d\d", dockerfile)


# ---------------------------------------------------------------- 9 launcher
PROBLEMS = {
    "image-pull-backoff": "ImagePullBackOff",
    "err-image-pull": "ErrImagePull",
    "create-container-config-error": 'CreateContainerConfigError: secret "kubetrade-s3" not found',
    "unschedulable-pvc-missing": 'Unschedulable: 0/1 nodes are available: persistentvolumeclaim "kubetrade-data" not found',
    "unschedulable-pvc-unbound": "Unschedulable: 0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims",
    "unschedulable-gpu": "Unschedulable: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu",
}  # fmt: skip
JOB = "kubetrade-train-3f2a9c1b7d4e"


def _running(*_: Any) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Created", "status": "True"}]}}


@pytest.mark.parametrize("fixture", list(PROBLEMS))
def test_9_launcher_fails_fast_in_one_line_naming_pod_and_reason(fixture: str) -> None:
    pod = load_pod_fixture(fixture)
    assert pod_problem(pod) is not None
    api = FakeKubernetesApi([_running], pods=[load_pod_fixture("running"), pod])
    clock = FakeClock()
    launcher = CustomResourceLauncher.for_pytorchjobs(
        api, api, "kubeflow-user-example-com", clock=clock, sleep=clock.sleep, log=lambda _: None
    )
    with pytest.raises(TrainingError) as info:
        launcher.wait(JOB, deadline_s=12 * 3600, poll_s=10, unschedulable_grace_s=60)
    message = str(info.value)
    assert "\n" not in message
    assert f"pod kubeflow-user-example-com/{pod['metadata']['name']}" in message
    assert PROBLEMS[fixture] in message
    # image/config errors: the first poll; Unschedulable: once the grace (autoscaler, PVC
    # provisioning) has passed -- either way not the 12-hour deadline
    assert clock.now == (60 if fixture.startswith("unschedulable") else 0)
    assert api.deleted == [JOB]


def test_9_a_pod_that_gets_scheduled_within_the_grace_is_not_a_failure() -> None:
    pending = load_pod_fixture("unschedulable-gpu")
    api = FakeKubernetesApi([_running, _running, _running, _running, _succeeded_job])

    def schedule(fake: Any, name: str) -> None:
        if fake.gets == 3:  # the autoscaler's node joined: the pod runs
            fake.pods = [load_pod_fixture("running")]

    api.pods = [pending]
    api.on_get = schedule
    clock = FakeClock()
    launcher = CustomResourceLauncher.for_pytorchjobs(
        api, api, "kubeflow-user-example-com", clock=clock, sleep=clock.sleep, log=lambda _: None
    )
    result = launcher.wait(JOB, deadline_s=3600, poll_s=10, unschedulable_grace_s=60)
    assert result.state == "Succeeded" and api.deleted == []


def _succeeded_job(*_: Any) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}


@pytest.mark.parametrize("fixture", ["running", "container-creating", "worker-init-waiting"])
def test_9_healthy_or_starting_pods_are_not_failures(fixture: str) -> None:
    assert pod_problem(load_pod_fixture(fixture)) is None


def test_9_created_resources_are_owned_by_the_step_pod_and_deleted_on_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = owner_reference(env={"POD_NAME": "run-abc-train-op-driver", "POD_UID": "u-1"})
    assert owner == {"apiVersion": "v1", "kind": "Pod", "name": "run-abc-train-op-driver",
                     "uid": "u-1"}  # fmt: skip
    assert owner_reference(env={}) is None  # outside a pod: unowned
    pod_env = {"POD_NAME": "p", "POD_UID": "u"}
    monkeypatch.setenv("KUBETRADE_NAMESPACE", "team-a")  # this pod's namespace
    # an owner in another namespace would make the garbage collector delete the job
    assert owner_reference(None, "team-b", env=pod_env) is None
    assert owner_reference(None, "team-a", env=pod_env) is not None
    monkeypatch.delenv("KUBETRADE_NAMESPACE")

    def terminate(fake: Any, name: str) -> None:
        if fake.gets == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # KFP cancels the run: the pod gets SIGTERM

    api = FakeKubernetesApi([_running])
    api.on_get = terminate
    clock = FakeClock()
    launcher = CustomResourceLauncher.for_pytorchjobs(
        api, api, "kubetrade", clock=clock, sleep=clock.sleep, log=lambda _: None, owner=owner
    )
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingError, match="SIGTERM"):
        run_pytorchjob(
            build_pytorchjob("job", job_profile(IMAGE)), deadline_s=3600, launcher=launcher
        )
    assert api.created[0]["metadata"]["ownerReferences"] == [owner]
    assert api.deleted == ["job"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_9_owner_read_by_hostname_when_the_downward_api_is_missing() -> None:
    pod = load_pod_fixture("running")
    pod["metadata"]["name"] = "step-pod"
    api = FakeKubernetesApi(pods=[pod])
    env = {"HOSTNAME": "step-pod", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    owner = owner_reference(api, "kubetrade", env=env)
    assert owner is not None and owner["uid"] == pod["metadata"]["uid"]


# ---------------------------------------------------------------- 11 cleanPodPolicy
def test_11_pods_still_running_when_a_job_or_trial_ends_are_cleaned() -> None:
    exp = build_tuning_experiment(SPACE, KatibOptions(image=IMAGE), name="t")
    for job in (build_pytorchjob("j", job_profile(IMAGE, num_workers=2)),
                exp["spec"]["trialTemplate"]["trialSpec"]):  # fmt: skip
        assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"


# ---------------------------------------------------------------- 12 shell quoting
def test_12_trial_arguments_survive_katibs_sh_c_wrapping() -> None:
    options = KatibOptions(image=IMAGE, extra_args=["--note", "a b; echo pwned > /tmp/x", "$HOME"])
    exp = build_tuning_experiment(SPACE, options, name="t")
    values = {"training.learning_rate": "0.0003", "training.batch_size": "64",
              "hidden_dim": "32", "model.lstm.num_layers": "2", "dropout": "0.25"}  # fmt: skip
    job = katib_substitute(exp, values, trial="t-abc-xyz")
    templates = {role: r["template"] for role, r in job["spec"]["pytorchReplicaSpecs"].items()}
    master = templates["Master"]["spec"]["containers"][0]
    wrapped = katib_wrap_primary_container(master, early_stopping=True)
    assert wrapped[:2] == ["sh", "-c"]
    tokens = shlex.split(wrapped[2])
    argv = tokens[: tokens.index("1>/var/log/katib/metrics.log")]
    assert argv[argv.index("--note") + 1 :][:2] == ["a b; echo pwned > /tmp/x", "$HOME"]
    assert argv[argv.index("--out") + 1] == "/data/tuning/t-abc-xyz"
    assert "training.learning_rate=0.0003" in argv and "model.cnn.hidden_dim=32" in argv
    # workers are not wrapped by Katib: they run the same quoted line through sh -c
    for template in templates.values():
        container = template["spec"]["containers"][0]
        assert container["command"] == ["sh", "-c"]
        assert shlex.split(container["args"][0]) == argv
