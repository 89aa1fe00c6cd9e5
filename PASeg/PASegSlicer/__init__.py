"""Helper package of the PASeg Slicer module (kept in a subpackage: Slicer treats every ``.py`` beside a
module as a module).

Subpackages, one concern each, in layers (a layer imports only the layers below it; function-local imports count):

* :mod:`.mrml` — MRML nodes ↔ PASegLib data (volumes, segments), and a real scene without the application.
* :mod:`.annotation` — annotation kinds, object nodes, dense cases, drafts, the case list, and the module's logic
  on a scene (:class:`~PASegSlicer.annotation.logic.PASegCoreLogic`).
* :mod:`.jobs` — training and prediction jobs in child processes, the model list, packages on demand.
* :mod:`.gui` — the widget's panels, the loss curve plot, the Slicer application's services; and, beside it,
  :mod:`.selftest` (the module's self-test scenarios).

Everything below :mod:`.gui` takes the scene as an argument (``slicer.mrmlScene`` in Slicer, a
:class:`~PASegSlicer.mrml.headless.HeadlessSlicer` scene in tests). Nothing here imports ``qt`` or ``slicer`` at
import time, and nothing imports torch or monai (the job children do).

:func:`reloadSubmodules` is the module's Reload for this package: every loaded submodule, dependencies first.
"""

import ast
import importlib
import sys
from pathlib import Path
from typing import Dict, List, Set

__all__ = ["dependencyOrder", "reloadSubmodules", "submoduleImports"]


def _moduleFiles() -> Dict[str, Path]:
    """Module name → source file of this package and all its subpackages (a package: its ``__init__.py``)."""
    root, found = Path(__file__).resolve().parent, {}
    for path in sorted(root.rglob("*.py")):
        parts = [__name__, *path.relative_to(root).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def submoduleImports() -> Dict[str, Set[str]]:
    """Module name → the modules of this package it imports, read from the sources (function-local imports and
    ``from . import x`` included)."""
    files = _moduleFiles()
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                imported.update([base] + [f"{base}.{alias.name}" for alias in node.names])
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def dependencyOrder() -> List[str]:
    """The package's modules, each after every module it imports (ties alphabetical); raises ``ImportError``
    naming the modules of an import cycle."""
    graph, order = submoduleImports(), []
    pending = dict(graph)
    while pending:
        ready = sorted(name for name, imported in pending.items() if not (imported & pending.keys()))
        if not ready:
            raise ImportError(f"import cycle among {', '.join(sorted(pending))}")
        order += ready
        for name in ready:
            del pending[name]
    return order


def reloadSubmodules() -> List[str]:
    """Reload every submodule loaded so far, dependencies first (so ``from .x import y`` binds the new ``y``);
    returns their names, in the order reloaded. The module's Reload calls it before reloading ``PASeg.py``."""
    reloaded = []
    for name in dependencyOrder():
        module = sys.modules.get(name)
        if module is not None:
            importlib.reload(module)
            reloaded.append(name)
    return reloaded
