"""The go-yaml v2 resolver (kubetrade.k8s.goyaml) and every YAML kubetrade emits.

Kubernetes (kubectl, the API server, kustomize) decodes YAML with go-yaml v2 rules; PyYAML
differs (``1e-05``, ``y``, ``n`` are strings to PyYAML). Every YAML we emit must mean the
same objects under go-yaml v2 as we intended: dry-run stdout, written Experiment files,
compiled pipelines, rendered overlays. The resolver table below follows go-yaml v2.4.0's
resolve.go; where a Go toolchain with gopkg.in/yaml.v2 is installed (Debian:
golang-go, golang-gopkg-yaml.v2-dev), the same table is decoded by real go-yaml v2 too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrade.k8s import goyaml

ROOT = Path(__file__).resolve().parents[2]

# plain scalar -> what go-yaml v2 decodes it to (into interface{})
GO_TABLE: dict[str, Any] = {
    "1e-05": 1e-05, "1e5": 100000.0, "1.0e-05": 1e-05, "0.01": 0.01, ".5": 0.5, "1.": 1.0,
    "-1.5": -1.5, "+1": 1, "3": 3, "-3": -3, "0x1F": 31, "017": 15, "0o17": 15, "1_000": 1000,
    "0b101": 5, "y": True, "Y": True, "yes": True, "on": True, "ON": True, "true": True,
    "n": False, "no": False, "off": False, "False": False, "null": None, "~": None,
    ".inf": math.inf, "-.inf": -math.inf, "2024-01-01": "2024-01-01", "abc": "abc",
    "1e": "1e", "0x": "0x", "1.2.3": "1.2.3", "v0.17": "v0.17", "yess": "yess", "0.1.0": "0.1.0",
    "+.5": 0.5, "1_0.5": 10.5, "12:30": "12:30",
}  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), list(GO_TABLE.items()))
def test_resolver_follows_go_yaml_v2(text: str, expected: Any) -> None:
    value = goyaml.load(f"v: {text}\n")["v"]
    assert value == expected and type(value) is type(expected)


def test_pyyaml_differs_where_it_matters() -> None:
    """Why the resolver exists: PyYAML reads these as strings, go-yaml v2 does not."""
    for text in ("1e-05", "y", "n", "0o17"):
        assert isinstance(yaml.safe_load(f"v: {text}")["v"], str)
        assert not isinstance(goyaml.load(f"v: {text}")["v"], str)


def test_dump_quotes_what_either_parser_would_retype() -> None:
    obj = {"a": "1e-05", "b": "y", "c": "2024-01-01", "d": "yes", "e": "0x1F", "f": 1e-05,
           "g": "plain", "h": True, "i": "1_000", "j": ["on", "off", 3]}  # fmt: skip
    text = goyaml.dump(obj)
    assert goyaml.load(text) == obj == yaml.safe_load(text)
    assert "a: '1e-05'" in text and "b: 'y'" in text


GO_PROGRAM = """package main

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"

	yaml "gopkg.in/yaml.v2"
)

func main() {
	data, _ := ioutil.ReadAll(os.Stdin)
	var out map[string]interface{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	res := map[string]string{}
	for k, v := range out {
		res[k] = fmt.Sprintf("%T:%v", v, v)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}
"""


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>:<nil>"
    if isinstance(value, bool):
        return f"bool:{str(value).lower()}"
    if isinstance(value, int):
        return f"int:{value}"
    if isinstance(value, float):
        text = "+Inf" if value == math.inf else "-Inf" if value == -math.inf else f"{value:g}"
        return f"float64:{text}"
    return f"string:{value}"


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain (optional cross-check)")
def test_resolver_agrees_with_real_go_yaml_v2(tmp_path: Path) -> None:
    gopath = tmp_path / "gopath"
    (gopath / "src" / "check").mkdir(parents=True)
    (gopath / "src" / "check" / "main.go").write_text(GO_PROGRAM)
    env = {**os.environ, "GOPATH": f"{gopath}:/usr/share/gocode", "GO111MODULE": "off",
           "GOCACHE": str(tmp_path / "cache"), "GOFLAGS": "-mod=mod"}  # fmt: skip
    env.pop("GOFLAGS")
    keys = {f"k{i}": text for i, text in enumerate(GO_TABLE)}
    doc = "".join(f"{k}: {text}\n" for k, text in keys.items())
    try:
        run = subprocess.run(
            ["go", "run", "check"], input=doc, capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("go run timed out")
    if run.returncode != 0 and "cannot find package" in run.stderr:
        pytest.skip("gopkg.in/yaml.v2 is not installed (golang-gopkg-yaml.v2-dev)")
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    ours = goyaml.load(doc)
    for key, text in keys.items():
        assert got[key] == _go_type(ours[key]), (text, got[key])
