"""The keyboard flow of the annotation panel, headless on a real MRML scene: every shortcut pressed through
:class:`headlessgui.HeadlessApp`, undo and redo of points and tumours (:mod:`PASegSlicer.annotation.undo`), "Save and
next", the question asked when a case is left with only a draft, and renaming and deleting a tumour.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import require_slicer_core
from headlessgui import HeadlessApp, Parameters, widgetsOf
from PASegSlicer.annotation import cases, kinds, objects, undo
from PASegSlicer.gui import shortcuts
from PASegSlicer.mrml import volumes

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.image.geometry import lps_to_ras
from PASegLib.image.io import write_image

slicer = require_slicer_core()

#: The keys Slicer 5.8-5.12 binds to Qt shortcuts of the main window (active while the PASeg module is shown), each
#: with where it comes from (paths and lines of Slicer v5.12.3; v5.8.0 where it differs). Keys typed in the views
#: are taken from Slicer's own VTK widgets instead (:func:`_slicerViewActions`).
_MAIN_WINDOW_UI = (("Ctrl+O", "370"), ("Ctrl+S", "409"), ("Ctrl+W", "448"), ("Ctrl+Z", "471"), ("Ctrl+Y", "486"),
                   ("Ctrl+4", "501"), ("Ctrl+2", "532"), ("Ctrl+X", "547"), ("Ctrl+C", "562"), ("Ctrl+V", "577"),
                   ("Ctrl+6", "594"), ("Ctrl+H", "777"))  # fmt: skip
SLICER_QT_KEYS = {
    **{key: f"Base/QTApp/Resources/UI/qSlicerMainWindow.ui:{line}" for key, line in _MAIN_WINDOW_UI},
    "Ctrl+5": "Base/QTApp/qSlicerMainWindow.cxx:158 (panel dock)",
    "Ctrl+0": "Base/QTApp/qSlicerMainWindow.cxx:357 (error log)",
    "Ctrl+3": "Base/QTApp/qSlicerMainWindow.cxx:410 (Python console)",
    "Ctrl+`": "Base/QTApp/qSlicerMainWindow.cxx:410 (Python console)",
    "Ctrl+1": "Applications/SlicerApp/qSlicerAppMainWindow.cxx:86 (documentation)",
    "Ctrl+F": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:119 (find module)",
    "Ctrl+Left": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:179 (previous module; v5.8.0: :178)",
    "Ctrl+Right": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:199 (next module; v5.8.0: :195)",
    # QKeySequence::Back / Forward, application-wide since v5.10.0 (Qt: Alt+Left / Alt+Right on Windows and
    # Linux, also Backspace / Shift+Backspace on Windows; Cmd+[ / Cmd+] on macOS)
    "Alt+Left": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:179 (QKeySequence::Back, since v5.10.0)",
    "Alt+Right": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:199 (QKeySequence::Forward, since v5.10.0)",
    "Backspace": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:179 (QKeySequence::Back on Windows)",
    "Shift+Backspace": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:199 (QKeySequence::Forward on Windows)",
    "Ctrl+[": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:179 (QKeySequence::Back on macOS)",
    "Ctrl+]": "Base/QTGUI/qSlicerModuleSelectorToolBar.cxx:199 (QKeySequence::Forward on macOS)",
    "Ctrl+Shift+A": "Modules/Loadable/Markups/Widgets/qMRMLMarkupsToolBar.cxx:84 (create markups node)",
    "Ctrl+Shift+T": "Modules/Loadable/Markups/Widgets/qMRMLMarkupsToolBar.cxx:85 (toggle place persistence)",
    "Ctrl+Shift+Space": "Modules/Loadable/Markups/Widgets/qMRMLMarkupsToolBar.cxx:86 (place a point)",
    "Ctrl+Shift+Down": "Modules/Loadable/Sequences/Widgets/qMRMLSequenceBrowserPlayWidget.cxx:41 (play/pause)",
    "Ctrl+Shift+Left": "Modules/Loadable/Sequences/Widgets/qMRMLSequenceBrowserPlayWidget.cxx:42 (previous frame)",
    "Ctrl+Shift+Right": "Modules/Loadable/Sequences/Widgets/qMRMLSequenceBrowserPlayWidget.cxx:43 (next frame)",
    "Ctrl+B": "Modules/Loadable/SubjectHierarchy/Widgets/qSlicerSubjectHierarchyViewContextMenuPlugin.cxx:187",
    "Ctrl+P": "Modules/Loadable/Tables/qSlicerTablesModuleWidget.cxx:135 (QKeySequence::Print)",
    "Ctrl+Shift+Z": "QKeySequence::Redo on Linux (the main window's redo, qSlicerMainWindow.ui:486)",
}
#: The Segment Editor's keys (Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx:2327-2390):
#: installed only while the Segment Editor module is shown (Modules/Scripted/SegmentEditor/SegmentEditor.py:118,
#: :136), and PASeg's only while PASeg is shown, so they never meet; PASeg shares a few on purpose (the same
#: meaning there: undo, redo, previous / next).
SEGMENT_EDITOR_KEYS = {*"0123456789", *(f"Shift+{n}" for n in range(10)), "Esc", "Space", "Z", "Y", "Q", "W", "/",
                       "*", ",", ".", ">", "<", "I", "Ctrl+Z", "Ctrl+Y"}  # fmt: skip
SHARED_WITH_THE_SEGMENT_EDITOR = {"Z", "Y", ",", "."}

#: VTK key symbols of the named keys (QKeySequence text → vtkRenderWindowInteractor::GetKeySym()).
_KEYSYMS = {",": "comma", ".": "period", "[": "bracketleft", "]": "bracketright", "+": "plus", "-": "minus",
            "Left": "Left", "Right": "Right", "Up": "Up", "Down": "Down", "PgUp": "Prior", "PgDown": "Next",
            "Home": "Home", "End": "End", "Ins": "Insert", "Del": "Delete", "Esc": "Escape", "Backspace": "BackSpace",
            "Space": "space", "Return": "Return"}  # fmt: skip


def _slicerViewActions(key):
    """The widget events Slicer's own view widgets (slice intersection, camera, markups, window/level, transform
    handles: every ``vtkMRMLAbstractWidget`` of slicer-core) translate the key press ``key`` to, in any of their
    states: what the key does in a slice or 3D view that a PASeg shortcut would take away."""
    import vtk

    *modifiers, name = key.split("+") if key != "+" else ["+"]
    flags = {"Shift": vtk.vtkEvent.ShiftModifier, "Ctrl": vtk.vtkEvent.ControlModifier, "Alt": vtk.vtkEvent.AltModifier}
    modifier = sum(flags[m] for m in modifiers)
    if len(name) == 1 and name.isalnum():
        keySym = name.upper() if "Shift" in modifiers else name.lower()
    elif name in _KEYSYMS:
        keySym = _KEYSYMS[name]
    else:
        raise ValueError(f"add the VTK key symbol of {name!r} to _KEYSYMS")
    keyCode = keySym if len(keySym) == 1 else {"comma": ",", "period": ".", "plus": "+", "minus": "-"}.get(keySym, "\0")
    found = []
    for className in dir(slicer):
        widgetClass = getattr(slicer, className)
        if not (isinstance(widgetClass, type) and issubclass(widgetClass, slicer.vtkMRMLAbstractWidget)):
            continue
        try:
            widget = widgetClass()
        except TypeError:  # abstract
            continue
        for state in range(widget.GetNumberOfEventTranslators()):
            translator = widget.GetEventTranslator(state)
            event = translator.GetTranslation(vtk.vtkCommand.KeyPressEvent, modifier, keyCode, 1, keySym) if (
                translator) else 0  # fmt: skip
            if event:
                found.append((className, state, event))
    return found


@pytest.fixture
def gui(app):
    """(application services, widgets, parameters)."""
    return HeadlessApp(app), widgetsOf(), Parameters()


def _place(headless, node, obj, labels):
    """Place each point, one edit after another (the panel's timers run between them, as Qt's would)."""
    for label in labels:
        objects.setControlPoint(node, label, lps_to_ras(obj.points()[label]))
        headless.runTimers()


def _placed(node, volume):
    return objects.placedPointsLps(node, volume)


def _show(gui, panel, blob):
    """Select the blob's volume (the panel observes its tumours, as the widget does on the parameter's change);
    returns ``blob``."""
    gui[2].inputVolume = blob[0]
    panel.observeObjects()
    return blob


def _addTumour(headless, logic, volume):
    """Press "A" (add a tumour of the chosen kind); returns the tumour added."""
    headless.press("A")
    return logic.objectNodes(volume)[-1]


def _dataset(tmp_path, blob_case, annotated=()):
    """Cases c1, c2, c3 of the blob; those in ``annotated`` saved with its simulated seven clicks."""
    image, label = blob_case
    for caseId in ("c1", "c2", "c3"):
        write_image(tmp_path / "data" / f"{caseId}_image.nrrd", image.array, image.geometry)
        if caseId in annotated:
            write_markups(tmp_path / "data" / f"{caseId}.mrk.json", simulate_clicks(label, image.geometry, seed=1))
    return tmp_path / "data"


def _openFirstCase(gui, panel, tmp_path, blob_case, annotated=()):
    headless, ui, parameters = gui
    parameters.datasetFolder = _dataset(tmp_path, blob_case, annotated)
    parameters.workFolder = tmp_path / "work"
    panel.refreshCases()
    ui.caseList.doubleClick(0)
    panel.observeObjects()  # the widget does on the parameter's change
    image, label = blob_case
    return parameters.inputVolume, simulate_clicks(label, image.geometry, seed=1).objects[0]


# -- the shortcut table ------------------------------------------------------------------------------------------
def test_the_table_binds_each_key_once_away_from_slicers_keys_and_writes_the_help():
    keys = [s.key for s in shortcuts.SHORTCUTS]
    assert len(keys) == len(set(keys)) and {k: SLICER_QT_KEYS[k] for k in keys if k in SLICER_QT_KEYS} == {}
    assert set(keys) & SEGMENT_EDITOR_KEYS <= SHARED_WITH_THE_SEGMENT_EDITOR
    for key in ("S", "R", "Left", "Shift+V", "[", "Ctrl+B", "PgDown", "+"):  # the check finds Slicer's view keys
        assert _slicerViewActions(key), key
    assert {key: _slicerViewActions(key) for key in keys} == {key: [] for key in keys}  # none is a view's key
    actions = {s.action for s in shortcuts.SHORTCUTS}
    assert {"addTumor", "placeNext", "preview", "saveAndNext", "previousCase", "nextCase", "undo", "redo",
            "deleteTumor", "reviewNext"} <= actions  # fmt: skip
    table, html = shortcuts.markdownTable(), shortcuts.helpText()
    assert table.count("\n") == len(keys) + 1 and "| `z` | undo the last point" in table
    assert html.count("<li>") == len(keys) and "<b>.</b>: open the next case" in html


def test_every_shortcut_runs_its_action(gui, panel, logic, tmp_path, blob_case):
    headless, ui, parameters = gui
    volume, obj = _openFirstCase(gui, panel, tmp_path, blob_case)
    previews = []
    ui.previewButton.clicked.connect(lambda: previews.append(True))
    assert headless.press("A") and [n.GetName() for n in logic.objectNodes(volume)] == ["tumor 1"]
    interaction = headless.interactionNode()
    interaction.SwitchToViewTransformMode()
    assert headless.press("P") and interaction.GetCurrentInteractionMode() == interaction.Place
    assert headless.press("E") and previews == [True]
    node = logic.objectNodes(volume)[0]
    _place(headless, node, obj, "F")
    assert headless.press("Z") and _placed(node, volume) == {}
    assert headless.press("Y") and list(_placed(node, volume)) == ["F"]
    headless.answers = [True]
    assert headless.press("D") and logic.objectNodes(volume) == []
    assert headless.press(".") and parameters.inputVolume.GetName() == "c2"
    assert headless.press(",") and parameters.inputVolume.GetName() == "c1"
    assert headless.press("Shift+S") and parameters.inputVolume.GetName() == "c2"  # nothing to save: the next case
    assert headless.press("N") == hasattr(panel, "onReviewNext")  # bound once the review queue exists
    panel.flow.setShortcutsEnabled(False)  # the module is hidden: its keys are Slicer's again
    assert not headless.press("A") and logic.objectNodes(parameters.inputVolume) == []
    panel.flow.setShortcutsEnabled(True)
    panel.cleanup()  # a module reload leaves no second set behind (Qt runs neither of two same keys)
    assert headless.shortcuts == []


# -- undo and redo -----------------------------------------------------------------------------------------------
def test_three_points_undo_twice_redo_once_and_place_mode_resumes_at_the_undone_point(gui, panel, logic, blob):
    headless, ui, parameters = gui
    volume, obj = _show(gui, panel, blob)
    headless.press("A")
    (node,) = logic.objectNodes(volume)
    _place(headless, node, obj, "FRL")
    placed = _placed(node, volume)
    headless.press("Z")
    headless.press("Z")
    assert list(_placed(node, volume)) == ["F"] and np.allclose(_placed(node, volume)["F"], placed["F"])
    assert [node.GetNthControlPointPositionStatus(i) for i in (1, 2)] == [node.PositionUndefined] * 2
    assert headless.shown["status"][-1] == "Undone: tumor 1 (seven points): R unplaced"
    interaction = headless.interactionNode()
    assert interaction.GetCurrentInteractionMode() == interaction.Place  # placing goes on, at R
    assert objects.placementStatus(node, volume).expectedLabel == "R"
    assert ui.annotationStatusLabel.text.startswith("tumor 1 (seven points): place point 2 of 7, R")  # kind named
    headless.press("Y")
    headless.runTimers()
    now = _placed(node, volume)
    assert list(now) == ["F", "R"] and all(np.allclose(now[k], placed[k], atol=1e-6) for k in now)
    assert objects.placementStatus(node, volume).expectedLabel == "L"
    _place(headless, node, obj, "A")  # a new edit drops the step that could be redone
    headless.press("Y")
    assert list(_placed(node, volume)) == ["F", "R", "A"] and headless.shown["status"][-1] == "Nothing to redo."


def test_undo_goes_back_across_tumours_and_redo_brings_a_removed_tumour_back(gui, panel, logic, blob):
    headless, ui, parameters = gui
    volume, obj = _show(gui, panel, blob)
    first = _addTumour(headless, logic, volume)
    _place(headless, first, obj, "FRLAPIS")
    ui.kindComboBox.choose(panel.kindNames.index("extreme_points"))
    second = _addTumour(headless, logic, volume)
    _place(headless, second, obj, "RL")
    for _ in range(3):  # L, R, then the tumour itself
        headless.press("Z")
    assert [n.GetName() for n in logic.objectNodes(volume)] == ["tumor 1"] and second.GetScene() is None
    assert headless.shown["status"][-1] == "Undone: tumor 2 (extreme points) deleted"
    headless.press("Z")
    assert list(_placed(first, volume)) == list("FRLAPI")  # tumour 1's last point
    assert ui.annotationStatusLabel.text.startswith("tumor 1 (seven points): place point 7 of 7, S")
    for _ in range(3):
        headless.press("Y")
    restored = logic.objectNodes(volume)[1]
    assert restored.GetName() == "tumor 2" and kinds.kindOf(restored) == "extreme_points"
    assert list(_placed(restored, volume)) == ["R"] and len(_placed(first, volume)) == 7
    headless.press("Y")
    assert np.allclose(_placed(restored, volume)["L"], obj.points()["L"], atol=1e-4)
    assert ui.objectComboBox.currentText == "tumor 2"


def test_a_dragged_point_is_one_step_and_a_box_is_undrawn_and_drawn_again(gui, panel, logic, blob):
    headless, ui, parameters = gui
    volume, obj = _show(gui, panel, blob)
    node = _addTumour(headless, logic, volume)
    _place(headless, node, obj, "F")
    start = objects.placedPointsLps(node, volume)["F"]
    for step in range(1, 6):  # a drag: the position changes at every mouse move
        objects.setControlPoint(node, "F", lps_to_ras(start + step * 0.2))
        headless.runTimers()
    headless.press("Z")
    assert np.allclose(objects.placedPointsLps(node, volume)["F"], start, atol=1e-6)
    ui.kindComboBox.choose(panel.kindNames.index("box"))
    box = _addTumour(headless, logic, volume)
    points = np.array(list(obj.points().values()))
    kinds.setRoiCornersLps(box, volume, points.min(axis=0), points.max(axis=0))
    headless.runTimers()
    drawn = objects.placedPointsLps(box, volume)
    headless.press("Z")
    assert not kinds.roiDrawn(box) and objects.placementStatus(box, volume).expectedLabel == "lo"
    headless.press("Y")
    assert all(np.allclose(objects.placedPointsLps(box, volume)[k], drawn[k], atol=1e-4) for k in ("lo", "hi"))


def test_the_history_keeps_one_step_per_change_and_follows_restored_nodes(scene, blob):
    volume, obj = blob
    history = undo.UndoHistory(limit=3)
    node = objects.addObjectNode(scene, volume)
    assert history.record(undo.snapshot(scene, volume)) and not history.record(undo.snapshot(scene, volume))
    for label in "FRLA":
        objects.setControlPoint(node, label, lps_to_ras(obj.points()[label]))
        history.record(undo.snapshot(scene, volume))
    assert len(history.states) == 3 and history.canUndo() and not history.canRedo()  # the oldest steps dropped
    before = history.current
    undo.removeObject(scene, node)
    history.record(undo.snapshot(scene, volume))
    left, target = history.undo()
    newIDs = undo.restore(scene, volume, target)
    history.renameNodes(newIDs)
    assert undo.describe(left, target) == "tumor 1 (seven points) added" and list(newIDs) == [node.GetID()]
    assert undo.sameSnapshot(undo.snapshot(scene, volume), [replace(o, nodeID=newIDs[o.nodeID]) for o in before])
    assert undo.snapshot(scene, volume) is not None and history.current[0].nodeID == newIDs[node.GetID()]


def test_undo_after_the_scene_closed_never_brings_back_the_previous_cases_tumours(gui, panel, logic, scene, tmp_path,
                                                                                   blob_case):  # fmt: skip
    """Review finding 1: closing the scene resets the node ID counters, so the next case's volume gets the ID of
    the last one; its undo steps must not be the previous case's."""
    headless, ui, parameters = gui
    image, label = blob_case
    obj = simulate_clicks(label, image.geometry, seed=1).objects[0]
    first = volumes.createVolumeNode(scene, image, "case A")
    firstID, parameters.inputVolume, parameters.workFolder = first.GetID(), first, tmp_path / "work"
    panel.observeObjects()
    headless.press("A")
    logic.objectNodes(first)[0].SetName("tumor A")
    _place(headless, logic.objectNodes(first)[0], obj, "FR")
    scene.Clear(0)
    parameters.inputVolume = None  # the parameter node's reference went with the scene: no volume selected
    headless.runTimers()
    second = volumes.createVolumeNode(scene, image, "case B")
    assert second.GetID() == firstID  # the ID is used again
    parameters.inputVolume = second
    panel.observeObjects()
    headless.press("A")
    _place(headless, logic.objectNodes(second)[0], obj, "F")
    headless.press("Z")
    headless.press("Z")  # F unplaced, then the tumour added is removed
    assert logic.objectNodes(second) == []
    headless.press("Z")
    assert logic.objectNodes(second) == [] and headless.shown["status"][-1] == "Nothing to undo."


