"""What the panels' headless tests give them in place of Qt and the Slicer application.

``slicer-core`` has MRML, VTK and the module logics but no Qt: the scene, the logic, the Markups logic and the
interaction node the panels get are the real ones (:class:`HeadlessApp` on a
:class:`~PASegSlicer.mrml.headless.HeadlessSlicer`); only the widgets (:func:`widgetsOf`, built from ``PASeg.ui``
so a panel can only use widgets the ``.ui`` has), the dialogs (recorded) and the timers (run by the test:
:meth:`HeadlessApp.runTimers`) stand in for Qt.

The rigs the tests share are here too: the panels' collaborators (:func:`panelServices`, :func:`annotationPanel`;
``conftest.py`` makes them the ``gui`` and ``panel`` fixtures), a fake ``python -m PASegLib`` (:data:`FAKE_CLI_START`,
:func:`fakePython`), a finished model run (:func:`modelRun`) and a Segment Editor stroke (:func:`paintStroke`).
"""

from __future__ import annotations

import contextlib
import pathlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

UI_FILE = pathlib.Path(__file__).resolve().parents[3] / "PASeg" / "Resources" / "UI" / "PASeg.ui"


class Signal:
    """A Qt signal: ``connect(slot)``, ``emit(*args)`` (nothing while the widget's signals are blocked)."""

    def __init__(self, owner: Widget) -> None:
        self.owner, self.slots = owner, []

    def connect(self, slot: Callable) -> None:
        self.slots.append(slot)

    def emit(self, *args) -> None:
        if not self.owner.signalsBlocked:
            for slot in list(self.slots):
                slot(*args)


class Widget:
    """A ``QWidget``: ``enabled``, ``visible``, ``toolTip``, ``blockSignals``; subclasses add their signals."""

    SIGNALS = ()

    def __init__(self, name: str, className: str) -> None:
        self.name, self.className = name, className
        self.enabled, self.visible, self.toolTip, self.signalsBlocked = True, True, "", False
        for signal in self.SIGNALS:
            setattr(self, signal, Signal(self))

    def blockSignals(self, block: bool) -> bool:
        was, self.signalsBlocked = self.signalsBlocked, bool(block)
        return was


class Label(Widget):
    def __init__(self, name: str, className: str) -> None:
        super().__init__(name, className)
        self.text = ""

    def setText(self, text: str) -> None:
        self.text = str(text)


class PushButton(Label):
    SIGNALS = ("clicked",)

    def click(self) -> None:
        if self.enabled:
            self.clicked.emit()


class ComboBox(Widget):
    """``QComboBox``: the current index follows Qt (``-1`` when empty, ``0`` once items are added to an empty one)."""

    SIGNALS = ("currentIndexChanged", "activated")

    def __init__(self, name: str, className: str) -> None:
        super().__init__(name, className)
        self.items: List[str] = []
        self._index = -1

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        index = int(index) if 0 <= int(index) < len(self.items) else -1
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)

    @property
    def currentText(self) -> str:
        return self.items[self._index] if self._index >= 0 else ""

    def addItems(self, texts) -> None:
        self.items += [str(t) for t in texts]
        if self._index < 0 and self.items:
            self.currentIndex = 0

    def clear(self) -> None:
        self.items = []
        self.currentIndex = -1

    def setCurrentText(self, text: str) -> None:
        if text in self.items:
            self.currentIndex = self.items.index(text)

    def choose(self, index: int) -> None:
        """What a user's pick does: the index changes, then ``activated``."""
        self.currentIndex = index
        self.activated.emit(index)


class ListWidget(Widget):
    SIGNALS = ("itemDoubleClicked",)

    def __init__(self, name: str, className: str) -> None:
        super().__init__(name, className)
        self.items: List[str] = []
        self.currentRow = -1

    def addItems(self, texts) -> None:
        self.items += [str(t) for t in texts]

    def clear(self) -> None:
        self.items, self.currentRow = [], -1

    def setCurrentRow(self, row: int) -> None:
        self.currentRow = int(row) if 0 <= int(row) < len(self.items) else -1

    def doubleClick(self, row: int) -> None:
        self.setCurrentRow(row)
        self.itemDoubleClicked.emit(self.items[row])


class NodeComboBox(Widget):
    """``qMRMLNodeComboBox``: holds a real MRML node."""

    SIGNALS = ("currentNodeChanged",)

    def __init__(self, name: str, className: str) -> None:
        super().__init__(name, className)
        self._node = None
        self._proxy = SimpleNamespace(hiddenNodeIDs=[])  # qMRMLSortFilterProxyModel's property

    def sortFilterProxyModel(self) -> SimpleNamespace:
        return self._proxy

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)


