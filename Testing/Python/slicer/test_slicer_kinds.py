"""Annotation kinds in the Slicer module, on a real MRML scene: the nodes the module creates for
each kind, guided placement and live validation, saving and reading back with the library's reader, drafts that
keep the kind, dense cases, and the pseudo-label preview of extreme points and boxes.

The volume is a small bright sphere (28×28×20 voxels), so the random walker runs in well under a second.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import SPHERE_CENTER, SPHERE_GEOMETRY, reopened_case, require_slicer_core, sphere_volume_node
from PASegSlicer import selftest
from PASegSlicer.annotation import cases, dense, drafts, kinds, objects
from PASegSlicer.annotation.logic import PASegCoreLogic
from PASegSlicer.mrml import volumes
from PASegSlicer.mrml.headless import HeadlessSlicer
from PASegSlicer.mrml.segments import segmentVoxelCounts

from PASegLib.annotation.kinds import get_kind
from PASegLib.annotation.markups import read_draft_markups, read_markups
from PASegLib.annotation.model import AnnotationError, side_axis
from PASegLib.data.dataset import list_cases, load_case
from PASegLib.image.geometry import ImageGeometry, lps_to_ras
from PASegLib.image.io import read_image, write_image

slicer = require_slicer_core()


GEOMETRY, CENTER = SPHERE_GEOMETRY, SPHERE_CENTER


@pytest.fixture
def sphere(scene):
    """(volume node, mask): a bright sphere of radius 6 mm on a noisy background."""
    node, _, mask = sphere_volume_node(scene)
    return node, mask


def _lps(index) -> np.ndarray:
    return GEOMETRY.index_to_world(np.asarray(index, dtype=np.float64))


def extremePoints(mask) -> dict:
    """Side → LPS: the sphere's outermost voxel towards each side, on the line through its centre."""
    out = {}
    for side, (axis, sign) in side_axis(GEOMETRY).items():
        line = [slice(int(c), int(c) + 1) for c in CENTER]
        line[axis] = slice(None)
        along = np.flatnonzero(mask[tuple(line)].ravel())
        index = CENTER.copy()
        index[axis] = along.max() if sign > 0 else along.min()
        out[side] = _lps(index)
    return out


def boxCorners(mask, margin: int = 2) -> dict:
    voxels = np.argwhere(mask)
    corners = np.stack([_lps(voxels.min(axis=0) - margin), _lps(voxels.max(axis=0) + margin)])
    return {"lo": corners.min(axis=0), "hi": corners.max(axis=0)}


def sevenPoints(mask) -> dict:
    points = {"F": _lps(CENTER)}
    for side, lps in extremePoints(mask).items():  # 2 voxels beyond each extreme point
        points[side] = lps + 2.0 * (lps - points["F"]) / np.linalg.norm(lps - points["F"])
    return points


def place(node, points) -> None:
    for label, lps in points.items():
        objects.setControlPoint(node, label, lps_to_ras(lps))


def drawBox(roi, corners) -> None:
    """What the user does in the views: an ROI centre and size in world RAS."""
    a, b = lps_to_ras(corners["lo"]), lps_to_ras(corners["hi"])
    roi.SetCenter(*((a + b) / 2.0))
    roi.SetSize(*np.abs(b - a))


def pointsOf(kind, mask) -> dict:
    if kind == "seven_points":
        return sevenPoints(mask)
    if kind == "extreme_points":
        return extremePoints(mask)
    if kind == "box":
        return boxCorners(mask)
    return {"F": _lps(CENTER), "B": _lps([2, 2, 2])}


