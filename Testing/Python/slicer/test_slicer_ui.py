"""Static checks of what only a real Slicer can run: the ``.ui`` against the parameter node, the widget code
against the ``.ui``, the module's Python (syntax, size, imports), and the packaging files.

The parameter node class is read from ``PASeg.py`` with ``ast`` (``parameterNodeWrapper`` is not in
``slicer-core``); the GUI connector rules are those of Slicer's ``parameterNodeWrapper/guiConnectors.py``.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PASegSlicer.jobs import commands

REPO = Path(__file__).resolve().parents[3]
MODULE = REPO / "PASeg"
UI_FILE = MODULE / "Resources" / "UI" / "PASeg.ui"
#: the widget, its panels and the Slicer application services they call
PANELS = ("jobpanel", "annotationpanel", "app", "backgroundjobs", "caseflow")
WIDGET_FILES = [MODULE / "PASeg.py"] + [MODULE / "PASegSlicer" / "gui" / f"{n}.py" for n in PANELS]
NUMBER_WIDGETS = {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox",
                  "qMRMLSpinBox"}  # fmt: skip
#: datatype → widget classes a connector exists for (without / with a Choice annotation).
CONNECTABLE = {
    "bool": {"QCheckBox", "ctkCheckBox", "QPushButton", "ctkCheckablePushButton"},
    "int": {"QSpinBox", "QSlider"} | NUMBER_WIDGETS,
    "float": NUMBER_WIDGETS,
    "str": {"QLineEdit", "QLabel", "QTextEdit"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}
FOLDER_PARAMETERS = {"datasetFolder", "workFolder", "scmRunA", "scmRunB", "modelRunDir"}


def _ui_widgets():
    tree = ET.parse(UI_FILE)
    widgets = {}
    for w in tree.iter("widget"):
        props = {p.get("name"): p for p in w.findall("property")}
        param = props.get("SlicerParameterName")
        widgets[w.get("name")] = {"class": w.get("class"), "param": None if param is None else param.findtext("string"),
                                  "props": props}  # fmt: skip
    return tree, widgets


def _parameter_fields():
    """name → (datatype kind, annotation metadata expressions, default AST) of the parameterNodeWrapper class."""
    tree = ast.parse((MODULE / "PASeg.py").read_text(encoding="utf-8"))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
               and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in n.decorator_list)]  # fmt: skip
    assert len(classes) == 1, "PASeg.py must hold exactly one @parameterNodeWrapper class"
    networks = next(ast.literal_eval(n.value) for n in tree.body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NETWORKS")  # fmt: skip
    namespace = {"TRAIN_MODES": commands.TRAIN_MODES, "DEVICE_MODES": commands.DEVICE_MODES, "NETWORKS": networks,
                 "list": list}  # fmt: skip
    fields = {}
    for item in classes[0].body:
        if not isinstance(item, ast.AnnAssign):
            continue
        annotation, extras = item.annotation, []
        for node in ast.walk(annotation):
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)), \
                f"{item.target.id}: 'X | Y' annotations break parameterNodeWrapper on older Slicer"  # fmt: skip
        if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated":
            annotation, *extras = annotation.slice.elts
        base = ast.unparse(annotation)
        kind = {"bool": "bool", "int": "int", "float": "float", "str": "str", "pathlib.Path": "Path"}.get(base)
        kind = kind or ("node" if re.fullmatch(r"slicer\.vtkMRML\w+Node", base) else None)
        assert kind, f"{item.target.id}: unsupported type {base}"
        meta = {}
        for extra in extras:
            name = extra.func.id
            meta[name] = [eval(ast.unparse(a), namespace) for a in extra.args]  # noqa: S307 (own source)
        default = None if item.value is None else ast.literal_eval(item.value)
        fields[item.target.id] = (kind, meta, default, base)
    return fields


def _path_parameters():
    """``PATH_PARAMETERS`` of ``PASeg.py``: fields the widget binds by hand (each a ctkPathLineEdit of that name)."""
    tree = ast.parse((MODULE / "PASeg.py").read_text(encoding="utf-8"))
    return next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PATH_PARAMETERS")  # fmt: skip


def test_every_ui_parameter_exists_and_every_parameter_is_bound():
    _, widgets = _ui_widgets()
    bound = [w["param"] for w in widgets.values() if w["param"]]
    fields, byHand = _parameter_fields(), _path_parameters()
    assert len(bound) == len(set(bound)), "a parameter is bound to two widgets"
    assert sorted(set(bound) - set(fields)) == [], "SlicerParameterName without a parameter"
    assert sorted(set(fields) - set(bound) - set(byHand)) == [], "parameters not bound to any widget"
    for name in byHand:  # bound by PASeg.py (onPathsEdited / onParameterChanged), not by the wrapper
        assert widgets[name]["class"] == "ctkPathLineEdit" and widgets[name]["param"] is None, name
        assert fields[name][3].endswith("Path"), f"{name} must be a pathlib.Path parameter"


def test_bound_widgets_have_a_connector_for_their_type():
    _, widgets = _ui_widgets()
    fields = _parameter_fields()
    for name, widget in widgets.items():
        if name in _path_parameters():
            widget = {**widget, "param": name}
        if not widget["param"]:
            continue
        kind, meta, default, base = fields[widget["param"]]
        allowed = set(CONNECTABLE[kind]) | ({"QComboBox", "ctkComboBox"} if "Choice" in meta else set())
        assert widget["class"] in allowed, f"{name}: {widget['class']} cannot show a {base} parameter"
        if widget["class"] in ("QComboBox", "ctkComboBox"):
            assert "Choice" in meta, f"{name}: a combo box needs a Choice annotation"
            assert default in meta["Choice"][0], f"{widget['param']}: default {default!r} not among the choices"
        if widget["class"] in ("ctkSliderWidget", "qMRMLSliderWidget"):
            assert "WithinRange" in meta, f"{name}: a slider needs a bounded (WithinRange) parameter"
        if "WithinRange" in meta:
            low, high = meta["WithinRange"]
            assert low <= default <= high, f"{widget['param']}: default {default} outside [{low}, {high}]"
        if widget["class"] == "ctkPathLineEdit":
            filters = widget["props"]["filters"].findtext("set")
            wanted = "Dirs" if widget["param"] in FOLDER_PARAMETERS else "Files"
            assert f"ctkPathLineEdit::{wanted}" in filters, f"{name}: should pick {wanted.lower()}"
        if widget["class"] == "qMRMLNodeComboBox":
            types = [s.text for s in widget["props"]["nodeTypes"].iter("string")]
            assert types == [base.split(".")[1]], f"{name}: nodeTypes {types} != {base}"


def test_choices_match_the_library():
    fields = _parameter_fields()
    assert fields["trainMode"][1]["Choice"][0] == list(commands.TRAIN_MODES)
    assert fields["deviceMode"][1]["Choice"][0] == list(commands.DEVICE_MODES)
    pytest.importorskip("torch")
    from PASegLib.networks import NETWORKS

    assert sorted(fields["networkA"][1]["Choice"][0]) == NETWORKS.names() == sorted(fields["networkB"][1]["Choice"][0])


def test_the_panels_parameters_are_the_parameter_nodes():
    """The fields the panels read (``gui.app.Parameters``) and those their headless tests give them
    (``headlessgui.Parameters``, with the same defaults) are fields of the parameter node."""
    import dataclasses
    import pathlib

    from headlessgui import Parameters

    fields = _parameter_fields()
    tree = ast.parse((MODULE / "PASegSlicer" / "gui" / "app.py").read_text(encoding="utf-8"))
    protocol = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Parameters")
    read = {item.target.id for item in protocol.body if isinstance(item, ast.AnnAssign)}
    assert read and read <= set(fields), sorted(read - set(fields))
    for field in dataclasses.fields(Parameters):
        kind, _, default, _ = fields[field.name]
        value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert value == (pathlib.Path() if kind == "Path" and default is None else default), field.name


def test_widget_code_uses_only_widgets_of_the_ui_and_connects_every_button():
    tree, widgets = _ui_widgets()
    assert tree.getroot().find("widget").get("class") == "qMRMLWidget"
    used = set()
    for path in WIDGET_FILES:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bui\.(\w+)", text)) | set(re.findall(r"\bu\.(\w+)", text))
    assert sorted(used - set(widgets)) == [], "the code uses widgets the .ui does not have"
    buttons = {n for n, w in widgets.items() if w["class"] == "QPushButton"}
    assert sorted(buttons - used) == [], "buttons nobody connects"
    declared = {c.findtext("class") for c in tree.getroot().iter("customwidget")}
    custom = {w["class"] for w in widgets.values() if w["class"][0] in "cq"}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"
    connections = [(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"))
                   for c in tree.getroot().iter("connection")]  # fmt: skip
    combos = [n for n, w in widgets.items() if w["class"] == "qMRMLNodeComboBox"]
    for combo in combos:
        assert ("PASeg", "mrmlSceneChanged(vtkMRMLScene*)", combo) in connections, f"{combo} never gets the scene"


def _python_files():
    return sorted(MODULE.rglob("*.py"))


def test_module_python_compiles_is_small_and_imports_nothing_heavy_at_import():
    assert len((MODULE / "PASeg.py").read_text(encoding="utf-8").splitlines()) <= 300
    for path in _python_files():
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
        for node in ast.parse(source).body:  # module level only: functions may import lazily
            names = [a.name for a in getattr(node, "names", [])] + [getattr(node, "module", None) or ""]
            heavy = [n for n in names if n.split(".")[0] in ("torch", "monai", "matplotlib")]
            assert not heavy, f"{path.name} imports {heavy} at import time"
        blocking = [n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)
                    and n.attr in ("processEvents", "sleep", "waitForFinished", "communicate")]  # fmt: skip
        assert not blocking, f"{path.name} blocks the GUI with {blocking}"
    for path in (MODULE / "PASegSlicer").rglob("*.py"):  # Slicer, Qt and CTK only where used (headless tests)
        body = ast.parse(path.read_text(encoding="utf-8")).body
        top = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("qt", "ctk", "slicer")], path.name


def test_paseglib_never_imports_slicer():
    for path in (REPO / "PASegLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not [n for n in names if n.split(".")[0] in ("slicer", "qt", "ctk", "vtk")], path


def test_cmake_lists_every_module_file_and_the_extension_metadata():
    cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+(PASegSlicer/[\w/]+\.py)$", cmake, re.M))
    present = {p.relative_to(MODULE).as_posix() for p in (MODULE / "PASegSlicer").rglob("*.py")}
    assert listed == present, f"missing: {sorted(present - listed)}, gone: {sorted(listed - present)}"
    for resource in ("Resources/Icons/PASeg.png", "Resources/UI/PASeg.ui"):
        assert (MODULE / resource).is_file()
    assert "slicerMacroBuildScriptedModule" in cmake and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    assert "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/PASegLib" in cmake
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    metadata = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', top))
    assert metadata["EXTENSION_CATEGORY"] == "Segmentation" and metadata["EXTENSION_DEPENDS"] == "PyTorch"
    assert "add_subdirectory(PASeg)" in top
    png = (REPO / "PASeg.png").read_bytes()
    assert (
        png[:8] == b"\x89PNG\r\n\x1a\n"
        and int.from_bytes(png[16:20], "big") == int.from_bytes(png[20:24], "big") == 128
    )


def test_extension_catalog_entry():
    entry = json.loads((REPO / "PASeg.json").read_text(encoding="utf-8"))
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "dicom_support_rule",
        "build_subdirectory",
        "enabled",
        "tier",
    }  # schema v1.0.2 properties
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["category"] == "Segmentation" and "PyTorch" in entry["build_dependencies"]
    assert 1 <= entry["tier"] <= 5 and entry["scm_url"].endswith(".git")


def test_slicer_calls_of_the_widget_exist_in_slicer():
    """``slicer.util`` functions and module-logic methods the widget calls exist (slicer-core ships the same
    ``slicer/util.py`` and the same logic classes as the application)."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (make setup installs it)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core")
    import slicer.util

    text = "\n".join(path.read_text(encoding="utf-8") for path in WIDGET_FILES)
    util = set(re.findall(r"slicer\.util\.(\w+)", text))
    assert {"loadUI", "childWidgetVariables", "tryWithErrorDisplay", "pip_install"} <= util
    assert sorted(n for n in util if not hasattr(slicer.util, n)) == []
    owners = {
        r"(?:slicer\.modules\.markups\.logic|markupsLogic)\(\)\.(\w+)": slicer.vtkSlicerMarkupsLogic,
        r"slicer\.modules\.plots\.logic\(\)\.(\w+)": slicer.vtkSlicerPlotsLogic,
        r"(?:GetInteractionNode\(\)|\binteraction)\.(\w+)": slicer.vtkMRMLInteractionNode,
    }
    for pattern, cls in owners.items():
        methods = set(re.findall(pattern, text))
        assert methods and sorted(m for m in methods if not hasattr(cls, m)) == [], cls.__name__


def test_the_readme_lists_every_keyboard_shortcut_as_the_module_defines_it():
    from PASegSlicer.gui.shortcuts import markdownTable

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert markdownTable() in readme, "README.md's shortcut table differs from PASegSlicer.gui.shortcuts.SHORTCUTS"
