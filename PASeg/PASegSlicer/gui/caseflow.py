"""The keyboard flow's actions on the annotation panel: undo and redo of tumour edits, renaming and deleting a tumour,
"Save and next", and the question asked when a case is left with only a draft (training ignores drafts).

:class:`CaseFlow` is given the panel (:class:`~PASegSlicer.gui.annotationpanel.AnnotationPanel`) and works through
its collaborators (widgets, logic, application services), so it runs headless like the panel. The undo history is
:mod:`PASegSlicer.annotation.undo`; the panel records a step each time it reads the tumours' status.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ..annotation import kinds, objects, undo
from ..annotation.cases import datasetCaseId, newerDraft


def _(text: str) -> str:
    """Slicer's ``tr`` (this file is its translation context); the text itself without Slicer's i18n (headless)."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


def title(node) -> str:
    """``tumor 2 (extreme points)``: a tumour named with its kind."""
    return objects.tumourTitle(node.GetName(), kinds.kindOf(node))


class CaseFlow:
    """See module docstring; ``panel`` gives ``ui``, ``app``, ``core``, ``parameters``, the current volume and
    tumour, and the case list."""

    def __init__(self, panel: Any, saveAndNextButton: Any, renameButton: Any, deleteButton: Any) -> None:
        from . import shortcuts

        self.panel = panel
        self.histories = undo.VolumeHistories()
        self._leaving: Optional[str] = None  # the volume whose draft-only leaving was agreed to ("Save and next")
        for button, slot in ((saveAndNextButton, self.onSaveAndNext), (renameButton, self.onRenameTumor),
                             (deleteButton, self.onDeleteTumor)):  # fmt: skip
            button.clicked.connect(slot)
        self.shortcuts = shortcuts.install(panel.app, panel)
        scene = panel.core.scene  # removed with the panel's other observations (its cleanup)
        panel.observations.addObserver(scene, scene.EndCloseEvent, self.onSceneClosed)

    def setShortcutsEnabled(self, enabled: bool) -> None:
        """The keys work while the module is shown (the widget's ``enter`` / ``exit``)."""
        for _shortcut, handle in self.shortcuts:
            handle.setEnabled(bool(enabled))

    def cleanup(self) -> None:
        """Remove the shortcuts (a module reload must not leave a second, ambiguous set behind)."""
        for _shortcut, handle in self.shortcuts:
            handle.setEnabled(False)
            handle.deleteLater()
        self.shortcuts = []

    @property
    def scene(self):
        return self.panel.core.scene

    # -- undo and redo ---------------------------------------------------------------------------------------------
    def recordEdit(self, volume) -> None:
        """Keep the volume's tumours as they are now as an undo step (nothing when they did not change)."""
        self.histories.prune(self.scene)
        if volume is not None:
            self.histories.record(self.scene, volume)

    def onSceneClosed(self, *args) -> None:
        """The scene closed: its volumes' undo steps go with it (the next volumes reuse their IDs)."""
        self.histories.clear()

    def onDragEnded(self, *args) -> None:
        """A point's drag ended (``PointEndInteractionEvent``): its last position closes the step, and the next
        move of the same point is a step of its own."""
        volume = self.panel.volume()
        if volume is not None:
            self.recordEdit(volume)  # the last move's status timer may not have run yet
            self.histories.of(volume).endDrag()

    def onUndo(self) -> None:
        self._step(back=True)

    def onRedo(self) -> None:
        self._step(back=False)

    def _step(self, back: bool) -> None:
        p = self.panel
        volume = p.volume()
        if volume is None:
            return
        self.recordEdit(volume)  # an edit whose status timer has not run yet is a step of its own
        history = self.histories.of(volume)
        moved = history.undo() if back else history.redo()
        if moved is None:
            return p.app.showStatusMessage(_("Nothing to undo.") if back else _("Nothing to redo."), 3000)
        left, target = moved
        changed, text = undo.changedNodes(left, target), undo.describe(left, target)
        with p.app.tryWithErrorDisplay(_("Undo failed.") if back else _("Redo failed."), waitCursor=False):
            newIDs = undo.restore(self.scene, volume, target)
        history.renameNodes(newIDs)
        p.observeObjects()
        nodes = [self.scene.GetNodeByID(newIDs.get(i, i)) for i in changed]
        self.resumePlacement([n for n in nodes if n is not None])
        p.app.showStatusMessage((_("Undone: ") if back else _("Redone: ")) + text, 6000)

    def resumePlacement(self, changed: List) -> None:
        """Select the tumour an undo or redo changed; in place mode, placing resumes at its first unplaced point."""
        p = self.panel
        if changed:
            p.ui.objectComboBox.setCurrentText(changed[0].GetName())
        interaction, markups = p.app.interactionNode(), p.app.markupsLogic()
        if interaction.GetCurrentInteractionMode() != interaction.Place:
            return
        active = self.scene.GetNodeByID(markups.GetActiveListID() or "")
        ours = {n.GetID() for n in p.nodes}
        if active is None:  # the tumour being placed was removed: a click would make a stray markups node
            return p.stopPlacing()
        if active.GetID() not in ours:
            return
        for node in changed + [active]:
            if objects.startPlacement(markups, node):
                p.updateStatus()  # the start index fires no event: name the point Slicer fills now
                return
        p.stopPlacing()

    # -- rename and delete -----------------------------------------------------------------------------------------
    def onRenameTumor(self) -> None:
        p = self.panel
        node = p.selectedNode()
        if node is None:
            return p.app.showStatusMessage(_("Select a tumor first."), 5000)
        typed = p.app.getText(_("Rename tumor"), _("New name of {tumor}:").format(tumor=title(node)), node.GetName())
        if typed is None:
            return
        try:
            name = undo.checkNewName(self.scene, p.volume(), node, typed)
        except ValueError as exc:
            return p.app.warningDisplay(_("{tumor} was not renamed: {problem}").format(tumor=title(node), problem=exc))
        node.SetName(name)
        p.observeObjects()
        p.ui.objectComboBox.setCurrentText(name)

    def onDeleteTumor(self) -> None:
        p = self.panel
        node = p.selectedNode()
        if node is None:
            return p.app.showStatusMessage(_("Select a tumor first."), 5000)
        name = title(node)
        question = _("Delete {tumor} and its points? (Undo brings it back: z)").format(tumor=name)
        if not p.app.confirmYesNoDisplay(question):
            return
        if p.app.markupsLogic().GetActiveListID() == node.GetID():
            p.stopPlacing()
        undo.removeObject(self.scene, node)
        p.observeObjects()
        p.app.showStatusMessage(_("Deleted {tumor} (undo: z)").format(tumor=name), 6000)

    # -- save and next; leaving a case with only a draft -----------------------------------------------------------
    def saveIntoDataset(self, volume) -> bool:
        """Save the volume's complete clicks into the dataset; ``False`` (the error shown) when that failed."""
        p = self.panel
        try:
            with p.app.tryWithErrorDisplay(_("Saving the annotations failed."), waitCursor=True):
                written = p.core.saveAnnotations(volume, p.parameters().datasetFolder, p.workFolder())
        except Exception:  # shown by tryWithErrorDisplay: the user stays on the case
            return False
        p.app.showStatusMessage(_("Saved ") + ", ".join(str(v) for v in written.values()), 5000)
        return True

    def onSaveAndNext(self) -> None:
        """Save the case (into the dataset when complete; else the user chooses: leave it as a draft, or stay), then
        open the next case that is not in the dataset yet."""
        p = self.panel
        volume = p.volume()
        if volume is not None and p.core.objectNodes(volume):
            problem = p.core.caseProblem(volume)
            if problem:
                if not self.confirmDraftOnly(volume, problem):
                    return
                self._leaving = volume.GetID()
            elif not self.saveIntoDataset(volume):
                return
        p.refreshCases()
        if not p.cases or not p.cases.entries:
            return p.app.showStatusMessage(_("Choose a dataset folder: its cases are listed in the case list."), 8000)
        caseId = datasetCaseId(volume) if volume is not None else None
        listed = caseId in [e.caseId for e in p.cases.entries]
        if listed:
            p.cases.select(caseId)
        entry = p.cases.nextUnannotated(fromStart=not listed)  # no case open yet: the first one not annotated
        if entry is None:
            self._leaving = None
            return p.app.showStatusMessage(_("Every other case of the dataset is annotated."), 8000)
        p.ui.caseList.setCurrentRow(p.cases.currentIndex)
        try:
            p.onLoadCase()
        finally:
            self._leaving = None

    def confirmDraftOnly(self, volume, problem: str) -> bool:
        return bool(self.panel.app.confirmYesNoDisplay(
            _("{case} can only be kept as a draft, which training ignores:\n{problem}\n\nLeave it with only a draft? "
              "(No: stay on it)").format(case=volume.GetName(), problem=problem)
        ))  # fmt: skip

    def confirmLeaving(self, previous, entry) -> bool:
        """Leaving ``previous`` for ``entry`` (a case of the list) when its clicks are only a draft: say so and offer
        to save them into the dataset (complete ones), or to stay (incomplete ones). ``False``: stay."""
        p = self.panel
        caseId = datasetCaseId(previous)
        files = next((e.files for e in p.cases.entries if e.caseId == caseId), None) if p.cases else None
        if files is None or previous.GetID() == self._leaving or not p.core.objectNodes(previous):
            return True
        if newerDraft(p.workFolder(), caseId, files) is None:
            return True
        problem = p.core.caseProblem(previous)
        if problem:
            if self.confirmDraftOnly(previous, problem):
                return True
            p.cases.select(caseId)  # the list shows the case the user stays on
            p.ui.caseList.setCurrentRow(p.cases.currentIndex)
            return False
        question = _("{case} is complete but only kept as a draft, which training ignores. Save it into the dataset "
                     "before opening {next}? (No: keep the draft)")  # fmt: skip
        if not p.app.confirmYesNoDisplay(question.format(case=previous.GetName(), next=entry.caseId)):
            return True
        saved = self.saveIntoDataset(previous)
        p.refreshCases()  # its status; the case being opened stays the list's current one
        return saved
