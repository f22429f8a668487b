"""What is registered is what was verified (issue #14, probes 1-3; issue #16's gate checks).

Each probe is a tampered export, report or store, registered through ``kubetrade register``
(in-process ``main``: the same code path as the console script, without ~20 s of imports per
call) against a real SQLite MLflow store. Every refusal: exit != 0, exactly one error line,
no secret or file content echoed, nothing registered, champion unchanged, nothing executed.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _registry_exports import PERIOD, SYMBOLS, TinyHybrid, make_export

from kubetrade.cli import main
from kubetrade.errors import RegistryError
from kubetrade.registry import register_challenger, sha256_file

NAME = "kubetrade-hybrid"


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    yield uri, client, exp
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def cli(capsys, *args: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()  # what the test's own setup printed
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def register(capsys, uri: str, export, results=None, *extra: str) -> tuple[int, str, list[str]]:
    return cli(capsys, "register", "--export-dir", str(export.folder), "--results",
               str(results or export.results), "--tracking-uri", uri, *extra)  # fmt: skip


def versions(client, name: str = NAME) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))


def refused(rc: int, err: list[str], *needles: str) -> None:
    assert rc != 0, err
    assert len(err) == 1 and err[0].startswith("kubetrade: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]


class Payload:
    """Unpickling this runs ``touch <marker>``: the probes' code-execution canary."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------ hybrid model
def test_genuine_export_registers_and_champion_loads_through_pyfunc(store, tmp_path, capsys):
    import mlflow

    uri, client, exp = store
    export = make_export(client, exp, uri, tmp_path / "a", 0.8)
    rc, out, err = register(capsys, uri, export)
    assert rc == 0, err
    promo = json.loads(out)
    assert promo["promoted"] and promo["version"] == "1" and promo["reason"] == "no champion yet"
    champ = client.get_model_version_by_alias(NAME, "champion")
    assert champ.tags["sha256_torchscript"] == sha256_file(export.folder / "model.pt")
    assert champ.tags["kubetrade.test_period"] == PERIOD
    assert champ.tags["kubetrade.symbols"] == SYMBOLS
    assert champ.tags["mlflow_run_id"] == export.run_id == champ.run_id
    assert champ.tags["kubetrade.gate_decision"] == "no champion yet"
    assert len(champ.tags["sha256_logged_model"]) == 64
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    got = loaded.predict(x)
    want = TinyHybrid()(torch.from_numpy(x))
    np.testing.assert_allclose(got["classification"], want[0].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(got["regression"], want[1].detach().numpy(), atol=1e-6)


def test_the_logged_hybrid_holds_no_pickle(store, tmp_path):
    uri, client, exp = store
    export = make_export(client, exp, uri, tmp_path / "a", 0.8)
    model_dir = next((tmp_path / "art").rglob("MLmodel")).parent
    files = sorted(p.name for p in model_dir.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pth", ".pickle"))], files
    assert "python_model" not in (model_dir / "MLmodel").read_text()
    assert export.model_uri.startswith("models:/m-")


def test_folder_with_only_model_uri_json_is_refused(store, tmp_path, capsys):
    uri, client, exp = store
    export = make_export(client, exp, uri, tmp_path / "a", 0.8)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(export.folder / "model_uri.json", bare / "model_uri.json")
    export.folder = bare
    rc, _, err = register(capsys, uri, export)
    refused(rc, err, "model.pt")
    assert versions(client) == []


def test_model_uri_of_another_run_is_refused(store, tmp_path, capsys):
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    b = make_export(client, exp, uri, tmp_path / "b", 0.5, bias=1.0)
    info = json.loads((a.folder / "model_uri.json").read_text())
    info["model_uri"] = b.model_uri  # a's files and hashes, b's logged model
    (a.folder / "model_uri.json").write_text(json.dumps(info))
    rc, _, err = register(capsys, uri, a)
    refused(rc, err, "not the export's run")
    assert versions(client) == []


def test_model_uri_of_a_pickled_model_of_the_same_run_is_refused(store, tmp_path, capsys):
    """The issue's probe: the RL / a pickle-flavour model of the run, with the CNN's hashes."""
    import mlflow

    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    mlflow.set_tracking_uri(uri)
    client.update_run(a.run_id, "RUNNING")
    with mlflow.start_run(run_id=a.run_id):
        other = mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name="other",
                                         serialization_format="pickle",
                                         pip_requirements=["torch"])  # fmt: skip
    info = json.loads((a.folder / "model_uri.json").read_text())
    info["model_uri"] = other.model_uri
    (a.folder / "model_uri.json").write_text(json.dumps(info))
    rc, _, err = register(capsys, uri, a)
    refused(rc, err, "not a kubetrade hybrid pyfunc model")
    assert versions(client) == []


def test_replaced_file_in_the_export_folder_is_refused(store, tmp_path, capsys):
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    torch.jit.script(TinyHybrid(5.0)).save(str(a.folder / "model.pt"))
    rc, _, err = register(capsys, uri, a)
    refused(rc, err, "SHA-256", "model.pt")
    assert versions(client) == []


def test_hashes_rewritten_to_a_replaced_file_do_not_match_the_logged_model(store, tmp_path, capsys):
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    torch.jit.script(TinyHybrid(5.0)).save(str(a.folder / "model.pt"))
    info = json.loads((a.folder / "model_uri.json").read_text())
    info["sha256"]["torchscript"] = sha256_file(a.folder / "model.pt")
    (a.folder / "model_uri.json").write_text(json.dumps(info))
    rc, _, err = register(capsys, uri, a)
    refused(rc, err, "differ from the export")
    assert versions(client) == []


def test_absolute_paths_in_model_uri_json_are_refused(store, tmp_path, capsys):
    """The hash must be taken on the folder given, never on files elsewhere."""
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    info = json.loads((a.folder / "model_uri.json").read_text())
    info["files"] = {k: str(a.folder / v) for k, v in info["files"].items()}
    (a.folder / "model_uri.json").write_text(json.dumps(info))
    rc, _, err = register(capsys, uri, a)
    refused(rc, err, "not a plain file name")
    assert versions(client) == []


def test_results_of_another_run_are_refused(store, tmp_path, capsys):
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.3)
    b = make_export(client, exp, uri, tmp_path / "b", 1.9, bias=1.0)
    rc, _, err = register(capsys, uri, a, b.results)
    refused(rc, err, "not the 0.3 run")
    assert versions(client) == []


