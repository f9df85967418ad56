"""The package's import graph: no cycles (lazy imports included) and lazy public subpackages.

Edges are the explicit imports between ``torchsparse_lite`` modules, read from
the source with ``ast`` — module level and inside functions alike, since a
cycle hidden behind a lazy import is still two layers that depend on each
other. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``;
those implicit parent edges are left out (every re-exporting ``__init__``
would otherwise close a harmless loop).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

PKG = "torchsparse_lite"


def _modules() -> dict[str, Path]:
    """Module name -> source file for every module of the package (``kernels/`` and ``datasets/`` too)."""
    out = {}
    for name in (PKG, f"{PKG}.kernels", f"{PKG}.datasets"):
        root = Path(importlib.import_module(name).__file__).parent
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    modules = _modules()
    assert len(modules) > 50
    cycle = _find_cycle(_edges(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_public_subpackages_load_lazily() -> None:
    code = (
        "import sys, torchsparse_lite as tsl\n"
        "assert 'torchsparse_lite.nn' not in sys.modules and 'torchsparse_lite.prune' not in sys.modules\n"
        "assert tsl.nn.Conv3d(2, 3, 3).kernel_volume == 27\n"
        "assert tsl.models.MinkUNet and tsl.prune and tsl.datasets and tsl.compat\n"
        "try:\n    tsl.no_such_thing\nexcept AttributeError as e:\n    assert 'no_such_thing' in str(e)\n"
        "else:\n    raise SystemExit('expected AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