def test_undoing_the_tumour_being_placed_ends_place_mode(gui, panel, logic, blob):
    """Review finding 11: the tumour place mode was adding points to is removed: no click may make a stray node."""
    headless, ui, parameters = gui
    volume, obj = _show(gui, panel, blob)
    headless.press("A")
    interaction = headless.interactionNode()
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    headless.press("Z")
    assert logic.objectNodes(volume) == [] and headless.shown["status"][-1] == "Undone: tumor 1 (seven points) deleted"
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def test_two_drags_of_the_same_point_are_two_undo_steps(gui, panel, logic, blob):
    """Review finding 12: a drag is one step, but the next drag of the same point is another one (the Markups
    widget's PointEndInteractionEvent ends a drag)."""
    headless, ui, parameters = gui
    volume, obj = _show(gui, panel, blob)
    node = _addTumour(headless, logic, volume)
    _place(headless, node, obj, "F")
    positions = [objects.placedPointsLps(node, volume)["F"]]
    for _drag in range(2):
        node.InvokeEvent(node.PointStartInteractionEvent)
        for step in range(1, 4):  # the last move's status timer has not run yet when the drag ends
            objects.setControlPoint(node, "F", lps_to_ras(positions[-1] + step * np.array([0.3, 0.0, 0.1])))
            if step < 3:
                headless.runTimers()
        node.InvokeEvent(node.PointEndInteractionEvent)
        headless.runTimers()
        positions.append(objects.placedPointsLps(node, volume)["F"])
    for expected in (positions[1], positions[0]):
        headless.press("Z")
        assert np.allclose(objects.placedPointsLps(node, volume)["F"], expected, atol=1e-6)
    headless.press("Y")
    headless.press("Y")
    assert np.allclose(objects.placedPointsLps(node, volume)["F"], positions[2], atol=1e-6)


