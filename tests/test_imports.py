"""The package's import graph: one-way, with `ddoq._io` as a leaf, and the curated API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import ddoq

PACKAGE = Path(ddoq.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every ddoq module `path` imports, anywhere in the file (function-local ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from ddoq import export` imports the module ddoq.export
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t == "ddoq" or t.startswith("ddoq."))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the ddoq modules it imports (all imports, including function-local)."""
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_function_local_imports():
    # the check must be able to fail: a cycle hidden in a function is still found
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    tree = import_graph()
    assert "ddoq.labels" in tree["ddoq.cli"]  # cli imports labels inside a command


def test_no_import_cycle_in_ddoq():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_io_is_a_leaf():
    assert import_graph()["ddoq._io"] == set()


@pytest.mark.parametrize("name", ddoq.__all__)
def test_every_public_name_resolves(name):
    obj = getattr(ddoq, name)
    assert obj is not None
    assert getattr(importlib.import_module(obj.__module__), obj.__name__) is obj


def test_the_api():
    assert set(ddoq.__all__) >= {
        "CLVQ",
        "quantize_classes",
        "wasserstein2",
        "load_dataset",
        "load_prior",
        "DistillConfig",
        "distill",
        "TrainConfig",
        "fit",
        "load",
    }
    assert set(ddoq.__all__) <= set(dir(ddoq))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ddoq.nope  # noqa: B018


def test_importing_a_module_keeps_the_function_of_the_same_name():
    import ddoq.distill  # noqa: F401 - the module of the same name as the function

    assert callable(ddoq.distill) and not isinstance(ddoq.distill, type(ddoq))
    assert ddoq.distill.__module__ == "ddoq.distill"