def test_stored_artifact_replaced_by_a_pickle_bomb_never_runs(store, tmp_path, capsys):
    """Issue probe 2: replacing the stored model file made load_model run os.system."""
    import mlflow

    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    rc, _, err = register(capsys, uri, a)
    assert rc == 0, err
    marker = tmp_path / "pwned"
    stored = [p for p in (tmp_path / "art").rglob("model.pt") if "artifacts" in p.parts]
    assert stored
    for p in stored:
        torch.save(Payload(marker), p)
    mlflow.set_tracking_uri(uri)
    with pytest.raises(Exception, match="SHA-256"):
        mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert not marker.exists()
    # and a second registration of the same export now fails the stored-bytes check
    rc, _, err = register(capsys, uri, a)
    refused(rc, err, "differ from the export")
    assert versions(client) == ["1"] and not marker.exists()


# ------------------------------------------------------------------ the gate
def test_gate_refuses_a_challenger_scored_on_a_different_period(store, tmp_path, capsys):
    uri, client, exp = store
    first = make_export(client, exp, uri, tmp_path / "a", 0.5)
    assert register(capsys, uri, first)[0] == 0
    other = make_export(client, exp, uri, tmp_path / "b", 2.5, period="2008-01-02..2009-03-02")
    rc, out, err = register(capsys, uri, other)
    assert rc == 0, err
    promo = json.loads(out)
    assert not promo["promoted"] and "different test_period" in promo["reason"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    v2 = client.get_model_version(NAME, "2")
    assert "different test_period" in v2.tags["kubetrade.gate_decision"]
    other_symbols = make_export(client, exp, uri, tmp_path / "c", 2.5, symbols="AAPL,MSFT")
    promo = json.loads(register(capsys, uri, other_symbols)[1])
    assert not promo["promoted"] and "different symbols" in promo["reason"]


def test_gate_refuses_a_challenger_inside_the_noise_margin(store, tmp_path, capsys):
    uri, client, exp = store
    assert register(capsys, uri, make_export(client, exp, uri, tmp_path / "a", 0.80))[0] == 0
    inside = make_export(client, exp, uri, tmp_path / "b", 0.84)  # +0.04 < default 0.05
    promo = json.loads(register(capsys, uri, inside)[1])
    assert not promo["promoted"] and "not above the margin 0.05" in promo["reason"]
    above = make_export(client, exp, uri, tmp_path / "c", 0.84)
    promo = json.loads(register(capsys, uri, above, None, "--margin", "0.01")[1])
    assert promo["promoted"], promo
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"


def test_gate_requires_beating_the_baselines(store, tmp_path, capsys):
    uri, client, exp = store
    weak = make_export(client, exp, uri, tmp_path / "a", 0.4, baselines={"buy_and_hold": 0.6})
    rc, out, err = register(capsys, uri, weak)
    assert rc == 0, err
    promo = json.loads(out)
    assert not promo["promoted"] and "buy_and_hold baseline" in promo["reason"]
    with pytest.raises(Exception):  # noqa: B017 - no alias at all
        client.get_model_version_by_alias(NAME, "champion")


def test_champion_without_the_metric_blocks_unless_forced_with_a_reason(store, tmp_path):
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    dr = {"kubetrade.test_period": PERIOD, "kubetrade.symbols": SYMBOLS}
    first = register_challenger(a.model_uri, "m", "sharpe_ratio", 0.8, tracking_uri=uri,
                                data_range=dr)  # fmt: skip
    assert first.promoted
    acc = register_challenger(a.model_uri, "m", "accuracy", 0.99, tracking_uri=uri,
                              data_range=dr)  # fmt: skip
    assert not acc.promoted and "records no accuracy" in acc.reason
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    with pytest.raises(RegistryError, match="non-empty --reason"):
        register_challenger(a.model_uri, "m", "accuracy", 0.99, tracking_uri=uri,
                            data_range=dr, force_reason="  ")  # fmt: skip
    forced = register_challenger(a.model_uri, "m", "accuracy", 0.99, tracking_uri=uri,
                                 data_range=dr, force_reason="switching to accuracy")  # fmt: skip
    assert forced.promoted and "forced" in forced.reason
    champ = client.get_model_version_by_alias("m", "champion")
    assert champ.tags["kubetrade.forced_reason"] == "switching to accuracy"


def test_metric_direction_is_known_lower_mse_wins_unknown_metric_refused(store, tmp_path, capsys):
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    dr = {"kubetrade.test_period": PERIOD, "kubetrade.symbols": SYMBOLS}
    assert register_challenger(
        a.model_uri, "m", "mse", 0.5, tracking_uri=uri, data_range=dr
    ).promoted
    worse = register_challenger(a.model_uri, "m", "mse", 0.9, tracking_uri=uri, data_range=dr)
    assert not worse.promoted
    better = register_challenger(a.model_uri, "m", "mse", 0.1, tracking_uri=uri, data_range=dr)
    assert better.promoted
    with pytest.raises(RegistryError, match="no known direction"):
        register_challenger(a.model_uri, "m", "bogus", 1.0, tracking_uri=uri, data_range=dr)
    rc, _, err = register(capsys, uri, a, None, "--metric", "bogus")
    refused(rc, err, "no known direction")
    rc, _, err = register(capsys, uri, a, None, "--force")
    refused(rc, err, "--reason")
    assert versions(client) == []


# ------------------------------------------------------------------ RL ensemble
@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from test_registry import _tiny_ensemble

    root = tmp_path_factory.mktemp("ens")
    ens, env, symbols = _tiny_ensemble(root / "ensemble")
    return root / "ensemble", symbols


def _report(directory: Path, symbols: list[str], sharpe: float) -> dict:
    from kubetrade.registry.rl_pyfunc import ensemble_sha256

    return {
        "sharpe_ratio": sharpe, "symbols": symbols, "sha256": ensemble_sha256(directory),
        "timestamps": ["2012-01-03", "2013-03-01"], "buy_and_hold": {"sharpe_ratio": 0.1},
    }  # fmt: skip


def _inject(zip_path: Path, key: str, payload: object) -> None:
    """Rewrite the zip's data JSON with ``key`` holding a cloudpickle-style payload."""
    with zipfile.ZipFile(zip_path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    data = json.loads(entries["data"])
    entry = data.get(key) if isinstance(data.get(key), dict) else {":type:": "<class 'x'>"}
    # the plain fields stay as SB3 wrote them; the pickle is swapped for the payload
    entry[":serialized:"] = base64.b64encode(pickle.dumps(payload)).decode()
    data[key] = entry
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)


def test_tampered_agent_zip_with_copied_report_is_refused_before_loading(
    store, ensemble, tmp_path, capsys
):
    uri, client, _ = store
    src, symbols = ensemble
    tampered = tmp_path / "tampered"
    shutil.copytree(src, tampered)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(src, symbols, 9.9)))  # the genuine report, copied
    marker = tmp_path / "pwned"
    _inject(tampered / "ppo.zip", "policy_class", Payload(marker))
    rc, _, err = cli(capsys, "register", "--ensemble-dir", str(tampered), "--ensemble-report",
                     str(report), "--tracking-uri", uri)  # fmt: skip
    refused(rc, err, "SHA-256")
    assert not marker.exists() and versions(client, "kubetrade-rl-ensemble") == []


