"""The annotation and case panels of the PASeg widget: the current volume's tumours of any annotation kind (the kind
of new tumours, a dense tumour's segment or label map), the placement prompt, drafts saved on their own, and case
navigation that never loses a click.

Every decision is made by :class:`~PASegSlicer.annotation.logic.PASegCoreLogic`,
:mod:`PASegSlicer.annotation.objects` and :mod:`PASegSlicer.annotation.cases`; the panel takes its collaborators (the
widgets, the logic, the Slicer application's services, parameter getters, a preview request), so it runs headless
on a real MRML scene in the tests. Clicks are kept as drafts (``<work>/drafts/<case>.mrk.json``; a dense tumour's
voxels beside it) two seconds after the last edit (a paint stroke on a dense tumour's segmentation too), when another
volume is selected, before a case is left and when the scene closes; a case that cannot be kept is only left when the
user agrees to discard it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Tuple

from ..annotation import dense, kinds, objects
from ..annotation.cases import DRAFT, CaseList, datasetCaseId, pathText
from ..annotation.logic import PASegCoreLogic
from .app import App, ParameterGetter, ShownParameterGetter
from .caseflow import CaseFlow

AUTOSAVE_DELAY_MS = 2000
KIND_SETTING = "PASeg/annotationKind"


def _(text: str) -> str:
    """Slicer's ``tr`` (this file is its translation context); the text itself without Slicer's i18n (headless)."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


