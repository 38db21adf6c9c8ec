"""effnet's imports run one way: no module imports, directly or through others, a module that imports it.

The graph is read from the source (the AST of every module under `src/effnet`), not from a running interpreter, so
it sees every `import effnet…` / `from effnet… import …` / relative import, wherever it stands.  An import of
`effnet.a.b` also imports the package `effnet.a` (its `__init__` runs first); `from effnet.a import b` is an edge to
the module `effnet.a.b` when `b` is one, else to the package `effnet.a`.

Function-level imports count as well: a lazy import only postpones a cycle, it does not remove one.  So do imports
under `if TYPE_CHECKING:`: they never run, but they say which module the other one is written against, and two
modules of one package that each name the other's types are one module split in two, not two layers.  Lazy imports
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
    type_only: bool = False  # under `if TYPE_CHECKING:`


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


def _edges(module: str, path: Path, source: str | None = None) -> list[Edge]:
    """The effnet imports of `module` (read from `path`, or from `source` when given)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: list[Edge] = []

    def add(target: str | None, node: ast.stmt, module_level: bool, type_only: bool) -> None:
        if target is not None and target != module:
            edges.append(Edge(module, target, node.lineno, module_level, type_only))

    def statement(node: ast.AST, module_level: bool, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                statement(child, module_level, True)
            for child in node.orelse:
                statement(child, module_level, type_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "effnet" or alias.name.startswith("effnet."):
                    add(_known(alias.name), node, module_level, type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin == "effnet" or origin.startswith("effnet."):
                for alias in node.names:
                    submodule = f"{origin}.{alias.name}"
                    add(submodule if submodule in MODULES else _known(origin), node, module_level, type_only)
        inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            statement(child, inner, type_only)

    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, str(path))
    for child in ast.iter_child_nodes(tree):
        statement(child, True, False)
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
                out.append(Edge(e.source, parent, e.line, e.module_level, e.type_only))
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
    steps = [f"{e.source} (line {e.line}{'' if e.module_level else ', in a function'}"
             f"{', under TYPE_CHECKING' if e.type_only else ''})" for e in cycle]
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


def test_the_graph_sees_type_only_imports():
    """An import under `if TYPE_CHECKING:` is an edge marked type-only; the `else:` branch runs and is not."""
    path = PACKAGE_DIR / "bench" / "ceiling.py"
    source = textwrap.dedent("""
        from typing import TYPE_CHECKING
        import effnet.cpu
        if TYPE_CHECKING:
            from effnet.bench.machine import Machine
        else:
            from effnet.files import cache_dir
        def later():
            from effnet.bench import timing
    """)
    found = {(e.target, e.module_level, e.type_only) for e in _edges("effnet.bench.ceiling", path, source)}
    assert found == {("effnet.cpu", True, False), ("effnet.bench.machine", True, True),
                     ("effnet.files", True, False), ("effnet.bench.timing", False, False)}


def test_a_cycle_inside_a_package_is_found_also_when_type_only():
    """Two modules of one package that name each other, one of them only for its types, are a cycle."""
    path = PACKAGE_DIR / "bench" / "ceiling.py"
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from effnet.bench.machine import Machine\n"
    back = [e for e in GRAPH if e.source == "effnet.bench.machine" and e.target == "effnet.bench.ceiling"]
    assert back, "effnet.bench.machine no longer imports effnet.bench.ceiling: pick another pair for this test"
    edges = [e for e in GRAPH if e.source != "effnet.bench.ceiling"] + _edges("effnet.bench.ceiling", path, source)
    cycle = _cycle_among(edges)
    assert cycle is not None and "effnet.bench.ceiling" in cycle and "effnet.bench.machine" in cycle
    assert "under TYPE_CHECKING" in cycle


def test_no_import_cycle_among_module_level_imports():
    cycle = _cycle_among([e for e in GRAPH if e.module_level and not e.type_only])
    assert cycle is None, f"module-level import cycle: {cycle}"


def test_no_import_cycle_counting_function_level_imports():
    cycle = _cycle_among([e for e in GRAPH if not e.type_only])
    assert cycle is None, (f"import cycle: {cycle}; import in one direction only (move what both need into a "
                           "module below both) rather than hiding the cycle in a function")


def test_no_import_cycle_counting_type_only_imports():
    cycle = _cycle_among(GRAPH)
    assert cycle is None, (f"import cycle: {cycle}; a type one module needs from another belongs below both "
                           "(or in the module that uses it), not behind `if TYPE_CHECKING:`")


def test_former_homes_re_export_the_same_objects():
    """Moved names stay importable from where they were, as the very same objects."""
    import effnet.data.transforms
    import effnet.predict
    import effnet.registry
    from effnet import data, preprocessing, transforms
    from effnet.data import images

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
