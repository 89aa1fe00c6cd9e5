"""PASeg: train a 3D segmentation model from a few clicks per tumour (PA-Seg; other annotation kinds), in 3D Slicer.

The widget only wires the GUI; the logic lives in the ``PASegSlicer`` helper package (tested headless on a
real MRML scene) and PASegLib. Training and prediction run in a child process (``PythonSlicer -m PASegLib``).
"""

import os
import pathlib
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)  # fmt: skip
from slicer.util import VTKObservationMixin

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_ROOT, "PASegLib")) and _ROOT not in sys.path:
    sys.path.append(_ROOT)  # source checkout: PASegLib sits beside PASeg/ (installed: beside this file)

from PASegSlicer.annotation.cases import pathText  # noqa: E402
from PASegSlicer.annotation.logic import PASegCoreLogic  # noqa: E402
from PASegSlicer.gui.shortcuts import helpText  # noqa: E402
from PASegSlicer.jobs.commands import DEVICE_MODES, TRAIN_MODES  # noqa: E402
from PASegSlicer.jobs.dependencies import ANNOTATION, RANDOM_WALKER, DependencyChecker  # noqa: E402

NETWORKS = ["unet2d5", "unet3d", "attention_unet"]  # PASegLib.networks.NETWORKS (checked by a test)
PATH_PARAMETERS = ("datasetFolder", "workFolder", "scmRunA", "scmRunB", "trainConfig", "modelRunDir")


class PASeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PASeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups", "Segmentations", "Plots"]
        self.parent.contributors = ["PASeg developers"]
        self.parent.helpText = _(
            "Annotate each tumour (seven points, extreme points, a single point, a box or a dense label), preview "
            "its pseudo label, train a PA-Seg model in the background and segment new volumes with it."
        ) + "<br>" + helpText()
        self.parent.acknowledgementText = _(
            "PA-Seg: Zhai, Wang et al., Learning from Point Annotations for 3D "
            "Medical Image Segmentation (official code HiLab-git/PA-Seg, MIT)."
        )


