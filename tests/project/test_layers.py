"""The package's import graph, read from the source: no cycle between modules, and no import that
runs up a layer (docs/architecture.md draws these layers). Every import counts, those inside
functions and under TYPE_CHECKING too: a lazy import still ties the two modules together.

A new top-level module or package must be placed in `LAYERS` before this passes: that is the
moment to decide what it may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "bgremover"

# Top to bottom; a unit (a top-level module or subpackage) may import its own layer and those below.
LAYERS = [
    ("command line", {"cli", "arguments", "remove_command", "model_commands"}),
    ("scale-out on Ray", {"scale"}),
    ("web server", {"web"}),
    ("other front ends", {"runs", "video", "eval", "bench", "bench_e2e", "bench_cold"}),
    ("service", {"service"}),
    ("pipeline and its results", {"pipeline", "results"}),
    ("engines", {"engines", "synthetic"}),
    ("loading, planning, estimates", {"hub", "checkpoints", "npm", "planning", "estimates"}),
    ("zoo, images, ONNX import", {"zoo", "imaging", "importing"}),
    ("families and settings", {"families", "settings"}),
    ("ground", {"nets", "choices", "errors", "healthcheck", "version"}),
]
LEVEL = {unit: len(LAYERS) - index for index, (_, units) in enumerate(LAYERS) for unit in units}
# The package's face (bgremover/__init__.py) stands above every layer: it hands on `__version__`
# and, lazily, the pipeline's `Remover`; no module of the package imports it.
FACE = "bgremover"
LEVEL[""] = len(LAYERS) + 1


def _module_name(path: Path) -> str:
    parts = ["bgremover", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(MODULES)
            # `from . import settings` ties to the module, not to the package that holds it
            found |= submodules | ({module} if len(submodules) < len(node.names) else set())
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_module_has_a_layer() -> None:
    units = {_unit(module) for module in MODULES} - {""}  # "": the package's face, which hands names on
    assert units <= set(LEVEL), f"place {sorted(units - set(LEVEL))} in LAYERS"
    assert not [module for module, imports in GRAPH.items() if FACE in imports], "import from below, not the face"


def test_no_import_runs_up_a_layer() -> None:
    upward = [
        f"{module} -> {imported}"
        for module, imports in GRAPH.items()
        if module != FACE
        for imported in imports
        if LEVEL[_unit(imported)] > LEVEL[_unit(module)]
    ]
    assert not upward, upward


def test_the_package_face_reaches_below_every_front_end() -> None:
    assert GRAPH[FACE] and all(LEVEL[_unit(module)] < LEVEL["service"] for module in GRAPH[FACE])


def test_no_modules_import_each_other_in_a_circle() -> None:
    """Depth-first search over the module graph; a back edge closes a circle."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(GRAPH[module]):
            if state.get(imported) == "open":
                return [*path[path.index(imported) :], imported] if imported in path else [module, imported]
            if imported not in state and (circle := visit(imported, [*path, imported])):
                return circle
        state[module] = "done"
        return None

    for module in MODULES:
        if module not in state:
            circle = visit(module, [module])
            assert circle is None, " -> ".join(circle)


def test_the_check_sees_imports_inside_functions() -> None:
    """The reader is not blind: cli.py imports the web app only inside `run_serve`."""
    assert "bgremover.web.app" in GRAPH["bgremover.cli"] and "bgremover.scale.serve" in GRAPH["bgremover.cli"]