# -- the nodes of each kind, saved and read back with the library ------------------------------------------------
@pytest.mark.parametrize("kind", ["seven_points", "extreme_points", "single_point", "box"])
def test_each_kind_is_saved_and_read_back_by_the_library(scene, logic, sphere, tmp_path, kind):
    volume, mask = sphere
    node = logic.addObject(volume, kind)
    assert node.GetAttribute(kinds.KIND_ATTRIBUTE) == kind and kinds.kindOf(node) == kind
    assert node.IsA("vtkMRMLMarkupsROINode" if kind == "box" else "vtkMRMLMarkupsFiducialNode")
    assert logic.objectNodes(volume) == [node]
    points = pointsOf(kind, mask)
    if kind == "box":
        assert node.GetNumberOfControlPoints() == 0 and not objects.placementStatus(node, volume).complete
        drawBox(node, points)
    else:
        labels = [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())]
        assert tuple(labels) == get_kind(kind).labels + get_kind(kind).optional
        place(node, points)
    status = objects.placementStatus(node, volume)
    assert status.valid, status.error
    written = logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")
    assert sorted(written) == ["annotations", "image"]
    doc = json.loads(written["annotations"].read_text())
    markup = doc["markups"][0]
    assert markup.get("pasegKind", "seven_points") == kind
    assert markup["type"] == ("ROI" if kind == "box" else "Fiducial")
    back = read_markups(written["annotations"], GEOMETRY).objects[0]
    assert back.kind == kind and back.name == "tumor 1"
    assert sorted(back.points()) == sorted(points)
    for label, lps in points.items():
        np.testing.assert_allclose(back.points()[label], lps, atol=1e-6)
    assert not logic.hasUnsavedChanges(volume)
    # the saved case opens again with its kind (a fresh scene, through the case list)
    with reopened_case(tmp_path / "data", tmp_path / "work") as (other, reopened, restored):
        assert kinds.kindOf(restored) == kind and objects.placementStatus(restored, reopened).valid
        for label, lps in points.items():
            np.testing.assert_allclose(objects.placedPointsLps(restored, reopened)[label], lps, atol=1e-6)
        assert not other.hasUnsavedChanges(reopened)


def test_nodes_without_the_kind_attribute_hold_seven_points(scene, sphere):
    volume, mask = sphere
    node = objects.addObjectNode(scene, volume)
    node.RemoveAttribute(kinds.KIND_ATTRIBUTE)  # as in a scene saved before the other kinds existed
    place(node, sevenPoints(mask))
    assert kinds.kindOf(node) == "seven_points" and objects.placementStatus(node, volume).valid
    assert objects.caseFromNodes(scene, volume).objects[0].kind == "seven_points"
    roi = objects.addObjectNode(scene, volume, kind="box")
    roi.RemoveAttribute(kinds.KIND_ATTRIBUTE)
    assert kinds.kindOf(roi) == "box"
    roi.SetAttribute(kinds.KIND_ATTRIBUTE, "extreme_points")  # an ROI node is a box, whatever its attribute says
    assert kinds.kindOf(roi) == "box" and objects.placementStatus(roi, volume).expectedLabel == "lo"
    odd = objects.addObjectNode(scene, volume, kind="single_point")
    odd.SetAttribute(kinds.KIND_ATTRIBUTE, "lasso")  # edited by hand: named, never a crash
    assert "unknown annotation kind 'lasso'" in objects.placementStatus(odd, volume).error
    with pytest.raises(AnnotationError, match="unknown annotation kind 'lasso'"):
        drafts.objectsState(scene, volume)
    with pytest.raises(ValueError, match="unknown annotation kind 'lasso'"):
        objects.addObjectNode(scene, volume, kind="lasso")


# -- guided placement ---------------------------------------------------------------------------------------------
def test_extreme_points_are_prompted_in_order_with_the_kind_prompts(scene, app, sphere):
    volume, mask = sphere
    node = objects.addObjectNode(scene, volume, kind="extreme_points")
    prompts = get_kind("extreme_points").prompts
    assert "the object's outermost point towards the patient's right" in objects.placementStatus(node, volume).prompt
    seen = []
    for label, lps in extremePoints(mask).items():
        status = objects.placementStatus(node, volume)
        seen.append(status.expectedLabel)
        assert prompts[label] in status.prompt and "of 6" in status.prompt and not status.complete
        objects.setControlPoint(node, label, lps_to_ras(lps))
    assert seen == ["R", "L", "A", "P", "I", "S"]
    status = objects.placementStatus(node, volume)
    assert status.valid and "all 6 points placed" in status.prompt and status.expectedLabel is None
    assert objects.startPlacement(app.logics["Markups"], node) is False
    assert "all 6 points are placed" in objects.completeMessage(node)
    node.UnsetNthControlPointPosition(2)  # A unplaced: placement starts there
    assert objects.startPlacement(app.logics["Markups"], node)
    assert node.GetControlPointPlacementStartIndex() == 2
    assert objects.placementStatus(node, volume).expectedLabel == "A"


