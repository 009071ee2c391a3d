"""The import rules of ``src/movq``, stated once and checked on the source (module-level and
function-level imports alike; ``if TYPE_CHECKING:`` blocks excluded).

A *room* is a top-level module or subpackage of ``movq`` (``codec``, ``hub``, ``metrics``, ...); the
face ``movq/__init__.py`` is the room ``__init__``. The apps (``bench``, ``tokenize``, ``train``)
stand side by side on the core, the generators (``t2i``, ``diffusion``) on top of them.
"""

from __future__ import annotations

import ast
import functools
import sys
import warnings
from pathlib import Path

import pytest

import movq

PACKAGE = Path(movq.__file__).parent
APPS = {"bench", "tokenize", "train"}
GENERATORS = {"t2i", "diffusion"}
ABOVE_CORE = {"__init__", "data", "perceptual"}  # the face and the deprecated alias modules
MAX_FLOORS = 13


def module_name(path: Path) -> str:
    parts = ("movq", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an ``if TYPE_CHECKING:`` block."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in {getattr(test, "id", None), getattr(test, "attr", None)}:
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    return skipped


@functools.cache
def imports_of(module: str) -> frozenset[str]:
    """The movq modules ``module`` imports (``from movq.x import y`` is ``movq.x.y`` when that is a module)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[: len(module.split(".")) - node.level + (MODULES[module].name == "__init__.py")]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return frozenset(m for m in found if m in MODULES and m != module)


def room_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {room(m): set() for m in MODULES}
    for module in MODULES:
        edges[room(module)] |= {room(t) for t in imports_of(module)} - {room(module)}
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    cycle = find_cycle({m: set(imports_of(m)) for m in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_rooms():
    cycle = find_cycle(room_edges())
    assert cycle is None, "import cycle between rooms: " + " -> ".join(cycle or [])


def test_the_core_imports_no_app_and_no_generator():
    core = {r for r in room_edges()} - APPS - GENERATORS - ABOVE_CORE
    wrong = {(r, t) for r, targets in room_edges().items() if r in core for t in targets if t in APPS | GENERATORS | ABOVE_CORE}
    assert not wrong, f"core rooms importing apps, generators or the face: {sorted(wrong)}"


def test_apps_stand_side_by_side():
    wrong = {(r, t) for r, targets in room_edges().items() if r in APPS for t in targets if t in (APPS - {r}) | GENERATORS}
    assert not wrong, f"apps importing other apps or a generator: {sorted(wrong)}"


def test_generators_import_no_other_generator():
    wrong = {(r, t) for r, targets in room_edges().items() if r in GENERATORS for t in targets if t in GENERATORS - {r}}
    assert not wrong, f"generators importing each other: {sorted(wrong)}"


def test_floors():
    edges = room_edges()

    @functools.cache
    def floor(r: str) -> int:
        return 1 + max((floor(t) for t in edges[r]), default=0)

    floors = {r: floor(r) for r in edges}
    assert max(floors.values()) <= MAX_FLOORS, sorted(floors.items(), key=lambda item: item[1])


def test_the_rules_see_lazy_imports_and_skip_type_checking():
    # function-level imports count (train/trainer imports LPIPS inside a method); TYPE_CHECKING ones do not
    assert "movq.metrics.lpips" in imports_of("movq.train.trainer")
    assert "movq.config" not in imports_of("movq.modules.encoder")  # only under TYPE_CHECKING


def test_the_face_exports_the_user_api():
    assert set(movq.__all__) == {"load", "Codec", "CodecConfig", "CodecOutput", "get_preset", "list_models", "PRESETS",
                                 "DEFAULT_MODEL", "__version__"}
    for name in movq.__all__:
        assert getattr(movq, name) is not None


@pytest.mark.parametrize("name, home", [("Encoder", "movq.modules"), ("Decoder", "movq.modules"),
                                        ("SpatialNorm", "movq.modules"), ("Quantizer", "movq.quantizers"),
                                        ("QuantizerOutput", "movq.quantizers"), ("DVAE", "movq.dvae"),
                                        ("DVAEConfig", "movq.dvae")])
def test_internals_live_one_level_down_and_warn_on_the_face(name, home):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"import it from {home}"):
        value = getattr(movq, name)
    assert value is getattr(importlib.import_module(home), name)


def test_moved_names_keep_a_deprecated_alias():
    import importlib

    for alias, new_home, names in [("movq.data", "movq.tokenize.dataset", ("TokenDataset", "collate_items")),
                                   ("movq.perceptual", "movq.metrics.lpips", ("LPIPS", "load_lpips"))]:
        sys.modules.pop(alias, None)
        with pytest.warns(DeprecationWarning, match=new_home):
            module = importlib.import_module(alias)
        assert all(getattr(module, n) is getattr(importlib.import_module(new_home), n) for n in names)
    from movq.train import config

    with pytest.warns(DeprecationWarning, match="CodecTrainConfig"):
        assert config.TrainConfig is config.CodecTrainConfig
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from movq.train.config import CodecTrainConfig  # noqa: F401  the new name does not warn

