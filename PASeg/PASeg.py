"""PASeg: train a 3D segmentation model from seven clicks per tumour (PA-Seg), inside 3D Slicer.

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

from PASegSlicer import jobs  # noqa: E402
from PASegSlicer.cases import CaseList  # noqa: E402
from PASegSlicer.dependencies import ANNOTATION, DependencyChecker  # noqa: E402
from PASegSlicer.logic import PASegCoreLogic  # noqa: E402

NETWORKS = ["unet2d5", "unet3d", "attention_unet"]  # PASegLib.networks.NETWORKS (checked by a test)


class PASeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PASeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups", "Segmentations", "Plots"]
        self.parent.contributors = ["PASeg developers"]
        self.parent.helpText = _(
            "Annotate each tumour with seven points, preview the seed expansion, train a "
            "PA-Seg model in the background and segment new volumes with it."
        )
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
    trainMode: Annotated[str, Choice(list(jobs.TRAIN_MODES))] = "stage 1 + SCM"
    networkA: Annotated[str, Choice(NETWORKS)] = "unet2d5"
    networkB: Annotated[str, Choice(NETWORKS)] = "attention_unet"
    scmRunA: pathlib.Path
    scmRunB: pathlib.Path
    epochs: Annotated[int, WithinRange(1, 5000)] = 300
    deviceMode: Annotated[str, Choice(list(jobs.DEVICE_MODES))] = "auto"
    gpuIndex: Annotated[int, WithinRange(0, 15)] = 0
    trainConfig: pathlib.Path
    modelRunDir: pathlib.Path
    restrictToBox: bool = True
    largestComponent: bool = False


class PASegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the GUI: annotation and cases here, training and inference in ``PASegSlicer.jobpanel``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._guiTag = self.cases = self.jobs = None
        self._observed, self._last = [], None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from PASegSlicer.jobpanel import JobPanel  # GUI-only helper (Qt dialogs, QProcess)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PASeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PASegLogic()
        self.jobs = JobPanel(self)
        self.previewTimer = qt.QTimer()
        self.previewTimer.setSingleShot(True)
        self.previewTimer.setInterval(300)  # debounce: dragging a point or a slider re-previews once
        self.previewTimer.timeout.connect(lambda: self.onPreview(quiet=True))
        u = self.ui
        for button, slot in ((u.addTumorButton, self.onAddTumor), (u.placeButton, self.onPlace),
                             (u.previewButton, self.onPreview), (u.saveButton, self.onSave),
                             (u.refreshCasesButton, self.refreshCases), (u.loadCaseButton, self.onLoadCase),
                             (u.previousCaseButton, lambda: self.onStepCase(-1)),
                             (u.nextCaseButton, lambda: self.onStepCase(1))):  # fmt: skip
            button.clicked.connect(slot)
        u.caseList.itemDoubleClicked.connect(lambda item: self.onLoadCase())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *a: self.setParameterNode(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, lambda *a: self.initializeParameterNode())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, lambda *a: self.observeObjects())
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.jobs:
            self.jobs.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def parameterNode(self):
        return self._parameterNode

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if str(p.workFolder) in ("", "."):
            p.workFolder = pathlib.Path.home() / "PASeg"

    def setParameterNode(self, node) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode, self._last = node, None
        if node:
            self._guiTag = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.onParameterChanged()

    def onParameterChanged(self, *args) -> None:
        """Re-observe objects, re-read cases and models, re-preview, when the parameters they depend on change."""
        p = self._parameterNode
        key = (p.inputVolume, str(p.datasetFolder), str(p.workFolder), (p.epsilon, p.lamb))
        last = self._last or (False, None, None, key[3])
        if key[0] is not last[0]:
            self.observeObjects()
        if key[1:3] != last[1:3]:
            self.refreshCases()
            self.jobs.refreshModels()
        if key[3] != last[3] and p.autoPreview and self.logic.core.hasPreview(p.inputVolume):
            self.previewTimer.start()
        self._last = key
        volume = p.inputVolume is not None
        self.ui.addTumorButton.enabled = self.ui.previewButton.enabled = self.ui.saveButton.enabled = volume
        self.jobs.updateButtons()

    # -- annotation ----------------------------------------------------------------------------------------
    def observeObjects(self) -> None:
        """Follow the current volume's object nodes: every placement, move or unplacement re-validates."""
        for node in self._observed:
            self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateAnnotationStatus)
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        self._observed = self.logic.core.objectNodes(volume) if volume else []
        for node in self._observed:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateAnnotationStatus)
        current = self.ui.objectComboBox.currentText
        self.ui.objectComboBox.clear()
        self.ui.objectComboBox.addItems([n.GetName() for n in self._observed])
        self.ui.objectComboBox.setCurrentText(current)
        self.updateAnnotationStatus()

    def updateAnnotationStatus(self, *args) -> None:
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if not volume:
            return self.ui.annotationStatusLabel.setText(_('Select a volume, then click "Add tumor".'))
        statuses = self.logic.core.objectStatuses(volume)
        lines = [s.prompt + (f'<br><span style="color:#c0392b">{s.error}</span>' if s.error else "") for s in statuses]
        self.ui.annotationStatusLabel.setText("<br>".join(lines) or _('No tumor yet: click "Add tumor".'))
        caller = args[0] if args else None
        for node, status in zip(self._observed, statuses):  # leave place mode once this tumor's 7 points are in
            if node is caller and status.complete and slicer.modules.markups.logic().GetActiveListID() == node.GetID():
                slicer.app.applicationLogic().GetInteractionNode().SwitchToViewTransformMode()
        if args and statuses and all(s.valid for s in statuses) and self._parameterNode.autoPreview:
            self.previewTimer.start()

    def onAddTumor(self) -> None:
        node = self.logic.core.addObject(self._parameterNode.inputVolume)
        self.observeObjects()
        self.ui.objectComboBox.setCurrentText(node.GetName())
        self.onPlace()

    def onPlace(self) -> None:
        """Place mode on the selected tumor: Slicer fills its first unplaced point (F, R, L, A, P, I, S)."""
        for node in self._observed:
            if node.GetName() == self.ui.objectComboBox.currentText:
                slicer.modules.markups.logic().SetActiveList(node)
                slicer.modules.markups.logic().StartPlaceMode(True)

    def onPreview(self, quiet=False) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Expansion preview failed."), waitCursor=True):
            checker = DependencyChecker(slicer.util.confirmOkCancelDisplay, slicer.util.pip_install)
            checker.ensure(ANNOTATION, _("The seed expansion"))
            try:
                segmentation = self.logic.core.expansionPreview(p.inputVolume, p.epsilon, p.lamb)
            except ValueError as exc:  # incomplete or invalid clicks: shown, not raised, during live preview
                if not quiet:
                    raise
                return self.ui.annotationStatusLabel.setText(str(exc))
            segmentation.GetDisplayNode().SetVisibility(True)

    def onSave(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Saving the annotations failed."), waitCursor=True):
            work = None if str(p.workFolder) in ("", ".") else p.workFolder
            written = self.logic.core.saveAnnotations(p.inputVolume, p.datasetFolder, work)
            slicer.util.showStatusMessage(_("Saved ") + ", ".join(str(v) for v in written.values()), 5000)
            self.refreshCases()

    # -- cases ---------------------------------------------------------------------------------------------
    def refreshCases(self) -> None:
        p = self._parameterNode
        self.ui.caseList.clear()
        if p is None or str(p.datasetFolder) in ("", "."):
            return
        current = self.cases.current.caseId if self.cases and self.cases.current else None
        self.cases = CaseList(p.datasetFolder, None if str(p.workFolder) in ("", ".") else p.workFolder)
        self.cases.refresh()
        if current in [e.caseId for e in self.cases.entries]:
            self.cases.select(current)
        self.ui.caseList.addItems([e.label for e in self.cases.entries] or [self.cases.message])
        self.ui.caseList.setCurrentRow(self.cases.currentIndex)

    def onStepCase(self, step: int) -> None:
        if self.cases and self.cases.entries:
            self.cases.currentIndex = self.ui.caseList.currentRow
            entry = self.cases.next() if step > 0 else self.cases.previous()
            self.ui.caseList.setCurrentRow(self.cases.currentIndex)
            if entry is not None:
                self.onLoadCase()

    def onLoadCase(self) -> None:
        if not self.cases or not (0 <= self.ui.caseList.currentRow < len(self.cases.entries)):
            return
        self.cases.currentIndex = self.ui.caseList.currentRow
        entry = self.cases.current
        message = _("Loading case {case} failed.").format(case=entry.caseId)
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            volume = self.logic.core.findCaseVolume(entry.caseId) or self.logic.core.loadCase(entry.files)
            self._parameterNode.inputVolume = volume
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.observeObjects()


class PASegLogic(ScriptedLoadableModuleLogic):
    """Thin: the parameter node, and ``core``, the PASegSlicer logic on ``slicer.mrmlScene``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = PASegCoreLogic(slicer.mrmlScene)

    def getParameterNode(self):
        return PASegParameterNode(super().getParameterNode())


class PASegTest(ScriptedLoadableModuleTest):
    """Runs in Slicer without torch and without network (the scenario is in ``PASegSlicer.selftest``)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SevenPointsToPreview()

    def test_SevenPointsToPreview(self):
        from PASegSlicer.selftest import runScenario

        self.delayDisplay("Synthetic tumor, seven points placed through the logic, expansion preview")
        counts = runScenario(slicer.mrmlScene)
        self.delayDisplay(f"Segment voxel counts: {counts}")
        self.assertGreater(counts["foreground"], 0)
        self.delayDisplay("Test passed")
