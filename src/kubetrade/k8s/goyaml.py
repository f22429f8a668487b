"""YAML as Kubernetes reads it: go-yaml v2's scalar resolution, for loading and for writing.

``kubectl``, the API server and kustomize decode YAML with go-yaml v2 rules
(``sigs.k8s.io/yaml``): an unquoted ``1e-05`` is a float, ``y``/``n``/``yes``/``no``/``on``/
``off`` are booleans, ``0x1F`` is an int. PyYAML (YAML 1.1 as PyYAML implements it) differs:
it reads ``1e-05`` as a *string* and ``y``/``n`` as strings, so a PyYAML round trip hides a
value that Kubernetes will read with another type (issue #13: Katib's ``feasibleSpace.min``
is a Go string, and ``min: 1e-05`` unquoted is rejected by the webhook).

:func:`goyaml_resolve` is a port of ``resolve()`` in go-yaml v2's ``resolve.go``
(gopkg.in/yaml.v2 v2.4.0, Apache-2.0/MIT, github.com/go-yaml/yaml/blob/v2.4.0/resolve.go):
the ``resolveMap`` literals, then, by the first character's hint, Go's ``strconv.ParseInt``
(base 0, ``_`` removed), ``ParseUint``, the ``yamlStyleFloat`` regexp and ``0b`` binaries;
a plain scalar that looks like a timestamp resolves to ``!!timestamp`` (which go-yaml v2
hands back as the original string when decoding into ``interface{}``).

:class:`GoYamlLoader` reads a document with those rules; :func:`dump` writes YAML whose
plain scalars mean the same thing to go-yaml v2 and to PyYAML (a string that either would
read as something else is quoted).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["GoYamlLoader", "GoYamlDumper", "goyaml_resolve", "load", "load_all", "dump", "dump_all"]

STR, INT, FLOAT, BOOL, NULL, TIMESTAMP, MERGE = (
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:merge",
)

# resolve.go: resolveMapList
_RESOLVE_MAP: dict[str, tuple[str, Any]] = {}
for _values, _tag, _value in (
    (("y", "Y", "yes", "Yes", "YES"), BOOL, True),
    (("true", "True", "TRUE"), BOOL, True),
    (("on", "On", "ON"), BOOL, True),
    (("n", "N", "no", "No", "NO"), BOOL, False),
    (("false", "False", "FALSE"), BOOL, False),
    (("off", "Off", "OFF"), BOOL, False),
    (("", "~", "null", "Null", "NULL"), NULL, None),
    ((".nan", ".NaN", ".NAN"), FLOAT, math.nan),
    ((".inf", ".Inf", ".INF"), FLOAT, math.inf),
    (("+.inf", "+.Inf", "+.INF"), FLOAT, math.inf),
    (("-.inf", "-.Inf", "-.INF"), FLOAT, -math.inf),
    (("<<",), MERGE, "<<"),
):
    for _v in _values:
        _RESOLVE_MAP[_v] = (_tag, _value)

# resolve.go: the hint of a scalar's first byte
_HINT = {c: "S" for c in "+-"} | {c: "D" for c in "0123456789"}
_HINT |= {c: "M" for c in "yYnNtTfFoO~"} | {".": "."}

_YAML_STYLE_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
# Go strconv.ParseFloat syntax (decimal and hex floats, inf/nan words, no '_' after removal)
_GO_FLOAT = re.compile(
    r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])$"
)
# resolve.go: parseTimestamp's allowed formats (the year is exactly four digits)
_TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]*)?"
    r"(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?$"
)
_INT64 = (-(2**63), 2**63 - 1)


def _go_parse_int(text: str, signed: bool) -> int | None:
    """Go's ``strconv.ParseInt(s, 0, 64)`` / ``ParseUint(s, 0, 64)`` (None on error)."""
    body, sign = text, 1
    if body[:1] in "+-" and body:
        if not signed:
            return None
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        return None
    lower = body.lower()
    base, digits = 10, body
    if lower.startswith("0x"):
        base, digits = 16, body[2:]
    elif lower.startswith("0b"):
        base, digits = 2, body[2:]
    elif lower.startswith("0o"):
        base, digits = 8, body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits.lower()):
        return None
    value = sign * int(digits, base)
    low, high = _INT64 if signed else (0, 2**64 - 1)
    return value if low <= value <= high else None