# -- rename and delete -----------------------------------------------------------------------------------------
def test_rename_from_the_panel_checks_the_name_and_can_be_undone(gui, panel, logic, blob):
    headless, ui, parameters = gui
    volume, _ = _show(gui, panel, blob)
    headless.press("A")
    headless.press("A")
    ui.objectComboBox.setCurrentText("tumor 1")
    headless.texts = ["  liver lesion  ", "tumor 2", "", None]
    ui.renameTumorButton.click()
    assert [n.GetName() for n in logic.objectNodes(volume)] == ["liver lesion", "tumor 2"]
    assert ui.objectComboBox.currentText == "liver lesion" and "New name of tumor 1 (seven points)" in (
        headless.shown["question"][-1])  # fmt: skip
    ui.renameTumorButton.click()  # the other tumour's name
    assert "is named 'tumor 2'" in headless.shown["warning"][-1]
    ui.renameTumorButton.click()  # empty
    assert "cannot be empty" in headless.shown["warning"][-1]
    ui.renameTumorButton.click()  # cancelled
    assert [n.GetName() for n in logic.objectNodes(volume)] == ["liver lesion", "tumor 2"]
    headless.press("Z")
    assert [n.GetName() for n in logic.objectNodes(volume)] == ["tumor 1", "tumor 2"]