@pytest.mark.parametrize("key", ["policy_class", "observation_space", "lr_schedule"])
def test_pickled_entries_of_agent_zips_are_replaced_never_unpickled(ensemble, tmp_path, key):
    from kubetrade.registry.safe_sb3 import load_ensemble_safely

    src, _ = ensemble
    tampered = tmp_path / "tampered"
    shutil.copytree(src, tampered)
    marker = tmp_path / "pwned"
    _inject(tampered / "ppo.zip", key, Payload(marker))
    ens = load_ensemble_safely(tampered)  # the replaced entry is rebuilt from plain fields
    assert not marker.exists()
    obs = np.zeros(ens.members[0].model.observation_space.shape, dtype=np.float32)
    assert np.isfinite(ens.member_weights(obs)).all()


def test_unknown_pickled_entry_is_refused_through_the_cli(store, ensemble, tmp_path, capsys):
    """Even a report forged with the tampered files' hashes: nothing is unpickled."""
    uri, client, _ = store
    src, symbols = ensemble
    tampered = tmp_path / "tampered"
    shutil.copytree(src, tampered)
    marker = tmp_path / "pwned"
    _inject(tampered / "dqn.zip", "evil", Payload(marker))
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(tampered, symbols, 9.9)))
    rc, _, err = cli(capsys, "register", "--ensemble-dir", str(tampered), "--ensemble-report",
                     str(report), "--tracking-uri", uri)  # fmt: skip
    refused(rc, err, "pickled entry 'evil'")
    assert not marker.exists() and versions(client, "kubetrade-rl-ensemble") == []


