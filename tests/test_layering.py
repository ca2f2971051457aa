"""The house's layering, read from the source with ``ast`` (nothing is imported): ``dmz`` <- ``evaluation`` <-
``ablations`` (the applications may use evaluation's feature extractors), no import cycle among the project's
modules (imports inside functions count: they are how circles hide), and nothing below the trainer imports it."""

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
    # a TYPE_CHECKING block is never executed: drop it before walking the tree
    for node in list(ast.walk(tree)):
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                setattr(node, field, [n for n in block if not (isinstance(n, ast.If)
                                                              and "TYPE_CHECKING" in ast.unparse(n.test))])
    out: set[str] = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    return {m: {i for i in _imports(p, top_level_only=False) if i in files and i != m} for m, p in files.items()}


#: the one allowed arrow up: the applications (``dmz/apps/``) score their outputs with evaluation's feature
#: extractors and FID, imported where they are used
APPS_MAY_USE = {"evaluation.features", "evaluation.fid"}


def test_lower_layers_never_import_higher_ones(graph):
    bad = [(m, i) for m, deps in graph.items() for i in deps  # every import, module level or inside a function
           if LAYER[i.split(".")[0]] > LAYER[m.split(".")[0]] and not (m.startswith("dmz.apps") and i in APPS_MAY_USE)]
    assert not bad, f"imports running up the layers (dmz <- evaluation <- ablations): {bad}"


def test_no_import_cycles(graph):
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
    assert not cycles, f"import cycles (imports inside functions included): {cycles}"


def test_nothing_below_the_trainer_imports_it():
    users = [p.relative_to(REPO).as_posix() for pkg in ("dmz", "evaluation") for p in (REPO / pkg).rglob("*.py")
             if "dmz.trainer" in _imports(p, top_level_only=False)]
    assert sorted(users) == ["dmz/train.py"], f"only the training CLI may import dmz.trainer, not {users}"