def test_delete_asks_first_and_undo_brings_the_tumour_back_with_its_points(gui, panel, logic, blob):
    headless, ui, parameters = gui
    volume, obj = _show(gui, panel, blob)
    ui.kindComboBox.choose(panel.kindNames.index("extreme_points"))
    node = _addTumour(headless, logic, volume)
    _place(headless, node, obj, "RLA")
    placed = _placed(node, volume)
    headless.answers = [False]
    ui.deleteTumorButton.click()
    assert logic.objectNodes(volume) == [node]
    assert headless.shown["question"][-1] == "Delete tumor 1 (extreme points) and its points? (Undo brings it back: z)"
    headless.answers = [True]
    ui.deleteTumorButton.click()
    interaction = headless.interactionNode()
    assert logic.objectNodes(volume) == [] and node.GetScene() is None
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform  # no place mode on a removed node
    headless.press("Z")
    (restored,) = logic.objectNodes(volume)
    assert restored.GetName() == "tumor 1" and kinds.kindOf(restored) == "extreme_points"
    assert all(np.allclose(_placed(restored, volume)[k], placed[k], atol=1e-6) for k in placed)


# -- save and next; leaving a case with only a draft ---------------------------------------------------------
def test_save_and_next_saves_a_complete_case_and_opens_the_next_unannotated_one(gui, panel, logic, tmp_path,
                                                                               blob_case):  # fmt: skip
    headless, ui, parameters = gui
    volume, obj = _openFirstCase(gui, panel, tmp_path, blob_case, annotated=("c2",))
    _place(headless, _addTumour(headless, logic, volume), obj, "FRLAPIS")
    ui.saveAndNextButton.click()
    assert (tmp_path / "data" / "c1.mrk.json").is_file() and headless.shown["question"] == []
    assert parameters.inputVolume.GetName() == "c3" and volume.GetScene() is None  # c2 is annotated: skipped
    assert ui.caseList.items == ["c1 (annotated)", "c2 (annotated)", "c3 (not annotated)"]
    assert ui.caseList.currentRow == 2
    headless.press("Shift+S")  # nothing to save on c3, and every other case is annotated
    assert parameters.inputVolume.GetName() == "c3"
    assert headless.shown["status"][-1] == "Every other case of the dataset is annotated."


