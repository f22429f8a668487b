"""The compiled pipeline package as ``kubetrade submit`` reads it: its declared inputs, its
name, ``--param KEY=VALUE`` typed by the spec's ``parameterType``, and the ``--recurring`` cron.
Also :class:`SubmitError`, the one error type of :mod:`kubetrade.k8s.submit`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubetrade.config import split_key_value
from kubetrade.errors import KubetradeError


class SubmitError(KubetradeError):
    """The pipeline could not be submitted or its run failed."""


def load_package(package: Path) -> list[dict[str, Any]]:
    if not package.is_file():
        raise SubmitError(f"pipeline package not found: {package}; run 'make compile' first")
    try:
        docs = [d for d in yaml.safe_load_all(package.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise SubmitError(f"{package} is not YAML: {str(exc).splitlines()[0]}") from None
    if not docs or not isinstance(docs[0], dict) or "root" not in docs[0]:
        raise SubmitError(
            f"{package} is not a compiled KFP pipeline (no 'root'); use 'make compile'"
        )
    return docs


def read_pipeline_inputs(package: str | Path) -> dict[str, dict[str, Any]]:
    """The pipeline's declared parameters (``root.inputDefinitions.parameters``)."""
    docs = load_package(Path(package))
    params = ((docs[0].get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return {str(k): dict(v or {}) for k, v in params.items()}


def pipeline_name_of(package: str | Path) -> str:
    docs = load_package(Path(package))
    return str((docs[0].get("pipelineInfo") or {}).get("name") or "")


def _convert(name: str, kind: str, raw: str) -> Any:
    bad = f"--param {name}={raw!r}: "
    if kind == "STRING":
        return raw
    if kind == "NUMBER_INTEGER":
        try:
            return int(raw.strip(), 10)
        except ValueError:
            raise SubmitError(bad + "expected an integer (NUMBER_INTEGER)") from None
    if kind == "NUMBER_DOUBLE":
        try:
            value = float(raw)
        except ValueError:
            raise SubmitError(bad + "expected a number (NUMBER_DOUBLE)") from None
        if not math.isfinite(value):
            raise SubmitError(bad + "expected a finite number (NUMBER_DOUBLE)")
        return value
    if kind == "BOOLEAN":
        low = raw.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        raise SubmitError(bad + "expected true or false (BOOLEAN)")
    if kind in ("LIST", "STRUCT"):
        want, label = (list, "a JSON list, e.g. '[1, 2]'") if kind == "LIST" else (
            dict, "a JSON object, e.g. '{\"k\": 1}'")  # fmt: skip
        parsed: Any
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            parsed = _flow_list(raw) if kind == "LIST" else None
            if parsed is None:
                raise SubmitError(bad + f"expected {label} ({kind}): {exc.msg}") from None
        if not isinstance(parsed, want):
            raise SubmitError(bad + f"expected {label} ({kind})")
        return parsed
    raise SubmitError(
        f"--param {name}: the pipeline declares type {kind!r}, which submit cannot set"
    )


def _flow_list(raw: str) -> list[Any] | None:
    """A YAML flow list of plain words/numbers, ``[AAPL,IBM]`` (as ``kubetrade run --set``),
    else None."""
    if not raw.strip().startswith("["):
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return None
    scalars = (str, int, float, bool)
    if isinstance(value, list) and all(isinstance(v, scalars) for v in value):
        return value
    return None


def parse_params(inputs: Mapping[str, Mapping[str, Any]], items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to typed values by the pipeline spec's ``parameterType``."""
    out: dict[str, Any] = {}
    for item in items:
        key, raw = split_key_value(item, "--param", "epochs=3", SubmitError)
        if key not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise SubmitError(f"--param {key}: the pipeline has no input {key!r} (inputs: {known})")
        if key in out:
            raise SubmitError(f"--param {key} given twice")
        kind = str(inputs[key].get("parameterType", "STRING"))
        out[key] = _convert(key, kind, raw)
    missing = [
        k
        for k, spec in inputs.items()
        if k not in out and not spec.get("isOptional") and "defaultValue" not in spec
    ]
    if missing:
        raise SubmitError(f"the pipeline needs --param for: {', '.join(sorted(missing))}")
    return out


def normalize_cron(cron: str) -> str:
    """KFP's scheduler reads 6-field cron (seconds first); a 5-field one gets ``0`` seconds."""
    fields = cron.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise SubmitError(
            f"--recurring {cron!r}: expected a cron expression of 5 fields "
            "(min hour day month weekday) or KFP's 6 (with seconds first)"
        )
    return " ".join(fields)
