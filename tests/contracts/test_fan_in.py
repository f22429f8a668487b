"""``dsl.Collected`` fan-ins in the compiled pipelines name loops the KFP driver can find.

A KFP 2.14+ driver resolves a ``dsl.Collected`` input (kubeflow/pipelines#11725) by looking
up the producer, a for-loop DAG task, by the name the consumer gives it
(``taskOutputParameter``/``taskOutputArtifact.producerTask``, the task key ``for-loop-N``).
The loop DAG's execution is recorded under its ``taskInfo.name``; with
``dsl.ParallelFor(name=...)`` that is the custom name, so the lookup fails at run time even
on 2.14-2.16 (kubeflow/pipelines#13239; SDK fix PR #13707, not in kfp 2.17.3). The check:
every fan-in's loop producer has ``taskInfo.name`` equal to its task key. Negative control:
a tiny pipeline with ``ParallelFor(name="x")`` + ``Collected`` is caught.
"""

# no `from __future__ import annotations`: kfp reads the tiny components' annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetrade.k8s import goyaml

ROOT = Path(__file__).resolve().parents[2]
COMPILED = sorted((ROOT / "pipelines" / "compiled").glob("*.yaml"))


def _dags(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, {task key: task})`` of the root DAG and every component DAG."""
    yield "root", spec["root"]["dag"]["tasks"]
    for name, comp in (spec.get("components") or {}).items():
        if "dag" in comp:
            yield name, comp["dag"]["tasks"]


def _is_loop(task: dict[str, Any]) -> bool:
    return "parameterIterator" in task or "artifactIterator" in task


def fan_in_problems(spec: dict[str, Any]) -> tuple[int, list[str]]:
    """(number of fan-in inputs found, those whose loop producer is named otherwise)."""
    found, problems = 0, []
    for dag, tasks in _dags(spec):
        for key, task in tasks.items():
            inputs = task.get("inputs") or {}
            for kind, ref in (("parameters", "taskOutputParameter"), ("artifacts", "taskOutputArtifact")):  # fmt: skip
                for name, value in (inputs.get(kind) or {}).items():
                    producer = (value.get(ref) or {}).get("producerTask")
                    if producer is None or not _is_loop(tasks.get(producer, {})):
                        continue
                    found += 1
                    shown = tasks[producer]["taskInfo"]["name"]
                    if shown != producer:
                        problems.append(
                            f"{dag}/{key}.{name}: producer {producer!r} is named {shown!r} "
                            "(kubeflow/pipelines#13239)"
                        )
    return found, problems


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.name)
def test_every_fan_in_names_its_loop_by_its_task_key(path: Path) -> None:
    spec = goyaml.load_all(path.read_text(encoding="utf-8"))[0]
    found, problems = fan_in_problems(spec)
    assert found >= 2  # ensemble <- RL agents, walk-forward <- folds
    assert problems == []


def _tiny_spec(tmp_path: Path, loop_name: str | None) -> dict[str, Any]:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def make(i: int) -> int:
        return i

    @dsl.component(base_image="python:3.11")
    def gather(values: list[int]) -> int:
        return len(values)

    @dsl.pipeline(name="fan-in")
    def fan_in() -> None:
        kwargs = {} if loop_name is None else {"name": loop_name}
        with dsl.ParallelFor(items=[1, 2], **kwargs) as i:
            made = make(i=i)
        gather(values=dsl.Collected(made.output))

    out = tmp_path / "fan_in.yaml"
    compiler.Compiler().compile(fan_in, str(out))
    return goyaml.load_all(out.read_text(encoding="utf-8"))[0]


def test_negative_control_a_named_loop_is_caught(tmp_path: Path) -> None:
    found, problems = fan_in_problems(_tiny_spec(tmp_path, "x"))
    assert found == 1 and len(problems) == 1 and "named 'x'" in problems[0]
    assert fan_in_problems(_tiny_spec(tmp_path, None)) == (1, [])