def test_a_single_points_background_point_is_optional(scene, app, sphere):
    volume, mask = sphere
    node = objects.addObjectNode(scene, volume, kind="single_point")
    markups = app.logics["Markups"]
    assert "one point anywhere inside the object" in objects.placementStatus(node, volume).prompt
    objects.setControlPoint(node, "F", lps_to_ras(_lps(CENTER)))
    status = objects.placementStatus(node, volume)
    assert status.complete and status.valid and status.expectedLabel == "B"  # B may be placed or skipped
    assert "F placed; B: optional: one point on the background" in status.prompt
    assert objects.caseFromNodes(scene, volume).objects[0].background == {}
    assert objects.startPlacement(markups, node) and node.GetControlPointPlacementStartIndex() == 1
    objects.setControlPoint(node, "F", lps_to_ras(_lps(CENTER)))
    objects.setControlPoint(node, "B", lps_to_ras(_lps(CENTER)))  # in F's voxel
    assert "points F and B are in the same voxel" in objects.placementStatus(node, volume).error
    objects.setControlPoint(node, "B", lps_to_ras(_lps([2, 2, 2])))
    status = objects.placementStatus(node, volume)
    assert status.valid and status.expectedLabel is None and objects.startPlacement(markups, node) is False


def test_a_box_is_drawn_then_adjusted(scene, app, sphere):
    volume, mask = sphere
    node = objects.addObjectNode(scene, volume, kind="box")
    status = objects.placementStatus(node, volume)
    assert status.expectedLabel == "lo" and "one corner of a box holding the whole object" in status.prompt
    assert objects.startPlacement(app.logics["Markups"], node)
    assert app.logics["Markups"].GetActiveListID() == node.GetID()
    corners = boxCorners(mask)
    import vtk

    node.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(corners["lo"])))  # Slicer's first click: one corner
    status = objects.placementStatus(node, volume)
    assert status.expectedLabel == "hi" and "the opposite corner" in status.prompt and not status.complete
    assert objects.placedPointsLps(node, volume) == {}
    opposite = corners["hi"].copy()
    opposite[2] = corners["lo"][2]
    node.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(opposite)))  # the second, in the same axial slice
    assert node.GetNumberOfControlPoints() == 1  # Slicer keeps the centre only, with some depth
    status = objects.placementStatus(node, volume)
    assert status.complete and status.expectedLabel is None
    back = objects.placedPointsLps(node, volume)
    np.testing.assert_allclose(back["lo"][:2], corners["lo"][:2], atol=1e-6)
    np.testing.assert_allclose(back["hi"][:2], corners["hi"][:2], atol=1e-6)
    flat = {"lo": corners["lo"], "hi": corners["hi"].copy()}
    flat["hi"][2] = flat["lo"][2]  # drawn in one axial slice: no depth yet
    drawBox(node, flat)
    status = objects.placementStatus(node, volume)
    assert status.complete and "less than 3 voxels wide along index axis k" in status.error
    assert "drag the box's handles" in status.error
    drawBox(node, corners)
    assert objects.placementStatus(node, volume).valid
    assert objects.startPlacement(app.logics["Markups"], node) is False
    assert "drag its handles" in objects.completeMessage(node)


def test_a_box_follows_its_volume_under_a_transform(scene, sphere):
    volume, mask = sphere
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    import vtk

    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 12.0)
    m.SetElement(2, 3, -4.0)
    transform.SetMatrixTransformToParent(m)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    node = objects.addObjectNode(scene, volume, kind="box")
    assert node.GetTransformNodeID() == transform.GetID()
    corners = boxCorners(mask)
    objects.setPlacedPointsLps(node, volume, corners)
    back = objects.placedPointsLps(node, volume)
    for label in ("lo", "hi"):
        np.testing.assert_allclose(back[label], corners[label], atol=1e-9)
    world = [0.0] * 3
    node.GetCenterWorld(world)
    np.testing.assert_allclose(world, lps_to_ras((corners["lo"] + corners["hi"]) / 2) + [12.0, 0.0, -4.0], atol=1e-9)


