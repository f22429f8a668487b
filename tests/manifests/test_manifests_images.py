"""Static lint of images/*/Dockerfile (no Docker engine runs here or in CI): pinned base
images, non-root final stage, constraints-driven installs, CPU torch only in the base
image, a Dockerfile-specific .dockerignore. No fakes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _k8s_checks import REPO, image_problem

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for op, rest in instructions:
        if op == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    return args


def test_expected_images_exist() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"base", "trainer"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_rules(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    args = _args(instructions)
    stages = [rest for op, rest in instructions if op == "FROM"]
    assert stages, "no FROM"
    for stage in stages:
        image = stage.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert image_problem(image) is None, f"FROM {image}: {image_problem(image)}"
    # everything after the last FROM is the runtime image: it must end as a numeric non-root user
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    users = [rest for op, rest in instructions[last_from:] if op == "USER"]
    assert users, "final stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} must be a numeric non-root uid"
    assert uid == "1000"  # matches runAsUser in kubetrade.k8s and the manifests
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert "-c constraints.txt" in runs
    assert not any(op == "ADD" for op, _ in instructions), "use COPY, not ADD"
    for op, rest in instructions:
        if op == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                # README.md is pyproject's `readme`; it must exist before an image can build
                assert (REPO / source).exists() or source == "README.md", f"COPY {source} missing"
    ignore = dockerfile.with_name("Dockerfile.dockerignore")
    assert ignore.is_file(), "each Dockerfile needs its Dockerfile.dockerignore"
    patterns = ignore.read_text().split()
    assert patterns[patterns.index("*")] == "*" and "!src/" in patterns


def test_base_image_installs_cpu_torch_only_and_trainer_cuda() -> None:
    base = _args(_instructions(IMAGES / "base" / "Dockerfile"))
    trainer = _args(_instructions(IMAGES / "trainer" / "Dockerfile"))
    assert base["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu1\d{2}", trainer["TORCH_INDEX_URL"])
    constraints = (REPO / "constraints.txt").read_text()
    pinned = re.search(r"^torch==([\w.]+)$", constraints, re.M)
    assert pinned is not None
    assert base["TORCH_VERSION"] == trainer["TORCH_VERSION"] == pinned.group(1)
