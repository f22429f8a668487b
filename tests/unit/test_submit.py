"""`kubetrade submit`: unreachable host is one clear line; the wait loop fails on failure;
typed parameters, auth and namespace resolution, get_run retries.

A fake kfp client stands in for the Kubeflow Pipelines API server here (no Kubernetes);
tests/contracts/kfp_api drives the real kfp.Client against a schema-checking server.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

import kubetrade.k8s.submit as submit_mod
import kubetrade.k8s.submit.client as submit_client
from kubetrade.k8s.submit import SubmitError, submit_pipeline


class FakeClient:
    def get_kfp_healthz(self):
        return SimpleNamespace(multi_user=False)

    def __init__(self, states, **kwargs):
        self.states = list(states)
        self.kwargs = kwargs
        self.created = None

    def create_run_from_pipeline_package(self, path, **kwargs):
        self.created = (path, kwargs)
        return SimpleNamespace(run_id="run-1")

    def get_run(self, run_id):
        return SimpleNamespace(state=self.states.pop(0))


@pytest.fixture
def package(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("pipelineInfo: {name: p}\nroot: {}\n")
    return p


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(submit_client.time, "sleep", lambda s: None)


def test_wait_succeeds_and_passes_arguments(package):
    holder = {}

    def factory(**kw):
        holder["c"] = FakeClient(["PENDING", "RUNNING", "SUCCEEDED"], **kw)
        return holder["c"]

    seen = []
    info = submit_pipeline(package, "http://kfp", arguments={"run_config": "{}"}, wait=True,
                           client_factory=factory, on_state=seen.append)  # fmt: skip
    assert info == {"run_id": "run-1", "state": "SUCCEEDED"}
    assert seen == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert holder["c"].created[1]["arguments"] == {"run_config": "{}"}
    # no namespace unless one is given: single-user KFP (multi-user asks for --namespace)
    assert holder["c"].kwargs == {"host": "http://kfp", "namespace": ""}


def test_wait_fails_the_command_when_the_run_fails(package):
    with pytest.raises(SubmitError, match="ended FAILED"):
        submit_pipeline(package, "http://kfp", wait=True,
                        client_factory=lambda **kw: FakeClient(["RUNNING", "FAILED"]))  # fmt: skip


def test_server_error_is_one_line(package):
    class Refusing(FakeClient):
        def create_run_from_pipeline_package(self, path, **kwargs):
            raise RuntimeError("(403)\nReason: Forbidden\nHTTP response body: ...")

    with pytest.raises(SubmitError, match=r"refused the run: \(403\)$"):
        submit_pipeline(package, "http://kfp", client_factory=lambda **kw: Refusing([]))


def test_cli_unreachable_host_is_one_clear_line(package):
    proc = subprocess.run(
        [sys.executable, "-m", "kubetrade", "submit", str(package), "--host", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach Kubeflow Pipelines at http://127.0.0.1:9" in lines[0]


# ------------------------------------------------------------------------------ typed params

INPUTS = {
    "s": {"parameterType": "STRING"},
    "i": {"parameterType": "NUMBER_INTEGER", "defaultValue": 1},
    "d": {"parameterType": "NUMBER_DOUBLE", "isOptional": True},
    "b": {"parameterType": "BOOLEAN", "isOptional": True},
    "l": {"parameterType": "LIST", "isOptional": True},
    "m": {"parameterType": "STRUCT", "isOptional": True},
}


def test_params_are_typed_by_the_spec():
    got = submit_mod.parse_params(
        INPUTS, ["s=a=b", "i=-7", "d=2.5e-3", "b=True", 'l=[1, "x"]', 'm={"k": [1]}']
    )
    assert got == {"s": "a=b", "i": -7, "d": 0.0025, "b": True, "l": [1, "x"], "m": {"k": [1]}}
    assert type(got["i"]) is int and type(got["d"]) is float and got["b"] is True


@pytest.mark.parametrize(
    "item, message",
    [
        ("nope=1", "the pipeline has no input 'nope' (inputs: b, d, i, l, m, s)"),
        ("i=1.5", "expected an integer (NUMBER_INTEGER)"),
        ("d=abc", "expected a number (NUMBER_DOUBLE)"),
        ("d=nan", "finite"),
        ("b=yes", "expected true or false (BOOLEAN)"),
        ("l={}", "(LIST)"),
        ("m=[1]", "(STRUCT)"),
        ("m={oops", "(STRUCT)"),
        ("novalue", "expected KEY=VALUE"),
    ],
)
def test_bad_params_are_one_line_errors(item, message):
    with pytest.raises(SubmitError) as err:
        submit_mod.parse_params(INPUTS, ["s=x", item])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_required_params_must_be_given_and_not_twice():
    with pytest.raises(SubmitError, match="needs --param for: s"):
        submit_mod.parse_params(INPUTS, ["i=2"])
    with pytest.raises(SubmitError, match="--param s given twice"):
        submit_mod.parse_params(INPUTS, ["s=1", "s=2"])


def test_params_come_from_the_compiled_pipeline():
    inputs = submit_mod.read_pipeline_inputs("pipelines/compiled/kubetrade_training.yaml")
    assert {k: v["parameterType"] for k, v in inputs.items()}["rl_agents"] == "LIST"
    assert "run_config" not in inputs  # the run form, no JSON blob (issue #20)
    assert submit_mod.parse_params(inputs, ['rl_agents=["ppo"]']) == {"rl_agents": ["ppo"]}
    # a YAML flow list, as `kubetrade run --param symbols=[AAPL,IBM]` takes it
    assert submit_mod.parse_params(inputs, ["symbols=[AAPL,IBM]"]) == {"symbols": ["AAPL", "IBM"]}


def test_cron_gets_kfps_seconds_field():
    assert submit_mod.normalize_cron("0 6 * * 1-5") == "0 0 6 * * 1-5"
    assert submit_mod.normalize_cron("30 0 6 * * *") == "30 0 6 * * *"
    with pytest.raises(SubmitError, match="5 fields"):
        submit_mod.normalize_cron("daily")


# ------------------------------------------------------------------------- auth, namespace


def test_token_precedence_flag_env_then_service_account_file(tmp_path):
    sa = tmp_path / "token"
    sa.write_text("sa-token\n")
    env = {"KF_PIPELINES_TOKEN": "env-token"}
    assert submit_mod.resolve_auth("flag-token", None, env, sa).token == "flag-token"
    auth = submit_mod.resolve_auth(None, None, env, sa)
    assert (auth.token, auth.token_source) == ("env-token", "$KF_PIPELINES_TOKEN")
    auth = submit_mod.resolve_auth(None, None, {}, sa)
    assert (auth.token, auth.token_source) == ("sa-token", str(sa))
    assert submit_mod.resolve_auth(None, None, {}, tmp_path / "absent").token is None
    auth = submit_mod.resolve_auth(None, None, {"KF_PIPELINES_COOKIE": "a=b"}, tmp_path / "x")
    assert auth.cookie == "a=b" and auth.cookie_source == "$KF_PIPELINES_COOKIE"
    assert "sa-token" not in repr(submit_mod.resolve_auth(None, None, {}, sa))
    with pytest.raises(SubmitError, match="line break"):
        submit_mod.resolve_auth("a\nb", None, {}, sa)


def test_namespace_default_is_env_then_pod_namespace_else_none(tmp_path):
    pod_ns = tmp_path / "namespace"
    assert submit_mod.resolve_namespace("team", {}, str(pod_ns)) == ("team", "--namespace")
    env = {"KF_PIPELINES_NAMESPACE": "envns"}
    assert submit_mod.resolve_namespace("", env, str(pod_ns))[0] == "envns"
    assert submit_mod.resolve_namespace("", {}, str(pod_ns))[0] == ""
    pod_ns.write_text("kubeflow-user-example-com")
    assert submit_mod.resolve_namespace("", {}, str(pod_ns))[0] == "kubeflow-user-example-com"


def test_multi_user_without_namespace_is_refused(package):
    class MultiUser(FakeClient):
        def get_kfp_healthz(self):
            return SimpleNamespace(multi_user=True)

    with pytest.raises(SubmitError, match="is multi-user: pass --namespace"):
        submit_pipeline(package, "http://kfp", client_factory=lambda **kw: MultiUser([]))


# ------------------------------------------------------------------------- get_run retries


class ApiException(Exception):  # the shape of kfp_server_api.ApiException
    def __init__(self, status, reason, body=""):
        super().__init__(f"({status})\nReason: {reason}\nHTTP response headers: set-cookie=x")
        self.status, self.reason, self.body = status, reason, body


def test_get_run_retries_then_succeeds(package):
    class Flaky(FakeClient):
        fails = [ConnectionResetError("reset"), ApiException(503, "Service Unavailable")]

        def get_run(self, run_id):
            if self.fails:
                raise self.fails.pop(0)
            return super().get_run(run_id)

    info = submit_pipeline(package, "http://kfp", wait=True, poll_s=0,
                           client_factory=lambda **kw: Flaky(["SUCCEEDED"]))  # fmt: skip
    assert info["state"] == "SUCCEEDED"


def test_get_run_refused_is_not_retried_and_is_one_line(package):
    calls = []

    class Forbidden(FakeClient):
        def get_run(self, run_id):
            calls.append(run_id)
            raise ApiException(403, "Forbidden", '{"message": "no access to namespace"}')

    with pytest.raises(SubmitError) as err:
        submit_pipeline(package, "http://kfp", wait=True, poll_s=0,
                        client_factory=lambda **kw: Forbidden([]))  # fmt: skip
    assert str(err.value) == (
        "Kubeflow Pipelines at http://kfp refused get_run run-1: (403) Forbidden: "
        "no access to namespace"
    )
    assert calls == ["run-1"]  # a 403 is not retried