# -- live validation ----------------------------------------------------------------------------------------------
def test_a_wrong_extreme_point_is_named_while_placing_and_when_complete(scene, sphere):
    volume, mask = sphere
    node = objects.addObjectNode(scene, volume, kind="extreme_points")
    points = extremePoints(mask)
    wrong = points["L"] - np.array([0.0, 0.0, 4.5])  # S placed 3 slices below the object's centre
    place(node, {"R": points["R"], "L": points["L"], "A": points["A"], "P": points["P"], "I": points["I"]})
    assert objects.placementStatus(node, volume).error == ""
    objects.setControlPoint(node, "S", lps_to_ras(wrong))
    status = objects.placementStatus(node, volume)
    assert status.complete and not status.valid
    assert "the extreme point S" in status.error and "superior" in status.error  # PASegLib's message
    with pytest.raises(AnnotationError, match="the extreme point S"):
        objects.caseFromNodes(scene, volume)
    # while placing: R placed left of L is named before the other points exist
    other = objects.addObjectNode(scene, volume, kind="extreme_points")
    place(other, {"R": points["L"] + np.array([2.0, 0.0, 0.0]), "L": points["L"]})
    error = objects.placementStatus(other, volume).error
    assert "the extreme point R" in error and "is not right of L" in error
    # a click near, not on, the extreme is accepted (PASegLib checks each side's half of the extent)
    place(other, {**points, "R": points["R"] + np.array([0.0, 2.0, 1.5])})
    assert objects.placementStatus(other, volume).valid


def test_a_dense_object_must_be_the_cases_only_object(scene, logic, sphere):
    volume, mask = sphere
    node = logic.addObject(volume, "dense")
    status = objects.placementStatus(node, volume)
    assert not status.complete and "pick a segmentation" in status.prompt
    segmentation = dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY)
    kinds.setDenseSource(node, segmentation)
    assert objects.placementStatus(node, volume).valid
    place(logic.addObject(volume, "single_point"), {"F": _lps(CENTER)})
    with pytest.raises(AnnotationError, match="it must be the case's only object"):
        objects.caseFromNodes(scene, volume)
    assert "must be the case's only object" in logic.caseProblem(volume)


# -- drafts keep the kind -----------------------------------------------------------------------------------------
def test_drafts_keep_every_kind_and_restore_it(scene, logic, sphere, tmp_path):
    volume, mask = sphere
    extreme = logic.addObject(volume, "extreme_points")
    points = extremePoints(mask)
    place(extreme, {k: points[k] for k in "RLA"})  # half done
    single = logic.addObject(volume, "single_point")
    place(single, {"F": _lps(CENTER)})
    box = logic.addObject(volume, "box")
    drawBox(box, boxCorners(mask))
    logic.addObject(volume, "box")  # not drawn yet: nothing to lose
    work = tmp_path / "work"
    path = logic.saveDraft(volume, work)
    assert path == cases.draftPath(work, "sphere") and not logic.hasUnsavedChanges(volume)
    byName = {o.name: o for o in read_draft_markups(path)}
    assert byName["tumor 1"].kind == "extreme_points" and byName["tumor 1"].placed == 3
    assert byName["tumor 2"].kind == "single_point" and byName["tumor 2"].points["B"] is None
    assert byName["tumor 3"].kind == "box"
    assert json.loads(path.read_text())["markups"][2]["type"] == "ROI"
    fresh = HeadlessSlicer()
    try:
        other = PASegCoreLogic(fresh.scene)
        copy = volumes.createVolumeNode(fresh.scene, volumes.volumeFromNode(volume), "sphere")
        assert other.restoreAnnotations(copy, None, work) == path
        restored = {n.GetName(): n for n in other.objectNodes(copy)}
        assert [kinds.kindOf(restored[n]) for n in ("tumor 1", "tumor 2", "tumor 3")] == [
            "extreme_points", "single_point", "box"]  # fmt: skip
        assert objects.placementStatus(restored["tumor 1"], copy).expectedLabel == "P"
        assert objects.placementStatus(restored["tumor 2"], copy).valid
        np.testing.assert_allclose(objects.placedPointsLps(restored["tumor 3"], copy)["hi"],
                                   boxCorners(mask)["hi"], atol=1e-6)  # fmt: skip
        assert not other.hasUnsavedChanges(copy)
    finally:
        fresh.close()
    extreme.SetAttribute(kinds.KIND_ATTRIBUTE, "seven_points")  # a kind change is a change to keep
    assert logic.hasUnsavedChanges(volume)


