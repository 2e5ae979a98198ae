"""The package's import graph and folders: one-way, `ddoq._io` a leaf, and the curated API.

The pipeline (data, priors, encode, quantize, transport, distillation, teachers, labels,
train, export) is what a distillation runs; `ddoq.app` (the app's view models), `ddoq.ui`
(the Streamlit app) and `ddoq.cli` sit on top of it and no pipeline module imports them,
nor Streamlit. Training a teacher or a prior (the ``training`` modules) is for the command
line and the app only.
"""

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
    """ddoq's modules by name; the app's pages (ddoq/ui/app_pages/) are scripts that
    Streamlit runs by path, not modules."""
    pages = PACKAGE / "ui" / "app_pages"
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if pages not in p.parents}


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
    assert "ddoq.ui" in tree["ddoq.cli"]  # cli imports the app's launcher inside a command


def test_no_import_cycle_in_ddoq():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_io_is_a_leaf():
    assert import_graph()["ddoq._io"] == set()


#: the layers above the pipeline: nothing in the pipeline imports them
TOP = ("ddoq.cli", "ddoq.app", "ddoq.ui")


def _on_top(name: str) -> bool:
    return name == "ddoq" or any(name == t or name.startswith(t + ".") for t in TOP)


def pipeline_modules() -> list[str]:
    """The modules a distillation runs: all of ddoq but its top layers and `ddoq` itself."""
    return [n for n in _modules() if not _on_top(n)]


def _imports_from_above(graph: dict[str, set[str]], pipeline: list[str]) -> dict[str, set[str]]:
    """Pipeline module -> the top-layer modules it imports (should be empty)."""
    return {n: {m for m in graph[n] if _on_top(m) and m != "ddoq"} for n in pipeline}


def _third_party(path: Path) -> set[str]:
    """Top-level names of every non-ddoq package `path` imports (function-local ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"ddoq"}


def test_the_layer_check_can_fail():
    graph = {"ddoq.labels": {"ddoq.app.jobs"}, "ddoq.app.jobs": {"ddoq.labels"}}
    assert _imports_from_above(graph, ["ddoq.labels"]) == {"ddoq.labels": {"ddoq.app.jobs"}}
    assert "ddoq.app.jobs" not in pipeline_modules()
    assert {"ddoq.data.datasets", "ddoq.distillation.stages"} <= set(pipeline_modules())


def test_no_pipeline_module_imports_the_app_the_build_or_the_cli():
    graph = import_graph()
    bad = {n: m for n, m in _imports_from_above(graph, pipeline_modules()).items() if m}
    assert not bad, f"pipeline modules importing a top layer: {bad}"


#: modules that train what the pipeline uses (a teacher, a prior)
TRAINING = ("ddoq.teachers.training", "ddoq.priors.training")


def test_only_the_cli_and_the_app_import_training():
    graph = import_graph()
    assert "ddoq.teachers.training" in graph
    users = {n for n, deps in graph.items() if deps & set(TRAINING)} - set(TRAINING)
    assert users <= {"ddoq.cli", "ddoq.app.jobs"}
    assert "ddoq.cli" in users  # `ddoq train-prior` / `ddoq train-teacher`


def test_no_pipeline_module_imports_streamlit():
    modules = _modules()
    assert "streamlit" in _third_party(PACKAGE / "ui" / "app_pages" / "explore.py")
    bad = [n for n in pipeline_modules() if "streamlit" in _third_party(modules[n])]
    assert not bad
    # the app's view models are Streamlit-free too (ddoq.ui, the app, is the Streamlit code)
    ui = [n for n in modules if n == "ddoq.ui" or n.startswith("ddoq.ui.")]
    assert ui and not [
        n for n in modules if n not in ui and "streamlit" in _third_party(modules[n])
    ]


def test_the_run_store_imports_no_engine():
    graph = import_graph()
    engines = {"ddoq.distillation.ray_engine", "ddoq.distillation.folder"}
    assert not graph["ddoq.distillation.store"] & engines
    assert "ddoq.distillation.store" in graph["ddoq.distillation.ray_engine"]


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


def test_no_module_shadows_a_public_name():
    # `ddoq.distill` is a function; a module `ddoq/distill.py` or folder `ddoq/distill/` would
    # rebind the package attribute on import. The code of Algorithm 2 is `ddoq/distillation/`.
    clashes = {n for n in _modules() if set(n.split(".")[1:]) & set(ddoq.__all__)}
    assert not clashes
    for module in ("config", "stages", "local", "folder"):
        importlib.import_module(f"ddoq.distillation.{module}")

    assert callable(ddoq.distill) and not isinstance(ddoq.distill, type(ddoq))


def test_figures_and_charts_only_draw():
    """Advancing CLVQ, placing centroids and measuring W2 happen in `ddoq.app.live` (its
    `tick_on_map` / `tick_playground`); the Plotly figures and the Vega-Lite charts that
    draw a tick call none of them themselves."""
    for name in ("figures", "live_charts"):
        source = (PACKAGE / "app" / f"{name}.py").read_text()
        for call in (".tick(", "place_centroids(", "w2_weighted_vs_uniform("):
            assert call not in source, (name, call)
    assert "voronoi_grid(" not in (PACKAGE / "app" / "figures.py").read_text()
    graph = import_graph()
    assert "ddoq.app.live" in graph["ddoq.app.live_charts"]


#: the longest function ddoq/cli.py may define, parser builders aside
CLI_MAX_LINES = 40


def _is_parser_builder(name: str) -> bool:
    """`build_parser` and the `_add_*` functions that register a sub-command's options."""
    return name == "build_parser" or name.startswith("_add_")


def _long_functions(source: str, limit: int) -> dict[str, int]:
    """Function name -> its length in lines, for every function longer than `limit`."""
    return {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit
    }


def test_the_cli_is_thin():
    """cli.py parses, calls the library and prints: no function over 40 lines but the
    parser builders (the logic lives in library functions such as
    `ddoq.train.metrics.rank_runs` and `ddoq.export.derive`)."""
    body = "\n".join(f"    x = {i}" for i in range(CLI_MAX_LINES))
    assert _long_functions(f"def f():\n{body}\n", CLI_MAX_LINES) == {"f": CLI_MAX_LINES + 1}
    long = _long_functions((PACKAGE / "cli.py").read_text(), CLI_MAX_LINES)
    assert {n for n in long if _is_parser_builder(n)}, "the rule must still see the builders"
    too_long = {n: lines for n, lines in long.items() if not _is_parser_builder(n)}
    assert not too_long, f"cli.py functions over {CLI_MAX_LINES} lines: {too_long}"