def test_save_and_next_with_no_case_open_opens_the_first_unannotated_one(gui, panel, tmp_path, blob_case):
    headless, ui, parameters = gui
    parameters.datasetFolder = _dataset(tmp_path, blob_case, annotated=("c1",))
    parameters.workFolder = tmp_path / "work"
    panel.refreshCases()
    assert parameters.inputVolume is None and ui.caseList.currentRow == 0
    headless.press("Shift+S")
    assert parameters.inputVolume.GetName() == "c2" and ui.caseList.currentRow == 1 and headless.shown["question"] == []


def test_save_and_next_with_incomplete_clicks_asks_draft_or_stay(gui, panel, logic, tmp_path, blob_case):
    headless, ui, parameters = gui
    volume, obj = _openFirstCase(gui, panel, tmp_path, blob_case)
    _place(headless, _addTumour(headless, logic, volume), obj, "FRL")
    headless.answers = [False]  # stay
    headless.press("Shift+S")
    assert parameters.inputVolume is volume and not (tmp_path / "data" / "c1.mrk.json").exists()
    assert "can only be kept as a draft, which training ignores" in headless.shown["question"][-1]
    assert "incomplete: place A, P, I, S" in headless.shown["question"][-1]
    headless.answers = [True]  # leave it as a draft: asked once
    headless.press("Shift+S")
    assert parameters.inputVolume.GetName() == "c2" and len(headless.shown["question"]) == 2
    assert ui.caseList.items[0] == "c1 (draft)" and not (tmp_path / "data" / "c1.mrk.json").exists()