def test_the_kind_attribute_survives_a_draft_round_trip(scene, logic, sphere, tmp_path):
    volume, mask = sphere
    node = logic.addObject(volume, "extreme_points")
    state = drafts.objectsState(scene, volume)
    assert [(o.name, o.kind, o.placed) for o in state] == [("tumor 1", "extreme_points", 0)]
    drafts.writeDraft(tmp_path / "d.mrk.json", state)
    (again,) = drafts.loadDraft(scene, volume, tmp_path / "d.mrk.json")
    assert again is not node and again.GetAttribute(kinds.KIND_ATTRIBUTE) == "extreme_points"
    assert drafts.sameState(drafts.objectsState(scene, volume), state)


# -- dense cases --------------------------------------------------------------------------------------------------
def test_a_dense_case_writes_its_label_file_and_markups_and_opens_again(scene, logic, sphere, tmp_path):
    volume, mask = sphere
    node = logic.addObject(volume, "dense")
    segmentation = dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY, "painted")
    other = segmentation.GetSegmentation().AddEmptySegment("", "not this one")
    kinds.setDenseSource(node, segmentation, segmentation.GetSegmentation().GetSegmentIdBySegmentName("label 1"))
    assert other and kinds.denseSegmentNames(node) == ["label 1"]
    dataset, work = tmp_path / "data", tmp_path / "work"
    written = logic.saveAnnotations(volume, dataset, work)
    assert sorted(written) == ["annotations", "image", "label"]
    assert written["label"] == dataset / "sphere_dense.nii.gz"  # never <case>_label, the ground truth
    doc = json.loads(written["annotations"].read_text())
    assert [(m["pasegKind"], m["pasegLabel"], m["controlPoints"]) for m in doc["markups"]] == [
        ("dense", "sphere_dense.nii.gz", [])]  # fmt: skip
    case = read_markups(written["annotations"], GEOMETRY)
    assert [(o.kind, o.label_file) for o in case.objects] == [("dense", "sphere_dense.nii.gz")]
    assert np.array_equal(read_image(written["label"]).array > 0, mask)
    (files,) = list_cases(dataset)
    assert files.label is None and load_case(files).annotation.objects[0].kind == "dense"
    fresh = HeadlessSlicer()
    try:
        reopenedLogic = PASegCoreLogic(fresh.scene)
        reopened = reopenedLogic.openCase(files, work)
        (restored,) = reopenedLogic.objectNodes(reopened)
        assert kinds.kindOf(restored) == "dense" and objects.placementStatus(restored, reopened).valid
        assert np.array_equal(kinds.denseLabels(restored, reopened) > 0, mask)
        restored.SetName("whole label")  # a draft newer than the saved case: its own copy of the label
        stat = files.markups.stat()  # older by 10 s (a test runs faster than some file systems' time resolution)
        os.utime(files.markups, ns=(stat.st_atime_ns - 10**10, stat.st_mtime_ns - 10**10))
        assert reopenedLogic.autosaveDraft(reopened, work) == cases.draftPath(work, "sphere")
        assert reopenedLogic.restoreAnnotations(reopened, files, work) == cases.draftPath(work, "sphere")
        (again,) = reopenedLogic.objectNodes(reopened)
        assert again.GetName() == "whole label" and objects.placementStatus(again, reopened).valid
        assert np.array_equal(kinds.denseLabels(again, reopened) > 0, mask)
    finally:
        fresh.close()


