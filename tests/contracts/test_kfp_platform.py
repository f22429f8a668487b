"""The compiled pipelines against the KFP backends' kubernetes executor protos.

Every task's kubernetes executor config in pipelines/compiled/*.yaml must use only fields
that every supported backend (KFP 2.14.0, the oldest, to 2.16.1) knows: the driver parses
the config strictly and fails the task on an unknown field. Optional references are not
honoured before KFP 2.15, so every ConfigMap/Secret (and key) a task references must be
created by the overlays. Backends before 2.14 are refused (no ``dsl.Collected`` fan-in).
Source of truth: tests/contracts/upstream/k8s_exec-*.proto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _contracts import KFP_PROTOS, executor_configs, proto_messages, unknown_proto_fields
from typer.testing import CliRunner

from kubetrade.cli import app
from kubetrade.errors import ConfigError
from kubetrade.k8s import goyaml
from kubetrade.k8s.versions import (
    DEFAULT_KFP_VERSION,
    KFP_VERSIONS,
    MIN_KFP_VERSION,
    RELEASES,
    check_kfp_version,
    kfp_features,
)
from kubetrade.pipelines.training import PlatformOptions, retarget_platform_spec

ROOT = Path(__file__).resolve().parents[2]
COMPILED = sorted((ROOT / "pipelines" / "compiled").glob("*.yaml"))


def test_matrix_and_protos_agree() -> None:
    assert set(KFP_VERSIONS) == set(KFP_PROTOS) - {"2.2.0"}  # 2.2.0: negative control only
    assert DEFAULT_KFP_VERSION == MIN_KFP_VERSION == "2.14.0" == min(KFP_VERSIONS)
    for version in KFP_PROTOS:
        fields = proto_messages(version)["SecretAsEnv"]
        assert ("secretNameParameter" in fields) == kfp_features(version).name_parameters
        assert ("optional" in fields) == kfp_features(version).optional_honoured


@pytest.mark.parametrize("version", ["2.2.0", "2.3.0", "2.4.1", "2.5.0", "2.13.0"])
def test_backends_without_collected_are_refused_with_the_reason(version: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_kfp_version(version)
    assert str(err.value) == (
        f"KFP {version} cannot run this pipeline: its driver has no dsl.Collected fan-in "
        "(kubeflow/pipelines#11725, from 2.14.0); use --kfp-version 2.14.0 or newer"
    )


def test_every_release_ships_a_supported_kfp_or_is_refused_with_the_reason() -> None:
    for release in RELEASES:
        for version in release.kfp:
            if version in KFP_VERSIONS:
                continue
            with pytest.raises(ConfigError, match=r"kubeflow/pipelines#11725"):
                check_kfp_version(version)
    assert "2.16.1" in RELEASES[-1].kfp  # the kind pin is a supported backend


def test_compile_refuses_an_old_backend_and_unknown_versions(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    old = CliRunner().invoke(app, ["compile", "--kfp-version", "2.5.0", "--output", str(out)])
    assert isinstance(old.exception, ConfigError) and "#11725" in str(old.exception)
    assert not out.exists()
    with pytest.raises(ConfigError, match="use one of 2.14.0, 2.15.0, 2.16.1"):
        check_kfp_version("2.99.0")
    with pytest.raises(ConfigError, match="not supported"):
        check_kfp_version("latest")


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.name)
@pytest.mark.parametrize("version", KFP_VERSIONS)
def test_compiled_pipelines_use_only_fields_every_backend_knows(path: Path, version: str) -> None:
    configs = executor_configs(path.read_text(encoding="utf-8"))
    assert {"exec-train-op", "exec-tune-op"} <= set(configs)
    problems = {name: unknown_proto_fields(cfg, version) for name, cfg in configs.items()}
    assert {name: p for name, p in problems.items() if p} == {}


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.name)
def test_no_optional_reference_where_the_backend_ignores_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "# KFP backend: 2.14.0" in text  # make compile targets the oldest backend
    for name, cfg in executor_configs(text).items():
        for section in ("secretAsEnv", "configMapAsEnv"):
            for entry in cfg.get(section) or []:
                assert "optional" not in entry, f"{name}.{section}: optional is ignored < 2.15"


def _sample_spec() -> dict[str, Any]:
    """What kfp-kubernetes 2.17 writes (both name forms, optional)."""
    return {
        "platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-x": {
            "secretAsEnv": [{
                "secretName": "s", "secretNameParameter": {"runtimeValue": {"constant": "s"}},
                "keyToEnv": [{"secretKey": "k", "envVar": "K"}], "optional": True,
            }],
            "configMapAsEnv": [{
                "configMapName": "c",
                "configMapNameParameter": {"runtimeValue": {"constant": "c"}},
                "keyToEnv": [{"configMapKey": "k", "envVar": "K"}],
            }],
            "pvcMount": [{
                "constant": "p", "pvcNameParameter": {"runtimeValue": {"constant": "p"}},
                "mountPath": "/data",
            }],
        }}}}}
    }  # fmt: skip


def test_retarget_is_needed_and_sufficient() -> None:
    """Negative control: kfp-kubernetes' own output fails an old strict driver's proto (KFP
    2.2.0, no longer a target) and 2.14.0's (``optional``); retargeted, it passes every
    version, the parameter forms are kept from 2.5 and ``optional`` from 2.15."""
    raw = _sample_spec()
    config = raw["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-x"]
    assert sorted(unknown_proto_fields(config, "2.2.0")) == [
        "configMapAsEnv[0].configMapNameParameter",
        "pvcMount[0].pvcNameParameter",
        "secretAsEnv[0].optional",
        "secretAsEnv[0].secretNameParameter",
    ]
    assert unknown_proto_fields(config, "2.14.0") == ["secretAsEnv[0].optional"]
    for version in KFP_PROTOS:
        doc = retarget_platform_spec(_sample_spec(), version)
        cfg = doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-x"]
        assert unknown_proto_fields(cfg, version) == []
        assert cfg["secretAsEnv"][0]["secretName"] == "s" and cfg["pvcMount"][0]["constant"] == "p"
        assert ("secretNameParameter" in cfg["secretAsEnv"][0]) == (version != "2.2.0")
        assert ("optional" in cfg["secretAsEnv"][0]) == (version in ("2.15.0", "2.16.1"))


def _rendered(overlay: str) -> list[dict[str, Any]]:
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is needed to render the overlays")
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / overlay)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return goyaml.load_all(out)


@pytest.mark.parametrize("overlay", ["overlays/kind", "overlays/gpu"])
def test_overlays_create_every_configmap_secret_and_key_the_pipeline_references(
    overlay: str,
) -> None:
    objs = _rendered(overlay)
    maps = {
        o["metadata"]["name"]: set(o.get("data") or {}) for o in objs if o["kind"] == "ConfigMap"
    }
    secrets = {
        o["metadata"]["name"]: set(o.get("data") or {}) | set(o.get("stringData") or {})
        for o in objs
        if o["kind"] == "Secret"
    }
    external = {"kubetrade-postgres", "kubetrade-minio"}  # documented: created by the user
    pvcs = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for path in COMPILED:
        for name, cfg in executor_configs(path.read_text(encoding="utf-8")).items():
            for entry in cfg.get("configMapAsEnv") or []:
                keys = {k["configMapKey"] for k in entry["keyToEnv"]}
                assert keys <= maps.get(entry["configMapName"], set()), (name, entry)
            for entry in cfg.get("secretAsEnv") or []:
                assert entry["secretName"] in secrets or entry["secretName"] in external
            for entry in cfg.get("pvcMount") or []:
                assert entry["constant"] in pvcs
    assert PlatformOptions().secret_env == {}  # the base MLflow proxies artifacts, no auth
