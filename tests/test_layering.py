"""Imports only run downward: errors, msign <- manifolds <- rules <- functional/optim <- experiments/integrations <-
cli."""

import ast
from pathlib import Path

import modman

ROOT = Path(modman.__file__).parent
LAYER = {
    "errors": 0,
    "version": 0,
    "msign": 0,
    "manifolds": 1,
    "rules": 2,
    "functional": 3,
    "optim": 3,
    "modular": 4,
    "experiments": 5,
    "integrations": 5,
    "cli": 6,
}


def layer_of(module: str) -> int:
    return LAYER[module.split(".")[0]]


def imported_modules(path: Path, package: str):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            yield from names
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modman."):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("modman."))


def test_no_import_runs_upward():
    violations = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts
        if parts in (("__init__",), ("__main__",)):
            continue  # the package root re-exports; __main__ dispatches to the CLI
        package = ".".join(("modman",) + (parts if parts[-1] == "__init__" else parts[:-1])).removesuffix(".__init__")
        own = layer_of(parts[0])
        for target in imported_modules(path, package):
            inner = target.removeprefix("modman").lstrip(".")
            if inner and layer_of(inner) > own:
                violations.append(f"{rel} imports {target}")
    assert not violations, violations


def test_layering_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..optim import Muon\n")
    assert list(imported_modules(bad, "modman.manifolds")) == ["modman.optim"]
