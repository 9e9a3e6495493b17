"""The package's layers import only downward (docs/architecture.md)."""

import ast
import pathlib

import metaopt

# Lower numbers first; a module may import from its own layer and the ones below.
LAYERS = {
    "core": 0,
    "tasks": 1,
    "optimizers": 1,
    "io": 2,
    "learners": 3,
    "evaluation": 4,
    "estimators": 5,
    "train": 6,
    "diagnostics": 7,
    "experiments": 8,
    "cli": 9,
}
ROOT = pathlib.Path(metaopt.__file__).parent


def imported_layers(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "metaopt" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def test_every_module_belongs_to_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


def test_no_module_imports_from_a_layer_above_it():
    violations = []
    for layer, rank in LAYERS.items():
        for path in (ROOT / layer).rglob("*.py"):
            for other in imported_layers(path):
                if LAYERS[other] > rank:
                    violations.append(f"{path.relative_to(ROOT)} imports metaopt.{other}")
    assert violations == []
