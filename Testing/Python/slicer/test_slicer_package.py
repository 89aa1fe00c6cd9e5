"""The helper package ``PASegSlicer`` as a whole, read from its sources (no Slicer needed): its import graph has no
cycle (function-local imports count) and goes down the layers mrml ← annotation ← jobs ← gui; it imports from
PASegLib only what runs without torch and never torch or monai; no module uses another's private names; facts that
PASegLib owns are not defined again; the module's Reload reloads every submodule, dependencies first; the
docstrings' references resolve.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import PASegSlicer

MODULE = Path(__file__).resolve().parents[3] / "PASeg"
PACKAGE = MODULE / "PASegSlicer"
#: subpackage (or top-level module) → its layer; a module imports only from lower layers and its own subpackage
LAYERS = {"mrml": 0, "annotation": 1, "jobs": 2, "gui": 3, "selftest": 3}
LIBRARY_ALLOWED = {"utils", "jobs", "image", "annotation", "seeds", "data", "evaluation", "synthetic"}
#: names whose one home is PASegLib (PASegLib.annotation.kinds, PASegLib.jobs.stopping)
LIBRARY_FACTS = {"POINT_LABELS", "FOREGROUND", "SIDES", "SIDE_NAMES", "AXIS_NAMES", "BOXED_KINDS", "STOP_FILE",
                 "STOP_FILE_NAME", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_STOPPED",
                 "EXIT_INTERRUPTED"}  # fmt: skip


def _modules() -> Dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("PASegSlicer",) + path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path):
    """Every (imported module, names) of a module, anywhere in it (function bodies included), absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield module, tuple(alias.name for alias in node.names)


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, names in _imports(name, path):
            targets.update(m for m in [module] + [f"{module}.{n}" for n in names] if m in modules and m != name)
        graph[name] = targets
    return graph


def _layer(name: str):
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_import_cycle_and_the_layers_are_kept():
    graph = _graph()
    assert len(graph) == len(list(PACKAGE.rglob("*.py")))
    state: Dict[str, int] = {}

    def visit(name, trail):  # depth first: a module met again on the current trail closes a cycle
        state[name] = 1
        for target in sorted(graph[name]):
            assert state.get(target) != 1, f"import cycle: {' -> '.join(trail + [name, target])}"
            if target not in state:
                visit(target, trail + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    upward = [(a, b) for a, targets in graph.items() for b in targets if _layer(a) is not None and
              _layer(b) is not None and a.split(".")[1] != b.split(".")[1] and _layer(b) >= _layer(a)]  # fmt: skip
    assert upward == [], "imports that do not go down the layers mrml ← annotation ← jobs ← gui"
    assert not [a for a, targets in graph.items() if a.count(".") == 1 and _layer(a) is None and targets - {a}], \
        "the package's __init__ imports none of its modules"  # fmt: skip


def test_the_reload_order_is_the_dependency_order():
    order, graph = PASegSlicer.dependencyOrder(), _graph()
    assert sorted(order) == sorted(graph)
    position = {name: n for n, name in enumerate(order)}
    assert [(a, b) for a, targets in graph.items() for b in targets if position[b] > position[a]] == []
    assert PASegSlicer.submoduleImports() == graph


def test_only_torch_free_library_packages_and_never_torch():
    problems = []
    for path in sorted(MODULE.rglob("*.py")):  # PASeg.py too
        name = "PASeg" if path.name == "PASeg.py" else next(n for n, p in _modules().items() if p == path)
        for module, _ in _imports(name, path):
            parts = module.split(".")
            if parts[0] in ("torch", "monai") or (parts[0] == "PASegLib" and len(parts) > 1
                                                  and parts[1] not in LIBRARY_ALLOWED):  # fmt: skip
                problems.append(f"{path.name}: {module}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # no import by name either
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("import_module", "__import__"):
                problems.append(f"{path.name}: {ast.unparse(node)}")
    assert problems == []


def test_no_module_uses_another_modules_private_names():
    modules, problems = _modules(), []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = set()
        for module, names in _imports(name, path):
            if module.startswith(("PASegSlicer", "PASegLib")):
                problems += [f"{name}: {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
                aliases.update(n for n in names if f"{module}.{n}" in modules or module.startswith("PASegLib"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    problems.append(f"{name}: {node.value.id}.{node.attr}")
    assert problems == []


def test_facts_of_the_library_are_not_defined_again():
    defined = []
    for path in sorted(MODULE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                names = [t.id for t in ast.walk(target) if isinstance(t, ast.Name)] if target is not None else []
                defined += [f"{path.name}: {n}" for n in names if n in LIBRARY_FACTS]
    assert defined == []


def test_no_tracker_references_in_the_module():
    found = [f"{path.relative_to(MODULE)}:{n}" for path in sorted(MODULE.rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\b(issue|item)s? #?\d+", line, re.I)]  # fmt: skip
    assert found == []


def test_docstring_references_resolve():
    """``PASegSlicer.<module…>.<name>`` references in the module's sources name modules and names that exist."""
    from conftest import unresolved_references

    assert unresolved_references(MODULE.rglob("*.py"), "PASegSlicer", MODULE) == []


def test_reload_reloads_every_loaded_submodule_dependencies_first():
    """In a fresh process (reloading here would give the other tests' modules new classes)."""
    script = """
import importlib, sys
import PASegSlicer
order = PASegSlicer.dependencyOrder()
for name in order:
    importlib.import_module(name)
from PASegSlicer import selftest
from PASegSlicer.gui import annotationpanel
old = selftest.createVolumeNode
assert PASegSlicer.reloadSubmodules() == order, "every loaded submodule, dependencies first"
volumes = sys.modules["PASegSlicer.mrml.volumes"]
assert selftest.createVolumeNode is volumes.createVolumeNode is not old, "from-imports bind the reloaded function"
assert annotationpanel.PASegCoreLogic is sys.modules["PASegSlicer.annotation.logic"].PASegCoreLogic
"""
    path = os.pathsep.join([str(MODULE), str(MODULE.parent)])
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": path},
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