@parameterNodeWrapper
class PASegParameterNode:
    """Everything the GUI edits; each field is bound to the widget whose SlicerParameterName is its name."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    datasetFolder: pathlib.Path
    workFolder: pathlib.Path
    epsilon: Annotated[float, WithinRange(0.0, 1.0)] = 0.175
    lamb: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    autoPreview: bool = True
    trainMode: Annotated[str, Choice(list(TRAIN_MODES))] = "stage 1 + refinement"
    networkA: Annotated[str, Choice(NETWORKS)] = "unet2d5"
    networkB: Annotated[str, Choice(NETWORKS)] = "attention_unet"
    scmRunA: pathlib.Path
    scmRunB: pathlib.Path
    epochs: Annotated[int, WithinRange(1, 5000)] = 300
    deviceMode: Annotated[str, Choice(list(DEVICE_MODES))] = "auto"
    gpuIndex: Annotated[int, WithinRange(0, 15)] = 0
    trainConfig: pathlib.Path
    modelRunDir: pathlib.Path
    restrictToBox: bool = True
    largestComponent: bool = False


class PASegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the GUI: annotation and cases in ``PASegSlicer.gui.annotationpanel``, training and inference in
    ``PASegSlicer.gui.jobpanel`` (each given its collaborators); the parameter node, the preview and the path fields
    here.

    The path fields are not bound through ``SlicerParameterName``: the binding writes ``str(Path(text))`` back on
    every key (a typed trailing "/" vanishes); they are read once typing pauses and written only when they differ.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._guiNode = self._guiTag = self.annotations = self.jobs = None
        self._last = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from PASegSlicer.gui.annotationpanel import AnnotationPanel  # the panels and what they are given
        from PASegSlicer.gui.app import SlicerApp
        from PASegSlicer.gui.jobpanel import JobPanel
        from PASegSlicer.jobs.qtprocess import qtJobRunner

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PASeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic, app = PASegLogic(), SlicerApp()
        self.previewTimer = app.timer(300, lambda: self.onPreview(quiet=True))  # one preview per drag
        self.pathTimer = app.timer(600, self.onPathsEdited)  # typed paths: read once typing pauses
        for name in PATH_PARAMETERS:
            getattr(self.ui, name).currentPathChanged.connect(lambda *args: self.pathTimer.start())
        core, parameters = self.logic.core, self.logic.getParameterNode
        self.annotations = AnnotationPanel(self.ui, app, core, parameters, self.parameterNode, self.previewTimer.start)
        self.jobs = JobPanel(self.ui, app, core, parameters, self.parameterNode, self.annotations.refreshCases,
                             qtJobRunner, lambda: DependencyChecker(app.confirmOkCancelDisplay, app.pip_install))
        self.ui.previewButton.clicked.connect(self.onPreview)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *a: self.setParameterNode(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        for timer in (self.previewTimer, self.pathTimer):
            timer.stop()
        for helper in (self.annotations, self.jobs, self.logic.core if self.logic else None):
            if helper:
                helper.cleanup()
        if self._guiNode is not None:
            self._guiNode.disconnectGui(self._guiTag)
        self.removeObservers()

    def onReload(self) -> None:
        """Slicer's Reload: the helper package's submodules first (dependencies first), then this file."""
        import PASegSlicer

        PASegSlicer.reloadSubmodules()
        super().onReload()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.annotations.flow.setShortcutsEnabled(True)

    def exit(self) -> None:
        self.annotations.flow.setShortcutsEnabled(False)
        self.annotations.flush()  # the edits of the last seconds become a draft now
        self.setParameterNode(None)

    def onSceneEndClose(self, *args) -> None:
        if self.parent.isEntered:  # hidden: enter() initialises it when the module is shown again
            self.initializeParameterNode()

    def parameterNode(self):
        """The parameter node while the module is shown, else ``None`` (``logic.getParameterNode()`` always)."""
        return self._parameterNode

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p, settings = self._parameterNode, qt.QSettings()
        if not p.inputVolume:  # the first scalar volume the selector shows (not a label map)
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            p.inputVolume = next((v for v in volumes if v.GetClassName() == "vtkMRMLScalarVolumeNode"), None)
        for name, default in (("workFolder", str(pathlib.Path.home() / "PASeg")), ("datasetFolder", "")):
            if not pathText(getattr(p, name)):  # a new scene: the folders of the last session
                remembered = str(settings.value(f"PASeg/{name}", default) or default)
                if remembered:
                    setattr(p, name, pathlib.Path(remembered))

    def setParameterNode(self, node) -> None:
        """Show ``node`` (``None``: hidden). The GUI stays connected to the one node: before Slicer 5.12 every
        ``connectGui`` left an observer behind, and the node (a singleton) survives scene close."""
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode, self._last = node, None
        if node:
            if node is not self._guiNode:
                if self._guiNode is not None:
                    self._guiNode.disconnectGui(self._guiTag)
                self._guiNode, self._guiTag = node, node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.onParameterChanged()

    def onParameterChanged(self, *args) -> None:
        """Re-observe objects, re-read cases and models, re-preview, when the parameters they depend on change."""
        p = self._parameterNode
        key = (p.inputVolume, str(p.datasetFolder), str(p.workFolder), (p.epsilon, p.lamb))
        last = self._last or (False, None, None, key[3])
        if key[0] is not last[0]:
            self.annotations.observeObjects()
        if key[1:3] != last[1:3]:
            self.onFoldersChanged()
        if key[3] != last[3] and p.autoPreview and self.logic.core.hasPreview(p.inputVolume):
            self.previewTimer.start()
        self._last = key
        for name in PATH_PARAMETERS:  # parameter → field, only where they differ (an unset path shows empty)
            widget, text = getattr(self.ui, name), pathText(getattr(p, name))
            if pathlib.Path(widget.currentPath.strip() or ".") != pathlib.Path(text or "."):
                wasBlocked = widget.blockSignals(True)
                widget.currentPath = text
                widget.blockSignals(wasBlocked)
        volume = p.inputVolume is not None
        self.ui.addTumorButton.enabled = self.ui.previewButton.enabled = self.ui.saveButton.enabled = volume
        self.jobs.updateButtons()

    def onPathsEdited(self) -> None:
        """Field → parameter, once typing paused (each change re-reads the dataset and the model list)."""
        p = self._parameterNode
        for name in PATH_PARAMETERS if p else ():
            text = getattr(self.ui, name).currentPath.strip()
            if pathlib.Path(text or ".") != pathlib.Path(str(getattr(p, name)) or "."):
                setattr(p, name, pathlib.Path(text))

    def onFoldersChanged(self) -> None:
        p, settings = self._parameterNode, qt.QSettings()
        for name in ("workFolder", "datasetFolder"):  # remembered for the next scene and the next session
            if pathText(getattr(p, name)):
                settings.setValue(f"PASeg/{name}", pathText(getattr(p, name)))
        self.annotations.refreshCases()
        self.jobs.refreshModels()

    def onPreview(self, quiet=False) -> None:
        p = self._parameterNode
        if p is None or p.inputVolume is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Pseudo-label preview failed."), waitCursor=True):
            checker = DependencyChecker(slicer.util.confirmOkCancelDisplay, slicer.util.pip_install)
            randomWalker = self.logic.core.usesRandomWalker(p.inputVolume)
            checker.ensure(ANNOTATION + (RANDOM_WALKER if randomWalker else ()), _("The pseudo-label preview"))
            try:
                if quiet and not self.logic.core.autoPreviewAllowed(p.inputVolume):  # it runs on the GUI thread
                    text = _("Auto-preview paused: the tumors' pseudo labels take about {s:.1f} s; press "
                             "Preview.").format(s=self.logic.core.previewSeconds(p.inputVolume))
                    return self.ui.annotationStatusLabel.setText(text)
                segmentation = self.logic.core.expansionPreview(p.inputVolume, p.epsilon, p.lamb)
            except ValueError as exc:  # incomplete or invalid clicks: shown, not raised, during live preview
                if not quiet:
                    raise
                return self.ui.annotationStatusLabel.setText(str(exc))
            segmentation.GetDisplayNode().SetVisibility(True)


class PASegLogic(ScriptedLoadableModuleLogic):
    """Thin: the parameter node, and ``core``, the PASegSlicer logic on ``slicer.mrmlScene``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = PASegCoreLogic(slicer.mrmlScene)
        self._wrapper = None

    def getParameterNode(self):
        """One wrapper per parameter node (each wrapper observes the node: new ones per enter() would pile up)."""
        node = super().getParameterNode()
        if self._wrapper is None or self._wrapper.parameterNode is not node:
            self._wrapper = PASegParameterNode(node)
        return self._wrapper