class PlainTextEdit(Widget):
    def __init__(self, name: str, className: str) -> None:
        super().__init__(name, className)
        self.lines: List[str] = []

    def appendPlainText(self, text: str) -> None:
        self.lines.append(str(text))


class ProgressBar(Widget):
    def __init__(self, name: str, className: str) -> None:
        super().__init__(name, className)
        self.value, self.format = 0, "%p%"

    def setValue(self, value: int) -> None:
        self.value = int(value)

    def setFormat(self, text: str) -> None:
        self.format = str(text)


CLASSES = {"QPushButton": PushButton, "QLabel": Label, "QComboBox": ComboBox, "QListWidget": ListWidget,
           "qMRMLNodeComboBox": NodeComboBox, "QPlainTextEdit": PlainTextEdit, "QProgressBar": ProgressBar}  # fmt: skip


def widgetsOf(uiFile: pathlib.Path = UI_FILE) -> SimpleNamespace:
    """The widgets of the ``.ui`` by name, as ``slicer.util.childWidgetVariables`` gives them (stand-ins)."""
    widgets = {}
    for element in ET.parse(uiFile).iter("widget"):
        className = element.get("class")
        widgets[element.get("name")] = CLASSES.get(className, Widget)(element.get("name"), className)
    return SimpleNamespace(**widgets)


class ManualTimer:
    """A single-shot timer that the test runs (:meth:`fire`): there is no Qt event loop."""

    def __init__(self, milliseconds: int, slot: Callable[[], None]) -> None:
        self.interval, self.slot, self.active = int(milliseconds), slot, False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def fire(self) -> bool:
        if not self.active:
            return False
        self.active = False
        self.slot()
        return True


class RecordedShortcut:
    """A ``qt.QShortcut`` that the test presses (:meth:`HeadlessApp.press`)."""

    def __init__(self, app: HeadlessApp, key: str, slot: Callable[[], Any]) -> None:
        self.app, self.key, self.slot, self.enabled = app, key, slot, True

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def deleteLater(self) -> None:
        self.app.shortcuts.remove(self)


