"""Dense cases in the Slicer module, on a real MRML scene: where a dense label is saved (never over the case's
``<case>_label``, which evaluation reads), old dense cases that named ``<case>_label``, edits of a dense label
that count as unsaved changes (drafts keep the voxels), and :func:`casefile.saveCaseAnnotation` of a dense case.

The volume is a small sphere (28×28×20 voxels); a "paint stroke" is what Slicer's Segment Editor does
(:func:`headlessgui.paintStroke`): ``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment`` with a modifier
labelmap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SPHERE_CENTER, SPHERE_GEOMETRY, require_slicer_core, sphere_volume_node
from headlessgui import paintStroke
from PASegSlicer.annotation import casefile, cases, dense, drafts, kinds
from PASegSlicer.annotation.logic import PASegCoreLogic
from PASegSlicer.mrml.headless import HeadlessSlicer

from PASegLib.annotation.markups import read_markups
from PASegLib.data.dataset import list_cases, load_case
from PASegLib.data.prepared import dense_label_of
from PASegLib.image.io import read_image, write_image

slicer = require_slicer_core()


GEOMETRY, CENTER = SPHERE_GEOMETRY, SPHERE_CENTER


@pytest.fixture
def sphere(scene):
    """(volume node, image, mask): a bright sphere of radius 6 mm on a noisy background."""
    return sphere_volume_node(scene)


def _dataset(tmp_path, image, truth=None):
    """``<tmp>/data`` with ``sphere_image.nrrd`` and, given, the ground truth ``sphere_label.nii.gz``."""
    folder = tmp_path / "data"
    write_image(folder / "sphere_image.nrrd", image.array, image.geometry)
    if truth is not None:
        write_image(folder / "sphere_label.nii.gz", truth.astype(np.uint8), image.geometry)
    return folder


def _denseObject(scene, logic, volume, labels, segment=None):
    """A dense object whose label is ``labels`` (one segment per value; ``segment``: only that one)."""
    node = logic.addObject(volume, "dense")
    segmentation = dense.labelSegmentationNode(scene, volume, np.asarray(labels, np.uint8), GEOMETRY, "painted")
    segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName(segment) if segment else ""
    kinds.setDenseSource(node, segmentation, segmentId)
    return node, segmentation


def _bytes(path):
    return Path(path).read_bytes(), Path(path).stat().st_mtime_ns


# -- the case's label is never replaced --------------------------------------------------------------------------
def test_the_dense_label_file_name_is_no_dataset_role(tmp_path):
    """``<case>_dense.nii.gz`` is neither an image, a label nor 7 points to the dataset listing."""
    for role in ("image", "label", "dense"):
        write_image(tmp_path / f"sphere_{role}.nii.gz", np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
    (files,) = list_cases(tmp_path)
    assert (files.case_id, files.image.name) == ("sphere", "sphere_image.nii.gz")
    assert files.label.name == "sphere_label.nii.gz"
    assert dense.denseLabelPath(Path("data") / "sphere.mrk.json") == Path("data") / "sphere_dense.nii.gz"


def test_saving_a_dense_case_opened_from_the_case_list_keeps_its_ground_truth(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    truth = np.zeros(GEOMETRY.shape, np.uint8)
    truth[10:19, 10:19, 7:14] = 1  # a ground truth that differs from what is painted
    dataset, work = _dataset(tmp_path, image, truth), tmp_path / "work"
    groundTruth = dataset / "sphere_label.nii.gz"
    before = _bytes(groundTruth)
    opened = logic.openCase(list_cases(dataset)[0], work)
    _denseObject(scene, logic, opened, mask)
    written = logic.saveAnnotations(opened, dataset, work)
    assert written["label"] == dataset / "sphere_dense.nii.gz"
    assert _bytes(groundTruth) == before, "the case's ground-truth label was replaced"
    assert json.loads(written["annotations"].read_text())["markups"][0]["pasegLabel"] == "sphere_dense.nii.gz"
    (files,) = list_cases(dataset)
    assert files.label == groundTruth and files.markups == written["annotations"]
    case = load_case(files)
    assert np.array_equal(case.label.array, truth)  # what evaluation reads
    assert np.array_equal(dense_label_of(case) > 0, mask)  # what training reads
    fresh = HeadlessSlicer()
    try:
        other = PASegCoreLogic(fresh.scene)
        again = other.openCase(files, work)
        (node,) = other.objectNodes(again)
        assert np.array_equal(kinds.denseLabels(node, again) > 0, mask)
        assert not other.hasUnsavedChanges(again)
    finally:
        fresh.close()


def test_an_old_dense_case_naming_its_label_file_opens_and_is_saved_beside_it(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    old = dataset / "sphere_label.nii.gz"  # written by the module before this fix
    dense.writeDenseCase(dataset / "sphere.mrk.json", old, "tumor 1", mask.astype(np.uint8), GEOMETRY)
    before = _bytes(old)
    (files,) = list_cases(dataset)
    opened = logic.openCase(files, work)
    (node,) = logic.objectNodes(opened)
    assert np.array_equal(kinds.denseLabels(node, opened) > 0, mask)
    paintStroke(kinds.denseSource(node)[0], "label 1", (2, 2, 2), (4, 4, 4))
    written = logic.saveAnnotations(opened, dataset, work)
    assert written["label"] == dataset / "sphere_dense.nii.gz" and _bytes(old) == before
    assert read_markups(written["annotations"], GEOMETRY).objects[0].label_file == "sphere_dense.nii.gz"
    saved = read_image(written["label"]).array > 0
    assert saved[3, 3, 3] and np.array_equal(saved[10:, 10:, 10:], mask[10:, 10:, 10:])
    # a dense markups without label_file (the library then reads <case>_label) still opens
    (dataset / "sphere.mrk.json").write_text(json.dumps({
        "@schema": json.loads(written["annotations"].read_text())["@schema"],
        "markups": [{"type": "Fiducial", "name": "tumor 1", "pasegKind": "dense", "coordinateSystem": "LPS",
                     "controlPoints": []}]}))  # fmt: skip
    fresh = HeadlessSlicer()
    try:
        other = PASegCoreLogic(fresh.scene)
        reopened = other.openCase(list_cases(dataset)[0], None)
        (restored,) = other.objectNodes(reopened)
        assert np.array_equal(kinds.denseLabels(restored, reopened) > 0, mask)
    finally:
        fresh.close()


# -- edits of a dense label are unsaved changes ------------------------------------------------------------------
def test_repainting_or_repicking_a_dense_label_is_an_unsaved_change(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    labels = mask.astype(np.uint8)
    labels[1:4, 1:4, 1:4] = 2
    node, segmentation = _denseObject(scene, logic, volume, labels, "label 1")
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    logic.saveAnnotations(volume, dataset, work)
    assert not logic.hasUnsavedChanges(volume)
    paintStroke(segmentation, "label 1", (20, 20, 15), (22, 22, 17))
    assert logic.hasUnsavedChanges(volume), "a paint stroke on the dense segment is not an unsaved change"
    logic.saveAnnotations(volume, dataset, work)
    assert not logic.hasUnsavedChanges(volume)
    paintStroke(segmentation, "label 1", (20, 20, 15), (22, 22, 17), erase=True)
    assert logic.hasUnsavedChanges(volume), "erasing is not an unsaved change"
    logic.saveAnnotations(volume, dataset, work)
    kinds.setDenseSource(node, segmentation, "")  # all segments instead of one
    assert logic.hasUnsavedChanges(volume)
    logic.saveAnnotations(volume, dataset, work)
    other = dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY, "other")
    kinds.setDenseSource(node, other)  # another segmentation
    assert logic.hasUnsavedChanges(volume)


def test_a_paint_stroke_fires_an_event_the_panel_observes(scene, logic, sphere):
    volume, image, mask = sphere
    node, segmentation = _denseObject(scene, logic, volume, mask)
    observed = kinds.denseSegmentations([node])
    assert observed == [segmentation]
    seen = []
    for event in kinds.segmentationEvents():
        segmentation.AddObserver(event, lambda caller, name: seen.append(name))
    paintStroke(segmentation, "label 1", (2, 2, 2), (3, 3, 3))
    assert seen, "a paint stroke fired none of the observed segmentation events"
    seen.clear()
    segmentation.GetSegmentation().AddEmptySegment("", "new")
    assert seen, "a new segment (a new label value of 'all segments') fired none of the observed events"


def test_a_draft_keeps_the_painted_voxels_of_a_dense_object(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    node, segmentation = _denseObject(scene, logic, volume, mask)
    dataset, work = _dataset(tmp_path, image), tmp_path / "work"
    logic.saveAnnotations(volume, dataset, work)
    paintStroke(segmentation, "label 1", (2, 2, 2), (4, 4, 4))
    painted = kinds.denseLabels(node, volume) > 0
    path = logic.autosaveDraft(volume, work)
    assert path == cases.draftPath(work, "sphere") and not logic.hasUnsavedChanges(volume)
    fresh = HeadlessSlicer()
    try:
        other = PASegCoreLogic(fresh.scene)
        files = list_cases(dataset)[0]
        os.utime(files.markups, ns=(0, 0))  # the draft is newer than the saved case
        again = other.openCase(files, work)
        (restored,) = other.objectNodes(again)
        assert np.array_equal(kinds.denseLabels(restored, again) > 0, painted), "the draft lost the painted voxels"
        assert not other.hasUnsavedChanges(again)
        written = other.saveAnnotations(again, dataset, work)  # a full save removes the draft and its label
        assert not cases.draftPath(work, "sphere").exists()
        assert not [p.name for p in (work / "drafts").iterdir()], "a draft label was left behind"
        assert np.array_equal(read_image(written["label"]).array > 0, painted)
    finally:
        fresh.close()


def test_the_preview_is_stale_once_the_dense_label_is_repainted(scene, logic, sphere):
    volume, image, mask = sphere
    node, segmentation = _denseObject(scene, logic, volume, mask)
    logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
    assert logic.previewLabels(volume) is not None
    paintStroke(segmentation, "label 1", (2, 2, 2), (4, 4, 4))
    assert logic.previewLabels(volume) is None, "a preview of the label before the stroke is taken as current"


def test_objects_state_is_unchanged_by_reading_the_dense_label(scene, logic, sphere):
    volume, image, mask = sphere
    node, segmentation = _denseObject(scene, logic, volume, mask)
    state = drafts.objectsState(scene, volume)
    kinds.denseLabels(node, volume)  # an export (the preview, a save) is no edit
    assert drafts.sameState(drafts.objectsState(scene, volume), state)


# -- saveCaseAnnotation of a dense case ----------------------------------------------------------------------
def test_save_case_annotation_writes_a_dense_cases_label(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    _denseObject(scene, logic, volume, mask)
    path = casefile.saveCaseAnnotation(scene, volume, tmp_path / "c.mrk.json")
    assert path == tmp_path / "c.mrk.json"
    (obj,) = read_markups(path, GEOMETRY).objects
    assert obj.kind == "dense" and obj.label_file == "c_dense.nii.gz"
    assert np.array_equal(read_image(tmp_path / "c_dense.nii.gz").array > 0, mask)


def test_a_dense_draft_is_written_while_the_scene_closes(scene, logic, sphere, tmp_path):
    """The panel keeps unsaved drafts on the scene's StartCloseEvent: the label export still works then."""
    volume, image, mask = sphere
    _denseObject(scene, logic, volume, mask)
    work, written = tmp_path / "work", []
    tag = scene.AddObserver(scene.StartCloseEvent, lambda *args: written.append(logic.autosaveDraft(volume, work)))
    try:
        scene.Clear(0)
    finally:
        scene.RemoveObserver(tag)
    assert written == [cases.draftPath(work, "sphere")]
    assert np.array_equal(read_image(dense.draftLabelPath(written[0])).array > 0, mask)