def _go_parse_float(text: str) -> float | None:
    if not _GO_FLOAT.match(text):
        return None
    try:
        return float.fromhex(text) if "x" in text.lower() else float(text)
    except (ValueError, OverflowError):
        return None


def goyaml_resolve(text: str) -> tuple[str, Any]:
    """``(tag, value)`` that go-yaml v2 gives the *plain* (unquoted, untagged) scalar ``text``."""
    hint = _HINT.get(text[:1], "N") if text else "N"
    if hint == "N" and text:
        hint = ""
    if hint:
        if text in _RESOLVE_MAP:
            return _RESOLVE_MAP[text]
        if hint == ".":
            number = _go_parse_float(text)
            if number is not None:
                return FLOAT, number
        elif hint in "DS":
            if _TIMESTAMP.match(text):
                return TIMESTAMP, text
            plain = text.replace("_", "")
            integer = _go_parse_int(plain, signed=True)
            if integer is None:
                integer = _go_parse_int(plain, signed=False)
            if integer is not None:
                return INT, integer
            if _YAML_STYLE_FLOAT.match(plain):
                number = _go_parse_float(plain)
                if number is not None:
                    return FLOAT, number
            for prefix, sign in (("0b", 1), ("-0b", -1)):
                if plain.startswith(prefix):
                    digits = plain[len(prefix) :]
                    if digits and set(digits) <= {"0", "1"}:
                        return INT, sign * int(digits, 2)
    return STR, text


class GoYamlLoader(yaml.SafeLoader):
    """A PyYAML loader whose plain scalars resolve as go-yaml v2 resolves them."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return goyaml_resolve(value)[0]
        return super().resolve(kind, value, implicit)

    def construct_goyaml_scalar(self, node: yaml.ScalarNode) -> Any:
        if node.style not in (None, ""):  # an explicitly tagged quoted scalar: keep the text
            return self.construct_scalar(node)
        tag, value = goyaml_resolve(self.construct_scalar(node))
        if tag != node.tag:  # an explicit tag such as !!float "1"
            return super().construct_object(node)  # pragma: no cover - not used by us
        return value


for _tag in (INT, FLOAT, BOOL, NULL, TIMESTAMP):
    GoYamlLoader.add_constructor(_tag, GoYamlLoader.construct_goyaml_scalar)


class GoYamlDumper(yaml.SafeDumper):
    """A PyYAML dumper that quotes every string go-yaml v2 *or* PyYAML would read as non-string."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            go_tag = goyaml_resolve(value)[0]
            if go_tag not in (STR, TIMESTAMP):
                return go_tag
            py_tag = super().resolve(kind, value, implicit)
            return py_tag if go_tag == STR else TIMESTAMP
        return super().resolve(kind, value, implicit)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # Kubernetes objects never need anchors


def load(text: str) -> Any:
    """One YAML document, go-yaml v2 rules."""
    return yaml.load(text, Loader=GoYamlLoader)  # noqa: S506 - a SafeLoader subclass


def load_all(text: str) -> list[Any]:
    """Every document of a stream, go-yaml v2 rules (empty documents dropped)."""
    docs = yaml.load_all(text, Loader=GoYamlLoader)  # noqa: S506 - a SafeLoader subclass
    return [d for d in docs if d is not None]


def dump(obj: Any, *, width: int = 100) -> str:
    """YAML that go-yaml v2 and PyYAML both read back as ``obj``."""
    return yaml.dump(obj, Dumper=GoYamlDumper, sort_keys=False, width=width, allow_unicode=True)


def dump_all(objs: Iterable[Any], *, width: int = 100) -> str:
    return yaml.dump_all(
        list(objs), Dumper=GoYamlDumper, sort_keys=False, width=width, allow_unicode=True
    )
