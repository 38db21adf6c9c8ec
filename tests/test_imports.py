"""effnet's imports run one way: no module imports, directly or through others, a module that imports it.

The graph is read from the source (the AST of every module under `src/effnet`), not from a running interpreter, so
it sees every `import effnet…` / `from effnet… import …` / relative import, wherever it stands.  An import of
`effnet.a.b` also imports the package `effnet.a` (its `__init__` runs first); `from effnet.a import b` is an edge to
the module `effnet.a.b` when `b` is one, else to the package `effnet.a`.  Imports under `if TYPE_CHECKING:` never
run and are left out.

Function-level imports count as well: a lazy import only postpones a cycle, it does not remove one.  Lazy imports
stay right for optional, heavy third-party packages (onnxruntime, openvino, optuna, scikit-image, ...), which are not
part of this graph.  There are no exceptions.

Last, every module is imported in a fresh interpreter, each in its own forked child, so a module that imports only
when another one happens to be imported first is found too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import effnet

PACKAGE_DIR = Path(effnet.__file__).parent

@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    module_level: bool


def _modules() -> dict[str, Path]:
    """Dotted name → file, for every module and package of effnet."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ("effnet", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _known(name: str) -> str | None:
    """`name`, or the nearest package or module above it that exists (an attribute of a module: the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _edges(module: str, path: Path) -> list[Edge]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: list[Edge] = []

    def add(target: str | None, node: ast.stmt, module_level: bool) -> None:
        if target is not None and target != module:
            edges.append(Edge(module, target, node.lineno, module_level))

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, module_level)
                continue
            inner = module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "effnet" or alias.name.startswith("effnet."):
                        add(_known(alias.name), child, module_level)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                if source == "effnet" or source.startswith("effnet."):
                    for alias in child.names:
                        submodule = f"{source}.{alias.name}"
                        add(submodule if submodule in MODULES else _known(source), child, module_level)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return edges


def _with_parents(edges: list[Edge]) -> list[Edge]:
    """Importing `effnet.a.b` first runs the package `effnet.a`; the packages above the importer are already
    running, so they add nothing."""
    out = list(edges)
    for e in edges:
        parts = e.target.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in MODULES and not (e.source + ".").startswith(parent + "."):
                out.append(Edge(e.source, parent, e.line, e.module_level))
    return out


GRAPH = _with_parents([e for module, path in MODULES.items() for e in _edges(module, path)])


def _find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """Some cycle of `edges` as the edges along it, or None when the graph has none."""
    successors: dict[str, list[Edge]] = {}
    for e in edges:
        successors.setdefault(e.source, []).append(e)
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[Edge] = []

    def visit(module: str) -> list[Edge] | None:
        state[module] = "open"
        for e in successors.get(module, ()):
            if state.get(e.target) == "open":  # back to a module on the path: the cycle is the path from it
                start = next(i for i, p in enumerate(path) if p.source == e.target)
                return path[start:] + [e]
            if e.target not in state:
                path.append(e)
                found = visit(e.target)
                if found:
                    return found
                path.pop()
        state[module] = "done"
        return None

    for module in sorted(successors):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def _describe(cycle: list[Edge]) -> str:
    steps = [f"{e.source} (line {e.line}{'' if e.module_level else ', in a function'})" for e in cycle]
    return " → ".join([*steps, cycle[0].source])


def _cycle_among(edges: list[Edge]) -> str | None:
    cycle = _find_cycle(edges)
    return None if cycle is None else _describe(cycle)


def test_the_graph_sees_the_package():
    """A sanity check on the reader: known edges of each kind are found."""
    pairs = {(e.source, e.target, e.module_level) for e in GRAPH}
    assert ("effnet.registry", "effnet.preprocessing", True) in pairs  # from … import …
    assert ("effnet.registry", "effnet.weights", True) in pairs  # a package's __init__
    assert ("effnet.weights.convert", "effnet.weights.keras_h5", True) in pairs
    assert ("effnet.data.calibration", "effnet.data.photos", True) in pairs
    assert any(not module_level for _, _, module_level in pairs)


def test_no_import_cycle_among_module_level_imports():
    cycle = _cycle_among([e for e in GRAPH if e.module_level])
    assert cycle is None, f"module-level import cycle: {cycle}"


def test_no_import_cycle_counting_function_level_imports():
    cycle = _cycle_among(GRAPH)
    assert cycle is None, (f"import cycle: {cycle}; import in one direction only (move what both need into a "
                           "module below both) rather than hiding the cycle in a function")


def test_former_homes_re_export_the_same_objects():
    """Moved names stay importable from where they were, as the very same objects."""
    import effnet.data.transforms
    import effnet.lossy
    import effnet.predict
    import effnet.registry
    from effnet import agreement, data, preprocessing, transforms
    from effnet.data import calibration, images, photos

    for name in ("calibration_images", "photo_batch"):
        assert getattr(effnet.lossy, name) is getattr(calibration, name)
    for name in ("PHOTO_NAMES", "PhotosUnavailable", "photos"):
        assert getattr(effnet.lossy, name) is getattr(photos, name)
    for name in ("Agreement", "agreement", "measure_agreement"):
        assert getattr(effnet.lossy, name) is getattr(agreement, name)
    for name in ("ModelConfig", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD",
                 "default_crop_fraction"):
        assert getattr(effnet.registry, name) is getattr(preprocessing, name)
    assert effnet.ModelConfig is preprocessing.ModelConfig and transforms.resize_size is preprocessing.resize_size
    assert effnet.data.transforms.eval_transform is data.eval_transform is transforms.eval_transform
    assert effnet.predict.ImageError is data.UnreadableImage is images.UnreadableImage
    assert effnet.predict.Skipped is data.Skipped is images.Skipped
    assert effnet.predict.load_image is data.load_image is images.load_image


# `python -m effnet` runs the command line when imported; it is a script, not a module to import.
_SCRIPTS = {"effnet.__main__"}

_IMPORT_EACH = textwrap.dedent("""
    import importlib, os, sys, traceback
    import numpy, PIL.Image, torch, torchvision  # third-party, shared by the children: only effnet is fresh
    failed = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed.append(name)
    print("FAILED " + " ".join(failed) if failed else "OK")
""")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_in_a_fresh_interpreter():
    names = [m for m in MODULES if m not in _SCRIPTS]
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "OK", done.stdout[-2000:] + done.stderr[-4000:]
