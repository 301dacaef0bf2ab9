"""The package's layers import in one direction only (README, "Layout").

Each layer may import itself and the layers before it in LAYERS, never one
after it: the binding knows nothing of devices, loaders nothing of the x86
entry code, devices nothing of KVM. Imports made only for type checking
(`if TYPE_CHECKING:`) are exempt: they cost nothing at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pyvmm"

# In order: a module may import from its own layer and from earlier ones.
LAYERS = [
    (
        "pyvmm._kvm",
        "pyvmm._kvm_build",
        "pyvmm.errors",
        "pyvmm.closing",
        "pyvmm.shipped",
        "pyvmm.quiet_threads",
        "pyvmm.startup_gc",
    ),
    ("pyvmm.kvm",),
    ("pyvmm.memory",),
    ("pyvmm.devices",),
    # Below the loaders: the multiboot memory map lists the firmware's ranges.
    ("pyvmm.firmware",),
    ("pyvmm.loaders",),
    ("pyvmm.arch",),
    ("pyvmm.console",),
    ("pyvmm.observe",),
    ("pyvmm.machine",),
    ("pyvmm.gdb",),
    ("pyvmm.demos",),
    ("pyvmm.cli", "pyvmm.__main__"),
]


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every pyvmm import outside `if TYPE_CHECKING:` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pyvmm":
                found.extend((node.lineno, f"pyvmm.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [(line, name) for line, name in found if name.split(".")[0] == "pyvmm"]


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path) -> None:
    own = layer_of(module_name(path))
    if own is None:  # pyvmm/__init__.py: the public API re-exports every layer
        return
    tree = ast.parse(path.read_text(), str(path))
    wrong = [
        f"line {line}: {name}"
        for line, name in runtime_imports(tree)
        if (layer_of(name) or 0) > own
    ]
    assert not wrong, f"{module_name(path)} imports a later layer: {wrong}"


def test_every_module_has_a_layer() -> None:
    unplaced = [
        module_name(path)
        for path in SOURCES
        if path.name != "__init__.py" or path.parent != PACKAGE
        if layer_of(module_name(path)) is None
    ]
    assert unplaced == []
