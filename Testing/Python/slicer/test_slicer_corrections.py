"""Corrections that feed back, on a real MRML scene (slicer-core): a prediction picked as a dense label and
corrected survives the next prediction and the next autosave (D1), and so does one corrected but not accepted yet,
whether "Predict current volume" or "Predict all cases" brings the next prediction (an unedited one is reused);
"restrict to the boxes" only where a case has
boxes, decided before the child starts (D7); a case's kept prediction appears when the case is opened (D8); a
(corrected) prediction accepted as the case's dense label is saved as a dense case that the library's dataset
reader reads as dense; the self-test's random-walker part is skipped, with a message, without scikit-image (D10).

The volume is a small sphere (28×28×20 voxels, :func:`conftest.sphere_volume_node`); a "paint stroke" is what
Slicer's Segment Editor does (``SetBinaryLabelmapToSegment``, :func:`headlessgui.paintStroke`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SPHERE_GEOMETRY, box_object, require_slicer_core, sphere_volume_node
from headlessgui import annotationPanel, paintStroke
from PASegSlicer.annotation import cases, dense, drafts, kinds, objects
from PASegSlicer.annotation.logic import PREDICTION_ROLE
from PASegSlicer.jobs import control
from PASegSlicer.jobs.runner import JobRunner, SubprocessBackend, threadingSchedule

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.model import CaseAnnotation, ObjectAnnotation
from PASegLib.data.dataset import list_cases, load_case
from PASegLib.data.prepared import dense_label_of
from PASegLib.image.io import read_image, write_image

slicer = require_slicer_core()

GEOMETRY = SPHERE_GEOMETRY


@pytest.fixture
def sphere(scene):
    return sphere_volume_node(scene)


def _predictionFile(folder, name, mask):
    return write_image(Path(folder) / f"{name}_pred.nii.gz", np.asarray(mask, np.uint8), GEOMETRY)


def _dataset(tmp_path, image, name="sphere"):
    folder = tmp_path / "data"
    write_image(folder / f"{name}_image.nrrd", image.array, image.geometry)
    return folder


def _labels(node, volume):
    return kinds.denseLabels(node, volume)


# -- D1: a corrected prediction picked as a dense label survives the next prediction and autosave ------------------
def test_a_corrected_prediction_picked_as_dense_label_survives_the_next_prediction(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    work = tmp_path / "work"
    first = logic.importPrediction(volume, _predictionFile(tmp_path, "first", mask))
    node = logic.addObject(volume, "dense")
    kinds.setDenseSource(node, first)  # the user picks the prediction as the tumour's dense label
    paintStroke(first, "tumor 1", (2, 2, 2), (4, 4, 4))  # and corrects it in the Segment Editor
    corrected = _labels(node, volume)
    assert corrected[3, 3, 3] == 1 and corrected.sum() > mask.sum()
    draft = logic.autosaveDraft(volume, work)
    label = dense.draftLabelPath(draft)
    assert label.is_file()
    smaller = np.zeros_like(mask)
    smaller[12:16, 12:16, 8:12] = True
    second = logic.importPrediction(volume, _predictionFile(tmp_path, "second", smaller))  # "Predict current volume"
    assert not kinds.denseProblem(node), "the corrected label's segments were removed by the next prediction"
    assert np.array_equal(_labels(node, volume), corrected), "the correction was overwritten by the next prediction"
    assert second is not first and kinds.denseSource(node)[0] is first
    assert np.array_equal(np.asarray(read_image(label).array), corrected)
    logic.autosaveDraft(volume, work)
    assert label.is_file() and np.array_equal(np.asarray(read_image(label).array), corrected)
    shown = logic.segmentationsOf(volume, PREDICTION_ROLE)
    assert second in shown  # the new prediction is shown beside the corrected one


def test_autosave_keeps_the_draft_label_of_a_dense_tumour_whose_segments_vanished(scene, logic, sphere, tmp_path):
    """Defensive half of D1: whatever removes the segments a dense tumour takes its label from, the draft label
    written from them is not deleted as "stale" by the next autosave (it is what the tumour still names)."""
    volume, image, mask = sphere
    work = tmp_path / "work"
    node = logic.addObject(volume, "dense")
    segmentation = dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY, "painted")
    kinds.setDenseSource(node, segmentation)
    draft = logic.autosaveDraft(volume, work)
    label = dense.draftLabelPath(draft)
    segmentation.GetSegmentation().RemoveAllSegments()  # e.g. an older PASeg's prediction import
    assert kinds.denseProblem(node)
    assert logic.autosaveDraft(volume, work) is not None
    assert label.is_file(), "the corrected draft label was deleted as stale"
    assert drafts.draftLabels(draft) == [label]
    assert np.array_equal(np.asarray(read_image(label).array) > 0, mask)


# -- a prediction corrected but not accepted yet is never overwritten (review finding 2) ------------------------------
def _smallerMask(mask):
    smaller = np.zeros_like(mask)
    smaller[12:16, 12:16, 8:12] = True
    return smaller


def test_a_prediction_corrected_before_it_is_accepted_survives_the_next_prediction(scene, logic, sphere, tmp_path):
    from PASegSlicer.mrml.segments import segmentationToLabels

    volume, image, mask = sphere
    first = logic.importPrediction(volume, _predictionFile(tmp_path, "first", mask))
    assert logic.predictionNote == ""
    paintStroke(first, "tumor 1", (2, 2, 2), (4, 4, 4))  # corrected in the Segment Editor, not accepted yet
    corrected = segmentationToLabels(first, volume, ["tumor 1"])
    second = logic.importPrediction(volume, _predictionFile(tmp_path, "second", _smallerMask(mask)))  # predict again
    assert second is not first, "the corrected prediction was overwritten by the next prediction"
    assert np.array_equal(segmentationToLabels(first, volume, ["tumor 1"]), corrected)
    assert np.array_equal(segmentationToLabels(second, volume, ["tumor 1"]) > 0, _smallerMask(mask))
    assert logic.segmentationsOf(volume, PREDICTION_ROLE) == [first, second]  # the newest is the one accepted
    assert first.GetName() != second.GetName()
    assert first.GetName() in logic.predictionNote and second.GetName() in logic.predictionNote
    third = logic.importPrediction(volume, _predictionFile(tmp_path, "third", mask))  # the new one is unedited
    assert third is second and logic.predictionNote == ""
    assert np.array_equal(segmentationToLabels(first, volume, ["tumor 1"]), corrected)


def test_an_unedited_prediction_is_reused_by_the_next_prediction(scene, logic, sphere, tmp_path):
    from PASegSlicer.mrml.segments import segmentationToLabels

    volume, image, mask = sphere
    first = logic.importPrediction(volume, _predictionFile(tmp_path, "first", mask))
    segmentationToLabels(first, volume, ["tumor 1"])  # looked at (read, exported): no edit
    second = logic.importPrediction(volume, _predictionFile(tmp_path, "second", _smallerMask(mask)))
    assert second is first and logic.segmentationsOf(volume, PREDICTION_ROLE) == [first]
    assert np.array_equal(segmentationToLabels(first, volume, ["tumor 1"]) > 0, _smallerMask(mask))
    assert logic.predictionNote == ""


def test_predict_all_finishing_keeps_the_correction_of_an_open_case_and_says_so(scene, logic, sphere, tmp_path):
    from PASegSlicer.mrml.segments import segmentationToLabels

    volume, image, mask = sphere
    scene.RemoveNode(volume)
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    opened = logic.openCase(list_cases(dataset)[0], work)
    first = logic.importPrediction(opened, _predictionFile(tmp_path, "sphere", mask), workFolder=work)
    paintStroke(first, "tumor 1", (2, 2, 2), (4, 4, 4))
    corrected = segmentationToLabels(first, opened, ["tumor 1"])
    outcome = control.JobOutcome("done", "", predictions={"sphere": _predictionFile(tmp_path / "all", "sphere",
                                                                                    _smallerMask(mask))})  # fmt: skip
    control._showOpenCases(outcome, logic, work)  # what "Predict all cases" does for each open case when it ends
    assert np.array_equal(segmentationToLabels(first, opened, ["tumor 1"]), corrected)
    (_, second) = logic.segmentationsOf(opened, PREDICTION_ROLE)
    assert np.array_equal(segmentationToLabels(second, opened, ["tumor 1"]) > 0, _smallerMask(mask))
    assert outcome.problems == [] and any(first.GetName() in n and second.GetName() in n for n in outcome.notes)


# -- accept as dense label -------------------------------------------------------------------------------------------
def test_an_accepted_prediction_becomes_a_dense_case_the_dataset_reader_reads_as_dense(scene, logic, sphere,
                                                                                        tmp_path):  # fmt: skip
    volume, image, mask = sphere
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    opened = logic.openCase(list_cases(dataset)[0], work)
    objects.nodesFromCase(scene, opened, CaseAnnotation([box_object("tumor 1", GEOMETRY, (6, 6, 4), (22, 22, 16))]))
    prediction = logic.importPrediction(opened, _predictionFile(tmp_path, "sphere", mask), workFolder=work)
    paintStroke(prediction, "tumor 1", (2, 2, 2), (4, 4, 4))  # corrected before it is accepted
    corrected = (mask | np.pad(np.ones((3, 3, 3), bool), ((2, 23), (2, 23), (2, 15)))).astype(np.uint8)
    with pytest.raises(ValueError, match="replace"):
        logic.acceptPredictionAsDense(opened)  # it has clicked tumours: only replaced when the user agrees
    node = logic.acceptPredictionAsDense(opened, replace=True)
    assert logic.objectNodes(opened) == [node] and kinds.kindOf(node) == "dense"
    source = kinds.denseSource(node)[0]
    assert source is not prediction and source.GetNodeReference(PREDICTION_ROLE) is None  # a copy
    assert np.array_equal(_labels(node, opened), corrected)
    written = logic.saveAnnotations(opened, dataset, work)
    assert written["label"] == dataset / "sphere_dense.nii.gz"
    # a later prediction never touches the accepted label
    logic.importPrediction(opened, _predictionFile(tmp_path, "again", np.zeros_like(mask)), workFolder=work)
    assert np.array_equal(_labels(node, opened), corrected) and not logic.hasUnsavedChanges(opened)
    (files,) = list_cases(dataset)
    case = load_case(files)  # the library's dataset reader: the case is dense, its label the corrected prediction
    assert [o.kind for o in case.annotation.objects] == ["dense"]
    assert np.array_equal(dense_label_of(case) > 0, corrected > 0)
    # what training makes of it: full supervision (every voxel labelled), the corrected prediction as foreground
    from PASegLib.seeds.expansion import ExpansionConfig
    from PASegLib.seeds.pseudo_labels import pseudo_label_map

    partial = pseudo_label_map(case.image, case.annotation, expansion=ExpansionConfig(),
                               dense_label=dense_label_of(case))  # fmt: skip
    assert not (partial == 2).any() and np.array_equal(partial == 1, corrected > 0)


def test_accepting_without_a_prediction_or_with_an_empty_one_says_why(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    with pytest.raises(ValueError, match="no prediction"):
        logic.acceptPredictionAsDense(volume)
    logic.importPrediction(volume, _predictionFile(tmp_path, "empty", np.zeros_like(mask)))
    with pytest.raises(ValueError, match="empty"):
        logic.acceptPredictionAsDense(volume)
    assert logic.objectNodes(volume) == []


# -- D8: a case's kept prediction appears when it is opened ----------------------------------------------------------
def test_opening_a_predicted_case_shows_its_kept_prediction(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    scene.RemoveNode(volume)
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    kept = cases.predictionPath(work, "sphere")
    _predictionFile(kept.parent, "sphere", mask)  # what "Predict all cases" keeps for each case
    opened = logic.openCase(list_cases(dataset)[0], work)
    (prediction,) = logic.segmentationsOf(opened, PREDICTION_ROLE)
    from PASegSlicer.mrml.segments import segmentationToLabels

    assert np.array_equal(segmentationToLabels(prediction, opened, ["tumor 1"]) > 0, mask)
    assert logic.openCase(list_cases(dataset)[0], work) is opened  # opened again: no second copy
    assert logic.segmentationsOf(opened, PREDICTION_ROLE) == [prediction]
    assert not logic.hasUnsavedChanges(opened)


def test_an_unreadable_kept_prediction_does_not_stop_the_case_from_opening(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    scene.RemoveNode(volume)
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    kept = cases.predictionPath(work, "sphere")
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not an image")
    opened = logic.openCase(list_cases(dataset)[0], work)
    assert opened is not None and logic.segmentationsOf(opened, PREDICTION_ROLE) == []
    assert "sphere_pred.nii.gz" in logic.predictionProblem


# -- D7: "restrict to the boxes" where a case has boxes, the whole image elsewhere, decided before the child ----------
def _singlePoint(name="tumor 1"):
    return ObjectAnnotation(name, GEOMETRY.index_to_world(np.array([14.0, 14, 10])), kind="single_point")


def _sevenPoints(name="tumor 1"):
    return box_object(name, GEOMETRY, (6, 6, 4), (22, 22, 16))


def _predictVolume(scene, volume, tmp_path, fake_python, model_run, caseId="sphere"):
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    job = control.startPredictionJob(runner, tmp_path / "work", model_run, scene=scene, volumeNode=volume,
                                     caseId=caseId, restrictToBox=True, device="cpu", python=fake_python)  # fmt: skip
    return runner, job


def _commands(job):
    return [step["command"] for step in json.loads((job.folder / "job.json").read_text())["steps"]]


def test_restrict_on_predicts_an_unannotated_volume_on_the_whole_image(scene, sphere, tmp_path, fake_python,
                                                                       model_run):  # fmt: skip
    volume, image, mask = sphere
    runner, job = _predictVolume(scene, volume, tmp_path, fake_python, model_run)
    assert runner.wait(30) and runner.state.status == "done", runner.state.message
    (command,) = _commands(job)
    assert "--restrict-to-box" not in command and "--annotations" not in command
    assert "whole image" in job.notes[0] and "no annotation" in job.notes[0]
    assert json.loads((job.folder / "job.json").read_text())["notes"] == job.notes


def test_restrict_on_predicts_a_single_point_or_dense_case_on_the_whole_image_before_the_child(
        scene, logic, sphere, tmp_path, fake_python, model_run):  # fmt: skip
    volume, image, mask = sphere
    objects.nodesFromCase(scene, volume, CaseAnnotation([_singlePoint()]))
    runner, job = _predictVolume(scene, volume, tmp_path, fake_python, model_run)
    assert runner.wait(30) and runner.state.status == "done", runner.state.message
    (command,) = _commands(job)
    assert "--restrict-to-box" not in command and "--annotations" in command  # its clicks still name the object
    assert "single point" in job.notes[0] and "no box" in job.notes[0]
    for node in logic.objectNodes(volume):
        scene.RemoveNode(node)
    node = logic.addObject(volume, "dense")
    kinds.setDenseSource(node, dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY))
    runner, job = _predictVolume(scene, volume, tmp_path, fake_python, model_run)
    assert runner.wait(30) and runner.state.status == "done", runner.state.message
    assert "--restrict-to-box" not in _commands(job)[0] and "dense label" in job.notes[0]


def test_restrict_on_keeps_restricting_a_boxed_volume(scene, sphere, tmp_path, fake_python, model_run):
    volume, image, mask = sphere
    objects.nodesFromCase(scene, volume, CaseAnnotation([_sevenPoints()]))
    runner, job = _predictVolume(scene, volume, tmp_path, fake_python, model_run)
    assert runner.wait(30) and runner.state.status == "done", runner.state.message
    (command,) = _commands(job)
    assert "--restrict-to-box" in command and job.notes == []


def _mixedDataset(tmp_path, image):
    """a: seven points (boxed), b: no clicks, c: a single point."""
    folder = tmp_path / "data"
    for case in ("a", "b", "c"):
        write_image(folder / f"{case}_image.nrrd", image.array, image.geometry)
    write_markups(folder / "a.mrk.json", CaseAnnotation([_sevenPoints()]))
    write_markups(folder / "c.mrk.json", CaseAnnotation([_singlePoint()]))
    return folder


def test_predict_all_restricts_the_boxed_cases_and_predicts_the_others_whole(app, logic, sphere, tmp_path,
                                                                             fake_python, model_run):  # fmt: skip
    volume, image, mask = sphere
    dataset, work = _mixedDataset(tmp_path, image), tmp_path / "work"
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    job = control.startPredictionJob(runner, work, model_run, datasetFolder=dataset, restrictToBox=True,
                                     device="cpu", python=fake_python)  # fmt: skip
    boxed, whole = _commands(job)
    assert "--restrict-to-box" in boxed and "--restrict-to-box" not in whole
    assert [c.case_id for c in list_cases(boxed[5])] == ["a"] and list_cases(boxed[5])[0].has_annotation
    assert [(c.case_id, c.has_annotation) for c in list_cases(whole[5])] == [("b", False), ("c", True)]
    (note,) = job.notes
    assert "2 of 3 case(s)" in note and "b (no annotation)" in note and "c (single point" in note
    assert runner.wait(30) and runner.state.status == "done", runner.state.message
    outcome = control.finishJob(job, runner.state, app.scene, logic)
    assert sorted(outcome.predictions) == ["a", "b", "c"] and outcome.problems == []
    assert all(cases.predictionPath(work, case).is_file() for case in "abc")


def test_predict_all_of_an_unannotated_dataset_with_restrict_on_predicts_every_case(tmp_path, sphere, fake_python,
                                                                                     model_run):  # fmt: skip
    volume, image, mask = sphere
    dataset = tmp_path / "data"
    for case in ("a", "b"):
        write_image(dataset / f"{case}_image.nrrd", image.array, image.geometry)
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    job = control.startPredictionJob(runner, tmp_path / "work", model_run, datasetFolder=dataset, restrictToBox=True,
                                     device="cpu", python=fake_python)  # fmt: skip
    (command,) = _commands(job)
    assert "--restrict-to-box" not in command and command[5] == str(dataset) and "2 of 2 case(s)" in job.notes[0]
    assert runner.wait(30) and runner.state.status == "done", runner.state.message


# -- through the inference panel -----------------------------------------------------------------------------------
def test_predict_all_through_the_panel_says_how_and_where_and_an_open_case_shows_its_prediction(
        gui, logic, scene, sphere, tmp_path, fake_python, model_run):  # fmt: skip
    from test_slicer_panels import _jobPanel

    headless, ui, parameters, _, _ = gui
    volume, image, mask = sphere
    scene.RemoveNode(volume)
    dataset, work = _mixedDataset(tmp_path, image), tmp_path / "work"
    opened = logic.openCase(list_cases(dataset)[1], work)  # case b is open while all cases are predicted
    panel, runners = _jobPanel(gui, logic, fake_python, [])
    parameters.datasetFolder, parameters.workFolder, parameters.modelRunDir = dataset, work, model_run
    ui.predictAllButton.click()
    assert any("2 of 3 case(s) predicted on the whole image" in line for line in ui.logText.lines)
    assert "2 of 3 case(s)" in headless.shown["status"][-1]
    assert runners[0].wait(30) and runners[0].state.status == "done", runners[0].state.message
    assert headless.shown["error"] == [], headless.shown["error"]
    assert "3 prediction(s) kept in" in headless.shown["status"][-1] and "open a case" in headless.shown["status"][-1]
    assert len(logic.segmentationsOf(opened, PREDICTION_ROLE)) == 1  # the open case shows its new prediction
    other = logic.openCase(list_cases(dataset)[2], work)  # case c, opened afterwards, shows its own
    assert len(logic.segmentationsOf(other, PREDICTION_ROLE)) == 1
    panel.cleanup()


def test_accept_prediction_through_the_panel_saves_a_dense_case(gui, logic, scene, sphere, tmp_path, fake_python):
    from test_slicer_panels import _jobPanel

    headless, ui, parameters, _, _ = gui
    volume, image, mask = sphere
    scene.RemoveNode(volume)
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    write_markups(dataset / "sphere.mrk.json", CaseAnnotation([_sevenPoints()]))
    opened = logic.openCase(list_cases(dataset)[0], work)
    panel, runners = _jobPanel(gui, logic, fake_python, [])
    parameters.datasetFolder, parameters.workFolder, parameters.inputVolume = dataset, work, opened
    with pytest.raises(ValueError):  # shown, then re-raised (as in Slicer)
        ui.acceptPredictionButton.click()  # nothing predicted yet: said, nothing changes
    assert "no prediction" in headless.shown["error"][-1] and len(logic.objectNodes(opened)) == 1
    logic.importPrediction(opened, _predictionFile(tmp_path, "sphere", mask), workFolder=work)
    headless.answers = [False]  # the user keeps the clicks
    ui.acceptPredictionButton.click()
    assert "tumor 1" in headless.shown["question"][-1] and kinds.kindOf(logic.objectNodes(opened)[0]) == "seven_points"
    ui.acceptPredictionButton.click()  # and now agrees
    (node,) = logic.objectNodes(opened)
    assert kinds.kindOf(node) == "dense" and "saved" in headless.shown["status"][-1]
    case = load_case(list_cases(dataset)[0])
    assert [o.kind for o in case.annotation.objects] == ["dense"] and np.array_equal(dense_label_of(case) > 0, mask)
    panel.cleanup()


# -- D10: the self-test on a stock Slicer (no scikit-image) -----------------------------------------------------------
def _withoutScikitImage(monkeypatch):
    """As on a stock Slicer: scikit-image cannot be imported (PASegLib imports it only inside the random walker's
    functions, so this blocks every use of it)."""
    for name in [n for n in sys.modules if n == "skimage" or n.startswith("skimage.")] + ["skimage"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_the_self_test_without_scikit_image_runs_seven_points_and_skips_the_random_walker_with_a_message(
        monkeypatch, scene):  # fmt: skip
    from PASegSlicer import selftest

    _withoutScikitImage(monkeypatch)
    with pytest.raises(ImportError):  # what PASegTest's kinds scenario did on a stock Slicer (D10)
        selftest.runKindsScenario(scene)
    assert selftest.runScenario(scene)["foreground"] > 0  # the seven-point scenario needs no scikit-image
    message = selftest.kindsScenarioOrSkip(scene)  # ctest (--testing): no prompt, a clear message
    assert message == selftest.RANDOM_WALKER_SKIPPED and "skipped" in message and "pip install scikit-image" in message
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0  # nothing left behind


def test_the_interactive_self_test_offers_to_install_scikit_image(gui, monkeypatch, scene):
    from PASegSlicer import selftest
    from PASegSlicer.jobs.dependencies import RANDOM_WALKER, DependencyChecker

    headless = gui[0]
    _withoutScikitImage(monkeypatch)
    checker = DependencyChecker(headless.confirmOkCancelDisplay, headless.pip_install, findSpec=lambda name: None)
    headless.answers = [False]  # declined
    message = selftest.kindsScenarioOrSkip(scene, checker=checker)
    assert "scikit-image" in headless.shown["question"][0] and headless.pipCalls == []
    assert message.startswith(selftest.RANDOM_WALKER_SKIPPED) and "cancelled" in message
    headless.answers = [True]  # accepted, but the install did not make it importable (offline)
    message = selftest.kindsScenarioOrSkip(scene, checker=checker)
    assert headless.pipCalls[0][0] == RANDOM_WALKER[0].spec and "failed" in message
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0  # nothing left behind


def test_an_accepted_prediction_shows_as_the_dense_tumour_in_the_annotation_panel(gui, logic, scene, sphere, tmp_path,
                                                                                   fake_python):  # fmt: skip
    from test_slicer_panels import _jobPanel

    headless, ui, parameters, shown, previews = gui
    volume, image, mask = sphere
    scene.RemoveNode(volume)
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    opened = logic.openCase(list_cases(dataset)[0], work)  # an unannotated case
    with annotationPanel(logic, *gui) as annotations:
        panel, _ = _jobPanel(gui, logic, fake_python, [])
        parameters.datasetFolder, parameters.workFolder, parameters.inputVolume = dataset, work, opened
        annotations.observeObjects()
        logic.importPrediction(opened, _predictionFile(tmp_path, "sphere", mask), workFolder=work)
        ui.acceptPredictionButton.click()
        headless.runTimers()
        assert ui.objectComboBox.items == ["tumor 1"] and "dense label" in ui.annotationStatusLabel.text
        assert headless.shown["question"] == [] and (dataset / "sphere_dense.nii.gz").is_file()  # nothing to replace
    panel.cleanup()