def test_leaving_an_incomplete_draft_says_so_and_the_user_may_stay(gui, panel, logic, tmp_path, blob_case):
    headless, ui, parameters = gui
    volume, obj = _openFirstCase(gui, panel, tmp_path, blob_case)
    _place(headless, _addTumour(headless, logic, volume), obj, "FR")
    headless.answers = [False]
    ui.nextCaseButton.click()
    assert parameters.inputVolume is volume and ui.caseList.currentRow == 0 and panel.cases.current.caseId == "c1"
    assert "Leave it with only a draft?" in headless.shown["question"][-1]
    headless.answers = [True]
    ui.nextCaseButton.click()
    assert parameters.inputVolume.GetName() == "c2" and ui.caseList.items[0] == "c1 (draft)"


def test_leaving_a_complete_case_kept_only_as_a_draft_offers_to_save_it(gui, panel, logic, tmp_path, blob_case):
    headless, ui, parameters = gui
    volume, obj = _openFirstCase(gui, panel, tmp_path, blob_case)
    _place(headless, _addTumour(headless, logic, volume), obj, "FRLAPIS")
    headless.answers = [False]  # keep only the draft
    ui.nextCaseButton.click()
    assert "is complete but only kept as a draft" in headless.shown["question"][-1]
    assert parameters.inputVolume.GetName() == "c2" and ui.caseList.items[0] == "c1 (draft)"
    headless.press(",")  # back to c1: its draft is restored; leaving again, save it this time
    assert parameters.inputVolume.GetName() == "c1"
    headless.answers = [True]
    headless.press(".")
    assert parameters.inputVolume.GetName() == "c2" and (tmp_path / "data" / "c1.mrk.json").is_file()
    assert ui.caseList.items[0] == "c1 (annotated)" and ui.caseList.currentRow == 1
    assert not cases.draftPath(tmp_path / "work", "c1").exists()


def test_next_unannotated_skips_annotated_cases_and_takes_drafts_and_predicted_unannotated_ones(tmp_path):
    for case in ("a", "b", "c", "d"):
        (tmp_path / f"{case}_image.nrrd").write_bytes(b"")
    (tmp_path / "b.mrk.json").write_text("{}")
    work = tmp_path / "work"
    cases.predictionPath(work, "c").parent.mkdir(parents=True)
    cases.predictionPath(work, "c").write_bytes(b"")  # predicted, not annotated
    cases.predictionPath(work, "b").write_bytes(b"")  # predicted and annotated
    listing = cases.CaseList(tmp_path, work)
    assert [e.status for e in listing.refresh()] == ["not annotated", "predicted", "predicted", "not annotated"]
    assert listing.nextUnannotated().caseId == "c" and listing.nextUnannotated().caseId == "d"
    assert listing.nextUnannotated().caseId == "a"  # around, never the current one
    assert listing.nextUnannotated(fromStart=True).caseId == "a"
    assert listing.nextWhere(lambda e: e.status == "predicted").caseId == "b"
    listing.entries, listing.currentIndex = listing.entries[:1], 0
    assert listing.nextUnannotated() is None and listing.current.caseId == "a"
