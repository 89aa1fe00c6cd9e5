"""Drafts: the clicks of a case as they are, complete or not, kept so that no click is ever lost.

A draft is ``<work>/drafts/<case>.mrk.json`` (:func:`.cases.draftPath`): Slicer markups JSON, LPS in
the volume's local frame, with the points not placed yet written as ``"positionStatus": "undefined"`` (it loads
in Slicer's Markups module too). It lives in the work folder, not in the dataset: the dataset's
``<case>.mrk.json`` is what training reads and must stay complete and valid, and a second ``*.mrk.json`` beside
the images would be taken for the annotation of a case that has no image.

Every object keeps its annotation kind (``pasegKind``, :class:`~PASegLib.annotation.markups.DraftObject` ``kind``): a
drawn box is written as a Slicer ROI markup; a dense object as a markup without points whose voxels are written
beside the draft, ``<work>/drafts/<case>_dense.nii.gz`` (:func:`.dense.draftLabelPath`), named by its
``pasegLabel``; a restore reads them into a new segmentation node (none written: the saved case's dense label).

The *state* of a volume's objects (:func:`objectsState`: names, kinds, each point's position or ``None``, and a
dense object's :func:`.kinds.denseStamp`) is what is compared to tell whether something is unsaved; a paint stroke
on a dense label is an unsaved change. :class:`DraftBookkeeping` (the logic's) keeps the state last loaded, saved
or drafted per volume.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from PASegLib.annotation.markups import (
    DraftObject,
    drafts_from_markups_dict,
    drafts_to_markups_dict,
    object_to_markup,
    read_draft_markups,
)  # fmt: skip
from PASegLib.annotation.model import AnnotationError, ObjectAnnotation
from PASegLib.image.io import write_image
from PASegLib.utils.atomic import atomic_write_json

from ..mrml.volumes import geometryFromVolumeNode
from . import dense, kinds, objects
from .cases import draftPath

#: Positions closer than this (mm) are the same click (a file round trip changes the last bits only).
SAME_POSITION_MM = 1e-4


@dataclass
class ObjectState(DraftObject):
    """A :class:`~PASegLib.annotation.markups.DraftObject` and what a dense object's label is made of
    (:func:`.kinds.denseStamp`; ``()`` for the other kinds)."""

    source: tuple = ()


def objectsState(scene, volumeNode) -> List[ObjectState]:
    """The volume's objects as drafts: kind, and each point's LPS position (local frame) or ``None`` when not
    placed (a box: its corners ``lo`` / ``hi`` once drawn; a dense object: no point, its label's stamp).

    Raises ``AnnotationError`` for an object that is not laid out as its kind says (its points cannot be named).
    """
    state = []
    for node in objects.objectNodes(scene, volumeNode):
        kind = kinds.kindOf(node)
        placed = objects.placedPointsLps(node, volumeNode)
        points = {label: placed.get(label) for label in kinds.kindLabels(kind)}
        axes = kinds.roiAxesLps(node, volumeNode) if kinds.isRoi(node) else None  # an oriented box keeps its axes
        state.append(ObjectState(node.GetName(), points, kind=kind, axes=axes, source=kinds.denseStamp(node)))
    return state


def sameState(first: Sequence[DraftObject], second: Sequence[DraftObject]) -> bool:
    """Whether two states hold the same objects (names, kinds, order) with the same points placed at the same
    places, and the same dense labels."""
    if [(o.name, o.kind, getattr(o, "source", ())) for o in first] != [
            (o.name, o.kind, getattr(o, "source", ())) for o in second]:  # fmt: skip
        return False
    for a, b in zip(first, second):
        for label in set(a.points) | set(b.points):
            p, q = a.points.get(label), b.points.get(label)
            if (p is None) != (q is None) or (p is not None and not np.allclose(p, q, atol=SAME_POSITION_MM, rtol=0)):
                return False
    return True


def _boxFiducialReadable() -> bool:
    """Whether the library reads a box kept as a fiducial markup with corners ``lo`` / ``hi`` (a box not drawn
    yet); PASegLib before the fix refuses it, and then such a box (no click yet) is left out of the draft."""
    doc = drafts_to_markups_dict([DraftObject("probe", {"lo": None, "hi": None}, kind="box")])
    try:
        drafts_from_markups_dict(doc)
    except AnnotationError:
        return False
    return True


def draftDocument(state: Sequence[DraftObject], labelFiles: Optional[Dict[int, str]] = None) -> Dict[str, Any]:
    """The markups JSON of a state: a drawn box as an ROI markup (Slicer shows it as a box); ``labelFiles``:
    object index → the file name of its dense label (its markup's ``pasegLabel``)."""
    doc = drafts_to_markups_dict(state)
    markups, keepUndrawn = [], None
    for index, (obj, markup) in enumerate(zip(state, doc["markups"])):
        if (labelFiles or {}).get(index):
            markup["pasegLabel"] = labelFiles[index]
        if obj.kind == "box":
            corners = {k: v for k, v in obj.points.items() if v is not None}
            if len(corners) == 2:
                markup = object_to_markup(ObjectAnnotation(obj.name, kind="box", marks=corners, axes=obj.axes))
            else:
                keepUndrawn = _boxFiducialReadable() if keepUndrawn is None else keepUndrawn
                if not keepUndrawn:
                    continue
        markups.append(markup)
    doc["markups"] = markups
    return doc


def writeDraft(path, state: Sequence[DraftObject], labelFiles: Optional[Dict[int, str]] = None) -> Path:
    """Write a state atomically (a reader sees the previous draft or this one, never a partial file)."""
    atomic_write_json(path, draftDocument(state, labelFiles))
    return Path(path)


def _draftLabelFiles(path) -> List[Path]:
    """The dense label files of the draft ``path`` on disk (:func:`.dense.draftLabelPath`)."""
    first, folder = dense.draftLabelPath(path), Path(path).parent
    pattern = re.escape(first.name[: -len(".nii.gz")]) + r"(_\d+)?\.nii\.gz"
    return [p for p in folder.iterdir() if re.fullmatch(pattern, p.name)] if folder.is_dir() else []


def _draftedLabels(path) -> Dict[str, str]:
    """Object name → the dense label file name that the draft ``path`` on disk names (``{}``: none, unreadable)."""
    try:
        markups = json.loads(Path(path).read_text(encoding="utf-8")).get("markups", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(m["name"]): Path(m["pasegLabel"]).name for m in markups if isinstance(m, dict)
            and isinstance(m.get("name"), str) and isinstance(m.get("pasegLabel"), str) and m["pasegLabel"].strip()}


def writeDraftLabels(scene, volumeNode, path) -> Dict[int, str]:
    """Write the voxels of the volume's dense objects beside the draft ``path`` (a dense object with an empty label:
    none) and remove those of an earlier draft that no object names any more; returns object index → file name.

    A dense object whose segments are gone (its segmentation removed or emptied of segments) keeps the label file
    the earlier draft named for it: it is the last label the object had, never deleted as "stale"."""
    written: Dict[int, str] = {}
    drafted = _draftedLabels(path)
    geometry = None
    for index, node in enumerate(objects.objectNodes(scene, volumeNode)):
        if kinds.kindOf(node) != "dense":
            continue
        if kinds.denseProblem(node):
            keep = drafted.get(node.GetName())
            if keep and (Path(path).parent / keep).is_file():
                written[index] = keep
            continue
        labels = kinds.denseLabels(node, volumeNode)
        if labels.any():
            geometry = geometry or geometryFromVolumeNode(volumeNode)
            n = len(written)
            while dense.draftLabelPath(path, n).name in written.values():
                n += 1
            written[index] = write_image(dense.draftLabelPath(path, n), labels, geometry).name
    for stale in _draftLabelFiles(path):
        if stale.name not in written.values():
            stale.unlink(missing_ok=True)
    return written


def draftLabels(path) -> List[Optional[Path]]:
    """Each markup's dense label file of the draft ``path`` (its ``pasegLabel``, beside it), ``None`` where it
    names none."""
    markups = json.loads(Path(path).read_text(encoding="utf-8")).get("markups", [])
    names = [m.get("pasegLabel") if isinstance(m, dict) else None for m in markups]
    return [Path(path).parent / Path(n).name if isinstance(n, str) and n.strip() else None for n in names]


def removeDraft(path) -> None:
    """Remove the draft ``path`` and its dense label files (the case was saved into the dataset)."""
    Path(path).unlink(missing_ok=True)
    for label in _draftLabelFiles(path):
        label.unlink(missing_ok=True)


def nodesFromDrafts(scene, volumeNode, drafted: Sequence[DraftObject]) -> List:
    """Object nodes for ``drafted`` (points not placed stay unplaced); the volume's existing objects are removed."""
    for node in objects.objectNodes(scene, volumeNode):
        scene.RemoveNode(node)
    nodes = []
    for obj in drafted:
        node = objects.addObjectNode(scene, volumeNode, obj.name, kind=obj.kind)
        axes = objects.boxAxes(obj.axes) if obj.kind == "box" else None  # a box: along its own axes
        objects.setPlacedPointsLps(node, volumeNode, {k: v for k, v in obj.points.items() if v is not None}, axes)
        nodes.append(node)
    return nodes


def loadDraft(scene, volumeNode, path, fallbackLabel=None) -> List:
    """Read a draft into object nodes of ``volumeNode`` (replacing its objects); a dense object gets its draft
    label, else ``fallbackLabel`` (the saved case's dense label), as its segmentation."""
    nodes = nodesFromDrafts(scene, volumeNode, read_draft_markups(path))
    dense.relinkLabel(scene, volumeNode, nodes, draftLabels(path), fallbackLabel)
    return nodes


class DraftBookkeeping:
    """The logic's unsaved-changes check and drafts (mixed into
    :class:`~PASegSlicer.annotation.logic.PASegCoreLogic`, which gives ``scene``, ``caseIdOf`` and ``_saved``: volume
    node ID → the state last loaded, saved or drafted)."""

    scene: Any
    _saved: Dict[str, list]

    def hasUnsavedChanges(self, volumeNode) -> bool:
        """Whether the volume's objects (names, kinds, placed and unplaced points) differ from what was last
        loaded, saved or drafted (a volume never saved: whether it has any object)."""
        if volumeNode is None:
            return False
        try:
            current = objectsState(self.scene, volumeNode)
        except AnnotationError:  # an object whose points cannot be named: it cannot be compared, so it is unsaved
            return True
        return not sameState(current, self._saved.get(volumeNode.GetID(), []))

    def unsavedVolumes(self) -> List:
        """Volume nodes of the scene with unsaved changes (for a scene close or the application's exit)."""
        found = []
        for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = self.scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            if self.hasUnsavedChanges(node):
                found.append(node)
        return found

    def saveDraft(self, volumeNode, workFolder) -> Path:
        """Write the volume's objects as they are (complete or not) to ``<work>/drafts/<case>.mrk.json``."""
        if workFolder is None or str(workFolder) in ("", "."):
            raise ValueError(f"choose a work folder: unsaved clicks of {volumeNode.GetName()!r} are kept there")
        target = draftPath(workFolder, self.caseIdOf(volumeNode))
        self._refuseOverwrite(volumeNode, target, "a draft")
        state = objectsState(self.scene, volumeNode)
        path = writeDraft(target, state, writeDraftLabels(self.scene, volumeNode, target))  # labels first
        self._saved[volumeNode.GetID()] = state
        return path

    def _refuseOverwrite(self, volumeNode, path: Path, what: str) -> None:
        """Clicks are only written over a file this volume was loaded from or saved to: a volume that never was
        (e.g. a dataset image opened in Slicer before the case list knew it) must not replace saved clicks."""
        if path.is_file() and volumeNode.GetID() not in self._saved:
            raise ValueError(
                f"{path} already holds {what} of case {self.caseIdOf(volumeNode)}, which volume "
                f"{volumeNode.GetName()!r} was not loaded from (saving would lose them): move that file away to "
                "replace it, or close this volume and open the case from the case list (its clicks are restored)"
            )

    def autosaveDraft(self, volumeNode, workFolder) -> Optional[Path]:
        """Save a draft when the volume has unsaved changes (returns its path; ``None``: nothing to save).

        Raises ``ValueError`` (no work folder) or ``AnnotationError`` (an object not laid out as its kind says):
        then the changes are still unsaved and the caller must warn before discarding them.
        """
        return self.saveDraft(volumeNode, workFolder) if self.hasUnsavedChanges(volumeNode) else None