class AnnotationPanel:
    """The annotation and case panels (see module docstring).

    Args:
        ui: the module's widgets (``slicer.util.childWidgetVariables`` of ``PASeg.ui``).
        app: the Slicer application's services (:class:`~PASegSlicer.gui.app.SlicerApp` in Slicer).
        core: the logic on the scene whose volumes are annotated.
        parameters: the module's parameter node, also while the module is hidden (clicks edited in the Markups
            module, and a scene closed from another module, still reach the work folder).
        shownParameters: the parameter node while the module is shown, else ``None``.
        requestPreview: asks for a pseudo-label preview (the widget's debounced auto-preview).
    """

    def __init__(self, ui: Any, app: App, core: PASegCoreLogic, parameters: ParameterGetter,
                 shownParameters: ShownParameterGetter, requestPreview: Callable[[], None]) -> None:  # fmt: skip
        from slicer.util import VTKObservationMixin

        self.ui, self.app, self.core = ui, app, core
        self.parameters, self.shownParameters, self.requestPreview = parameters, shownParameters, requestPreview
        self.observations = VTKObservationMixin()  # removed by cleanup()
        self.cases, self.nodes, self._volumeID, self._edited = None, [], None, False
        self._optionalID, self._segmentIds, self._syncing = None, [""], False  # see onPlace, updateDenseWidgets
        self._sources = []  # the segmentation nodes of dense tumours, observed (see observeObjects)
        self._objectTags: List[Tuple[Any, int]] = []  # (node, observer tag) of self.nodes and self._sources
        self._names: List[str] = []  # the names the object combo box lists (a rename outside PASeg refreshes it)
        self._unreadable: Dict[str, str] = {}  # volume ID → why its saved clicks could not be read (said once)
        self.selectorTimer = app.timer(0, self.hidePreviewSegmentations)
        self.statusTimer = app.timer(0, self.updateStatus)  # one edit fires several events: read the status once
        self.objectsTimer = app.timer(0, self.observeObjects)
        self.autosaveTimer = app.timer(AUTOSAVE_DELAY_MS, lambda: self.keepClicks(self._node(self._volumeID)))
        u = self.ui
        for button, slot in ((u.addTumorButton, self.onAddTumor), (u.placeButton, self.onPlace),
                             (u.saveButton, self.onSave), (u.refreshCasesButton, self.refreshCases),
                             (u.loadCaseButton, self.onLoadCase), (u.previousCaseButton, lambda: self.onStepCase(-1)),
                             (u.nextCaseButton, lambda: self.onStepCase(1)),
                             (u.importLabelButton, self.onImportLabel)):  # fmt: skip
            button.clicked.connect(slot)
        self.flow = CaseFlow(self, u.saveAndNextButton, u.renameTumorButton, u.deleteTumorButton)  # and the keys
        self.kindNames = kinds.kindNames()
        u.kindComboBox.addItems([kinds.kindTitle(k) for k in self.kindNames])
        remembered = app.setting(KIND_SETTING, kinds.DEFAULT_KIND)
        u.kindComboBox.currentIndex = self.kindNames.index(remembered) if remembered in self.kindNames else 0
        u.kindComboBox.currentIndexChanged.connect(lambda index: app.setSetting(KIND_SETTING, self.kindNames[index]))
        u.objectComboBox.currentIndexChanged.connect(lambda *args: self.updateDenseWidgets())
        u.denseSegmentationSelector.currentNodeChanged.connect(self.onDenseSegmentationChanged)
        u.denseSegmentComboBox.currentIndexChanged.connect(self.onDenseSegmentChanged)
        u.denseLabelWidget.visible = False
        u.caseList.itemDoubleClicked.connect(lambda item: self.onLoadCase())
        self.reviewOrder = False  # the case list sorted worst first (see onReviewSort)
        u.reviewSortButton.clicked.connect(self.onReviewSort)
        u.reviewNextButton.clicked.connect(self.onReviewNext)
        scene = core.scene
        # before the widget lets go of its parameter node (the work folder) on the same event
        self.observations.addObserver(scene, scene.StartCloseEvent, self.onSceneAboutToClose, priority=1.0)
        self.observations.addObserver(scene, scene.NodeRemovedEvent, lambda *args: self.objectsTimer.start())
        self.observations.addObserver(scene, scene.NodeAddedEvent, lambda *args: self.selectorTimer.start())

    def cleanup(self) -> None:
        self.flush()
        for timer in (self.statusTimer, self.objectsTimer, self.autosaveTimer, self.selectorTimer):
            timer.stop()
        for node, tag in self._objectTags:
            node.RemoveObserver(tag)
        self.flow.cleanup()
        self.observations.removeObservers()

    def flush(self) -> None:
        """Save a pending draft now (the module is left or closed before the autosave delay ran out)."""
        if self.autosaveTimer.isActive():
            self.autosaveTimer.stop()
            self.keepClicks(self._node(self._volumeID))  # never raises: cleanup() goes on

    def volume(self):
        return self.parameters().inputVolume

    def workFolder(self):
        return pathText(self.parameters().workFolder) or None

    def _node(self, nodeID):
        return self.core.scene.GetNodeByID(nodeID) if nodeID else None

    # -- tumours -------------------------------------------------------------------------------------------
    def observeObjects(self) -> None:
        """Follow the current volume's object nodes (point edits, placements, unplacements, renames) and the
        segmentation nodes of its dense tumours (paint strokes, segments added or removed)."""
        volume = self.volume()
        if (volume.GetID() if volume else None) != self._volumeID:
            left, self._volumeID = self._node(self._volumeID), volume.GetID() if volume else None
            self.keepClicks(left)  # the volume being left (None once it is removed); a failure is said, not raised
            try:  # whatever happens, the new volume is followed below
                self.adoptDroppedImage(volume)
            except Exception:
                logging.exception("PASeg: opening the saved clicks of %s failed", volume.GetName() if volume else None)
        current = self.selectedNode()
        for node, tag in self._objectTags:  # tags, not VTKObservationMixin: its removeObserver keeps every node
            node.RemoveObserver(tag)  # it ever observed as a key (a case left would stay in memory)
        self.nodes = self.core.objectNodes(volume) if volume else []
        self._sources = kinds.denseSegmentations(self.nodes)
        watched = [(n, e) for n in self.nodes for e in objects.observedEvents()]
        watched += [(n, e) for n in self._sources for e in kinds.segmentationEvents()]
        self._objectTags = [(n, n.AddObserver(e, self.onObjectEvent)) for n, e in watched]
        self._objectTags += [(n, n.AddObserver(n.PointEndInteractionEvent, self.flow.onDragEnded)) for n in self.nodes]
        self._names = [n.GetName() for n in self.nodes]  # what the combo box shows, by position in self.nodes
        self.ui.objectComboBox.clear()
        self.ui.objectComboBox.addItems(self._names)
        self.selectNode(current)
        self.hidePreviewSegmentations()
        self.updateStatus()

    def onObjectEvent(self, caller, event) -> None:
        self._edited = True
        self.statusTimer.start()
        self.autosaveTimer.start()
        if kinds.denseSegmentations(self.nodes) != self._sources:  # a dense tumour got another segmentation
            self.objectsTimer.start()
        if [n.GetName() for n in self.nodes] != self._names:  # a tumor renamed (e.g. in the Markups module)
            self.objectsTimer.start()

    def updateStatus(self) -> None:
        volume, label = self.volume(), self.ui.annotationStatusLabel
        if not volume:
            return label.setText(_('Select a volume, then click "Add tumor".'))
        statuses = self.core.objectStatuses(volume)
        self.flow.recordEdit(volume)  # an undo step when the tumors changed
        lines = [s.prompt + (f'<br><span style="color:#c0392b">{s.error}</span>' if s.error else "") for s in statuses]
        label.setText("<br>".join(lines) or _('No tumor yet: click "Add tumor".'))
        active = self.app.markupsLogic().GetActiveListID()
        for node, status in zip(self.nodes, statuses):  # leave place mode once the tumor being placed is complete
            optional = node.GetID() == self._optionalID and status.expectedLabel is not None  # asked for B
            if status.complete and node.GetID() == active and not optional:
                self.stopPlacing()
        self.updateDenseWidgets()
        edited, self._edited = self._edited, False
        p = self.shownParameters()
        onlyDense = all(kinds.kindOf(n) == "dense" for n in self.nodes)  # its preview is its label: on request
        if edited and statuses and all(s.valid for s in statuses) and p and p.autoPreview and not onlyDense:
            self.requestPreview()

    def stopPlacing(self) -> None:
        interaction = self.app.interactionNode()
        if interaction.GetCurrentInteractionMode() == interaction.Place:
            interaction.SwitchToViewTransformMode()

    def selectedNode(self):
        """The tumor selected in the combo box, by position (its name may have changed since the list was made)."""
        index = self.ui.objectComboBox.currentIndex
        return self.nodes[index] if 0 <= index < len(self.nodes) and self.nodes[index].GetScene() else None

    def selectNode(self, node) -> None:
        """Select ``node`` in the combo box (by node, not by name); nothing when it is not listed."""
        ids = [n.GetID() for n in self.nodes]
        if node is not None and node.GetID() in ids:
            self.ui.objectComboBox.currentIndex = ids.index(node.GetID())

    def onAddTumor(self) -> None:
        node = self.core.addObject(self.volume(), self.kindNames[self.ui.kindComboBox.currentIndex])
        self.observeObjects()
        self.selectNode(node)
        self.onPlace()

    def onPlace(self) -> None:
        """Place mode on the selected tumor from its first unplaced point (a complete tumor: its optional points, a
        single point's B); refused (with a hint) when nothing is left to place (a box: drawn; a dense label)."""
        node = self.selectedNode()
        if node is None:
            return
        with self.app.tryWithErrorDisplay(_("Cannot place the points of this tumor."), waitCursor=False):
            complete = objects.placementStatus(node, self.volume()).complete
            self._optionalID = node.GetID() if complete else None  # place mode stays on for the optional points
            if not objects.startPlacement(self.app.markupsLogic(), node):
                self.app.showStatusMessage(objects.completeMessage(node), 8000)
            self.updateStatus()  # the start index fires no event: name the point Slicer fills now

    # -- a dense tumor's label ------------------------------------------------------------------------------------
    def denseNode(self):
        node = self.selectedNode()
        return node if node is not None and kinds.kindOf(node) == "dense" else None

    def updateDenseWidgets(self) -> None:
        """Show the selected tumor's dense label (its segmentation and segment) while it is a dense tumor."""
        node, u = self.denseNode(), self.ui
        u.denseLabelWidget.visible = node is not None
        if node is None:
            return
        segmentation, segmentId = kinds.denseSource(node)
        self._syncing = True
        try:
            u.denseSegmentationSelector.setCurrentNode(segmentation)
            self.fillSegments(segmentation, segmentId)
        finally:
            self._syncing = False

    def fillSegments(self, segmentationNode, segmentId: str = "") -> None:
        segmentation = segmentationNode.GetSegmentation() if segmentationNode is not None else None
        ids = list(segmentation.GetSegmentIDs()) if segmentation is not None else []
        self._segmentIds = [""] + ids
        combo, wasBlocked = self.ui.denseSegmentComboBox, self.ui.denseSegmentComboBox.blockSignals(True)
        combo.clear()
        combo.addItems([_("all segments")] + [segmentation.GetSegment(i).GetName() for i in ids])
        combo.currentIndex = self._segmentIds.index(segmentId) if segmentId in self._segmentIds else 0
        combo.blockSignals(wasBlocked)

    def onDenseSegmentationChanged(self, segmentationNode) -> None:
        node = self.denseNode()
        if self._syncing or node is None:
            return
        if segmentationNode is None:
            node.RemoveNodeReferenceIDs(kinds.DENSE_ROLE)
        elif kinds.isPreviewSegmentation(segmentationNode):  # hidden from the selector; refused if picked anyway
            self.app.errorDisplay(kinds.previewProblem(segmentationNode))
            return self.updateDenseWidgets()  # back to the tumor's own label
        else:
            kinds.setDenseSource(node, segmentationNode)
        self.fillSegments(segmentationNode)

    def hidePreviewSegmentations(self) -> None:
        """Keep PASeg's preview segmentations out of the dense-label selector (each preview rewrites them: as a
        dense label, each preview would rewrite its own source and ask for the next)."""
        proxy = self.ui.denseSegmentationSelector.sortFilterProxyModel()  # qMRMLSortFilterProxyModel
        found = kinds.previewSegmentationIDs(self.core.scene)
        if list(proxy.hiddenNodeIDs) != found:
            proxy.hiddenNodeIDs = found

    def onDenseSegmentChanged(self, index: int) -> None:
        node, segmentation = self.denseNode(), self.ui.denseSegmentationSelector.currentNode()
        if not self._syncing and node is not None and segmentation is not None and 0 <= index < len(self._segmentIds):
            kinds.setDenseSource(node, segmentation, self._segmentIds[index])

    def onImportLabel(self) -> None:
        """A label map file (on the volume's grid) becomes the selected dense tumor's label."""
        node = self.denseNode()
        if node is None:
            return self.app.showStatusMessage(_('Select a tumor of kind "dense label" first.'), 5000)
        path = self.app.openFileName(_("Import a label map"),
                                     _("Label maps (*.nii.gz *.nii *.nrrd *.mha *.mhd);;All files (*)"))  # fmt: skip
        if path:
            with self.app.tryWithErrorDisplay(_("Importing the label map failed."), waitCursor=True):
                dense.importDenseLabel(self.core.scene, self.volume(), node, path)
                self.updateDenseWidgets()

    def onSave(self) -> None:
        p, volume = self.parameters(), self.volume()
        with self.app.tryWithErrorDisplay(_("Saving the annotations failed."), waitCursor=True):
            written = self.core.saveAnnotations(volume, p.datasetFolder, self.workFolder())
            if "draft" in written:
                self.app.warningDisplay(
                    _("Saved as a draft; the dataset gets these clicks once every tumor is complete and valid.")
                    + f"\n\n{self.core.caseProblem(volume)}\n\n{written['draft']}"
                )
            else:
                self.app.showStatusMessage(_("Saved ") + ", ".join(str(v) for v in written.values()), 5000)
        self.refreshCases()  # outside: the clicks are written, whatever re-reading the case list meets

    def autosave(self, volume) -> str:
        """Keep the volume's unsaved clicks as a draft. Returns why they could not be kept ("" when they are)."""
        if volume is None or volume.GetScene() is None:
            return ""
        try:
            path = self.core.autosaveDraft(volume, self.workFolder())
        except ValueError as exc:  # no work folder, or an object not laid out as its kind (AnnotationError)
            message = _("Unsaved clicks of {name}: {problem}").format(name=volume.GetName(), problem=exc)
            self.app.showStatusMessage(message, 10000)
            return str(exc)
        except (OSError, RuntimeError) as exc:  # the disk or share of the work folder: full, read-only, gone (a log
            # line, no traceback); SimpleITK (a dense tumour's voxels) raises RuntimeError where Python raises OSError
            problem = _("not written to {folder} ({error}); only the scene holds them").format(folder=self.workFolder(),
                                                                                                 error=exc)  # fmt: skip
            logging.error("PASeg: unsaved clicks of %s: %s", volume.GetName(), problem)
            self.app.showStatusMessage(_("Unsaved clicks of {name}: {problem}").format(name=volume.GetName(),
                                                                                        problem=problem), 15000)
            return problem
        if path is not None:
            self.app.showStatusMessage(_("Draft saved: {path}").format(path=path), 3000)
            try:  # the draft is written, whatever re-reading the case list meets
                self.refreshCases()
            except Exception:
                logging.exception("PASeg: the case list could not be refreshed after the draft %s", path)
        return ""

    def keepClicks(self, volume) -> str:
        """:meth:`autosave` that never raises: an unexpected error is logged (with its traceback) and said like a
        disk error. Returns why the clicks could not be kept ("" when they are)."""
        try:
            return self.autosave(volume)
        except Exception as exc:
            name = volume.GetName() if volume is not None else ""
            logging.exception("PASeg: keeping the unsaved clicks of %s failed", name)
            problem = _("not kept ({error}); only the scene holds them").format(error=f"{type(exc).__name__}: {exc}")
            self.app.showStatusMessage(_("Unsaved clicks of {name}: {problem}").format(name=name, problem=problem),
                                       15000)  # fmt: skip
            return problem

    def onSceneAboutToClose(self, *args) -> None:
        """The scene closes (it cannot be stopped): keep every unsaved volume's clicks, each on its own (one that fails
        never stops the others), and name every volume whose clicks could not be kept."""
        self.autosaveTimer.stop()
        lost = []
        try:
            unsaved = self.core.unsavedVolumes()
        except Exception as exc:  # e.g. a volume whose objects cannot be read: said, never a lost scene close
            logging.exception("PASeg: the unsaved volumes could not be listed when the scene closed")
            unsaved, lost = [], [_("the unsaved volumes could not be listed ({error})").format(error=exc)]
        for volume in unsaved:
            problem = self.keepClicks(volume)
            if problem:
                lost.append(f"{volume.GetName()}: {problem}")
        if lost:
            logging.error("PASeg: clicks not saved when the scene closed: %s", "; ".join(lost))
            message = _("These clicks could not be saved before the scene closed:")
            self.app.errorDisplay(message + "\n" + "\n".join(lost))

    # -- cases ---------------------------------------------------------------------------------------------
    def refreshCases(self) -> None:
        p, row = self.parameters(), self.ui.caseList.currentRow
        before = [e.caseId for e in self.cases.entries] if self.cases else []
        self.ui.caseList.clear()
        if not pathText(p.datasetFolder):
            return
        current = self.cases.current.caseId if self.cases and self.cases.current else None
        self.cases = CaseList(p.datasetFolder, self.workFolder())
        self.cases.refresh()
        self.applyReviewOrder()
        if current in [e.caseId for e in self.cases.entries]:
            self.cases.select(current)
        self.ui.caseList.addItems([e.label for e in self.cases.entries] or [self.cases.message])
        same = before == [e.caseId for e in self.cases.entries] and 0 <= row < len(before)
        self.ui.caseList.setCurrentRow(row if same else self.cases.currentIndex)  # a refresh keeps the user's row
        self.adoptDroppedImage(self.volume())  # a dataset image opened before this list existed is its case

    def _entry(self, caseId):
        return next((e for e in self.cases.entries if e.caseId == caseId), None) if self.cases and caseId else None

    def adoptDroppedImage(self, volume) -> None:
        """A dataset image opened in Slicer (drag and drop) becomes its case, with its saved clicks."""
        entry = self._entry(datasetCaseId(volume)) if volume else None
        try:
            adopted = entry is not None and self.core.adoptVolume(volume, entry.files, self.workFolder()) is not None
        except (ValueError, OSError) as exc:  # an unreadable annotation or draft (the error names the file)
            if self._unreadable.get(volume.GetID()) != str(exc):  # said once, not at every refresh
                self._unreadable[volume.GetID()] = str(exc)
                self.app.warningDisplay(_("The saved clicks of case {case} could not be read, so volume {name} "
                                          "shows none of them (saving it cannot replace that file):\n\n{problem}")
                                        .format(case=entry.caseId, name=volume.GetName(), problem=exc))  # fmt: skip
            return
        self._unreadable.pop(volume.GetID() if volume else None, None)
        if adopted:
            self.observeObjects()

    def onStepCase(self, step: int) -> None:
        if self.cases and self.cases.entries:
            self.cases.currentIndex = self.ui.caseList.currentRow
            entry = self.cases.next() if step > 0 else self.cases.previous()
            self.ui.caseList.setCurrentRow(self.cases.currentIndex)
            if entry is not None:
                self.onLoadCase()

    def onLoadCase(self) -> None:
        """Open the selected case; the case left is kept as a draft (or, if it cannot be, discarded only when the
        user agrees) and unloaded."""
        if not self.cases or not (0 <= self.ui.caseList.currentRow < len(self.cases.entries)):
            return
        self.cases.currentIndex = self.ui.caseList.currentRow
        entry, previous = self.cases.current, self.volume()
        problem = self.autosave(previous)
        leaving = previous is not None and datasetCaseId(previous) != entry.caseId
        unload = leaving and self._entry(datasetCaseId(previous)) is not None  # a case of the list: free its memory
        if problem and unload and not self.app.confirmYesNoDisplay(
            _("The clicks of {name} could not be saved:\n{problem}\n\nDiscard them and open {case}?").format(
                name=previous.GetName(), problem=problem, case=entry.caseId)
        ):  # fmt: skip
            return
        if leaving and not problem and not self.flow.confirmLeaving(previous, entry):  # only a draft: says so
            return
        failed = _("Loading case {case} failed.").format(case=entry.caseId)
        with self.app.tryWithErrorDisplay(failed, waitCursor=True):
            volume = self.core.openCase(entry.files, self.workFolder())
            self.parameters().inputVolume = volume
            self.app.setSliceViewerLayers(background=volume, fit=True)
            if unload and previous is not volume:
                self.stopPlacing()
                self.core.unloadCase(previous, discard=bool(problem))
            self.observeObjects()
            if entry.status == DRAFT:
                self.app.showStatusMessage(_("{case}: its draft was restored (Save puts it into the dataset)")
                                           .format(case=entry.caseId), 8000)  # fmt: skip

    # -- the review queue (``<work>/review_queue.json``: "Rank cases for review") --------------------------------
    def applyReviewOrder(self) -> None:
        """Sort the case list worst first while the user asks for it (:meth:`onReviewSort`); an unreadable queue is
        said in the status bar."""
        if self.cases is None:
            return
        if self.cases.reviewMessage:
            self.app.showStatusMessage(self.cases.reviewMessage, 10000)
        if self.reviewOrder:
            self.cases.sortByReview()

    def onReviewSort(self) -> None:
        """Switch the case list between the review order (the model's most unsure case first) and the name order."""
        self.reviewOrder = not self.reviewOrder
        self.ui.reviewSortButton.text = _("Sort: by name") if self.reviewOrder else _("Sort: worst first")
        self.refreshCases()
        if self.reviewOrder and self.cases is not None and not any(e.review for e in self.cases.entries):
            self.app.showStatusMessage(_('No review queue yet: "Rank cases for review" (Inference) makes one.'), 8000)

    def onReviewNext(self) -> None:
        """Open the worst-ranked case of the review queue not corrected (saved) since the cases were ranked, other
        than the case open now; the case left is kept as a draft like any case change (:meth:`onLoadCase`)."""
        self.refreshCases()  # the queue and the saved annotations as they are now (a case just saved is corrected)
        if self.cases is None:
            return self.app.showStatusMessage(_("Choose a dataset folder first."), 5000)
        volume = self.volume()
        entry = self.cases.worstUncorrected(exclude=datasetCaseId(volume) if volume else None)
        if entry is None:
            left = [e.caseId for e in self.cases.entries if e.review is not None and not e.review.corrected]
            if left:  # only the open case is left
                message = _("{case}, open now, is the last case of the review queue not corrected yet.")
            elif any(e.review for e in self.cases.entries):
                message = _("Every case of the review queue was corrected; rank the cases again after retraining.")
            else:
                message = _('No review queue yet: "Rank cases for review" (Inference) makes one.')
            return self.app.showStatusMessage(message.format(case=left[0] if left else ""), 8000)
        self.ui.caseList.setCurrentRow(self.cases.currentIndex)
        self.onLoadCase()
        self.app.showStatusMessage(_("Review #{rank}: {case} (disagreement {score:.3f})").format(
            rank=entry.review.rank, case=entry.caseId, score=entry.review.score), 8000)  # fmt: skip
