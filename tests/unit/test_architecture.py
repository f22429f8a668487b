"""The package's import graph has no cycles, and docs/architecture.md's package map lists
every module of the tree (and none that is gone).

Every ``import`` of a ``kubetrade`` module counts, at module level or inside a function (a
lazy import that closes a cycle only hides it: the two modules still depend on each other);
imports under ``if TYPE_CHECKING:`` do not (they never run). A cycle fails the test with the
modules in it, in import order.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import kubetrade

PACKAGE_ROOT = Path(kubetrade.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The kubetrade modules ``module`` imports: ``from a.b import c`` is ``a.b.c`` when that
    is a module, else ``a.b``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parts, *([child.module] if child.module else [])])
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    if full in modules:
                        found.add(full)
                    elif base in modules:
                        found.add(base)
            stack.append(child)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: the kubetrade modules it imports}`` for every module under src/kubetrade."""
    files = {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}
    modules = set(files)
    return {
        name: _imports(
            ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", modules
        )
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_graph_sees_the_package():
    graph = import_graph()
    assert "kubetrade.config.run" in graph and "kubetrade.pipeline.steps.hybrid" in graph
    # a function-level import counts: train_step imports TrainingPipeline lazily
    assert "kubetrade.training.pipeline" in graph["kubetrade.pipeline.steps.hybrid"]


def test_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_type_checking_imports_do_not_count():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kubetrade.b import X\n"
        "def f():\n    from kubetrade.c import Y\n"
    )
    found = _imports(tree, "kubetrade.a", False, {"kubetrade.a", "kubetrade.b", "kubetrade.c"})
    assert found == {"kubetrade.c"}


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# ---------------------------------------------------------------- the documented map
MAP_DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _without_parentheses(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return "".join(out)


def documented_map() -> dict[str, set[str]]:
    """``{package dir relative to src/kubetrade ('' for the root): module names}`` from the
    "Package map" table: the backticked names outside parentheses of each row."""
    text = MAP_DOC.read_text(encoding="utf-8")
    section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        package = cells[0].strip("`").rstrip("/")
        package = "" if package == "kubetrade" else package
        rows[package] = set(re.findall(r"`([a-z_0-9]+)`", _without_parentheses(cells[1])))
    return rows


def tree_map() -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        package = path.parent.relative_to(PACKAGE_ROOT).as_posix()
        package = "" if package == "." else package
        rows.setdefault(package, set()).add(path.stem)
    return rows


def test_the_documented_package_map_matches_the_tree():
    documented, tree = documented_map(), tree_map()
    assert set(documented) == set(tree), (
        f"packages missing from docs/architecture.md: {sorted(set(tree) - set(documented))}; "
        f"documented but gone: {sorted(set(documented) - set(tree))}"
    )
    problems = []
    for package, modules in tree.items():
        # a sub-package is its own row; __init__ is only listed where it holds code people use
        missing = modules - documented[package] - {"__init__", "__main__"}
        gone = documented[package] - modules
        if missing or gone:
            problems.append(
                f"{package or 'kubetrade'}/: missing {sorted(missing)}, gone {sorted(gone)}"
            )
    assert not problems, "docs/architecture.md package map: " + "; ".join(problems)


# ---------------------------------------------------------------- the installed package list
def test_every_package_is_in_pyprojects_package_list():
    """The images install non-editable: a package missing from ``[tool.setuptools] packages``
    is silently absent there (an editable install finds it anyway, so only this test sees it)."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    listed = set(
        tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    )
    tree = {
        ".".join(p.parent.relative_to(PACKAGE_ROOT.parent).parts)
        for p in PACKAGE_ROOT.rglob("__init__.py")
    }
    assert tree <= listed, (
        f"add to pyproject.toml [tool.setuptools] packages: {sorted(tree - listed)}"
    )
