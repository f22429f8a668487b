"""`kubetrade submit` against the KFP v2beta1 REST contract (issue #19, #13 defect 7).

The real kfp.Client (kfp 2.17.3, its generated kfp-server-api) talks HTTP to
``_kfp_server.KfpApiServer``: a stand-in for the KFP API server (no cluster can run here) that
validates every request against the upstream swagger files of KFP 2.16.1 and answers 4xx
like the real server for unknown fields, undeclared parameters and duplicate names.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _kfp_server import KfpApiServer

from kubetrade.cli import main
from kubetrade.k8s import submit as sm

PACKAGE = Path("pipelines/compiled/kubetrade_training.yaml")
TOKEN = "tok-S3CRET-value-123"
COOKIE = "authservice_session=C00KIE-value-456"

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIE", "KF_PIPELINES_NAMESPACE",
                "KF_PIPELINES_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(sm.auth, "SA_NAMESPACE_PATH", str(tmp_path / "no-namespace"))
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp reads ~/.config/kfp/context.json
    warnings.simplefilter("ignore")


def _post(url: str, body: object, ctype: str = "application/json") -> tuple[int, dict]:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _kt(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["submit", str(PACKAGE), *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ------------------------------------------------------- the stand-in enforces the contract


def test_stand_in_rejects_what_the_api_rejects():
    with KfpApiServer() as api:
        base = f"{api.url}/apis/v2beta1"
        status, exp = _post(f"{base}/experiments", {"display_name": "e"})
        assert status == 200 and exp["experiment_id"]
        # an unknown field (protojson rejects it), a wrong type, an undeclared query parameter
        assert _post(f"{base}/experiments", {"display_name": "x", "owner": "me"})[0] == 400
        status, err = _post(f"{base}/runs", {"display_name": 3, "experiment_id": "e"})
        assert status == 400 and "display_name" in err["message"]
        assert _post(f"{base}/experiments?color=red", {"display_name": "y"})[0] == 400
        # a path the API does not have; a duplicate name
        assert _post(f"{base}/widgets", {})[0] == 404
        assert _post(f"{base}/pipelines/publish", {})[0] == 405  # GET/DELETE {pipeline_id} only
        assert _post(f"{base}/experiments", {"display_name": "e"})[0] == 409
        # an upload without the declared multipart field
        status, err = _post(
            f"{base}/pipelines/upload", b"--b--\r\n", "multipart/form-data; boundary=b"
        )
        assert status == 400 and "uploadfile" in err["message"]


def test_stand_in_is_local_and_stops_itself():
    import time

    api = KfpApiServer(lifetime_s=0.3).__enter__()
    assert api.url.startswith("http://127.0.0.1:")
    url = f"{api.url}/apis/v2beta1/healthz"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert json.loads(resp.read()) == {"multi_user": False, "pipeline_store": "database"}
    time.sleep(1.0)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_stand_in_checks_runtime_parameters_against_the_spec():
    with KfpApiServer() as api:
        base = f"{api.url}/apis/v2beta1"
        exp = _post(f"{base}/experiments", {"display_name": "e"})[1]
        spec = {"root": {"inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER"}}}},
                "pipelineInfo": {"name": "p"}}  # fmt: skip
        run = {"display_name": "r", "experiment_id": exp["experiment_id"], "pipeline_spec": spec}
        bad = {**run, "runtime_config": {"parameters": {"n": "3"}}}
        assert _post(f"{base}/runs", bad)[0] == 400  # the string "3" is not NUMBER_INTEGER
        good = {**run, "runtime_config": {"parameters": {"n": 3}}}
        assert _post(f"{base}/runs", good)[0] == 200


# ------------------------------------------------------------- submit drives the contract


@pytest.mark.parametrize("tag", ["2.16.1", "2.14.0"])
def test_upload_version_run_and_rerun_same_commit_is_no_duplicate(capsys, tag):
    with KfpApiServer(token=TOKEN, tag=tag) as api:
        args = ["--host", api.url, "--pipeline-name", "kubetrade-training", "--version-name",
                "c0ffee1", "--param", 'rl_agents=["ppo", "sac"]', "--wait",
                "--poll-interval", "0.01"]  # fmt: skip
        code, out, err = _kt(capsys, *args, "--token", TOKEN)
        assert code == 0, err
        assert "version c0ffee1 (uploaded)" in out and "SUCCEEDED" in out
        code, out, err = _kt(capsys, *args, "--token", TOKEN)
        assert code == 0, err
        assert "version c0ffee1 (exists)" in out
        assert len(api.state.pipelines) == 1 and len(api.state.versions) == 1
        uploads = [r for r in api.requests if r["path"].endswith("/upload_version")]
        assert len(uploads) == 1
        assert len(api.state.runs) == 2
        for run in api.state.runs.values():  # typed: a JSON list, not the string '["ppo", ...]'
            assert run["runtime_config"]["parameters"] == {"rl_agents": ["ppo", "sac"]}
            assert run["pipeline_version_reference"]["pipeline_version_id"] in api.state.versions
        assert all(r["authorization"] == f"Bearer {TOKEN}" for r in api.requests
                   if not r["path"].endswith("/healthz"))  # fmt: skip
        # a new commit is a new version of the same pipeline
        code, out, err = _kt(capsys, *args[:5], "c0ffee2", "--token", TOKEN)
        assert code == 0, err
        assert len(api.state.pipelines) == 1 and len(api.state.versions) == 2


@pytest.mark.parametrize("tag", ["2.16.1", "2.14.0"])
def test_recurring_run_is_created_kept_and_updated(capsys, tag):
    with KfpApiServer(tag=tag) as api:
        base = ["--host", api.url, "--pipeline-name", "kubetrade-training",
                "--run-name", "nightly"]  # fmt: skip
        code, out, err = _kt(capsys, *base, "--version-name", "v1", "--recurring", "0 6 * * 1-5")
        assert code == 0, err
        assert out.strip().endswith(": created")
        (rr,) = api.state.recurring.values()
        assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * 1-5"  # 6-field for KFP
        assert rr["display_name"] == "nightly" and rr["mode"] == "ENABLE"
        code, out, err = _kt(capsys, *base, "--version-name", "v1", "--recurring", "0 6 * * 1-5")
        assert code == 0 and out.strip().endswith(": unchanged")
        assert list(api.state.recurring) == [rr["recurring_run_id"]]
        # next commit: one recurring run per name, now on the new version
        code, out, err = _kt(capsys, *base, "--version-name", "v2", "--recurring", "0 7 * * 1-5")
        assert code == 0 and out.strip().endswith(": updated")
        (rr2,) = api.state.recurring.values()
        assert rr2["recurring_run_id"] != rr["recurring_run_id"]
        assert rr2["trigger"]["cron_schedule"]["cron"] == "0 0 7 * * 1-5"
        v2 = [v for v in api.state.versions.values() if v["display_name"] == "v2"][0]
        assert rr2["pipeline_version_reference"]["pipeline_version_id"] == v2["pipeline_version_id"]
        assert not api.state.runs  # a recurring run starts nothing by itself here


def test_multi_user_needs_a_namespace_and_a_credential(capsys, monkeypatch):
    with KfpApiServer(cookie=COOKIE, multi_user=True) as api:
        common = [
            "--host",
            api.url,
            "--pipeline-name",
            "kubetrade-training",
            "--version-name",
            "v1",
        ]
        code, out, err = _kt(capsys, *common, "--cookie", COOKIE)
        assert code != 0
        assert len(err.strip().splitlines()) == 1 and "multi-user: pass --namespace" in err
        code, out, err = _kt(capsys, *common, "--namespace", "team-a")
        assert code != 0 and len(err.strip().splitlines()) == 1 and "(401)" in err
        monkeypatch.setenv("KF_PIPELINES_COOKIE", COOKIE)
        monkeypatch.setenv("KF_PIPELINES_NAMESPACE", "team-a")
        code, out, err = _kt(capsys, *common)
        assert code == 0, err
        (exp,) = api.state.experiments.values()
        assert exp["namespace"] == "team-a"
        (pipe,) = api.state.pipelines.values()
        assert pipe["namespace"] == "team-a"
        assert COOKIE.split("=", 1)[1] not in out + err


def test_in_cluster_service_account_token_is_used(capsys, monkeypatch, tmp_path):
    token_file = tmp_path / "sa-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    with KfpApiServer(token=TOKEN) as api:
        code, out, err = _kt(capsys, "--host", api.url)
        assert code == 0, err
        assert out.startswith("run run-")
        assert api.requests[-1]["authorization"] == f"Bearer {TOKEN}"


def test_secrets_are_never_echoed(capsys, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    code, out, err = _kt(capsys, "--dry-run", "--cookie", COOKIE, "--pipeline-name", "p",
                         "--version-name", "v", "--host", "http://kfp.example:8888")  # fmt: skip
    assert code == 0
    assert "bearer token from $KF_PIPELINES_TOKEN (hidden)" in out
    assert "cookie from --cookie (hidden)" in out
    with KfpApiServer(token="another-token") as api:  # refused: the error names no secret
        code, out2, err2 = _kt(capsys, "--host", api.url, "--cookie", COOKIE)
        assert code != 0 and "(401)" in err2
    for text in (out, err, out2, err2):
        assert TOKEN not in text and "C00KIE-value-456" not in text


def test_dry_run_sends_nothing(capsys):
    with KfpApiServer() as api:
        code, out, err = _kt(capsys, "--dry-run", "--host", api.url, "--pipeline-name", "p",
                             "--version-name", "v", "--recurring", "*/30 * * * *")  # fmt: skip
        assert code == 0, err
        assert api.requests == []
    assert "POST" in out and "/apis/v2beta1/pipelines/upload_version" in out
    assert "cron '0 */30 * * * *'" in out


# ------------------------------------------------------------------------- --wait retries


def test_wait_survives_dropped_connections(capsys):
    with KfpApiServer() as api:
        api.drop_run_gets = 6  # more than urllib3's own retries: submit's loop must retry
        code, out, err = _kt(capsys, "--host", api.url, "--wait", "--poll-interval", "0.01")
        assert code == 0, err
        assert out.strip().endswith(": SUCCEEDED")
        assert api.drop_run_gets == 0


def test_wait_gives_up_in_one_line_when_the_server_is_gone(capsys):
    with KfpApiServer() as api:
        api.drop_run_gets = 10_000
        code, out, err = _kt(capsys, "--host", api.url, "--wait", "--poll-interval", "0.01")
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("kubetrade: error")]
    assert len(lines) == 1 and "lost contact with Kubeflow Pipelines" in lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------ not the API: an SSO login page


class _LoginPage(BaseHTTPRequestHandler):
    """What an unauthenticated client meets behind Kubeflow's oauth2-proxy/Dex: HTML, 200."""

    def log_message(self, format, *args):
        pass

    def _page(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>Log in to Kubeflow</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page


@pytest.mark.parametrize("versioned", [False, True])
def test_a_login_page_is_an_error_not_run_none_submitted(capsys, versioned):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LoginPage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        extra = ["--pipeline-name", "p", "--version-name", "v"] if versioned else []
        host = f"http://127.0.0.1:{httpd.server_address[1]}"
        code, out, err = _kt(capsys, "--host", host, "--namespace", "team-a", *extra)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code != 0 and "None" not in out
    assert "not the KFP API (a login page?)" in err