def test_genuine_ensemble_registers_with_its_data_range_and_buy_and_hold_gate(
    store, ensemble, tmp_path, capsys
):
    uri, client, _ = store
    src, symbols = ensemble
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(src, symbols, 0.05)))  # below buy-and-hold's 0.1
    args = ["register", "--ensemble-dir", str(src), "--ensemble-report", str(report),
            "--tracking-uri", uri]  # fmt: skip
    rc, out, err = cli(capsys, *args)
    assert rc == 0, err
    promo = json.loads(out)
    assert not promo["promoted"] and "buy_and_hold" in promo["reason"]
    report.write_text(json.dumps(_report(src, symbols, 0.9)))
    promo = json.loads(cli(capsys, *args)[1])
    assert promo["promoted"] and promo["version"] == "2"
    champ = client.get_model_version_by_alias("kubetrade-rl-ensemble", "champion")
    assert champ.tags["kubetrade.test_period"] == "2012-01-03..2013-03-01"
    assert champ.tags["kubetrade.symbols"] == ",".join(sorted(symbols))


# ------------------------------------------------------------------ kill -9 mid-registration
def test_rerun_after_a_killed_registration_reuses_its_version(store, tmp_path, capsys):
    """A registration killed after creating the version (no alias yet): the rerun finishes
    gating that version instead of registering a duplicate."""
    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    assert register(capsys, uri, a)[0] == 0
    client.delete_registered_model_alias(NAME, "champion")  # the state a kill -9 leaves
    client.delete_registered_model_alias(NAME, "challenger")
    rc, out, err = register(capsys, uri, a)
    assert rc == 0, err
    assert json.loads(out)["version"] == "1" and versions(client) == ["1"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"


def test_lock_of_a_killed_local_registration_is_broken_at_once_with_a_message(
    store, tmp_path, capsys
):
    import socket
    import subprocess
    import sys
    import time

    from kubetrade.registry.store import LOCK_SUFFIX

    uri, client, exp = store
    a = make_export(client, exp, uri, tmp_path / "a", 0.8)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    gone.wait()
    client.create_registered_model(
        f"{NAME}{LOCK_SUFFIX}",
        tags={"kubetrade.lock_owner": f"{socket.gethostname()}:{gone.pid}:dead"},
    )
    start = time.monotonic()
    capsys.readouterr()
    rc = main(["register", "--export-dir", str(a.folder), "--results", str(a.results),
               "--tracking-uri", uri])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert time.monotonic() - start < 30  # not the 60 s stale timeout
    assert "breaking the stale promotion lock" in err and "process on this host is gone" in err
    assert versions(client) == ["1"]
