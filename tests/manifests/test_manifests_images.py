"""Static lint of images/*/Dockerfile (no Docker engine runs here or in CI): pinned base
images, non-root final stage, constraints-driven installs, CPU torch in the base image and
CUDA torch in the trainer, a Dockerfile-specific .dockerignore that lets every COPY source
through, Makefile image tags equal to components/images.py, and kind building only what it
uses. No fakes."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from _k8s_checks import REPO, image_problem

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


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
    assert "-c constraints.txt" in runs and "pip check" in runs
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
    # an allow-list: every COPY source from the context must be let through
    for op, rest in instructions:
        if op == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                allowed = f"!{source}/" if (REPO / source).is_dir() else f"!{source}"
                assert allowed in patterns, f"COPY {source} but {ignore.name} lacks {allowed}"
    # pyproject maps kubetrade.components/.pipelines to top-level folders: `pip install .`
    # fails without them
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    copied = {rest.split()[0] for op, rest in instructions if op == "COPY"}
    for folder in package_dirs.values():
        if folder:
            assert folder in copied, f"pyproject's package-dir {folder!r} is not copied"


def test_base_image_installs_cpu_torch_only_and_trainer_cuda() -> None:
    base = _args(_instructions(IMAGES / "base" / "Dockerfile"))
    trainer = _args(_instructions(IMAGES / "trainer" / "Dockerfile"))
    assert base["TORCH_INDEX_URL"] == CPU_INDEX
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu1\d{2}", trainer["TORCH_INDEX_URL"])
    constraints = (REPO / "constraints.txt").read_text()
    pinned = re.search(r"^torch==([\w.]+)$", constraints, re.M)
    assert pinned is not None
    assert base["TORCH_VERSION"] == trainer["TORCH_VERSION"]
    assert base["TORCH_VERSION"] == pinned.group(1)
    assert base["PYTHON_IMAGE"] == trainer["PYTHON_IMAGE"]


def _makefile_vars() -> dict[str, str]:
    values = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Z_]+)\s*\?=\s*(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def _image_defaults() -> dict[str, str]:
    """NAME -> default of ``NAME = os.environ.get("KUBETRADE_NAME", "default")`` in
    components/images.py (read statically, so the environment cannot change it)."""
    tree = ast.parse((REPO / "components" / "images.py").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            (target,) = node.targets
            env_name, default = (ast.literal_eval(a) for a in node.value.args)
            assert isinstance(target, ast.Name) and env_name == f"KUBETRADE_{target.id}"
            out[target.id] = default
    return out


def test_makefile_image_tags_match_components_images() -> None:
    make = _makefile_vars()
    defaults = _image_defaults()
    assert set(defaults) == {"BASE_IMAGE", "TRAINER_IMAGE"}
    for name in ("BASE_IMAGE", "TRAINER_IMAGE"):
        match = re.fullmatch(rf"\$\(or \$\(KUBETRADE_{name}\),(.+)\)", make[name])
        assert match, f"Makefile {name} must honour KUBETRADE_{name}: {make[name]}"
        resolved = match.group(1).replace("$(IMAGE_TAG)", make["IMAGE_TAG"])
        assert resolved == defaults[name], f"Makefile {name}={resolved} != images.py"
        assert image_problem(resolved) is None
    text = (REPO / "Makefile").read_text()
    for image in ("base", "trainer"):
        assert f"-f images/{image}/Dockerfile" in text
    assert "kind load docker-image" in text and "scripts/kind_e2e.sh" in text


def _make_n(*targets: str) -> str:
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *targets],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    return result.stdout


def test_kind_e2e_builds_and_loads_only_the_images_kind_uses() -> None:
    """Issue #13, defect 14: kind-e2e built and loaded an unused tuner image and the
    multi-GB CUDA trainer image. What kind runs: the CPU pipeline package (kubetrade compile
    without --gpu) and the kind overlay's cluster profile (trainer pods, Katib trials)."""
    script = (REPO / "scripts" / "kind_e2e.sh").read_text()
    make_calls = re.findall(r"^\s*make ([a-z-]+)", script, re.M)
    assert make_calls == ["image-base", "kind-load"]
    dry = _make_n("image-base", "kind-load")
    built = set(re.findall(r"-f images/(\w+)/Dockerfile", dry))
    loaded = set(re.findall(r"kind load docker-image \"?\$image\"?|for image in ([^;]+);", dry))
    assert built == {"base"}
    loaded_images = {i for group in loaded for i in group.split() if i}
    assert loaded_images == {"kubetrade/base:0.1.0"}
    profile = (REPO / "manifests/overlays/kind/cluster-profile/profile.yaml").read_text()
    assert re.search(r"^image: kubetrade/base:0\.1\.0$", profile, re.M)
    compiled = (REPO / "pipelines/compiled/kubetrade_training.yaml").read_text()
    assert set(re.findall(r"image: (\S+)", compiled)) == {"kubetrade/base:0.1.0"}
    assert not (REPO / "images" / "tuner").exists()
