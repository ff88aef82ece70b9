"""The package's import graph follows the paper's data flow: a layer imports only layers below
it, there is no cycle, and no private name crosses a component boundary.

Read from the source (AST), so lazy imports inside functions and ``TYPE_CHECKING`` imports count
too: a dependency hidden in a function body is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "langchain_complm"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "errors text",
        "plan",
        "experts prompts events batching concurrency",
        "decompose",
        "route",
        "execute",
        "aggregate",
        "pipeline",
        "chat_models",
        "models",
        "config",
        "evaluation",
        "benchmarks training",
        "cli server",
        "__main__",
    )
)
"""Components from the bottom up. A component may import itself and any component of a lower
layer; components that share a layer may not import each other."""


def _layer(component: str) -> int:
    for index, layer in enumerate(LAYERS):
        if component in layer:
            return index
    raise AssertionError(f"{PACKAGE}.{component} is in no layer: add it to LAYERS")


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, root: Path = ROOT) -> list[tuple[str, tuple[str, ...], int]]:
    """(imported module, imported names, line) for every import of the package in ``path``."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, (), node.lineno) for a in node.names if a.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([target] if target else [])])
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.append((target, tuple(a.name for a in node.names), node.lineno))
    return found


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "__pycache__" not in p.parts}


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names, _ in _imports(path):
            for name in names or ("",):
                candidate = f"{target}.{name}" if name else target
                edges[module].add(candidate if candidate in MODULES else target)
    return edges


def test_every_component_has_a_layer() -> None:
    for module in MODULES:
        if module != PACKAGE:
            _layer(_component(module))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != PACKAGE))
def test_no_import_of_a_higher_layer(module: str) -> None:
    own = _component(module)
    for target, _, line in _imports(MODULES[module]):
        assert target != PACKAGE, (
            f"{module}:{line} imports the top-level package; import the defining module"
        )
        other = _component(target)
        if other == own:
            continue
        assert _layer(other) < _layer(own), (
            f"{module}:{line} imports {target}: layer of {other!r} is not below {own!r}"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_component(module: str) -> None:
    own = _component(module)
    for target, names, line in _imports(MODULES[module]):
        if _component(target) == own:
            continue
        private_module = [p for p in target.split(".")[1:] if p.startswith("_")]
        assert not private_module, f"{module}:{line} imports private module {target}"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module}:{line} imports private {private} from {target}"


def test_no_import_cycle() -> None:
    edges = _edges()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if target not in MODULES:
                continue
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def test_the_walker_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """So that the tests above can fail: every kind of import is found and resolved."""
    probe = tmp_path / PACKAGE / "plan.py"
    probe.parent.mkdir()
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from langchain_complm.models import pool\n"
        "def f():\n    from .execute import _executor\n"
    )
    assert _imports(probe, tmp_path / PACKAGE) == [
        ("langchain_complm.models", ("pool",), 3),
        ("langchain_complm.execute", ("_executor",), 5),
    ]


def component_graph() -> dict[str, set[str]]:
    """Which component imports which, transitively reduced (an edge implied by a longer path
    is left out), for the architecture doc."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        own = _component(module)
        if own in ("", "__main__"):
            continue
        graph.setdefault(own, set())
        for target, _, _ in _imports(path):
            if _component(target) not in ("", own):
                graph[own].add(_component(target))

    def reachable(start: str, skip: str) -> set[str]:
        seen: set[str] = set()
        todo = [n for n in graph[start] if n != skip]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return seen

    return {c: {t for t in deps if t not in reachable(c, t)} for c, deps in graph.items()}


def mermaid() -> str:
    """The component graph as the Mermaid block docs/architecture.md shows."""
    lines = ["```mermaid", "flowchart BT"]
    graph = component_graph()
    for component in sorted(graph, key=lambda c: (_layer(c), c)):
        for target in sorted(graph[component], key=lambda c: (_layer(c), c)):
            lines.append(f"    {component} --> {target}")
    return "\n".join([*lines, "```"])


def test_architecture_doc_shows_the_real_import_graph() -> None:
    doc = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert mermaid() in doc, (
        "docs/architecture.md's import graph is stale; regenerate it with "
        "`python unit_tests/test_layers.py` and paste the block"
    )


if __name__ == "__main__":
    print(mermaid())