def test_an_empty_or_misplaced_dense_label_is_refused(scene, logic, sphere, tmp_path):
    volume, mask = sphere
    node = logic.addObject(volume, "dense")
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    segmentId = empty.GetSegmentation().AddEmptySegment("", "nothing")
    kinds.setDenseSource(node, empty, segmentId)
    with pytest.raises(AnnotationError, match="are empty; paint the label first"):
        logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match="has no segment 'gone'"):
        kinds.setDenseSource(node, empty, "gone")
    shifted = ImageGeometry(GEOMETRY.shape, GEOMETRY.spacing, (6.0, -10.0, 3.0))
    write_image(tmp_path / "other_label.nii.gz", mask.astype(np.uint8), shifted)
    with pytest.raises(ValueError, match="its grid differs"):
        dense.importDenseLabel(scene, volume, node, tmp_path / "other_label.nii.gz")
    write_image(tmp_path / "label.nrrd", mask.astype(np.uint8) * 3, GEOMETRY)
    imported = dense.importDenseLabel(scene, volume, node, tmp_path / "label.nrrd")
    assert kinds.denseSource(node) == (imported, "") and kinds.denseSegmentNames(node) == ["label 3"]
    assert np.array_equal(kinds.denseLabels(node, volume), mask.astype(np.uint8))


# -- the preview of any kind --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["extreme_points", "box", "single_point", "dense"])
def test_the_preview_of_each_kind_produces_labels(scene, logic, sphere, kind):
    volume, mask = sphere
    node = logic.addObject(volume, kind)
    if kind == "box":
        drawBox(node, boxCorners(mask))
    elif kind == "dense":
        kinds.setDenseSource(node, dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY))
    else:
        place(node, pointsOf(kind, mask))
    work = logic.previewBoxVoxels(volume)
    assert work >= 1 and (work > 10_000) == (kind in ("extreme_points", "box"))  # random walker crops are weighted
    segmentation = logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
    counts = segmentVoxelCounts(segmentation, volume, ["foreground", "background", "unlabeled"])
    assert sum(counts.values()) == mask.size
    labels = logic.previewLabels(volume)
    assert labels is not None and labels.dtype == np.uint8
    foreground = labels == 1
    assert foreground.any() and (foreground & ~mask).sum() <= 0.25 * foreground.sum()  # boundary voxels
    if kind in ("extreme_points", "box", "dense"):  # most of the sphere (the library's accuracy is not tested here)
        assert (foreground & mask).sum() >= 0.5 * mask.sum(), (kind, counts, int(mask.sum()))
    if kind == "single_point":  # the clicks' balls: F foreground, B background
        assert labels[tuple(CENTER)] == 1 and labels[2, 2, 2] == 0 and counts["unlabeled"] > 0


def test_the_self_tests_kinds_scenario_runs_headless_and_leaves_nothing(scene):
    counts = selftest.runKindsScenario(scene)
    assert set(counts) == {"extreme_points", "box"} and all(v > 100 for v in counts.values())
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


def test_kinds_and_dense_references_survive_a_saved_scene(scene, logic, sphere):
    """The scene's XML keeps each node's kind and a dense object's reference (points live in storage files)."""
    volume, mask = sphere
    place(logic.addObject(volume, "extreme_points"), extremePoints(mask))
    drawBox(logic.addObject(volume, "box"), boxCorners(mask))
    denseNode = logic.addObject(volume, "dense")
    kinds.setDenseSource(denseNode, dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), GEOMETRY))
    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    fresh = HeadlessSlicer()
    try:
        fresh.scene.SetLoadFromXMLString(1)
        fresh.scene.SetSceneXMLString(xml)
        assert fresh.scene.Import()
        imported = fresh.scene.GetFirstNodeByName("sphere")
        nodes = objects.objectNodes(fresh.scene, imported)
        assert [kinds.kindOf(n) for n in nodes] == ["extreme_points", "box", "dense"]
        segmentation, segmentId = kinds.denseSource(nodes[2])
        assert segmentation is not None and segmentation.GetName() == "sphere dense label" and segmentId == ""
    finally:
        fresh.close()