class PASegTest(ScriptedLoadableModuleTest):
    """The scenarios of ``PASegSlicer.selftest``: seven clicks → preview, extreme points and a box → preview always;
    then save → tiny training job → prediction job → import when torch is installed (the jobs run in
    ``PythonSlicer`` children, as the module runs them)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_SevenPointsToPreview, self.test_KindsToPreview, self.test_FullPath):
            self.setUp()
            test()

    def test_SevenPointsToPreview(self):
        from PASegSlicer.selftest import runScenario

        self.delayDisplay("Synthetic tumor, seven points placed through the logic, expansion preview")
        counts = runScenario(slicer.mrmlScene)
        self.delayDisplay(f"Segment voxel counts: {counts}")
        self.assertGreater(counts["foreground"], 0)
        self.delayDisplay("Test passed")

    def test_KindsToPreview(self):
        from PASegSlicer.selftest import kindsScenarioOrSkip

        self.delayDisplay("Extreme points, then a box, of a synthetic tumor: random-walker preview")
        self.delayDisplay(kindsScenarioOrSkip(slicer.mrmlScene, interactive=not slicer.app.testingEnabled()))
        self.delayDisplay("Test passed")

    def test_FullPath(self):
        import importlib.util
        import tempfile

        from PASegSlicer.selftest import runFullScenario

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("monai") is None:
            return self.delayDisplay("torch or monai is not installed: the training/prediction path is skipped")
        self.delayDisplay("Clicks → preview → save → tiny training job → prediction job → import (about a minute)")
        with tempfile.TemporaryDirectory(prefix="PASegTest-") as folder:
            made = runFullScenario(slicer.mrmlScene, folder)
        self.delayDisplay(f"Made: {made}")
        self.assertGreaterEqual(made["predictedVoxels"], 0)
        self.delayDisplay("Test passed")