class HeadlessApp:
    """:class:`~PASegSlicer.gui.app.App` on a :class:`~PASegSlicer.mrml.headless.HeadlessSlicer`: the real Markups
    logic and interaction node; dialogs, settings, views and pip recorded; timers run by :meth:`runTimers`.

    ``answers``: the replies of the confirmation dialogs, in order (``True`` when none is left)."""

    def __init__(self, headless) -> None:
        self.headless = headless
        self.timers: List[ManualTimer] = []
        self.settings: Dict[str, str] = {}
        self.shown: Dict[str, List[str]] = {"status": [], "info": [], "warning": [], "error": [], "question": []}
        self.answers: List[bool] = []
        self.fileName = ""
        self.layers: List[Any] = []
        self.charts: List[Any] = []
        self.pipCalls: List[List[str]] = []
        self.shortcuts: List[RecordedShortcut] = []
        self.texts: List[Optional[str]] = []  # the replies of the text input dialogs, in order (None: cancelled)

    def markupsLogic(self):
        return self.headless.logics["Markups"]

    def interactionNode(self):
        return self.headless.appLogic.GetInteractionNode()

    def timer(self, milliseconds: int, slot: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(milliseconds, slot)
        self.timers.append(timer)
        return timer

    def runTimers(self, maxRounds: int = 20) -> None:
        """Fire the started timers, shortest interval first, until none is started (what the event loop does)."""
        for _ in range(maxRounds):
            started = sorted((t for t in self.timers if t.isActive()), key=lambda t: t.interval)
            if not started:
                return
            started[0].fire()
        raise AssertionError("timers keep restarting each other")

    def setting(self, key: str, default: str) -> str:
        return self.settings.get(key, default)

    def setSetting(self, key: str, value: str) -> None:
        self.settings[key] = str(value)

    def showStatusMessage(self, text: str, milliseconds: int) -> None:
        self.shown["status"].append(str(text))

    def infoDisplay(self, text: str) -> None:
        self.shown["info"].append(str(text))

    def warningDisplay(self, text: str) -> None:
        self.shown["warning"].append(str(text))

    def errorDisplay(self, text: str) -> None:
        self.shown["error"].append(str(text))

    def confirmYesNoDisplay(self, text: str) -> bool:
        self.shown["question"].append(str(text))
        return self.answers.pop(0) if self.answers else True

    confirmOkCancelDisplay = confirmYesNoDisplay

    def pip_install(self, arguments: List[str]) -> None:
        self.pipCalls.append(list(arguments))

    @contextlib.contextmanager
    def tryWithErrorDisplay(self, message: str, waitCursor: bool = False):
        """As ``slicer.util.tryWithErrorDisplay``: the error is shown under ``message``, then re-raised."""
        try:
            yield
        except Exception as exc:
            self.shown["error"].append(f"{message}\n\n{exc}")
            raise

    def openFileName(self, title: str, filters: str) -> str:
        return self.fileName

    def setSliceViewerLayers(self, background, fit: bool = False) -> None:
        self.layers.append(background)

    def showChart(self, chartNode) -> None:
        self.charts.append(chartNode)

    def shortcut(self, key: str, slot: Callable[[], Any]) -> RecordedShortcut:
        shortcut = RecordedShortcut(self, key, slot)
        self.shortcuts.append(shortcut)
        return shortcut

    def press(self, key: str) -> bool:
        """What pressing ``key`` does in Qt: the one enabled shortcut of that key runs (two are ambiguous: none
        runs, and the test fails). Returns whether one ran."""
        bound = [s for s in self.shortcuts if s.key == key and s.enabled]
        assert len(bound) <= 1, f"{len(bound)} shortcuts are bound to {key!r}: Qt runs none of them"
        for shortcut in bound:
            shortcut.slot()
        return bool(bound)

    def getText(self, title: str, label: str, text: str = "") -> Optional[str]:
        self.shown["question"].append(f"{title}: {label} [{text}]")
        return self.texts.pop(0) if self.texts else None


@dataclass
class Parameters:
    """The fields of ``PASegParameterNode`` the panels use, with its defaults (``parameterNodeWrapper`` is not in
    ``slicer-core``)."""

    inputVolume: Optional[Any] = None
    datasetFolder: pathlib.Path = field(default_factory=lambda: pathlib.Path(""))
    workFolder: pathlib.Path = field(default_factory=lambda: pathlib.Path(""))
    autoPreview: bool = True
    trainMode: str = "stage 1 + refinement"
    networkA: str = "unet2d5"
    networkB: str = "attention_unet"
    scmRunA: pathlib.Path = field(default_factory=lambda: pathlib.Path(""))
    scmRunB: pathlib.Path = field(default_factory=lambda: pathlib.Path(""))
    epochs: int = 300
    deviceMode: str = "auto"
    gpuIndex: int = 0
    trainConfig: pathlib.Path = field(default_factory=lambda: pathlib.Path(""))
    modelRunDir: pathlib.Path = field(default_factory=lambda: pathlib.Path(""))
    restrictToBox: bool = True
    largestComponent: bool = False


# -- the rigs the panels' and jobs' tests share ------------------------------------------------------------------
def panelServices(app) -> tuple:
    """What the module gives its panels, on ``app`` (the ``app`` fixture's ``HeadlessSlicer``): ``(application
    services, widgets, parameters, {"node": the parameters while the module is shown}, preview requests)``."""
    shown = {"node": Parameters()}
    return HeadlessApp(app), widgetsOf(), shown["node"], shown, []


@contextlib.contextmanager
def annotationPanel(logic, headless, ui, parameters, shown=None, previews=None):
    """An :class:`~PASegSlicer.gui.annotationpanel.AnnotationPanel` on the stand-ins (``logic``, then the items of
    :func:`panelServices`), cleaned up on exit. Without ``shown`` the parameters are always the shown ones; without
    ``previews`` preview requests are not recorded."""
    from PASegSlicer.gui.annotationpanel import AnnotationPanel

    shownParameters = (lambda: shown["node"]) if shown is not None else (lambda: parameters)
    requestPreview = (lambda: previews.append(True)) if previews is not None else (lambda: None)
    panel = AnnotationPanel(ui, headless, logic, lambda: parameters, shownParameters, requestPreview)
    try:
        yield panel
    finally:
        panel.cleanup()


#: How a fake ``python -m PASegLib <command> … --out OUT`` script starts (its body follows): ``emit(**event)`` prints
#: a progress event; ``args`` are the arguments after ``-m PASegLib``, ``command`` the first of them, ``out`` the
#: ``--out`` path.
FAKE_CLI_START = r"""
import json, os, subprocess, sys, time
from pathlib import Path

def emit(**event):
    print("PASEG " + json.dumps(event), flush=True)

args = sys.argv[1:]
if args[:2] == ["-m", "PASegLib"]:
    args = args[2:]
command, out = args[0], Path(args[args.index("--out") + 1])
"""


def dependencyCheckerFactory(headless: HeadlessApp, **options) -> Callable[[], Any]:
    """The :class:`~PASegSlicer.jobs.dependencies.DependencyChecker` factory the module gives the job panel, on
    ``headless``'s dialogs and pip, with every package present unless ``options`` say otherwise (nothing is
    installed for real)."""
    from PASegSlicer.jobs.dependencies import DependencyChecker

    settings = {"findSpec": lambda name: object(), "installedVersion": lambda name: "2.5.0",
                "probeDevices": lambda: {"event": "devices", "torch": "2.5.0", "cuda": []}, **options}  # fmt: skip
    return lambda: DependencyChecker(headless.confirmOkCancelDisplay, headless.pip_install, **settings)


def jobPanel(logic, headless, ui, parameters, shown=None, refreshed=None, *, python: str, **checkerOptions):
    """A :class:`~PASegSlicer.gui.jobpanel.JobPanel` on the stand-ins (``logic``, then the items of
    :func:`panelServices`) whose runners run real child processes (``python``: theirs), its dependencies checked by
    :func:`dependencyCheckerFactory` (``checkerOptions``). Without ``shown`` the parameters are always the shown
    ones; ``refreshed`` (a list) records each refresh of the models. Returns ``(panel, its runners in the order
    they are made)``."""
    from PASegSlicer.gui.jobpanel import JobPanel
    from PASegSlicer.jobs.runner import JobRunner, SubprocessBackend, threadingSchedule

    runners = []

    def runnerFactory(**callbacks):
        runners.append(JobRunner(SubprocessBackend(), threadingSchedule, **callbacks))
        return runners[-1]

    shownParameters = (lambda: shown["node"]) if shown is not None else (lambda: parameters)
    onModelsRefreshed = (lambda: refreshed.append(True)) if refreshed is not None else (lambda: None)
    panel = JobPanel(ui, headless, logic, lambda: parameters, shownParameters, onModelsRefreshed, runnerFactory,
                     dependencyCheckerFactory(headless, **checkerOptions), python=python)  # fmt: skip
    return panel, runners


def fakePython(folder: pathlib.Path, source: str, scriptName: str = "fake_paseg.py") -> str:
    """A ``python`` (a shell script in ``folder``) that runs the Python ``source`` (a fake PASeg CLI, e.g.
    ``test_slicer_jobs.FAKE_PASEG``) with the real ``-m PASegLib …`` arguments; returns its path."""
    import stat
    import sys

    script = pathlib.Path(folder) / scriptName
    script.write_text(source, encoding="utf-8")
    launcher = pathlib.Path(folder) / "fakepython"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return str(launcher)


def modelRun(folder: pathlib.Path) -> pathlib.Path:
    """A finished stage-1 ``unet3d`` model run ``folder/run`` (``best.pt`` and its ``model.json``)."""
    import json

    run = pathlib.Path(folder) / "run"
    run.mkdir()
    (run / "best.pt").write_text("w")
    info = {"network": "unet3d", "stage": 1, "best_score": 0.8, "best_epoch": 3, "created": "2026-01-01T00:00:00"}
    (run / "model.json").write_text(json.dumps({**info, "checkpoint": "best.pt"}))
    return run


def paintStroke(segmentation, segmentName: str, lo, hi, erase: bool = False) -> None:
    """What a Segment Editor stroke does (``SetBinaryLabelmapToSegment``): set (or erase) the inclusive index box
    ``lo``..``hi`` of the segment named ``segmentName``."""
    import slicer
    import vtk

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName(segmentName)
    source = segmentation.GetSegmentation().GetSegment(segmentId).GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    source.GetImageToWorldMatrix(matrix)
    modifier = slicer.vtkOrientedImageData()
    modifier.SetImageToWorldMatrix(matrix)
    modifier.SetExtent(lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    modifier.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    modifier.GetPointData().GetScalars().Fill(0 if erase else 1)
    mode = logic.MODE_MERGE_MIN if erase else logic.MODE_MERGE_MAX
    assert logic.SetBinaryLabelmapToSegment(modifier, segmentation, segmentId, mode)
