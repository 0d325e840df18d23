"""The house's import rules, read from the source: every fernb module sits in a layer, imports only point down (or
across, within a layer), no two modules import each other even indirectly, and fernb's own imports sit at module
level where a reader sees them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fernb"

# Lowest first. A module may import modules of its own layer or of the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fernb._version", "fernb.errors", "fernb.registry", "fernb.labels", "fernb.reference"),
    ("fernb.data",),
    ("fernb.models",),
    ("fernb.losses",),
    ("fernb.engine",),
    ("fernb.explore",),
    ("fernb.viz",),
    ("fernb.widgets",),
    ("fernb.notebooks", "fernb.train", "fernb.__main__", "fernb"),
)


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest prefix that names ``module`` or a package above it."""
    best, length = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    return best


def _lazy_attribute_hook(node: ast.AST, tree: ast.Module) -> bool:
    """A module-level ``__getattr__`` (PEP 562), the one place a package may import lazily."""
    return isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and node in tree.body


def _type_checking_block(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for annotations only, never executed."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def import_edges(package: Path = PACKAGE) -> list[tuple[str, str, int, bool]]:
    """``(importer, imported, line, inside_a_function)`` for every import of a fernb module, at any depth."""
    modules = _modules(package)
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        in_function: dict[int, bool] = {}
        type_only = {id(inner) for node in ast.walk(tree) if _type_checking_block(node) for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _lazy_attribute_hook(node, tree):
                for inner in ast.walk(node):
                    in_function[id(inner)] = True
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                    if node.level
                    else node.module or ""
                )
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            if id(node) in type_only:
                continue
            for target in targets:
                if target != "fernb" and not target.startswith("fernb."):
                    continue
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    edges.append((name, target, node.lineno, in_function.get(id(node), False)))
    return edges


def test_every_module_has_a_layer():
    assert [m for m in _modules() if layer_of(m) < 0] == []


def test_imports_never_point_up():
    upward = [
        f"{a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)}), line {line}"
        for a, b, line, _ in import_edges()
        if layer_of(b) > layer_of(a)
    ]
    assert upward == []


def find_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """Each import cycle met by a depth-first walk, as the chain of modules that closes it."""
    graph: dict[str, set[str]] = {m: set() for m in _modules(package)}
    for a, b, _, _ in import_edges(package):
        graph[a].add(b)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles():
    assert find_cycles() == []


def test_fernb_imports_sit_at_module_level():
    hidden = [f"{a} imports {b} inside a function, line {line}" for a, b, line, inside in import_edges() if inside]
    assert hidden == []


def _fake_package(root: Path, probe: str) -> Path:
    for rel in ("__init__.py", "labels.py", "models/__init__.py", "data/__init__.py"):
        (root / "fernb" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "fernb" / rel).write_text("")
    (root / "fernb" / "data" / "probe.py").write_text(probe)
    return root / "fernb"


@pytest.mark.parametrize(
    "probe, edge",
    [
        ("from ..labels import get_label_space\n", ("fernb.labels", False)),
        ("import fernb.labels\n", ("fernb.labels", False)),
        ("from .. import labels\n", ("fernb.labels", False)),
        ("def f():\n    from ..models import create_model\n", ("fernb.models", True)),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..models import M\nfrom .. import labels\n",
            ("fernb.labels", False),
        ),
    ],
)
def test_the_walker_sees_each_kind_of_import(tmp_path, probe, edge):
    package = _fake_package(tmp_path, probe)
    assert [(b, inside) for a, b, _, inside in import_edges(package) if a == "fernb.data.probe"] == [edge]


def test_the_layers_flag_an_upward_import(tmp_path):
    package = _fake_package(tmp_path, "from ..models import create_model\n")
    assert [(a, b) for a, b, _, _ in import_edges(package) if layer_of(b) > layer_of(a)] == [
        ("fernb.data.probe", "fernb.models")
    ]


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = _fake_package(tmp_path, "from . import other\n")
    (package / "data" / "other.py").write_text("def f():\n    from .probe import g\n")
    assert find_cycles(package) == [["fernb.data.other", "fernb.data.probe", "fernb.data.other"]]
