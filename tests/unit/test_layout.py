"""The package's layout (docs/design.md §9): each folder imports only the ones below it, no module
imports another of the project inside a function, and the module graph has no loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("hyper_sapiens_jax", "convert_weights")
# Each group may import only groups of a lower rank (a group is a folder of hyper_sapiens_jax, a
# top-level module of it, or convert_weights). A new folder or module must be placed here.
RANKS = {
    "precision": 0,
    "sharding": 0,
    "logs": 0,
    "models": 1,
    "config": 2,
    "cli": 3,
    "data": 3,
    "testbed": 4,
    "losses": 4,
    "evaluation": 4,
    "training": 5,
    "prior": 6,
    "convert_weights": 6,
    "inference": 6,
    "semisup": 7,
    "jobs": 8,
    "main": 9,
    "preview": 9,
    "predict": 9,
    "__init__": -1,  # hyper_sapiens_jax/__init__.py: the version, imports nothing
}


def _modules() -> dict[str, Path]:
    files = [*REPO.glob("hyper_sapiens_jax/**/*.py"), *REPO.glob("convert_weights/*.py")]
    out = {}
    for path in files:
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def group(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "convert_weights":
        return "convert_weights"
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, bool, int, str]]:
    """(imported project module, inside a function?, line, source line) for every project import,
    and ('<third party>', True, line, source line) for third-party imports inside functions."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(sub) for sub in ast.walk(node) if sub is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        inner = id(node) in in_function
        ours = [n for n in names if n in MODULES]
        if ours:
            found += [(n, inner, node.lineno, lines[node.lineno - 1]) for n in ours]
        elif inner and names[0].split(".")[0] not in ("__future__",) and names[0].split(".")[0] not in PACKAGES:
            found.append(("<third party>", True, node.lineno, lines[node.lineno - 1]))
    return found


IMPORTS = {module: _imports(path) for module, path in MODULES.items()}


def test_every_module_has_a_rank():
    assert {group(m) for m in MODULES} <= set(RANKS), sorted({group(m) for m in MODULES} - set(RANKS))


def test_groups_import_only_downward():
    upward = [
        f"{MODULES[m].relative_to(REPO)}:{line} imports {target} ({group(m)} rank {RANKS[group(m)]} -> "
        f"{group(target)} rank {RANKS[group(target)]})"
        for m, found in IMPORTS.items()
        for target, _, line, _ in found
        if target != "<third party>" and group(target) != group(m) and RANKS[group(target)] >= RANKS[group(m)]
    ]
    assert not upward, "\n".join(upward)


def test_no_project_import_inside_a_function_and_every_lazy_import_says_why():
    bad = [
        f"{MODULES[m].relative_to(REPO)}:{line}: {text.strip()}"
        for m, found in IMPORTS.items()
        for target, inner, line, text in found
        if inner and (target != "<third party>" or "# lazy:" not in text)
    ]
    assert not bad, "\n".join(bad)


def test_the_module_graph_has_no_loop():
    graph = {
        m: {t for t, inner, _, _ in found if t != "<third party>" and not inner and t != m and t in MODULES}
        for m, found in IMPORTS.items()
    }
    # A package's __init__ is imported by its submodules' import; 'a.b' -> 'a' edges are not loops.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import loop: " + " -> ".join([*stack[stack.index(t) :], t]))
            if t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_checks_see_what_they_guard(tmp_path):
    """The scan finds an upward and an in-function import when there is one (the rules cannot pass
    by finding nothing)."""
    path = tmp_path / "sample.py"
    path.write_text(
        "from hyper_sapiens_jax.jobs import finetune\n\n\ndef f():\n    import numpy as np\n"
        "    from hyper_sapiens_jax.data import codec\n"
    )
    found = _imports(path)
    assert ("hyper_sapiens_jax.jobs.finetune", False) in {(t, i) for t, i, _, _ in found}
    assert ("hyper_sapiens_jax.data.codec", True) in {(t, i) for t, i, _, _ in found}
    assert ("<third party>", True) in {(t, i) for t, i, _, _ in found}
    assert sum(len(found) for found in IMPORTS.values()) > 300  # the real tree was scanned
