"""The house's layering, read from the source (nothing is imported): ``dmz`` <- ``evaluation`` <- ``ablations``, no
import cycle among the project's modules at module level, and nothing below the trainer imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("dmz", "evaluation", "ablations")
LAYER = {"dmz": 0, "evaluation": 1, "ablations": 2}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as ``a.b`` and, when it is a module,
    ``a.b.c``); ``TYPE_CHECKING`` blocks are left out."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    return {m: {i for i in _imports(p, top_level_only=True) if i in files and i != m} for m, p in files.items()}


def test_lower_layers_never_import_higher_ones_at_module_level(graph):
    bad = [(m, i) for m, deps in graph.items() for i in deps if LAYER[i.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not bad, f"imports running up the layers (dmz <- evaluation <- ablations): {bad}"


def test_no_import_cycles_at_module_level(graph):
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"module-level import cycles: {cycles}"


def test_nothing_below_the_trainer_imports_it():
    users = [p.relative_to(REPO).as_posix() for pkg in ("dmz", "evaluation") for p in (REPO / pkg).rglob("*.py")
             if "dmz.trainer" in _imports(p, top_level_only=False)]
    assert sorted(users) == ["dmz/train.py"], f"only the training CLI may import dmz.trainer, not {users}"
