"""The package layering holds: ``jicd`` ← ``data_pipeline`` ← ``trainer`` ← the scripts of
``launch/`` and ``benchmarks/``, and there is no import cycle anywhere.

Every import statement is read with :mod:`ast` (module level, inside functions and under
``TYPE_CHECKING`` alike), so a lazy import cannot hide an upward dependency or a cycle. A script
that imports a sibling by its bare name (``from gpu_check import …`` after a ``sys.path``
edit) counts as importing that sibling.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jicd", "data_pipeline", "trainer", "launch", "benchmarks")
# What each package may import (besides itself).
LIBRARY = {"jicd", "data_pipeline", "trainer"}
ALLOWED = {
    "jicd": set(),
    "data_pipeline": {"jicd"},
    "trainer": {"jicd", "data_pipeline"},
    "launch": LIBRARY,
    "benchmarks": LIBRARY,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported by ``path`` (``from a import b`` → ``a.b`` if a module; a bare
    name of a sibling script → that sibling)."""
    folder = path.parent.relative_to(ROOT).parts if path.is_relative_to(ROOT) else ()
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            sibling = ".".join((*folder, name))
            targets.update(n for n in (name, sibling) if n in modules)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def test_no_upward_imports() -> None:
    upward = [
        f"{src} imports {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if dst.split(".")[0] != src.split(".")[0]
        and dst.split(".")[0] not in ALLOWED[src.split(".")[0]]
    ]
    assert not upward, upward


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, [" -> ".join(c) for c in cycles]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from jicd.models import presets\n", {"jicd.models.presets"}),
        ("def f():\n    from trainer import loop\n", {"trainer.loop"}),
        ("import data_pipeline.shards\n", {"data_pipeline.shards"}),
    ],
)
def test_import_reader_sees_every_form(tmp_path: Path, source: str, expected: set[str]) -> None:
    # The checker itself must see lazy and submodule imports, or the two tests above prove nothing.
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _imports(path, _modules()) == expected


def test_a_bare_import_of_a_sibling_script_is_seen(tmp_path: Path, monkeypatch) -> None:
    # launch/gpu_check*.py once imported each other this way, in a circle held by sys.path edits.
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    (tmp_path / "launch").mkdir()
    probe = tmp_path / "launch" / "probe.py"
    probe.write_text("from sibling import Context\n")
    assert _imports(probe, {"launch.sibling": probe}) == {"launch.sibling"}
