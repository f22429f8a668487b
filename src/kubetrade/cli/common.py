"""What the command modules share: the consoles, the common options, ``KEY=VALUE`` overrides,
a YAML config merged with ``--set`` (serve, monitor) and secret redaction for error lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kubetrade.errors import KubetradeError

#: progress, warnings and errors (stderr)
console = Console(stderr=True)
#: results: tables, JSON, paths (stdout)
out = Console()

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="pipeline config (points at the other config files)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a pipeline config key, e.g. --set symbols=[AAPL,IBM]"),
]

ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="run form value KEY=VALUE, as on the Kubeflow form and `submit --param`, e.g. "
        "--param symbols=[AAPL,IBM] --param epochs=3 (repeatable; README: run form)",
    ),
]


def overrides(
    items: list[str] | None, flag: str = "--set", example: str = "start_date=2010-01-01"
) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict (values parsed as YAML: numbers, lists, booleans)."""
    from kubetrade.config import parse_key_values

    return parse_key_values(items, flag, example)


def redact(text: str) -> str:
    """``text`` with URI passwords and ``password=``/``token=``-style values masked."""
    from kubetrade.registry.store import redact as _redact

    return _redact(text)


def merged_config(model: Any, path: Path, items: list[str] | None, example: str) -> Any:
    """``model`` validated from the YAML file ``path`` with the ``--set`` items merged in."""
    from kubetrade.config import load_yaml_model, nest_dotted, read_yaml_file

    if not path.is_file():
        raise KubetradeError(f"config file {path} does not exist")
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise KubetradeError(f"{path}: top level must be a mapping")

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    return load_yaml_model(model, data=merge(data, nest_dotted(overrides(items, "--set", example))))
