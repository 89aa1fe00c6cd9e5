"""Drafts: the clicks of a case as they are, complete or not, kept so that no click is ever lost.

A draft is ``<work>/drafts/<case>.mrk.json`` (:func:`~PASegSlicer.cases.draftPath`): Slicer markups JSON, LPS in
the volume's local frame, with the points not placed yet written as ``"positionStatus": "undefined"`` (it loads
in Slicer's Markups module too). It lives in the work folder, not in the dataset: the dataset's
``<case>.mrk.json`` is what training reads and must stay complete and valid, and a second ``*.mrk.json`` beside
the images would be taken for the annotation of a case that has no image.

The *state* of a volume's objects (:func:`objectsState`: names, and each point's position or ``None``) is what
is compared to tell whether something is unsaved; the logic keeps the state last loaded, saved or drafted.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

from PASegLib.geometry import lps_to_ras
from PASegLib.markups_io import DraftObject, read_draft_markups, write_draft_markups

from . import annotation
from .volumes import localToWorld

#: Positions closer than this (mm) are the same click (a file round trip changes the last bits only).
SAME_POSITION_MM = 1e-4


def objectsState(scene, volumeNode) -> List[DraftObject]:
    """The volume's objects as drafts: each point's LPS position (local frame) or ``None`` when not placed.

    Raises ``AnnotationError`` for an object that is not laid out as seven points (its points cannot be named).
    """
    state = []
    for node in annotation.objectNodes(scene, volumeNode):
        placed = annotation.placedPointsLps(node, volumeNode)
        state.append(DraftObject(node.GetName(), {label: placed.get(label) for label in annotation.POINT_LABELS}))
    return state


def sameState(first: Sequence[DraftObject], second: Sequence[DraftObject]) -> bool:
    """Whether two states hold the same objects (names, order) with the same points placed at the same places."""
    if [o.name for o in first] != [o.name for o in second]:
        return False
    for a, b in zip(first, second):
        for label in annotation.POINT_LABELS:
            p, q = a.points.get(label), b.points.get(label)
            if (p is None) != (q is None) or (p is not None and not np.allclose(p, q, atol=SAME_POSITION_MM, rtol=0)):
                return False
    return True


def writeDraft(path, state: Sequence[DraftObject]) -> Path:
    """Write a state atomically (a reader sees the previous draft or this one, never a partial file)."""
    return write_draft_markups(path, state)


def nodesFromDrafts(scene, volumeNode, objects: Sequence[DraftObject]) -> List:
    """Object nodes for ``objects`` (points not placed stay unplaced); the volume's existing objects are removed."""
    for node in annotation.objectNodes(scene, volumeNode):
        scene.RemoveNode(node)
    nodes = []
    for obj in objects:
        node = annotation.addObjectNode(scene, volumeNode, obj.name)
        for label, lps in obj.points.items():
            if lps is not None:
                annotation.setControlPoint(node, label, localToWorld(volumeNode, lps_to_ras(lps))[0])
        nodes.append(node)
    return nodes


def loadDraft(scene, volumeNode, path) -> List:
    """Read a draft into object nodes of ``volumeNode`` (replacing its objects)."""
    return nodesFromDrafts(scene, volumeNode, read_draft_markups(path))

