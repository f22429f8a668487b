"""The base of the typed config tree: strict models, YAML loading, ``KEY=VALUE`` parsing.

Every config section subclasses :class:`StrictModel`, so unknown keys and bad values raise
:class:`~kubetrade.errors.ConfigError` whose one-line message names the dotted path, the bad
value and what is allowed, e.g.::

    config/training.yaml: training.optimizer.typo: unknown key (allowed: type, weight_decay, betas)
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kubetrade.errors import ConfigError

__all__ = [
    "StrictModel",
    "load_yaml_model",
    "validate_model",
    "read_yaml_file",
    "apply_overrides",
    "split_key_value",
    "parse_key_values",
    "nest_dotted",
    "check_dotted_path",
    "format_validation_error",
    "flatten",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_ .,:/+\-\[\]]{0,60}")


def _shown_key(part: Any) -> str:
    """A config key as it may appear in an error: plain identifiers only. Anything else (a
    line of some file passed as a config, a secret) is not echoed."""
    text = str(part)
    return text if isinstance(part, int) or _PLAIN_KEY.fullmatch(text) else "<key not shown>"


def _shown_value(value: Any) -> str:
    """A short, bounded repr of a bad value, or '' when it should not be echoed: containers
    (never ``str()``-ed: a YAML alias bomb would take gigabytes), long or unusual text (file
    contents, secrets)."""
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, date):
        return repr(value.isoformat())
    if isinstance(value, str) and _PLAIN_TEXT.fullmatch(value) and "://" not in value:
        return repr(value)
    return ""


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``source: dotted.path: message (got value)``; joined by '; '."""
    parts = []
    for err in exc.errors():
        # a key with whitespace or control characters is quoted, so the message stays one line
        path = ".".join(_shown_key(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parts.append(f"{path}: unknown key")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = _shown_value(value)
        shown = f" (got {shown})" if shown else ""
        # a whole-model check (no field path) speaks for itself
        parts.append(f"{path}: {msg}{shown}" if path else f"{msg}{shown}")
    return f"{source}: " + "; ".join(parts)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        current = field.annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
    return list(current.model_fields)


def read_yaml_file(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file; a missing file or bad YAML is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{what} file not found: {p}; check the path (kubetrade --config, or the "
            "*_config keys in the pipeline config)"
        )
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not valid YAML (not UTF-8 text: byte {exc.start}); save the file as UTF-8"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where} ({what}); fix the syntax there") from exc


def load_yaml_model(
    model: type[M], path: str | Path | None = None, data: dict[str, Any] | None = None
) -> M:
    """Parse ``path`` (or ``data``) into ``model``; every problem raises ConfigError."""
    source = str(path) if path is not None else model.__name__
    if data is None:
        if path is None:
            return model()
        data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    return validate_model(model, data, source)


def validate_model(model: type[M], data: dict[str, Any], source: str) -> M:
    """``model`` validated from ``data``; a problem is one ConfigError naming ``source``, and
    for an unknown key the keys allowed there."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc, source)
        extras = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if extras:
            allowed = _allowed_keys(model, tuple(extras[0]["loc"]))
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        raise ConfigError(msg) from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict in place (``{"a.b": 1}`` -> ``data["a"]["b"] = 1``)."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = str(dotted).split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return data


def split_key_value(
    item: str, flag: str, example: str, error: type[Exception] = ConfigError
) -> tuple[str, str]:
    """One ``KEY=VALUE`` option as ``(key, raw value)``; ``error`` names the flag and an example."""
    key, sep, value = str(item).partition("=")
    if not sep or not key.strip():
        raise error(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} {example}")
    return key.strip(), value


def parse_key_values(
    items: list[str] | tuple[str, ...] | None, flag: str = "--set", example: str = "a.b=1"
) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict, values parsed as YAML (numbers, lists, booleans): the
    one parser behind ``--set``, ``--param`` (local), ``--hparam`` and ``torchrun --hparam``."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, value = split_key_value(item, flag, example)
        try:
            result[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(
                f"{flag} {key}=...: {problem}{where}; quote lists like {flag} 'symbols=[AAPL,IBM]'"
            ) from None
        except ValueError:
            # YAML read a date-like value it cannot build (2020-13-01): keep the text, the
            # config's own validation then names the key in one line
            result[key] = value
    return result


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (a fresh dict; see :func:`apply_overrides`)."""
    return apply_overrides({}, flat)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/models to ``{"a.b.c": value}`` (for MLflow params)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    out[prefix.rstrip(".")] = data
    return out


def check_dotted_path(model: type[BaseModel], dotted: str, where: str, what: str) -> None:
    """Refuse a dotted path that names no field of ``model`` (typos fail loudly): the one
    dotted-path checker behind tuning overrides (``what``: e.g. ``"training-config"``)."""
    node: Any = model
    for part in dotted.split("."):
        fields = getattr(node, "model_fields", None)
        if fields is None or part not in fields:
            allowed = ", ".join(fields) if fields else "nothing: it is a leaf value"
            raise ConfigError(
                f"{where}: {dotted!r} is not a {what} path: unknown key {part!r} "
                f"(allowed: {allowed})"
            )
        node = fields[part].annotation
