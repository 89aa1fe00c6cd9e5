"""The architecture of ARCHITECTURE.md, checked on the source: rooms, layers, cycles, private names.

``make lint`` runs the import contracts themselves (``lint-imports``); these tests keep the contract complete
(every subpackage named in a layer) and check what import-linter does not: import cycles between modules of
one package, imports of another module's ``_private`` names, loose modules, tracker numbers in code.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ROOT / "PASegLib"
SLICER = ROOT / "PASeg" / "PASegSlicer"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _contract(contract_id: str) -> dict:
    contracts = _pyproject()["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["id"] == contract_id)


def _layer_names(layers: List[str]) -> Set[str]:
    names = set()
    for layer in layers:
        for part in layer.split("|"):
            names.add(part.strip().strip("()"))
    return names


def _modules(package_dir: Path, package: str) -> Dict[str, Path]:
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _imports(path: Path, module: str) -> List[ast.ImportFrom]:
    """Every ``from X import …`` of the file (function-local ones included), made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                node.module = ".".join(base + ([node.module] if node.module else []))
                node.level = 0
            out.append(node)
        elif isinstance(node, ast.Import):
            out.extend(ast.ImportFrom(module=a.name, names=[], level=0, lineno=node.lineno) for a in node.names)
    return out


def test_the_library_holds_only_subpackages():
    loose = sorted(p.name for p in LIBRARY.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], f"loose modules at the top of PASegLib/: {loose}; put each in the subpackage of its concern"


def test_every_subpackage_is_named_in_the_layer_contract():
    layers = _layer_names(_contract("layers")["layers"])
    subpackages = {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages - layers == set(), "add the new subpackage to [tool.importlinter] layers in pyproject.toml"
    assert "interop" in layers, "the interop layer (nnU-Net export, model packages, DICOM SEG) is gone"


def test_the_torch_boundary_covers_the_torch_free_subpackages():
    sources = set(_contract("torch-boundary")["source_modules"])
    for name in ("utils", "jobs", "image", "annotation", "seeds", "data", "evaluation", "synthetic"):
        assert f"PASegLib.{name}" in sources
    assert {"torch", "monai"} <= set(_contract("slicer-module")["forbidden_modules"])


@pytest.mark.parametrize("package_dir,package", [(LIBRARY, "PASegLib"), (SLICER, "PASegSlicer")])
def test_no_import_cycle_between_modules(package_dir, package):
    modules = _modules(package_dir, package)
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in _imports(path, name):
            if node.module in modules:
                targets.add(node.module)
            for alias in node.names:  # `from package import module`
                if f"{node.module}.{alias.name}" in modules:
                    targets.add(f"{node.module}.{alias.name}")
        # a package's own __init__ is not a dependency of its modules' cycle analysis
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert cycles == [], f"import cycles (function-local imports count): {cycles}"


@pytest.mark.parametrize("package_dir,package", [(LIBRARY, "PASegLib"), (SLICER, "PASegSlicer")])
def test_no_module_imports_another_modules_private_names(package_dir, package):
    modules = _modules(package_dir, package)
    leaks = []
    for name, path in modules.items():
        for node in _imports(path, name):
            if node.module and node.module.split(".")[0] in ("PASegLib", "PASegSlicer") and node.module != name:
                leaks += [f"{name} imports {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert leaks == [], "make shared names public or move them: " + "; ".join(leaks)


def test_no_tracker_numbers_in_code():
    pattern = re.compile(r"\bissues? ?#?\d+\b|\bissue-\d+\b", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in (LIBRARY, ROOT / "PASeg") for path in folder.rglob("*.py")
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if pattern.search(line)]
    assert found == [], f"say what the thing is instead of which issue added it: {found}"


def test_the_names_users_import_stay_at_the_top_level_and_load_lazily():
    import subprocess

    code = ("import sys, PASegLib; assert 'torch' not in sys.modules, 'import PASegLib imported torch'; "
            "from PASegLib import read_markups, write_markups, preset_configs, CaseAnnotation, SyntheticConfig; "
            "assert 'torch' not in sys.modules; "
            "from PASegLib import Predictor, run_pipeline, TrainConfig, train_from_dataset; "
            "missing = [n for n in PASegLib.__all__ if not hasattr(PASegLib, n)]; assert not missing, missing")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_reference_to_a_library_name_resolves():
    """``PASegLib.<module…>.<name>`` in the sources, benchmarks and documents names a module and names that exist
    (a moved module leaves no stale pointer behind)."""
    from conftest import unresolved_references

    documents = [ROOT / n for n in ("README.md", "ARCHITECTURE.md", "CONTRIBUTING.md")]
    sources = [*LIBRARY.rglob("*.py"), *(ROOT / "PASeg").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    assert unresolved_references(sources + documents, "PASegLib", ROOT) == []


def test_benchmarks_use_only_public_names():
    bench = ROOT / "benchmarks"
    siblings = {p.stem for p in bench.glob("*.py")}
    leaks = []
    for path in sorted(bench.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.split(".")[0] == "PASegLib" or node.module in siblings):
                leaks += [f"{path.name} imports {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert leaks == [], "; ".join(leaks)
