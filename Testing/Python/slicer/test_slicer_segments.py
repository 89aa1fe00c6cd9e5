"""Label maps → segments (``PASegSlicer.mrml.segments.setLabelsToSegmentation``) on a real MRML scene (``slicer-core``).

Voxel sets are checked with hand-known counts and against the previous per-segment implementation (kept verbatim in
``benchmarks/bench_preview.py``): created and replaced segments, an unrelated segment of the node (in its own
labelmap or sharing one with ours), predictions with several objects, values that do not occur, oblique
geometry, Fortran-ordered and non-uint8 label maps, and a 3D closed surface that must follow the new voxels.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark, require_slicer_core
from PASegSlicer.mrml import segments, volumes
from vtk.util import numpy_support

from PASegLib.image.io import Volume

slicer = require_slicer_core()


PARTIAL_NAMES = ["foreground", "background", "unlabeled"]


@pytest.fixture
def reference(scene, oblique_geometry):
    """An empty volume node on the oblique 40×36×20 grid (the reference geometry of the segmentations)."""
    empty = Volume(np.zeros(oblique_geometry.shape, np.float32), oblique_geometry)
    return volumes.createVolumeNode(scene, empty, "ref")


def _partial(shape, box, inner):
    labels = np.zeros(shape, np.uint8)
    labels[box] = 2
    labels[inner] = 1
    return labels


def _masks(node, reference, names):
    """Each named segment as a boolean ``[i, j, k]`` mask on the reference grid (exported one at a time)."""
    return {name: segments.segmentationToLabels(node, reference, [name]).astype(bool) for name in names}


def _names(node):
    seg = node.GetSegmentation()
    return [seg.GetNthSegment(n).GetName() for n in range(seg.GetNumberOfSegments())]


def _sharing(node, segmentId):
    shared = []
    node.GetSegmentation().GetSegmentIDsSharingBinaryLabelmapRepresentation(segmentId, shared, True)
    return set(shared)


def _addForeign(node, mask, geometry):
    """A segment "mine" added the way the Segment Editor does (first layer if it does not overlap)."""
    bench = load_benchmark("bench_preview")
    segmentId = node.GetSegmentation().AddEmptySegment("", "mine", [0.1, 0.2, 0.3])
    image = bench._orientedImageReference(mask, geometry)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(image, node, segmentId)
    return segmentId


def test_partial_labels_give_exact_segments_sharing_one_labelmap_on_an_oblique_grid(scene, reference, oblique_geometry):
    import vtk

    labels = _partial(oblique_geometry.shape, np.s_[5:30, 4:30, 3:15], np.s_[12:20, 10:22, 6:12])
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "partial")
    ids = segments.setLabelsToSegmentation(node, labels, oblique_geometry, segments.PARTIAL_SEGMENTS, reference)
    assert list(ids) == PARTIAL_NAMES and _names(node) == PARTIAL_NAMES
    counts = segments.segmentVoxelCounts(node, reference, PARTIAL_NAMES)
    assert counts == {"foreground": 8 * 12 * 6, "unlabeled": 25 * 26 * 12 - 8 * 12 * 6,
                      "background": 40 * 36 * 20 - 25 * 26 * 12}  # fmt: skip
    exported = segments.segmentationToLabels(node, reference, ["background", "foreground", "unlabeled"])
    np.testing.assert_array_equal(exported, np.choose(labels, [1, 2, 3]))
    assert _sharing(node, ids["foreground"]) == set(ids.values())  # one label image for the three segments
    segment = node.GetSegmentation().GetSegment(ids["background"])
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)],
                               oblique_geometry.index_to_ras_matrix, atol=1e-12)  # fmt: skip
    for (_, _, color), segmentId in zip(segments.PARTIAL_SEGMENTS, ids.values()):
        np.testing.assert_allclose(node.GetSegmentation().GetSegment(segmentId).GetColor(), color, atol=1e-6)


def test_a_second_call_replaces_the_segments_in_place(scene, reference, oblique_geometry):
    shape = oblique_geometry.shape
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "partial")
    first = segments.setLabelsToSegmentation(node, _partial(shape, np.s_[5:30, 4:30, 3:15], np.s_[12:20, 10:22, 6:12]),
                                             oblique_geometry, segments.PARTIAL_SEGMENTS, reference)  # fmt: skip
    second_labels = _partial(shape, np.s_[0:10, 0:36, 0:20], np.s_[2:6, 3:8, 0:2])  # touches the grid's faces
    second = segments.setLabelsToSegmentation(node, second_labels, oblique_geometry, segments.PARTIAL_SEGMENTS,
                                              reference)  # fmt: skip
    assert second == first and _names(node) == PARTIAL_NAMES  # same segments (ids, order), new voxels
    assert segments.segmentVoxelCounts(node, reference, PARTIAL_NAMES) == {
        "foreground": 4 * 5 * 2, "unlabeled": 10 * 36 * 20 - 4 * 5 * 2, "background": 30 * 36 * 20}  # fmt: skip
    masks = _masks(node, reference, PARTIAL_NAMES)
    for value, name, _ in segments.PARTIAL_SEGMENTS:
        np.testing.assert_array_equal(masks[name], second_labels == value)


@pytest.mark.parametrize("overlapping", [True, False], ids=["own labelmap", "shares our labelmap"])
def test_another_segment_of_the_node_is_left_alone(scene, reference, oblique_geometry, overlapping):
    shape = oblique_geometry.shape
    pred = np.zeros(shape, np.uint8)
    pred[3:9, 4:10, 2:6], pred[20:30, 20:25, 10:18] = 1, 2
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "prediction")
    ids = segments.setLabelsToSegmentation(node, pred, oblique_geometry, segments.predictionSegments(pred), reference)
    mine = np.zeros(shape, bool)
    mine[(np.s_[5:25, 5:25, 4:12] if overlapping else np.s_[32:38, 0:5, 0:4])] = True
    mineId = _addForeign(node, mine, oblique_geometry)
    assert (ids["tumor 1"] in _sharing(node, mineId)) != overlapping  # Slicer shares labelmaps unless they overlap
    again = np.zeros(shape, np.uint8)
    again[5:12, 4:10, 2:6], again[21:24, 20:30, 10:12] = 1, 2
    segments.setLabelsToSegmentation(node, again, oblique_geometry, segments.predictionSegments(again), reference)
    assert _names(node) == ["tumor 1", "tumor 2", "mine"]
    masks = _masks(node, reference, ["tumor 1", "tumor 2", "mine"])
    np.testing.assert_array_equal(masks["mine"], mine)
    np.testing.assert_array_equal(masks["tumor 1"], again == 1)
    np.testing.assert_array_equal(masks["tumor 2"], again == 2)
    np.testing.assert_allclose(node.GetSegmentation().GetSegment(mineId).GetColor(), (0.1, 0.2, 0.3), atol=1e-6)
    # no voxel of the old tumours is left behind in the labelmap "mine" keeps (under a label no segment has)
    mineSegment = node.GetSegmentation().GetSegment(mineId)
    image = mineSegment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    held = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    labelsInUse = {node.GetSegmentation().GetSegment(s).GetLabelValue() for s in _sharing(node, mineId)}
    assert set(np.unique(held).tolist()) <= {0} | labelsInUse


def test_values_that_do_not_occur_give_empty_segments(scene, reference, oblique_geometry):
    empty = np.zeros(oblique_geometry.shape, np.uint8)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing found")
    segments.setLabelsToSegmentation(node, empty, oblique_geometry, segments.predictionSegments(empty), reference)
    assert segments.segmentVoxelCounts(node, reference, ["tumor 1"]) == {"tumor 1": 0}
    labels = _partial(oblique_geometry.shape, np.s_[5:30, 4:30, 3:15], np.s_[12:20, 10:22, 6:12])
    extra = [(7, "seven", (1.0, 0.0, 1.0))] + list(segments.PARTIAL_SEGMENTS)
    segments.setLabelsToSegmentation(node, labels, oblique_geometry, extra, reference)
    counts = segments.segmentVoxelCounts(node, reference, ["tumor 1", "seven", "foreground"])
    assert counts == {"tumor 1": 0, "seven": 0, "foreground": 8 * 12 * 6}
    with pytest.raises(ValueError, match="distinct"):
        segments.setLabelsToSegmentation(node, labels, oblique_geometry, [(1, "a", (1, 0, 0)), (1, "b", (0, 1, 0))])
    with pytest.raises(ValueError, match="does not match"):
        segments.setLabelsToSegmentation(node, labels[:-1], oblique_geometry, segments.PARTIAL_SEGMENTS)


@pytest.mark.parametrize("layout", ["uint8 C", "uint8 Fortran", "int16", "bool"])
def test_same_voxels_as_the_previous_per_segment_implementation(scene, reference, oblique_geometry, layout):
    bench = load_benchmark("bench_preview")
    rng = np.random.default_rng(4)
    shape = oblique_geometry.shape
    labels = rng.choice(4, size=shape, p=[0.7, 0.1, 0.1, 0.1]).astype(np.uint8)
    labels[:, :, :5] = 0
    wanted = [(3, "three", (0.2, 0.3, 0.4)), (1, "one", (0.5, 0.6, 0.7))]  # value 2 is not asked for
    if layout == "uint8 Fortran":
        labels = np.asfortranarray(labels)
    elif layout == "int16":
        labels = labels.astype(np.int16) * 100 - 100
        wanted = [(200, "three", (0.2, 0.3, 0.4)), (-100, "zero", (0.5, 0.6, 0.7))]
    elif layout == "bool":
        labels, wanted = labels == 1, [(True, "one", (0.2, 0.3, 0.4)), (False, "rest", (0.5, 0.6, 0.7))]
    names = [name for _, name, _ in wanted]
    results = []
    for fn in (bench._setLabelsToSegmentationReference, segments.setLabelsToSegmentation):
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", fn.__name__)
        fn(node, labels, oblique_geometry, wanted, reference)
        results.append(_masks(node, reference, names))
    for value, name, _ in wanted:
        np.testing.assert_array_equal(results[1][name], labels == value)
        np.testing.assert_array_equal(results[1][name], results[0][name])


def test_a_closed_surface_follows_the_new_voxels(scene, oblique_geometry, reference):
    import vtk

    shape = oblique_geometry.shape
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "shown in 3D")
    first = np.zeros(shape, np.uint8)
    first[5:10, 5:10, 3:6] = 1
    ids = segments.setLabelsToSegmentation(node, first, oblique_geometry, segments.predictionSegments(first), reference)
    assert node.CreateClosedSurfaceRepresentation()
    second = np.zeros(shape, np.uint8)
    second[25:35, 20:30, 10:16] = 1
    segments.setLabelsToSegmentation(node, second, oblique_geometry, segments.predictionSegments(second), reference)
    surface = vtk.vtkPolyData()
    assert node.GetClosedSurfaceRepresentation(ids["tumor 1"], surface) and surface.GetNumberOfPoints() > 0
    center = np.mean(np.reshape(surface.GetBounds(), (3, 2)), axis=1)
    expected = oblique_geometry.index_to_ras_matrix @ np.array([29.5, 24.5, 12.5, 1.0])
    np.testing.assert_allclose(center, expected[:3], atol=3.0)  # the new box's centre (mm), not the first one's
