"""The widget's panels, headless: each is given its collaborators, the real ones where ``slicer-core`` has them.

The scene, the logic (:class:`~PASegSlicer.annotation.logic.PASegCoreLogic`), the Markups logic, the interaction
node, the VTK observers, the job runner and its child processes are real; the widgets (built from ``PASeg.ui``), the
dialogs and the timers stand in for Qt (:mod:`headlessgui`). Node edits reach the annotation panel through its real
VTK observers; jobs run the fake ``python -m PASegLib`` of :mod:`test_slicer_jobs`.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from conftest import require_slicer_core
from headlessgui import annotationPanel, dependencyCheckerFactory, jobPanel, modelRun
from PASegSlicer.annotation import cases, kinds, objects
from PASegSlicer.gui.annotationpanel import KIND_SETTING
from PASegSlicer.jobs import commands
from PASegSlicer.jobs.dependencies import TRAINING
from PASegSlicer.mrml import volumes

from PASegLib.annotation.markups import read_draft_markups, read_markups
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.image.geometry import lps_to_ras
from PASegLib.image.io import write_image

slicer = require_slicer_core()


def _place(node, obj, labels="FRLAPIS"):
    for label in labels:
        objects.setControlPoint(node, label, lps_to_ras(obj.points()[label]))


# -- annotation panel ------------------------------------------------------------------------------------------
def test_add_tumor_guides_placement_and_a_complete_tumour_is_drafted_and_previewed(gui, panel, logic, blob,
                                                                                    tmp_path):  # fmt: skip
    headless, ui, parameters, shown, previews = gui
    volume, obj = blob
    parameters.inputVolume, parameters.workFolder = volume, tmp_path / "work"
    panel.observeObjects()
    assert ui.annotationStatusLabel.text == 'No tumor yet: click "Add tumor".'
    ui.addTumorButton.click()
    (node,) = logic.objectNodes(volume)
    interaction = headless.interactionNode()
    assert ui.objectComboBox.items == ["tumor 1"] and ui.objectComboBox.currentText == "tumor 1"
    assert headless.markupsLogic().GetActiveListID() == node.GetID()
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    assert ui.annotationStatusLabel.text.startswith("tumor 1 (seven points): place point 1 of 7, F")
    _place(node, obj, "FRL")  # the node's point events reach the panel through its VTK observers
    headless.runTimers()
    assert "place point 4 of 7, A" in ui.annotationStatusLabel.text and previews == []
    draft = cases.draftPath(tmp_path / "work", "blob")
    assert [o.placed for o in read_draft_markups(draft)] == [3]  # kept two seconds after the last edit
    _place(node, obj, "APIS")
    headless.runTimers()
    assert "all 7 points placed" in ui.annotationStatusLabel.text
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform  # placing stops once complete
    assert previews == [True]  # all valid and auto-preview on: the widget is asked for a preview
    assert [o.placed for o in read_draft_markups(draft)] == [7] and f"Draft saved: {draft}" in headless.shown["status"]
    shown["node"] = None  # the module is hidden: no preview request, the edit is still drafted
    node.SetNthControlPointPositionWorld(0, *(np.array(node.GetNthControlPointPositionWorld(0)) + 0.01))
    headless.runTimers()
    assert previews == [True] and headless.shown["status"].count(f"Draft saved: {draft}") == 3


def test_save_puts_a_complete_case_into_the_dataset_and_an_incomplete_one_into_a_draft(gui, panel, logic,
                                                                                        blob, tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    volume, obj = blob
    parameters.inputVolume, parameters.datasetFolder = volume, tmp_path / "data"
    parameters.workFolder = tmp_path / "work"
    panel.observeObjects()
    ui.addTumorButton.click()
    _place(logic.objectNodes(volume)[0], obj, "FRLAP")
    ui.saveButton.click()
    (warning,) = headless.shown["warning"]
    assert warning.startswith("Saved as a draft") and "incomplete: place I, S" in warning
    assert not (tmp_path / "data").exists()
    _place(logic.objectNodes(volume)[0], obj, "IS")
    ui.saveButton.click()
    assert read_markups(tmp_path / "data" / "blob.mrk.json", volumes.geometryFromVolumeNode(volume)).objects
    assert headless.shown["status"][-1].startswith("Saved ") and not cases.draftPath(tmp_path / "work", "blob").exists()
    assert ui.caseList.items == ["blob (annotated)"] and ui.caseList.currentRow == 0  # the case list was refreshed


def test_next_case_keeps_the_clicks_as_a_draft_unloads_the_case_and_restores_them(gui, panel, logic, scene,
                                                                                   blob_case, tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    image, label = blob_case
    for caseId in ("c1", "c2"):
        write_image(tmp_path / "data" / f"{caseId}_image.nrrd", image.array, image.geometry)
    parameters.datasetFolder, parameters.workFolder = tmp_path / "data", tmp_path / "work"
    panel.refreshCases()
    assert ui.caseList.items == ["c1 (not annotated)", "c2 (not annotated)"]
    ui.caseList.doubleClick(0)
    first = parameters.inputVolume
    assert first.GetName() == "c1" and headless.layers == [first]
    panel.observeObjects()  # the widget does on the parameter's change
    ui.addTumorButton.click()
    obj = simulate_clicks(label, image.geometry, seed=1).objects[0]
    _place(logic.objectNodes(first)[0], obj, "FRL")
    ui.nextCaseButton.click()
    assert parameters.inputVolume.GetName() == "c2" and first.GetScene() is None  # the case left is unloaded
    assert ui.caseList.items[0] == "c1 (draft)" and ui.caseList.currentRow == 1
    ui.previousCaseButton.click()
    restored = parameters.inputVolume
    assert restored.GetName() == "c1" and "c1: its draft was restored" in headless.shown["status"][-1]
    assert logic.objectNodes(restored)[0].GetNumberOfDefinedControlPoints() == 3


def test_a_case_whose_clicks_cannot_be_kept_is_left_only_when_the_user_agrees(gui, panel, logic, blob_case,
                                                                              tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    image, _ = blob_case
    for caseId in ("c1", "c2"):
        write_image(tmp_path / "data" / f"{caseId}_image.nrrd", image.array, image.geometry)
    parameters.datasetFolder = tmp_path / "data"  # no work folder: no draft can be written
    panel.refreshCases()
    ui.caseList.doubleClick(0)
    first = parameters.inputVolume
    panel.observeObjects()
    ui.addTumorButton.click()
    headless.answers = [False]
    ui.caseList.doubleClick(1)
    assert parameters.inputVolume is first and "could not be saved" in headless.shown["question"][0]
    headless.answers = [True]
    ui.caseList.doubleClick(1)
    assert parameters.inputVolume.GetName() == "c2" and first.GetScene() is None


def test_the_scene_closing_keeps_every_unsaved_volume_or_names_what_is_lost(gui, panel, logic, scene,
                                                                           blob_case, tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    image, label = blob_case
    obj = simulate_clicks(label, image.geometry, seed=1).objects[0]
    for work, placed in ((pathlib.Path(""), "FR"), (tmp_path / "work", "F")):  # no work folder, then one
        parameters.workFolder, parameters.inputVolume = work, volumes.createVolumeNode(scene, image, "blob")
        panel.observeObjects()
        ui.addTumorButton.click()
        _place(logic.objectNodes(parameters.inputVolume)[0], obj, placed)
        scene.Clear(0)  # before the autosave delay ran out
    (error,) = headless.shown["error"]
    assert error.startswith("These clicks could not be saved before the scene closed:\nblob: choose a work folder")
    assert [o.placed for o in read_draft_markups(cases.draftPath(tmp_path / "work", "blob"))] == [1]


def test_kind_choice_is_remembered_and_a_dense_tumour_takes_an_imported_label(gui, logic, scene, blob, tmp_path):
    headless, ui, parameters, shown, previews = gui
    headless.settings[KIND_SETTING] = "dense"
    with annotationPanel(logic, headless, ui, parameters, shown) as panel:
        assert panel.kindNames[ui.kindComboBox.currentIndex] == "dense"
        ui.kindComboBox.choose(panel.kindNames.index("box"))
        assert headless.settings[KIND_SETTING] == "box"
        ui.kindComboBox.choose(panel.kindNames.index("dense"))
        volume, _ = blob
        parameters.inputVolume = volume
        panel.observeObjects()
        ui.addTumorButton.click()
        (node,) = logic.objectNodes(volume)
        assert kinds.kindOf(node) == "dense" and ui.denseLabelWidget.visible
        assert "no points to place" in headless.shown["status"][-1]
        labels = np.zeros(volumes.geometryFromVolumeNode(volume).shape, np.uint8)
        labels[10:14, 10:14, 5:8] = 2
        headless.fileName = str(write_image(tmp_path / "label.nrrd", labels, volumes.geometryFromVolumeNode(volume)))
        ui.importLabelButton.click()
        segmentation, segmentId = kinds.denseSource(node)
        assert segmentation is not None and segmentId == ""
        assert ui.denseSegmentationSelector.currentNode() is segmentation
        assert ui.denseSegmentComboBox.items == ["all segments", "label 2"]
        ui.denseSegmentComboBox.choose(1)  # one segment of it
        assert kinds.denseSource(node)[1] == segmentation.GetSegmentation().GetNthSegmentID(0)
        headless.runTimers()
        assert "tumor 1 (dense label): label 2" in ui.annotationStatusLabel.text


def test_cleanup_stops_observing_the_scene(gui, panel, logic, scene, blob):
    headless, ui, parameters, _, _ = gui
    parameters.inputVolume = blob[0]
    panel.observeObjects()
    ui.addTumorButton.click()
    panel.cleanup()
    headless.runTimers()
    scene.RemoveNode(logic.objectNodes(blob[0])[0])
    assert not panel.objectsTimer.isActive() and not panel.statusTimer.isActive()


# -- job panel ---------------------------------------------------------------------------------------------------
def _jobPanel(gui, logic, python, refreshed, **checkerOptions):
    """:func:`headlessgui.jobPanel` on :func:`gui`: the panel and its runners (the job's, then the GPU probe's)."""
    headless, ui, parameters, shown, _ = gui
    panel, runners = jobPanel(logic, headless, ui, parameters, shown, refreshed, python=python, **checkerOptions)
    panel.updateButtons()  # the widget does whenever its parameters change
    return panel, runners


def _dataset(tmp_path, blob_case):
    image, _ = blob_case
    write_image(tmp_path / "data" / "c1_image.nrrd", image.array, image.geometry)
    (tmp_path / "data" / "c1.mrk.json").write_text("{}")
    return tmp_path / "data"


def test_training_through_the_panel_follows_the_job_and_registers_the_model(gui, logic, fake_python, blob_case,
                                                                            tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    refreshed = []
    panel, runners = _jobPanel(gui, logic, fake_python, refreshed)
    parameters.datasetFolder, parameters.workFolder = _dataset(tmp_path, blob_case), tmp_path / "work"
    parameters.trainMode, parameters.epochs, parameters.deviceMode = "stage 1", 2, "CPU (force)"
    ui.trainButton.click()
    assert ui.jobFolderLabel.text.startswith("Job folder: ")
    assert runners[0].wait(30), runners[0].state.message
    assert runners[0].state.status == "done" and ui.progressBar.value == 100 and ui.lossesLabel.text
    assert ui.trainButton.enabled and not ui.stopButton.enabled and ui.stopButton.text == "Stop"
    assert headless.shown["status"][-1] == "PASeg train job done: finished" and headless.shown["error"] == []
    assert refreshed == [True] and parameters.modelRunDir.name == "stage1-unet2d5"
    assert len(ui.modelComboBox.items) == 1 and "unet2d5 · stage 1" in ui.modelComboBox.items[0]
    assert "--device" in " ".join(ui.logText.lines) and "cpu" in ui.logText.lines[0]
    ui.showCurveButton.click()
    assert headless.charts == [panel.plot.chart] and np.nanmin(panel.plot.values("dice_ce")) == pytest.approx(0.25)
    ui.modelComboBox.choose(0)
    assert parameters.modelRunDir == pathlib.Path(panel.models[0].runDir)
    panel.cleanup()


def test_only_the_settings_the_training_mode_reads_are_editable(gui, logic, fake_python):
    _, ui, parameters, _, _ = gui
    panel, _ = _jobPanel(gui, logic, fake_python, [])
    widgets = {"networkA": ui.networkAComboBox, "networkB": ui.networkBComboBox, "scmRunA": ui.scmRunA,
               "scmRunB": ui.scmRunB, "epochs": ui.epochsSpinBox}
    expected = {"stage 1 + refinement": set(), "teacher–student": set(), "stage 1": {"networkA", "epochs"},
                "SCM": {"scmRunA", "scmRunB", "epochs"}, "stage 1 + SCM": {"networkA", "networkB", "epochs"}}
    assert set(expected) == set(commands.TRAIN_MODES)
    for mode, used in expected.items():
        parameters.trainMode = mode
        panel.updateButtons()
        assert {name for name, widget in widgets.items() if widget.enabled} == used, mode
    panel.cleanup()


def test_prediction_through_the_panel_imports_into_the_volume_it_was_started_for(gui, logic, scene, fake_python,
                                                                                 blob_case, tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    panel, runners = _jobPanel(gui, logic, fake_python, [])
    run = modelRun(tmp_path)
    image, _ = blob_case
    volume = volumes.createVolumeNode(scene, image, "started for")
    parameters.inputVolume, parameters.workFolder, parameters.modelRunDir = volume, tmp_path / "work", run
    parameters.restrictToBox = False
    ui.predictButton.click()
    assert runners[0].wait(60) and runners[0].state.status == "done", runners[0].state.message
    assert headless.shown["error"] == [] and cases.predictionPath(tmp_path / "work", "started_for").is_file()
    (imported,) = logic.segmentationsOf(volume, "PASegPredictionOf")
    assert imported.GetSegmentation().GetSegmentIdBySegmentName("tumor 1")
    panel.cleanup()


def test_a_job_that_cannot_start_says_why_and_leaves_the_buttons_usable(gui, logic, fake_python, blob_case,
                                                                        tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    panel, runners = _jobPanel(gui, logic, fake_python, [], findSpec=lambda name: None if name == "monai" else 1)
    headless.answers = [False]  # the user declines installing monai
    ui.trainButton.click()
    monai = TRAINING[0].spec  # monai>=1.4
    assert f"cancelled: {monai} not installed" in headless.shown["error"][0] and not runners[0].isRunning()
    assert headless.pipCalls == [] and monai in headless.shown["question"][0]
    panel.dependencyChecker = dependencyCheckerFactory(headless)
    image, _ = blob_case
    write_image(tmp_path / "data" / "c1_image.nrrd", image.array, image.geometry)  # a case, but not annotated
    parameters.datasetFolder, parameters.workFolder = tmp_path / "data", tmp_path / "work"
    with pytest.raises(ValueError, match="no annotated case yet"):  # shown, then re-raised (as in Slicer)
        ui.trainButton.click()
    assert headless.shown["error"][-1].startswith("Training could not start.\n\n")
    assert ui.trainButton.enabled and not ui.stopButton.enabled
    panel.cleanup()


def test_stop_asks_then_kills(gui, logic, fake_python, blob_case, tmp_path, monkeypatch):
    headless, ui, parameters, _, _ = gui
    panel, runners = _jobPanel(gui, logic, fake_python, [])
    parameters.datasetFolder, parameters.workFolder = _dataset(tmp_path, blob_case), tmp_path / "work"
    parameters.trainMode = "stage 1"
    monkeypatch.setenv("FAKE_MODE", "hang")  # the child ignores the stop file
    ui.trainButton.click()
    runner = runners[0]
    for _ in range(200):
        if runner.state.lossHistory:
            break
        runner.wait(0.05)
    assert not ui.trainButton.enabled and not ui.predictButton.enabled and ui.stopButton.enabled
    ui.stopButton.click()
    assert runner.state.status == "stopping" and ui.stopButton.text == "Kill" and ui.stopButton.enabled
    ui.stopButton.click()
    assert runner.wait(20) and runner.state.status == "stopped"
    assert ui.stopButton.text == "Stop" and ui.trainButton.enabled and "stopped" in headless.shown["status"][-1]
    panel.cleanup()


def test_gpu_detection_runs_in_a_child_process(gui, logic):
    headless, ui, _, _, _ = gui
    panel, runners = _jobPanel(gui, logic, sys.executable, [])
    ui.detectGpuButton.click()
    assert ui.gpuLabel.text == "detecting…"
    assert runners[1].wait(120) and runners[1].state.status == "done", runners[1].state.message
    assert ui.gpuLabel.text.startswith(("torch is not installed", "no CUDA GPU found (torch", "GPU 0: "))
    panel.cleanup()
