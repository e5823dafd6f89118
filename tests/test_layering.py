"""The architecture holds: layers import only downwards, no import cycles, and the layers below Ray
import without it (GPU machines may lack Ray). docs/architecture.md explains the layers.

The import graph is read from the source (`ast`), imports inside functions included, so that a
cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raylab"

# Lowest first. A module may import its own layer and the layers before it; layers on one line are
# side by side and may not import each other. `raylab` itself (the facade) may import any layer.
LAYERS = [
    ("spec",),
    ("cells", "tasks"),
    ("networks",),
    ("training",),
    ("planning",),
    ("results",),
    ("execution",),
    ("cli",),
]
LEVEL = {layer: level for level, names in enumerate(LAYERS) for layer in names}
RAY_FREE = [layer for layer in LEVEL if LEVEL[layer] < LEVEL["execution"]]

BLOCK_RAY = """
import sys
class BlockRay:
    def find_spec(self, name, path, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("Ray is not installed here")
sys.meta_path.insert(0, BlockRay())
"""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported raylab module, line, inside a function) for every import statement of a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from raylab.results import collect` imports the module raylab.results.collect
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            while target and target not in known:  # `import raylab.cells.rnn.x` -> the module part
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno, id(node) in in_function))
    return found


def import_graph() -> dict[str, list[tuple[str, int, bool]]]:
    known = modules()
    return {name: imported_modules(name, path, set(known)) for name, path in known.items()}


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the facade `raylab`


def cycles(graph: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted({t for t, _, _ in graph[start]})))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted({t for t, _, _ in graph[successor]}))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_top_level_holds_the_layers_and_the_facade_only():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert top == sorted(["__init__.py", *LEVEL]), top


def test_every_layer_says_what_it_is_and_what_it_may_import():
    for layer in LEVEL:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and len(doc) > 100, f"raylab/{layer}/__init__.py needs its one-paragraph docstring"


def test_imports_only_go_down():
    wrong = []
    for name, imports in import_graph().items():
        source = layer_of(name)
        for target, line, _ in imports:
            destination = layer_of(target)
            if destination is None and target == "raylab":
                wrong.append(f"{name}:{line} imports the facade `raylab`")
            elif source is not None and destination != source and LEVEL[destination] >= LEVEL[source]:
                wrong.append(f"{name}:{line} imports {target} ({destination} is not below {source})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_even_through_imports_inside_functions():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_an_import_inside_a_function_says_why():
    """Such an import keeps Ray, torch, pandas or another heavy dependency off a light path; a
    comment (on its line, the line before, or the module's note on lazy imports) says so."""
    unexplained = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        module_note = any(line.startswith("#") and "imports its layers when it runs" in line for line in lines)
        for target, line, inside in imported_modules(name, path, set(modules())):
            if not inside or module_note:
                continue
            first = line  # the first line of this run of import lines, whose comment covers the run
            while first > 1 and lines[first - 2].strip().startswith(("import ", "from ")):
                first -= 1
            if "#" not in lines[line - 1] and "#" not in lines[first - 1] and not lines[first - 2].strip().startswith("#"):
                unexplained.append(f"{name}:{line} imports {target} inside a function without saying why")
    assert not unexplained, "\n".join(unexplained)


def test_the_layering_test_sees_a_cycle_and_an_upward_import():
    """The checks above can fail: a made-up graph with both defects is caught."""
    graph = {
        "raylab.spec.a": [("raylab.results.b", 3, True)],
        "raylab.results.b": [("raylab.spec.a", 5, False)],
    }
    assert cycles(graph) == [["raylab.results.b", "raylab.spec.a"]]
    assert LEVEL[layer_of("raylab.results.b")] > LEVEL[layer_of("raylab.spec.a")]


def test_layers_below_ray_and_the_benchmarks_import_without_ray():
    imports = "\n".join(
        f"import {name}" for name in sorted(modules()) if layer_of(name) in RAY_FREE and not name.endswith("__main__")
    )
    code = BLOCK_RAY + imports + """
import runpy
sys.argv = ["cells.py", "--help"]
try:
    runpy.run_path("benchmarks/cells.py", run_name="__main__")
except SystemExit as done:
    assert done.code == 0
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_runs_pickled_under_the_flat_layout_still_resume():
    """tuner.pkl names callbacks, name creators and schedulers by module path: a run interrupted
    before the layers (`raylab.live.LiveProgress`, `raylab.runner.trial_display_name`, ...) restores."""
    code = """
import pickle
from raylab.execution import live, runner, search, trainable
objects = {"raylab.live": live.LiveProgress("val/loss"), "raylab.runner": runner.trial_display_name,
           "raylab.search": search.SlotASHA, "raylab.trainable": trainable.train}
old_pickles = {}
for old, obj in objects.items():
    new = (obj.__module__ if callable(obj) and not isinstance(obj, live.LiveProgress) else type(obj).__module__).encode()
    data = pickle.dumps(obj, protocol=0)
    assert new + b"\\n" in data, (old, data[:200])
    old_pickles[old] = data.replace(new + b"\\n", old.encode() + b"\\n")
try:
    pickle.loads(old_pickles["raylab.live"])
    raise SystemExit("an old pickle loaded without the aliases: the test proves nothing")
except ModuleNotFoundError:
    pass
runner.alias_legacy_modules()
for old, data in old_pickles.items():
    assert type(pickle.loads(data)) is type(objects[old]) or pickle.loads(data) is objects[old], old
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def print_layers() -> None:
    """`python tests/test_layering.py`: each layer, its modules, and the layers it imports."""
    graph = import_graph()
    for level, names in reversed(list(enumerate(LAYERS))):
        for layer in names:
            members = sorted(name for name in graph if layer_of(name) == layer)
            uses = sorted({layer_of(t) for name in members for t, _, _ in graph[name]} - {layer}, key=lambda l: -LEVEL[l])
            print(f"{level} {layer:<10} imports {', '.join(uses) or 'nothing from raylab'}")
            print(f"  {' '.join(name.split('.', 2)[-1] if name.count('.') > 1 else '__init__' for name in members)}")
    found = cycles(graph)
    print(f"cycles: {len(found)}")


if __name__ == "__main__":
    print_layers()
