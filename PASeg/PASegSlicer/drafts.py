"""Drafts: the clicks of a case as they are, complete or not, kept so that no click is ever lost.

A draft is ``<work>/drafts/<case>.mrk.json`` (:func:`~PASegSlicer.cases.draftPath`): Slicer markups JSON, LPS in
the volume's local frame, with the points not placed yet written as ``"positionStatus": "undefined"`` (it loads
in Slicer's Markups module too). It lives in the work folder, not in the dataset: the dataset's
``<case>.mrk.json`` is what training reads and must stay complete and valid, and a second ``*.mrk.json`` beside
the images would be taken for the annotation of a case that has no image.

Every object keeps its annotation kind (``pasegKind``, :class:`~PASegLib.markups_io.DraftObject` ``kind``): a
drawn box is written as a Slicer ROI markup; a dense object as a markup without points (its segment stays in the
scene's segmentation node: pick it again after a restore).

The *state* of a volume's objects (:func:`objectsState`: names, kinds, and each point's position or ``None``) is
what is compared to tell whether something is unsaved; :class:`DraftBookkeeping` (the logic's) keeps the state
last loaded, saved or drafted per volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from PASegLib.annotations import AnnotationError, ObjectAnnotation
from PASegLib.atomic import atomic_write_json
from PASegLib.markups_io import (
    DraftObject,
    drafts_from_markups_dict,
    drafts_to_markups_dict,
    object_to_markup,
    read_draft_markups,
)  # fmt: skip

from . import annotation, kinds
from .cases import draftPath

#: Positions closer than this (mm) are the same click (a file round trip changes the last bits only).
SAME_POSITION_MM = 1e-4


def objectsState(scene, volumeNode) -> List[DraftObject]:
    """The volume's objects as drafts: kind, and each point's LPS position (local frame) or ``None`` when not
    placed (a box: its corners ``lo`` / ``hi`` once drawn; a dense object: no point).

    Raises ``AnnotationError`` for an object that is not laid out as its kind says (its points cannot be named).
    """
    state = []
    for node in annotation.objectNodes(scene, volumeNode):
        kind = kinds.kindOf(node)
        placed = annotation.placedPointsLps(node, volumeNode)
        points = {label: placed.get(label) for label in kinds.kindLabels(kind)}
        state.append(DraftObject(node.GetName(), points, kind=kind))
    return state


def sameState(first: Sequence[DraftObject], second: Sequence[DraftObject]) -> bool:
    """Whether two states hold the same objects (names, kinds, order) with the same points placed at the same
    places."""
    if [(o.name, o.kind) for o in first] != [(o.name, o.kind) for o in second]:
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


def draftDocument(state: Sequence[DraftObject]) -> Dict[str, Any]:
    """The markups JSON of a state: a drawn box as an ROI markup (Slicer shows it as a box)."""
    doc = drafts_to_markups_dict(state)
    markups, keepUndrawn = [], None
    for obj, markup in zip(state, doc["markups"]):
        if obj.kind == "box":
            corners = {k: v for k, v in obj.points.items() if v is not None}
            if len(corners) == 2:
                markup = object_to_markup(ObjectAnnotation(obj.name, kind="box", marks=corners))
            else:
                keepUndrawn = _boxFiducialReadable() if keepUndrawn is None else keepUndrawn
                if not keepUndrawn:
                    continue
        markups.append(markup)
    doc["markups"] = markups
    return doc


def writeDraft(path, state: Sequence[DraftObject]) -> Path:
    """Write a state atomically (a reader sees the previous draft or this one, never a partial file)."""
    atomic_write_json(path, draftDocument(state))
    return Path(path)


def nodesFromDrafts(scene, volumeNode, objects: Sequence[DraftObject]) -> List:
    """Object nodes for ``objects`` (points not placed stay unplaced); the volume's existing objects are removed."""
    for node in annotation.objectNodes(scene, volumeNode):
        scene.RemoveNode(node)
    nodes = []
    for obj in objects:
        node = annotation.addObjectNode(scene, volumeNode, obj.name, kind=obj.kind)
        annotation.setPlacedPointsLps(node, volumeNode, {k: v for k, v in obj.points.items() if v is not None})
        nodes.append(node)
    return nodes


def loadDraft(scene, volumeNode, path) -> List:
    """Read a draft into object nodes of ``volumeNode`` (replacing its objects)."""
    return nodesFromDrafts(scene, volumeNode, read_draft_markups(path))


class DraftBookkeeping:
    """The logic's unsaved-changes check and drafts (mixed into :class:`~PASegSlicer.logic.PASegCoreLogic`, which
    gives ``scene``, ``caseIdOf`` and ``_saved``: volume node ID → the state last loaded, saved or drafted)."""

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
        path = writeDraft(target, state)
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
