"""The Slicer module's MRML logic on a real MRML scene (``slicer-core`` wheel, no Slicer application, no mocks).

Volumes ↔ arrays (spacing, origin, oblique direction, parent transforms), markups ↔ annotations (RAS/LPS),
partial labels and predictions → segments, ``.mrk.json`` / ``.seg.nrrd`` / ``.nrrd`` files cross-checked
against Slicer's own storage nodes, the expansion preview, saving cases, the self-test scenario.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_slicer_core
from PASegSlicer import selftest
from PASegSlicer.annotation import casefile, cases, kinds, objects
from PASegSlicer.annotation.logic import PASegCoreLogic
from PASegSlicer.gui.lossplot import LossCurvePlot
from PASegSlicer.mrml import segments, volumes
from PASegSlicer.mrml.headless import HeadlessSlicer

from PASegLib.annotation.markups import read_markups
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.annotation.validation import object_box
from PASegLib.data.dataset import list_cases, load_case
from PASegLib.image.geometry import lps_to_ras
from PASegLib.image.io import Volume, write_image
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds
from PASegLib.seeds.pseudo_labels import pseudo_label_map

slicer = require_slicer_core()


@pytest.fixture
def blob_node(scene, blob_case):
    image, label = blob_case
    return volumes.createVolumeNode(scene, image, "blob"), image, label


def _case_on(geometry, label):
    return simulate_clicks(label, geometry, seed=1)


# -- volumes --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, np.float64])
def test_volume_node_roundtrip_is_exact_on_oblique_geometry(scene, oblique_geometry, dtype):
    array = (np.random.default_rng(0).normal(50, 20, oblique_geometry.shape)).astype(dtype)
    node = volumes.createVolumeNode(scene, Volume(array, oblique_geometry), "v")
    np.testing.assert_allclose(volumes.ijkToRasMatrix(node), oblique_geometry.index_to_ras_matrix, atol=1e-9)
    back = volumes.volumeFromNode(node)
    assert back.array.dtype == array.dtype and np.array_equal(back.array, array)
    assert oblique_geometry.mismatch(back.geometry, atol_mm=1e-9, atol_direction=1e-9) == ""
    # axis order checked against VTK itself: voxel (i, j, k) of the array is VTK's point (i, j, k)
    for ijk in [(0, 0, 0), (3, 4, 5), (39, 35, 19), (7, 30, 2)]:
        assert node.GetImageData().GetScalarComponentAsDouble(*ijk, 0) == pytest.approx(float(array[ijk]))


def test_volume_written_by_paseglib_reads_identically_in_slicer(scene, tmp_path, blob_case):
    image, _ = blob_case
    path = write_image(tmp_path / "img.nrrd", image.array, image.geometry)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "from file")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    loaded = volumes.volumeFromNode(node)
    assert image.geometry.mismatch(loaded.geometry, atol_mm=1e-5, atol_direction=1e-6) == ""
    np.testing.assert_array_equal(loaded.array, image.array)


def test_world_points_map_into_a_transformed_volume(scene, blob_node):
    node, image, _ = blob_node
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = slicer.vtkMRMLLinearTransformNode().GetMatrixTransformToParent()
    matrix.SetElement(0, 3, 12.5)
    matrix.SetElement(1, 0, 0.0)
    matrix.SetElement(2, 3, -4.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    local = image.geometry.index_to_world([[3, 4, 5], [20, 17, 10]], coordinate_system="RAS")
    world = volumes.localToWorld(node, local)
    np.testing.assert_allclose(world - local, [[12.5, 0, -4.0]] * 2, atol=1e-9)
    np.testing.assert_allclose(volumes.worldToLocal(node, world), local, atol=1e-9)
    # an object placed in world space is validated and converted in the volume's own frame
    case = _case_on(image.geometry, blob_node[2])
    objects.nodesFromCase(scene, node, case)
    back = objects.caseFromNodes(scene, node)
    np.testing.assert_allclose(back.objects[0].foreground, case.objects[0].foreground, atol=1e-9)


# -- markups --------------------------------------------------------------------------------------------------
def test_object_node_guides_the_seven_points_in_order(scene, blob_node):
    node_volume, image, label = blob_node
    node = objects.addObjectNode(scene, node_volume)
    assert node.GetName() == "tumor 1" and objects.nextObjectName(scene, node_volume) == "tumor 2"
    labels = [node.GetNthControlPointLabel(n) for n in range(node.GetNumberOfControlPoints())]
    assert labels == ["F", "R", "L", "A", "P", "I", "S"]
    assert node.GetNumberOfDefinedControlPoints() == 0 and node.GetFixedNumberOfControlPoints()
    obj = _case_on(image.geometry, label).objects[0]
    expected = []
    for point_label, lps in obj.points().items():
        expected.append(objects.placementStatus(node, node_volume).expectedLabel)
        objects.setControlPoint(node, point_label, lps_to_ras(lps))
    assert expected == ["F", "R", "L", "A", "P", "I", "S"]
    status = objects.placementStatus(node, node_volume)
    assert status.complete and status.valid and "all 7 points placed" in status.prompt
    node.UnsetNthControlPointPosition(3)  # unplacing a point (to place it again) makes it the expected one
    assert objects.placementStatus(node, node_volume).expectedLabel == "A"
    with pytest.raises(AnnotationError, match="incomplete: place A"):
        objects.caseFromNodes(scene, node_volume)


def test_live_validation_says_what_is_wrong(scene, blob_node):
    volume, image, label = blob_node
    obj = _case_on(image.geometry, label).objects[0]
    node = objects.addObjectNode(scene, volume)
    objects.setControlPoint(node, "F", lps_to_ras(obj.foreground))
    objects.setControlPoint(node, "R", lps_to_ras(obj.background["L"]))  # R placed on the left side
    status = objects.placementStatus(node, volume)
    assert status.expectedLabel == "L" and not status.valid
    assert "the R point is not right of the F point along the image axis" in status.error
    assert "inside the tumor's extent" in status.error
    objects.setControlPoint(node, "R", lps_to_ras(obj.foreground))
    assert "same voxel" in objects.placementStatus(node, volume).error
    objects.setControlPoint(node, "R", lps_to_ras(obj.foreground) + np.array([500.0, 0, 0]))
    assert "outside the image" in objects.placementStatus(node, volume).error
    objects.setControlPoint(node, "R", lps_to_ras(obj.background["R"]))
    assert objects.placementStatus(node, volume).error == ""


def test_case_nodes_and_mrk_json_roundtrip_with_slicer_storage(scene, blob_node, tmp_path):
    volume, image, label = blob_node
    case = _case_on(image.geometry, label)
    fg = case.objects[0].foreground  # a second, smaller box around the same click (overlap is only a warning)
    second = ObjectAnnotation("tumor 2", fg, {s: fg + 0.9 * (p - fg) for s, p in case.objects[0].background.items()})
    case = CaseAnnotation([case.objects[0], second])
    nodes = objects.nodesFromCase(scene, volume, case)
    assert [n.GetName() for n in nodes] == ["tumor 1", "tumor 2"]
    back = objects.caseFromNodes(scene, volume, validate=False)
    for a, b in zip(case.objects, back.objects):
        for side, point in a.points().items():
            np.testing.assert_allclose(b.points()[side], point, atol=1e-9)
    path = casefile.saveCaseAnnotation(scene, volume, tmp_path / "c.mrk.json")
    from_file = read_markups(path, image.geometry)
    np.testing.assert_allclose(from_file.objects[1].background["S"], second.background["S"], atol=1e-9)
    # Slicer's own markups reader sees the same RAS positions and labels in PASeg's file
    fiducial = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "read by Slicer")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(fiducial)
    assert fiducial.GetNumberOfControlPoints() == 7 and fiducial.GetNthControlPointLabel(1) == "R"
    np.testing.assert_allclose(
        fiducial.GetNthControlPointPosition(0), lps_to_ras(case.objects[0].foreground), atol=1e-6
    )
    # and a file written by Slicer (RAS) loads back into PASeg objects
    out = slicer.vtkMRMLMarkupsJsonStorageNode()
    out.SetFileName(str(tmp_path / "slicer.mrk.json"))
    out.UseLPSCoordinateSystemOff() if hasattr(out, "UseLPSCoordinateSystemOff") else out.SetCoordinateSystem(0)
    assert out.WriteData(nodes[1])
    loaded = casefile.loadCaseAnnotation(scene, volume, tmp_path / "slicer.mrk.json")
    assert len(loaded) == 1 and objects.objectNodes(scene, volume) == loaded  # the loaded file replaces both
    np.testing.assert_allclose(
        objects.caseFromNodes(scene, volume).objects[0].foreground, second.foreground, atol=1e-5
    )


# -- segments -------------------------------------------------------------------------------------------------
def test_partial_labels_to_segments_and_seg_nrrd_roundtrip(scene, oblique_geometry, tmp_path):
    reference = volumes.createVolumeNode(
        scene, Volume(np.zeros(oblique_geometry.shape, np.float32), oblique_geometry), "ref"
    )
    labels = np.zeros(oblique_geometry.shape, np.uint8)
    labels[5:30, 4:30, 3:15] = 2
    labels[12:20, 10:22, 6:12] = 1
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "partial")
    segments.setLabelsToSegmentation(node, labels, oblique_geometry, segments.PARTIAL_SEGMENTS, reference)
    names = ["background", "foreground", "unlabeled"]
    exported = segments.segmentationToLabels(node, reference, names)
    np.testing.assert_array_equal(exported, np.choose(labels, [1, 2, 3]))
    path = segments.writeSegmentation(node, tmp_path / "partial.seg.nrrd")
    loaded = segments.readSegmentation(scene, path)
    np.testing.assert_array_equal(segments.segmentationToLabels(loaded, reference, names), exported)
    fg = loaded.GetSegmentation().GetSegment(loaded.GetSegmentation().GetSegmentIdBySegmentName("foreground"))
    np.testing.assert_allclose(fg.GetColor(), segments.PARTIAL_SEGMENTS[0][2], atol=1e-6)
    counts = segments.segmentVoxelCounts(loaded, reference, names)
    assert counts == {"background": int((labels == 0).sum()), "foreground": int((labels == 1).sum()),
                      "unlabeled": int((labels == 2).sum())}  # fmt: skip


def test_expansion_preview_equals_paseglib_on_an_oblique_volume(scene, blob_node):
    volume, image, label = blob_node
    case = _case_on(image.geometry, label)
    objects.nodesFromCase(scene, volume, case)
    logic = PASegCoreLogic(scene)
    node = logic.expansionPreview(volume, epsilon=0.2, lamb=0.5)
    # the preview shows what training uses: the seeds filled over the box by the random walker (the default)
    expected = pseudo_label_map(image, case, expansion=ExpansionConfig(epsilon=0.2, lamb=0.5))
    seeds = expand_seeds(image, case, config=ExpansionConfig(epsilon=0.2, lamb=0.5))
    assert (expected == 1).sum() > (seeds == 1).sum() and ((seeds == 1) <= (expected == 1)).all()
    np.testing.assert_array_equal(logic.previewLabels(volume), expected)
    shown = segments.segmentationToLabels(node, volume, ["foreground"])
    np.testing.assert_array_equal(shown, expected == 1)
    assert logic.expansionPreview(volume, epsilon=0.4, lamb=0.5) is node  # re-preview updates the same node
    wider = expand_seeds(image, case, config=ExpansionConfig(epsilon=0.4, lamb=0.5))
    assert (wider == 1).sum() > (seeds == 1).sum() and ((wider == 1) <= (logic.previewLabels(volume) == 1)).all()
    # what decides whether auto-preview runs: the geodesic's box voxels plus the fill's random walker
    box = int((seeds == 2).sum() + (seeds == 1).sum())
    lo, hi = object_box(case.objects[0], image.geometry)
    assert logic.previewBoxVoxels(volume) == box + kinds.randomWalkerWork(np.asarray(lo), np.asarray(hi),
                                                                          image.geometry)


def test_prediction_file_becomes_named_segments(scene, blob_node, tmp_path):
    volume, image, label = blob_node
    objects.nodesFromCase(scene, volume, _case_on(image.geometry, label))
    pred = np.zeros(image.geometry.shape, np.uint8)
    pred[label > 0] = 1
    pred[2:5, 2:5, 2:5] = 2
    path = write_image(tmp_path / "blob_pred.nii.gz", pred, image.geometry)
    logic = PASegCoreLogic(scene)
    node = logic.importPrediction(volume, path, workFolder=tmp_path / "work")
    names = [
        node.GetSegmentation().GetNthSegment(n).GetName() for n in range(node.GetSegmentation().GetNumberOfSegments())
    ]
    assert names == ["tumor 1", "tumor 2"]
    np.testing.assert_array_equal(segments.segmentationToLabels(node, volume, names), pred)
    assert cases.predictionPath(tmp_path / "work", "blob").is_file()
    other = write_image(
        tmp_path / "bad_pred.nii.gz", np.zeros((40, 36, 21), np.uint8), image.geometry.with_shape((40, 36, 21))
    )
    with pytest.raises(ValueError, match="grid differs"):
        logic.importPrediction(volume, other)


# -- cases, self-test, plot ---------------------------------------------------------------------------------
def test_saving_a_loose_volume_makes_a_dataset_case_and_loads_back(scene, blob_node, tmp_path):
    volume, image, label = blob_node
    case = _case_on(image.geometry, label)
    objects.nodesFromCase(scene, volume, case)
    logic = PASegCoreLogic(scene)
    logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
    written = logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")
    assert sorted(written) == ["annotations", "image", "partial"]
    files = list_cases(tmp_path / "data")
    assert [f.case_id for f in files] == ["blob"]
    loaded = load_case(files[0])  # PASegLib validates the saved clicks against the saved image
    np.testing.assert_allclose(loaded.annotation.objects[0].foreground, case.objects[0].foreground, atol=1e-9)
    assert loaded.image.geometry.mismatch(image.geometry, atol_mm=1e-6) == ""
    listing = cases.CaseList(tmp_path / "data", tmp_path / "work")
    assert [e.status for e in listing.refresh()] == [cases.EXPANDED]
    fresh = HeadlessSlicer()
    try:
        reloaded = PASegCoreLogic(fresh.scene).loadCase(files[0])
        again = objects.caseFromNodes(fresh.scene, reloaded)
        np.testing.assert_allclose(again.objects[0].background["P"], case.objects[0].background["P"], atol=1e-9)
    finally:
        fresh.close()
    with pytest.raises(ValueError, match="dataset folder"):
        logic.saveAnnotations(volume, Path(""), None)


def test_self_test_scenario_runs_headless(scene):
    counts = selftest.runScenario(scene)
    # the box holds the seeds filled by the random walker (some of it labelled background), outside is background
    assert 0 < counts["foreground"] + counts["unlabeled"] < selftest.BOX_VOXELS
    assert counts["background"] >= sum(counts.values()) - selftest.BOX_VOXELS


def test_loss_curve_plot_nodes(scene):
    plot = LossCurvePlot(scene)
    history = [{"step": 0, "iteration": n, "dice_ce": 1.0 / n, "crf": 0.5} for n in range(1, 6)]
    plot.update(history, [{"score": 0.7, "x": 5}])
    np.testing.assert_allclose(plot.values("dice_ce"), [1.0 / n for n in range(1, 6)])
    np.testing.assert_allclose(plot.values("validation score"), [0.7])
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 3
    plot.update(history + [{"step": 1, "iteration": 1, "kd": 0.2}])
    assert np.isnan(plot.values("kd")[:5]).all() and plot.values("kd")[5] == pytest.approx(0.2)
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 4


def test_a_preview_is_only_reused_for_the_clicks_it_was_computed_from(scene, blob_node, tmp_path):
    volume, image, label = blob_node
    nodes = objects.nodesFromCase(scene, volume, _case_on(image.geometry, label))
    logic = PASegCoreLogic(scene)
    assert not logic.hasPreview(volume) and logic.previewLabels(volume) is None
    logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
    assert logic.previewLabels(volume) is not None
    world = np.array(nodes[0].GetNthControlPointPositionWorld(0))
    nodes[0].SetNthControlPointPositionWorld(0, *(world + np.array([0.0, 0.0, 2.5])))  # F moves one slice
    assert logic.hasPreview(volume) and logic.previewLabels(volume) is None
    assert sorted(logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")) == ["annotations", "image"]
