#!/usr/bin/env python3
"""The README's run-form table, generated from the compiled pipelines' parameters.

    python scripts/param_table.py            # print the table
    python scripts/param_table.py --write    # replace it in README.md (between the markers)

Columns: the parameter, its KFP type, the default of the cluster YAML (profile full), the
default of the demo profile (the local GPU YAML, the `make run` values) and the description
the Kubeflow UI shows. tests/pipeline/test_run_form.py checks README.md against it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

CLUSTER = Path("pipelines/compiled/kubetrade_training.yaml")
DEMO = Path("pipelines/compiled/kubetrade_training_gpu.yaml")
README = Path("README.md")
START, END = "<!-- run-form:start -->", "<!-- run-form:end -->"
TYPES = {"STRING": "string", "NUMBER_INTEGER": "integer", "LIST": "list", "BOOLEAN": "bool",
         "NUMBER_DOUBLE": "number", "STRUCT": "object"}  # fmt: skip


def _inputs(path: Path) -> dict[str, dict[str, Any]]:
    spec = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return dict(spec["root"]["inputDefinitions"]["parameters"])


def _show(value: Any, kind: str) -> str:
    if kind == "NUMBER_INTEGER":
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def table(cluster: Path = CLUSTER, demo: Path = DEMO) -> str:
    full, small = _inputs(cluster), _inputs(demo)
    rows = [
        "| parameter | type | cluster default (`--profile full`) | demo default (`make run`) "
        "| description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, spec in full.items():
        kind = spec["parameterType"]
        cells = [f"`{name}`", TYPES.get(kind, kind), _show(spec.get("defaultValue"), kind),
                 _show(small[name].get("defaultValue"), kind), spec.get("description", "")]  # fmt: skip
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def readme_table(readme: Path = README) -> str:
    text = readme.read_text(encoding="utf-8")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    generated = table()
    if argv[1:] == ["--write"]:
        text = README.read_text(encoding="utf-8")
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        README.write_text(f"{head}{START}\n{generated}{END}{tail}", encoding="utf-8")
        return 0
    sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
