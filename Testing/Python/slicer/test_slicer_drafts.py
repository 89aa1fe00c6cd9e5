"""No click is lost: drafts, the unsaved-changes check, unloading cases, dataset images opened in
Slicer, placement that agrees with Slicer, node references, the preview cache, on a real MRML scene."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import require_slicer_core
from PASegSlicer.annotation import cases, objects
from PASegSlicer.annotation.logic import CASE_ATTRIBUTE, PASegCoreLogic
from PASegSlicer.mrml import volumes
from PASegSlicer.mrml.headless import HeadlessSlicer

from PASegLib.annotation.markups import read_draft_markups
from PASegLib.annotation.model import AnnotationError
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.data.dataset import DatasetError, list_cases, load_case
from PASegLib.image.geometry import lps_to_ras
from PASegLib.image.io import Volume, write_image

slicer = require_slicer_core()


def _place(node, obj, labels="FRLAPIS"):
    for label in labels:
        objects.setControlPoint(node, label, lps_to_ras(obj.points()[label]))


def _dataset(tmp_path, blob_case, caseId="case01"):
    image, _ = blob_case
    folder = tmp_path / "data"
    write_image(folder / f"{caseId}_image.nrrd", image.array, image.geometry)
    return folder


def _age(path, seconds=10):
    """Make ``path`` look older (file times are compared, and a test runs faster than their resolution)."""
    stat = Path(path).stat()
    os.utime(path, ns=(stat.st_atime_ns - seconds * 10**9, stat.st_mtime_ns - seconds * 10**9))


# -- drafts and the unsaved-changes check -------------------------------------------------------------------
def test_incomplete_tumour_saves_as_a_draft_and_loads_back_with_its_unplaced_points(scene, logic, blob, tmp_path):
    volume, obj = blob
    node = logic.addObject(volume)
    _place(node, obj, "FRLAP")
    dataset, work = tmp_path / "data", tmp_path / "work"
    written = logic.saveAnnotations(volume, dataset, work)
    assert list(written) == ["draft"] and written["draft"] == cases.draftPath(work, "blob")
    assert not dataset.exists()  # the dataset (what training reads) is untouched
    assert "incomplete: place I, S" in logic.caseProblem(volume)
    doc = json.loads(written["draft"].read_text())
    statuses = [(p["label"], p["positionStatus"]) for p in doc["markups"][0]["controlPoints"]]
    assert statuses == [(x, "defined") for x in "FRLAP"] + [("I", "undefined"), ("S", "undefined")]
    # Slicer's own reader loads the draft with the unplaced points still to place
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "read by Slicer")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    storage.SetFileName(str(written["draft"]))
    assert storage.ReadData(markups) and markups.GetNumberOfDefinedControlPoints() == 5
    assert markups.GetNumberOfControlPoints() == 7
    # a fresh scene restores the draft: the same five points, I and S still to place (and the prompt says I)
    fresh = HeadlessSlicer()
    try:
        other = PASegCoreLogic(fresh.scene)
        copy = volumes.createVolumeNode(fresh.scene, volumes.volumeFromNode(volume), "blob")
        assert other.restoreAnnotations(copy, None, work) == written["draft"]
        nodes = other.objectNodes(copy)
        assert [n.GetName() for n in nodes] == ["tumor 1"] and nodes[0].GetNumberOfDefinedControlPoints() == 5
        status = objects.placementStatus(nodes[0], copy)
        assert status.expectedLabel == "I" and status.placed == 5 and status.error == ""
        np.testing.assert_allclose(objects.placedPointsLps(nodes[0], copy)["P"], obj.background["P"], atol=1e-9)
        assert not other.hasUnsavedChanges(copy)
    finally:
        fresh.close()


def test_unsaved_changes_after_each_kind_of_edit(scene, logic, blob, tmp_path):
    volume, obj = blob
    assert not logic.hasUnsavedChanges(volume)  # a volume without objects holds nothing to lose
    node = logic.addObject(volume)
    _place(node, obj)
    assert logic.hasUnsavedChanges(volume)
    written = logic.saveAnnotations(volume, tmp_path / "data", tmp_path / "work")
    assert sorted(written) == ["annotations", "image"] and not logic.hasUnsavedChanges(volume)
    world = np.array(node.GetNthControlPointPositionWorld(2))
    node.SetNthControlPointPositionWorld(2, *(world + [0.0, 0.0, 1.0]))  # moved
    assert logic.hasUnsavedChanges(volume)
    node.SetNthControlPointPositionWorld(2, *world)  # moved back: nothing to save
    assert not logic.hasUnsavedChanges(volume)
    node.UnsetNthControlPointPosition(4)  # unplaced
    assert logic.hasUnsavedChanges(volume)
    assert logic.autosaveDraft(volume, tmp_path / "work") == cases.draftPath(tmp_path / "work", "blob")
    assert not logic.hasUnsavedChanges(volume) and logic.autosaveDraft(volume, tmp_path / "work") is None
    objects.setControlPoint(node, "P", lps_to_ras(obj.background["P"]))  # placed again
    assert logic.hasUnsavedChanges(volume)
    node.SetName("tumor A")  # renamed
    logic.saveDraft(volume, tmp_path / "work")
    assert not logic.hasUnsavedChanges(volume)
    logic.addObject(volume)  # a new, empty tumour is a change too
    assert logic.hasUnsavedChanges(volume)
    with pytest.raises(ValueError, match="choose a work folder"):
        logic.autosaveDraft(volume, None)


def test_draft_newer_than_the_annotation_wins_and_shows_in_the_case_list(scene, logic, blob, blob_case, tmp_path):
    volume, obj = blob
    dataset, work = _dataset(tmp_path, blob_case), tmp_path / "work"
    files = list_cases(dataset)[0]
    loaded = logic.loadCase(files, work)
    assert logic.objectNodes(loaded) == [] and not logic.hasUnsavedChanges(loaded)
    _place(logic.addObject(loaded), obj)
    written = logic.saveAnnotations(loaded, dataset, work)
    assert sorted(written) == ["annotations"]  # the dataset holds the image: no second copy
    listing = cases.CaseList(dataset, work)
    assert [e.status for e in listing.refresh()] == [cases.ANNOTATED]
    node = logic.objectNodes(loaded)[0]
    node.UnsetNthControlPointPosition(6)
    draft = logic.autosaveDraft(loaded, work)
    _age(list_cases(dataset)[0].markups)
    assert [e.label for e in listing.refresh()] == ["case01 (draft)"]
    assert cases.newerDraft(work, "case01", listing.entries[0].files) == draft
    fresh = HeadlessSlicer()
    try:
        again = PASegCoreLogic(fresh.scene).loadCase(listing.entries[0].files, work)  # the draft, not the file
        assert objects.placementStatus(objects.objectNodes(fresh.scene, again)[0], again).expectedLabel == "S"
    finally:
        fresh.close()
    _age(draft, 20)  # an annotation newer than the draft wins
    assert [e.status for e in listing.refresh()] == [cases.ANNOTATED]
    # completing and saving removes the draft
    objects.setControlPoint(node, "S", lps_to_ras(obj.background["S"]))
    assert sorted(logic.saveAnnotations(loaded, dataset, work)) == ["annotations"] and not draft.exists()


def test_training_still_refuses_an_incomplete_dataset_annotation(scene, logic, blob, blob_case, tmp_path):
    volume, obj = blob
    _place(logic.addObject(volume), obj, "FRL")
    draft = logic.saveDraft(volume, tmp_path / "work")
    dataset = _dataset(tmp_path, blob_case)
    (dataset / "case01.mrk.json").write_text(draft.read_text())
    with pytest.raises(DatasetError, match=r"case01\.mrk\.json.*'tumor 1' is incomplete: point\(s\) A, P, I, S"):
        load_case(list_cases(dataset)[0])
    drafted = read_draft_markups(draft)
    assert [o.placed for o in drafted] == [3] and drafted[0].points["A"] is None


# -- dataset images opened in Slicer ------------------------------------------------------------------------
def test_a_dropped_dataset_image_is_its_case_and_is_never_copied(scene, logic, blob, blob_case, tmp_path):
    volume, obj = blob
    dataset, work = _dataset(tmp_path, blob_case), tmp_path / "work"
    image, _ = blob_case
    dropped = volumes.createVolumeNode(scene, image, "case01_image")  # Slicer names a dropped file by its stem
    assert logic.caseIdOf(dropped) == "case01" and logic.findCaseVolume("case01") is dropped
    renamed = volumes.createVolumeNode(scene, image, "my scan")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(dataset / "case01_image.nrrd"))
    renamed.SetAndObserveStorageNodeID(storage.GetID())
    assert logic.caseIdOf(renamed) == "case01" and logic.caseIdOf(volume) == "blob"
    _place(logic.addObject(dropped), obj)
    assert sorted(logic.saveAnnotations(dropped, dataset, work)) == ["annotations"]
    assert sorted(p.name for p in dataset.iterdir()) == ["case01.mrk.json", "case01_image.nrrd"]
    # the case list opens the dropped volume (no second load)
    assert logic.openCase(list_cases(dataset)[0], work) is dropped
    # a volume that is not the dataset's image of that case is refused, not saved over it
    shifted = image.geometry.with_shape(image.geometry.shape)
    shifted = type(shifted)(shifted.shape, shifted.spacing, tuple(np.add(shifted.origin, 5.0)), shifted.direction)
    other = volumes.createVolumeNode(scene, Volume(image.array, shifted), "case01_image")
    _place(logic.addObject(other), simulate_clicks(blob_case[1], shifted, seed=1).objects[0])
    with pytest.raises(ValueError, match="is not the image of volume 'case01_image'.*grid differs: origin"):
        logic.saveAnnotations(other, dataset, work)


def test_opening_a_dropped_image_restores_its_saved_clicks(scene, blob_case, tmp_path):
    dataset, work = _dataset(tmp_path, blob_case), tmp_path / "work"
    first = PASegCoreLogic(scene)
    loaded = first.loadCase(list_cases(dataset)[0], work)
    image, label = blob_case
    _place(first.addObject(loaded), simulate_clicks(label, image.geometry, seed=1).objects[0], "FR")
    first.saveDraft(loaded, work)
    fresh = HeadlessSlicer()
    try:
        dropped = volumes.createVolumeNode(fresh.scene, image, "case01_image")
        logic = PASegCoreLogic(fresh.scene)
        assert logic.openCase(list_cases(dataset)[0], work) is dropped
        assert dropped.GetAttribute(CASE_ATTRIBUTE) == "case01"
        assert [n.GetNumberOfDefinedControlPoints() for n in logic.objectNodes(dropped)] == [2]
    finally:
        fresh.close()


# -- placement agrees with Slicer ---------------------------------------------------------------------------
def test_point_edits_through_the_markups_api_fire_the_observed_events(scene, blob):
    volume, obj = blob
    node = objects.addObjectNode(scene, volume)
    seen = []
    for event in objects.observedEvents():
        node.AddObserver(event, lambda caller, name: seen.append(objects.placementStatus(caller, volume)))
    edits = [
        lambda: node.SetNthControlPointPosition(0, *lps_to_ras(obj.foreground)),  # the Markups table writes local
        lambda: node.SetNthControlPointPositionWorld(1, *lps_to_ras(obj.background["R"])),
        lambda: node.UnsetNthControlPointPosition(0),
        lambda: node.SetNthControlPointPositionMissing(2),
        lambda: node.SetName("renamed"),
    ]
    expected = [("R", 1), ("L", 2), ("F", 1), ("F", 1), ("F", 1)]
    for edit, (label, placed) in zip(edits, expected):
        seen.clear()
        edit()
        assert seen, "an edit fired none of the observed events"
        assert (seen[-1].expectedLabel, seen[-1].placed) == (label, placed)
    assert seen[-1].prompt.startswith("renamed (seven points): place point 1 of 7, F")


def test_the_prompt_names_the_point_slicer_fills(scene, app, blob):
    volume, obj = blob
    node = objects.addObjectNode(scene, volume)
    _place(node, obj, "FR")
    node.SetControlPointPlacementStartIndex(5)  # left by a click on row 5 of the Markups module's table
    assert objects.fillIndex(node) == 5 and objects.placementStatus(node, volume).expectedLabel == "I"
    markups = app.logics["Markups"]
    assert objects.startPlacement(markups, node)
    assert node.GetControlPointPlacementStartIndex() == 2
    assert objects.placementStatus(node, volume).expectedLabel == "L"
    assert markups.GetActiveListID() == node.GetID()
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    _place(node, obj, "L")  # Slicer goes on from the start index: the next undefined point after it
    assert objects.fillIndex(node) == 3 and objects.placementStatus(node, volume).expectedLabel == "A"
    node.SetNthControlPointPosition(4, 0.0, 0.0, 0.0, node.PositionPreview)  # the point under the mouse
    assert objects.placementStatus(node, volume).expectedLabel == "P"
    node.UnsetNthControlPointPosition(4)
    node.SetNthControlPointPositionMissing(3)  # "missing" points are skipped by Slicer: Place makes them placeable
    assert objects.placementStatus(node, volume).expectedLabel == "P"
    interaction.SwitchToViewTransformMode()
    assert objects.startPlacement(markups, node) and objects.placementStatus(node, volume).expectedLabel == "A"
    assert node.GetNthControlPointPositionStatus(3) == node.PositionUndefined


def test_placement_is_refused_on_a_complete_tumour(scene, app, blob):
    volume, obj = blob
    node = objects.addObjectNode(scene, volume)
    _place(node, obj)
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    interaction.SwitchToViewTransformMode()
    assert objects.startPlacement(app.logics["Markups"], node) is False
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
    assert "all 7 points are placed" in objects.COMPLETE_MESSAGE.format(name=node.GetName())


# -- node references --------------------------------------------------------------------------------------------
def _sceneXml(scene) -> str:
    scene.SetSaveToXMLString(1)
    scene.Commit()
    return scene.GetSceneXMLString()


def _importXml(scene, xml) -> None:
    scene.SetLoadFromXMLString(1)
    scene.SetSceneXMLString(xml)
    assert scene.Import()


def test_objects_follow_their_volume_through_a_scene_import_with_clashing_ids(scene, blob, blob_case):
    volume, obj = blob
    _place(objects.addObjectNode(scene, volume), obj)
    xml = _sceneXml(scene)
    fresh = HeadlessSlicer()
    try:
        clash = volumes.createVolumeNode(fresh.scene, blob_case[0], "already there")  # takes the volume's ID
        assert clash.GetID() == volume.GetID()
        _importXml(fresh.scene, xml)
        imported = fresh.scene.GetFirstNodeByName("blob")
        assert imported.GetID() != volume.GetID()
        nodes = objects.objectNodes(fresh.scene, imported)
        assert [n.GetName() for n in nodes] == ["tumor 1"] and objects.objectNodes(fresh.scene, clash) == []
    finally:
        fresh.close()


def test_objects_of_scenes_saved_with_the_old_attribute_still_work(scene, logic, blob):
    volume, obj = blob
    node = objects.addObjectNode(scene, volume)
    _place(node, obj)
    node.RemoveNodeReferenceIDs(objects.VOLUME_REFERENCE_ROLE)  # as saved before the node reference
    node.SetAttribute(objects.OBJECT_ATTRIBUTE, volume.GetID())
    assert logic.objectNodes(volume) == [node]  # found, and converted
    assert node.GetNodeReferenceID(objects.VOLUME_REFERENCE_ROLE) == volume.GetID()
    assert node.GetAttribute(objects.OBJECT_ATTRIBUTE) is None
    assert objects.placementStatus(node, volume).valid


# -- memory: the preview cache, unloading a case ----------------------------------------------------------------
def test_preview_cache_is_dropped_when_the_volume_leaves_the_scene(scene, logic, blob, blob_case):
    volume, obj = blob
    _place(logic.addObject(volume), obj)
    logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
    assert logic.hasPreview(volume) and all(isinstance(key, str) for key in logic._previews)
    scene.RemoveNode(volume)
    assert logic._previews == {} and logic._saved == {}
    second = volumes.createVolumeNode(scene, blob_case[0], "second")
    _place(logic.addObject(second), obj)
    logic.expansionPreview(second, epsilon=0.175, lamb=0.5)
    assert logic.hasPreview(second)
    scene.Clear(0)
    assert logic._previews == {}


def test_unload_case_refuses_unsaved_clicks_then_removes_everything_of_the_case(scene, logic, blob, tmp_path):
    volume, obj = blob
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    node = logic.addObject(volume)
    _place(node, obj)
    logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
    assert logic.unloadCase(volume) is False and node.GetScene() is scene  # unsaved: nothing removed
    assert logic.unsavedVolumes() == [volume]
    assert logic.autosaveDraft(volume, tmp_path / "work") is not None
    assert logic.unsavedVolumes() == []
    assert logic.unloadCase(volume) is True
    after = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    assert volume.GetScene() is None and node.GetScene() is None
    assert sorted(after - before) == [], "nodes of the unloaded case are left"
    assert sorted(before - after) == sorted([volume.GetID(), volume.GetDisplayNodeID()])
    assert logic._previews == {} and logic._saved == {}


def test_broken_object_layout_is_unsaved_and_cannot_be_drafted(scene, logic, blob, tmp_path):
    volume, _ = blob
    node = logic.addObject(volume)
    node.SetFixedNumberOfControlPoints(False)
    node.RemoveNthControlPoint(6)
    assert logic.hasUnsavedChanges(volume) and logic.unloadCase(volume) is False
    with pytest.raises(AnnotationError, match="has 6 control points"):
        logic.autosaveDraft(volume, tmp_path / "work")
    assert logic.unloadCase(volume, discard=True) and volume.GetScene() is None and node.GetScene() is None


def test_an_unreadable_draft_is_named_and_leaves_no_half_loaded_case(scene, logic, blob_case, tmp_path):
    dataset, work = _dataset(tmp_path, blob_case), tmp_path / "work"
    draft = cases.draftPath(work, "case01")
    draft.parent.mkdir(parents=True)
    draft.write_text('{"markups": [{"name": "tumor 1", "controlPoints": [{"label": "X", "position": [0, 0, 0]}]}]}')
    count = scene.GetNumberOfNodes()
    with pytest.raises(AnnotationError, match=r"case01\.mrk\.json: markup 'tumor 1' has a control point with unknown"):
        logic.loadCase(list_cases(dataset)[0], work)
    assert scene.GetNumberOfNodes() == count


def test_a_volume_never_loaded_from_the_case_does_not_replace_its_saved_clicks(scene, blob_case, tmp_path):
    """A dataset image opened in Slicer before the case list knew it: its new clicks must not silently replace
    the case's saved annotation or draft (found in review: the case's clicks were not restored, Save overwrote)."""
    dataset, work = _dataset(tmp_path, blob_case), tmp_path / "work"
    image, label = blob_case
    saved = PASegCoreLogic(scene)
    loaded = saved.loadCase(list_cases(dataset)[0], work)
    _place(saved.addObject(loaded), simulate_clicks(label, image.geometry, seed=1).objects[0])
    saved.saveAnnotations(loaded, dataset, work)
    before = (dataset / "case01.mrk.json").read_bytes()
    logic = PASegCoreLogic(scene)  # a fresh session: the dropped image was never restored from the file
    dropped = volumes.createVolumeNode(scene, image, "case01_image")
    _place(logic.addObject(dropped), simulate_clicks(label, image.geometry, seed=2).objects[0])
    with pytest.raises(ValueError, match="already holds saved clicks of case case01.*saving would lose them"):
        logic.saveAnnotations(dropped, dataset, work)
    assert (dataset / "case01.mrk.json").read_bytes() == before
    assert saved.saveDraft(loaded, work).is_file()  # a draft of the case exists: not replaced by the dropped volume
    with pytest.raises(ValueError, match="already holds a draft of case case01"):
        logic.saveDraft(dropped, work)
    fresh = volumes.createVolumeNode(scene, image, "case01_image")  # dropped again, adopted before any click
    scene.RemoveNode(dropped)
    assert logic.adoptVolume(fresh, list_cases(dataset)[0], work) is not None and not logic.hasUnsavedChanges(fresh)
