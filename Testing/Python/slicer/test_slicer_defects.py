"""Defects at the edges of a long annotation day, on a real MRML scene (``slicer-core``): the preview never becomes a
dense label, a case left lets go of its nodes, a dense case's label segmentation leaves with it, an unreadable saved
annotation is reported once instead of breaking every refresh, a save that wrote the clicks says so, a disk error at
autosave (an ``OSError``, or SimpleITK's ``RuntimeError`` for a dense tumour's voxels, or any other error of one
volume) is named and never stops the panel or the other volumes' autosave at scene close, a renamed tumour is still
the selected one, a dense case previews on request only, a box's preview cost is estimated as it runs (boxes preview by
themselves again), and the messages name the tumours' kinds.

The dense-label selector's filter (``qMRMLNodeComboBox.sortFilterProxyModel().hiddenNodeIDs``, a ``QStringList``
property of ``qMRMLSortFilterProxyModel`` in Slicer 5.8–5.12) is checked here on the stand-in widget only.

Panels run as in :mod:`test_slicer_panels` (widgets from ``PASeg.ui``, recorded dialogs, timers run by the test).
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from conftest import SPHERE_GEOMETRY, require_slicer_core, sphere_volume_node
from PASegSlicer.annotation import cases, dense, kinds, objects
from PASegSlicer.mrml import volumes
from PASegSlicer.mrml.segments import PARTIAL_SEGMENTS, setLabelsToSegmentation

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume, write_image

slicer = require_slicer_core()


@pytest.fixture
def sphere(scene):
    """(volume node, image, mask): a bright sphere of radius 6 mm on a noisy background."""
    return sphere_volume_node(scene)


def _denseTumour(scene, logic, volume, mask):
    node = logic.addObject(volume, "dense")
    segmentation = dense.labelSegmentationNode(scene, volume, mask.astype(np.uint8), SPHERE_GEOMETRY, "painted")
    kinds.setDenseSource(node, segmentation)
    return node, segmentation


def _segmentations(scene):
    return [scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]  # fmt: skip


def _paint(segmentation, lo, hi):
    """A Segment Editor stroke on the first segment: set the index box ``lo``..``hi``."""
    import vtk

    labels = np.zeros(SPHERE_GEOMETRY.shape, np.uint8)
    labels[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = 1
    image = vtk.vtkImageData()
    image.SetDimensions(*SPHERE_GEOMETRY.shape)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    from vtk.util import numpy_support

    image.GetPointData().GetScalars().DeepCopy(numpy_support.numpy_to_vtk(labels.ravel(order="F")))
    from slicer import vtkOrientedImageData

    oriented = vtkOrientedImageData()
    oriented.ShallowCopy(image)
    source = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetNthSegmentID(0))
    current = source.GetRepresentation(segmentation.GetSegmentation().GetSourceRepresentationName())
    oriented.SetGeometryFromImageToWorldMatrix(_ijkToRas(current))
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        oriented, segmentation, segmentation.GetSegmentation().GetNthSegmentID(0),
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)  # fmt: skip


def _ijkToRas(orientedImage):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    orientedImage.GetImageToWorldMatrix(matrix)
    return matrix


# -- the preview is never a dense label ---------------------------------------------------------------------------
def test_a_preview_segmentation_is_refused_as_a_dense_label(scene, logic, sphere):
    volume, _, mask = sphere
    node, _ = _denseTumour(scene, logic, volume, mask)
    preview = logic.previewSegmentationNode(volume)
    with pytest.raises(ValueError, match="preview"):
        kinds.setDenseSource(node, preview)
    assert kinds.denseSource(node)[0].GetName() == "painted"


def test_save_never_writes_the_preview_codes_as_a_dense_label(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    node, _ = _denseTumour(scene, logic, volume, mask)
    preview = logic.previewSegmentationNode(volume)
    partial = np.where(mask, 1, 2).astype(np.uint8)
    setLabelsToSegmentation(preview, partial, SPHERE_GEOMETRY, PARTIAL_SEGMENTS, volume)
    node.SetNodeReferenceID(kinds.DENSE_ROLE, preview.GetID())  # an older scene, or a reference set elsewhere
    assert "preview" in objects.placementStatus(node, volume).prompt
    written = logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")
    assert set(written) == {"draft"} and not (tmp_path / "data").exists()
    assert "preview" in logic.caseProblem(volume)
    with pytest.raises(ValueError, match="preview"):
        dense.caseLabels(scene, volume, objects.caseFromNodes(scene, volume, validate=False))


def test_the_dense_selector_hides_previews_and_refuses_one_picked_anyway(gui, panel, scene, logic, sphere):
    headless, ui, parameters, _, _ = gui
    volume, _, mask = sphere
    parameters.inputVolume = volume
    node, painted = _denseTumour(scene, logic, volume, mask)
    panel.observeObjects()
    headless.runTimers()
    assert ui.denseLabelWidget.visible and ui.denseSegmentationSelector.currentNode() is painted
    preview = logic.previewSegmentationNode(volume)
    headless.runTimers()  # the scene's node-added event: the selector's hidden IDs are refreshed
    assert ui.denseSegmentationSelector.sortFilterProxyModel().hiddenNodeIDs == [preview.GetID()]
    ui.denseSegmentationSelector.setCurrentNode(preview)  # e.g. a selector that still listed it
    assert kinds.denseSource(node)[0] is painted and ui.denseSegmentationSelector.currentNode() is painted
    assert "preview" in headless.shown["error"][-1]


# -- a case left lets go of its nodes -----------------------------------------------------------------------------
def test_the_panel_keeps_no_reference_to_the_nodes_of_a_case_left(gui, panel, scene, logic, sphere):
    headless, ui, parameters, _, _ = gui
    volume, image, mask = sphere
    other = volumes.createVolumeNode(scene, image, "other")
    parameters.inputVolume = volume
    points, (denseNode, segmentation) = logic.addObject(volume), _denseTumour(scene, logic, volume, mask)
    panel.observeObjects()
    gone = [weakref.ref(n) for n in (points, denseNode, segmentation)]
    parameters.inputVolume = other
    for n in (points, denseNode, segmentation):
        scene.RemoveNode(n)
    panel.observeObjects()
    headless.runTimers()
    del points, denseNode, segmentation, n
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]


# -- a dense case's label leaves with it ---------------------------------------------------------------------------
def test_leaving_a_dense_case_removes_its_label_segmentation(scene, logic, sphere, tmp_path):
    volume, image, mask = sphere
    write_image(tmp_path / "data" / "sphere_image.nrrd", image.array, image.geometry)
    _denseTumour(scene, logic, volume, mask)
    logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")
    assert logic.unloadCase(volume)
    assert _segmentations(scene) == []
    (files,) = cases.CaseList(tmp_path / "data").refresh()
    for _ in range(2):  # each reopen adds one, each leave removes it
        reopened = logic.openCase(files.files, tmp_path / "work")
        assert len(_segmentations(scene)) == 1 and kinds.denseSource(logic.objectNodes(reopened)[0])[0] is not None
        assert logic.unloadCase(reopened)
        assert _segmentations(scene) == []


def test_a_segmentation_another_case_uses_stays_when_a_case_is_left(scene, logic, sphere):
    volume, image, mask = sphere
    other = volumes.createVolumeNode(scene, image, "other")
    node, shared = _denseTumour(scene, logic, volume, mask)
    kinds.setDenseSource(logic.addObject(other, "dense"), shared)
    assert logic.unloadCase(volume, discard=True)
    assert _segmentations(scene) == [shared]


# -- an unreadable saved annotation --------------------------------------------------------------------------------
def test_a_dropped_image_whose_annotation_cannot_be_read_is_reported_once(gui, panel, scene, sphere, tmp_path):
    headless, ui, parameters, _, _ = gui
    _, image, _ = sphere
    data = tmp_path / "data"
    write_image(data / "sphere_image.nrrd", image.array, image.geometry)
    (data / "sphere.mrk.json").write_text("{ not json", encoding="utf-8")
    dropped = volumes.createVolumeNode(scene, image, "sphere_image")  # what Slicer names a dropped file's node
    parameters.inputVolume, parameters.datasetFolder, parameters.workFolder = dropped, data, tmp_path / "work"
    panel.observeObjects()
    panel.refreshCases()
    panel.refreshCases()
    (warning,) = headless.shown["warning"]
    assert "sphere.mrk.json" in warning and "sphere_image" in warning
    assert ui.caseList.items == ["sphere (annotated)"]


def test_save_that_wrote_the_annotation_reports_success_when_a_cleanup_fails(gui, panel, scene, logic, sphere,
                                                                            tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    volume, image, mask = sphere
    parameters.inputVolume, parameters.datasetFolder = volume, tmp_path / "data"
    parameters.workFolder = tmp_path / "work"
    stuck = cases.draftPath(tmp_path / "work", "sphere")
    stuck.mkdir(parents=True)  # a draft that cannot be removed (a read-only share behaves the same)
    node, _ = _denseTumour(scene, logic, volume, mask)
    panel.observeObjects()
    ui.saveButton.click()
    assert (tmp_path / "data" / "sphere.mrk.json").is_file() and headless.shown["error"] == []
    assert headless.shown["status"][-1].startswith("Saved ") and ui.caseList.items == ["sphere (annotated)"]


# -- a disk error at autosave -------------------------------------------------------------------------------------
def test_a_disk_error_at_autosave_names_the_clicks_and_still_follows_the_new_volume(gui, panel, scene, logic, sphere,
                                                                                   tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    volume, image, _ = sphere
    blocked = tmp_path / "work"
    blocked.write_text("a file where the work folder should be", encoding="utf-8")
    parameters.inputVolume, parameters.workFolder = volume, blocked
    panel.observeObjects()
    logic.addObject(volume)
    other = volumes.createVolumeNode(scene, image, "other")
    logic.addObject(other, "box")
    parameters.inputVolume = other
    panel.observeObjects()  # the autosave of "sphere" fails on the disk
    assert ui.objectComboBox.items == ["tumor 1"] and panel.nodes == logic.objectNodes(other)
    message = headless.shown["status"][-1]
    assert message.startswith("Unsaved clicks of sphere") and str(blocked) in message
    scene.Clear(0)
    (error,) = headless.shown["error"]
    assert "sphere" in error and "other" in error and str(blocked) in error


def _imageWritesFail(monkeypatch):
    """A full disk as SimpleITK meets it: its writers raise ``RuntimeError`` (an ITK exception), not ``OSError``, so
    a dense tumour's draft label cannot be written while the draft's JSON could (the same call as on a full share;
    only this one function fails, every other write is real)."""
    import SimpleITK as sitk

    def full(image, fileName, *args, **kwargs):
        raise RuntimeError(f"Exception thrown in SimpleITK WriteImage: ITK ERROR: NiftiImageIO: could not write "
                           f"{fileName}: No space left on device")  # fmt: skip

    monkeypatch.setattr(sitk, "WriteImage", full)


def _denseAndBoxVolumes(scene, logic, sphere):
    """The sphere with a painted dense tumour (its voxels go through SimpleITK), and a volume "other" of the same
    image with a box (clicks only: a JSON draft): ``(sphere's volume node, image, mask, other)``."""
    volume, image, mask = sphere
    _denseTumour(scene, logic, volume, mask)
    other = volumes.createVolumeNode(scene, image, "other")
    logic.addObject(other, "box")
    return volume, image, mask, other


def test_a_simpleitk_error_at_scene_close_names_each_lost_volume_and_keeps_the_others(gui, panel, scene, logic,
                                                                                      sphere, monkeypatch,
                                                                                      tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    volume, image, mask, other = _denseAndBoxVolumes(scene, logic, sphere)
    work = tmp_path / "work"
    third = volumes.createVolumeNode(scene, image, "third")
    _denseTumour(scene, logic, third, mask)
    parameters.inputVolume, parameters.workFolder = volume, work
    panel.observeObjects()
    _imageWritesFail(monkeypatch)
    kept = cases.draftPath(work, logic.caseIdOf(other))
    scene.Clear(0)
    assert kept.is_file(), "the volume after the one that failed was never autosaved"
    (error,) = headless.shown["error"]
    assert "sphere" in error and "third" in error and "other" not in error and "No space left" in error


def test_any_error_keeping_one_volume_at_scene_close_is_named_and_never_stops_the_others(gui, panel, scene, logic,
                                                                                         sphere, monkeypatch,
                                                                                         tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    volume, image, mask, other = _denseAndBoxVolumes(scene, logic, sphere)
    work = tmp_path / "work"
    parameters.inputVolume, parameters.workFolder = volume, work
    panel.observeObjects()

    def noMemory(node, volumeNode):  # a 512×512×300 dense label read at scene close, with the memory full
        raise MemoryError("Unable to allocate 75.0 MiB for an array with shape (512, 512, 300) and data type uint8")

    monkeypatch.setattr(kinds, "denseLabels", noMemory)
    scene.Clear(0)
    assert cases.draftPath(work, "other").is_file(), "the volume after the one that failed was never autosaved"
    (error,) = headless.shown["error"]
    assert "sphere" in error and "MemoryError" in error and "other" not in error


def test_a_simpleitk_error_when_leaving_a_volume_is_said_and_the_new_volume_is_followed(gui, panel, scene, logic,
                                                                                        sphere, monkeypatch,
                                                                                        tmp_path):  # fmt: skip
    headless, ui, parameters, _, _ = gui
    volume, image, mask = sphere
    parameters.inputVolume, parameters.workFolder = volume, tmp_path / "work"
    panel.observeObjects()
    _denseTumour(scene, logic, volume, mask)
    other = volumes.createVolumeNode(scene, image, "other")
    logic.addObject(other, "box")
    _imageWritesFail(monkeypatch)
    parameters.inputVolume = other
    panel.observeObjects()  # the autosave of "sphere" fails in SimpleITK
    assert panel.nodes == logic.objectNodes(other) and ui.objectComboBox.items == ["tumor 1"]
    message = headless.shown["status"][-1]
    assert message.startswith("Unsaved clicks of sphere") and "No space left" in message
    assert logic.hasUnsavedChanges(volume)  # still unsaved: a later autosave or the scene close tries again


# -- a tumour renamed outside PASeg --------------------------------------------------------------------------------
def test_a_tumour_renamed_outside_paseg_can_still_be_placed(gui, panel, scene, logic, sphere):
    headless, ui, parameters, _, _ = gui
    volume, _, _ = sphere
    parameters.inputVolume = volume
    panel.observeObjects()
    ui.addTumorButton.click()
    (node,) = logic.objectNodes(volume)
    panel.stopPlacing()
    headless.markupsLogic().SetActiveList(None)
    node.SetName("left kidney")  # the Markups or Data module
    headless.runTimers()
    assert ui.objectComboBox.items == ["left kidney"]
    ui.placeButton.click()
    interaction = headless.interactionNode()
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    assert headless.markupsLogic().GetActiveListID() == node.GetID()


# -- a dense case previews on request only -------------------------------------------------------------------------
def test_a_paint_stroke_on_a_dense_tumour_asks_for_no_preview(gui, panel, scene, logic, sphere, tmp_path):
    headless, ui, parameters, _, previews = gui
    volume, _, mask = sphere
    parameters.inputVolume, parameters.workFolder = volume, tmp_path / "work"
    _, segmentation = _denseTumour(scene, logic, volume, mask)
    panel.observeObjects()
    headless.runTimers()
    _paint(segmentation, (2, 2, 2), (4, 4, 4))
    headless.runTimers()
    assert previews == [] and cases.draftPath(tmp_path / "work", "sphere").is_file()  # drafted, not previewed


# -- the auto-preview gate ------------------------------------------------------------------------------------------
def test_a_box_previews_by_itself_and_a_large_one_on_request(scene, logic):
    geometry = ImageGeometry((200, 200, 60), (0.8, 0.8, 1.5), (0.0, 0.0, 0.0))
    volume = volumes.createVolumeNode(scene, Volume(np.zeros(geometry.shape, np.float32), geometry), "ct")
    for (lo, hi), quick in ((((80, 80, 20), (119, 119, 33)), True), (((40, 40, 10), (159, 159, 49)), False)):
        node = logic.addObject(volume, "box")
        kinds.setRoiCornersLps(node, volume, geometry.index_to_world(lo), geometry.index_to_world(hi))
        # a 32 x 32 x 21 mm box: 0.04-0.09 s measured; a 96 x 96 x 60 mm one: 1-9 s
        assert logic.autoPreviewAllowed(volume) is quick, logic.previewSeconds(volume)
        assert (logic.previewBoxVoxels(volume) <= 400_000) is quick  # PASeg.py's former gate: boxes never passed
        scene.RemoveNode(node)


# -- messages name the kinds ---------------------------------------------------------------------------------------
def test_job_messages_name_every_kind_not_seven_points(tmp_path):
    from PASegSlicer.jobs.commands import predictionSteps
    from PASegSlicer.jobs.control import startTrainingJob

    geometry = ImageGeometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    write_image(tmp_path / "data" / "c1_image.nrrd", np.zeros((4, 4, 4), np.float32), geometry)  # not annotated
    with pytest.raises(ValueError) as training:
        startTrainingJob(None, tmp_path / "work", tmp_path / "data", mode="stage 1", networks=["unet2d5"], epochs=1,
                         device="cpu")  # fmt: skip
    with pytest.raises(ValueError) as prediction:
        predictionSteps(tmp_path / "job", tmp_path / "run", tmp_path / "x_image.nrrd", restrictToBox=True)
    for message in (str(training.value), str(prediction.value)):
        assert "extreme points" in message and "a box" in message, message  # not only "seven points"
