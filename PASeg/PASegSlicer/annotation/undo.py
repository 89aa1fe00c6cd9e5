"""Undo and redo of a volume's tumour edits: points placed, moved or unplaced, tumours added, renamed or deleted.

A step is the difference between two snapshots of the volume's object nodes (:func:`snapshot`): per node its ID,
name, kind, each point's LPS position (the volume's local frame) or ``None`` while it is not placed, and a dense
object's segmentation and segment (not its voxels: the Segment Editor undoes paint strokes). :class:`UndoHistory`
keeps the snapshots of one volume; the panel records one after each edit (its status timer coalesces the events of
one edit; the successive positions of one dragged point are one step, until the drag ends). :func:`restore` puts a
snapshot back on the nodes themselves: a point undone becomes unplaced (place mode resumes at it), a deleted tumour
is created again (a new node, listed last), an added one is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from PASegLib.annotation.model import AnnotationError

from . import kinds, objects

#: Positions closer than this (mm) are the same (a world ↔ local round trip changes the last bits only).
SAME_POSITION_MM = 1e-4
#: Steps kept per volume (a snapshot is a few hundred bytes).
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class ObjectSnapshot:
    """One object node: ``points`` maps each of its kind's labels to an LPS position, ``None`` when not placed (a
    box: ``lo`` / ``hi`` once drawn); ``dense``: (segmentation node ID, segment ID) of a dense object."""

    nodeID: str
    name: str
    kind: str
    points: Dict[str, Optional[np.ndarray]] = field(default_factory=dict, compare=False)
    dense: Tuple[str, str] = ("", "")
    axes: Optional[np.ndarray] = field(default=None, compare=False)  # a drawn box's edges (LPS columns), None: aligned

    @property
    def title(self) -> str:
        return objects.tumourTitle(self.name, self.kind)


Snapshot = List[ObjectSnapshot]


def snapshot(scene, volumeNode) -> Optional[Snapshot]:
    """The volume's objects as they are; ``None`` when one is not laid out as its kind says (it cannot be named)."""
    state = []
    for node in objects.objectNodes(scene, volumeNode):
        kind = kinds.kindOf(node)
        try:
            placed, labels = objects.placedPointsLps(node, volumeNode), kinds.kindLabels(kind)
        except (AnnotationError, ValueError):
            return None
        segmentation, segmentId = kinds.denseSource(node) if kind == "dense" else (None, "")
        points = {label: placed.get(label) for label in labels}
        axes = kinds.roiAxesLps(node, volumeNode) if kinds.isRoi(node) else None
        state.append(ObjectSnapshot(node.GetID(), node.GetName(), kind, points,
                                    (segmentation.GetID() if segmentation is not None else "", segmentId),
                                    axes))  # fmt: skip
    return state


def _samePoint(p, q) -> bool:
    return (p is None) == (q is None) and (p is None or bool(np.allclose(p, q, atol=SAME_POSITION_MM, rtol=0)))


def _byID(state: Snapshot) -> Dict[str, ObjectSnapshot]:
    return {obj.nodeID: obj for obj in state}


def sameSnapshot(first: Snapshot, second: Snapshot) -> bool:
    """The same nodes (in any order: a restored tumour is listed last) with the same names, kinds, dense labels and
    points."""
    a, b = _byID(first), _byID(second)
    if a.keys() != b.keys():
        return False
    for nodeID, obj in a.items():
        other = b[nodeID]
        if obj != other or obj.points.keys() != other.points.keys():
            return False
        if not all(_samePoint(obj.points[label], other.points[label]) for label in obj.points):
            return False
    return True


def movedPoint(before: Snapshot, after: Snapshot) -> Optional[Tuple[str, str]]:
    """``(node ID, label)`` when ``after`` only moves one point already placed in ``before``; else ``None``."""
    a, b = _byID(before), _byID(after)
    if a.keys() != b.keys() or any(a[i] != b[i] for i in a):
        return None
    moved = [(i, label) for i in a for label in a[i].points
             if not _samePoint(a[i].points[label], b[i].points.get(label))]  # fmt: skip
    if len(moved) != 1:
        return None
    nodeID, label = moved[0]
    return moved[0] if a[nodeID].points[label] is not None and b[nodeID].points.get(label) is not None else None


def changedNodes(before: Snapshot, after: Snapshot) -> List[str]:
    """The IDs of the nodes of ``after`` that ``before`` lacks or shows otherwise (added, renamed, points changed)."""
    a = _byID(before)
    return [o.nodeID for o in after if o.nodeID not in a or not sameSnapshot([a[o.nodeID]], [o])]


def describe(before: Snapshot, after: Snapshot) -> str:
    """What turns ``before`` into ``after``, each tumour named with its kind: ``tumor 2 (box): lo placed``."""
    a, b = _byID(before), _byID(after)
    changes = [f"{b[i].title} added" for i in b if i not in a] + [f"{a[i].title} deleted" for i in a if i not in b]
    for nodeID in (i for i in b if i in a):
        old, new = a[nodeID], b[nodeID]
        parts = [f"renamed from {old.name!r}"] if old.name != new.name else []
        for label in new.points:
            p, q = old.points.get(label), new.points[label]
            if not _samePoint(p, q):
                parts.append(f"{label} " + ("unplaced" if q is None else "placed" if p is None else "moved"))
        if old.dense != new.dense:
            parts.append("dense label changed")
        if parts:
            changes.append(f"{new.title}: {', '.join(parts)}")
    return "; ".join(changes)


class UndoHistory:
    """The snapshots of one volume, oldest first, and the one the nodes show (``index``)."""

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        self.states: List[Snapshot] = []
        self.index = -1
        self.limit = int(limit)
        self._dragged: Optional[Tuple[str, str]] = None  # the point the newest step moved: a drag goes on

    @property
    def current(self) -> Optional[Snapshot]:
        return self.states[self.index] if self.index >= 0 else None

    def canUndo(self) -> bool:
        return self.index > 0

    def canRedo(self) -> bool:
        return 0 <= self.index < len(self.states) - 1

    def record(self, state: Optional[Snapshot]) -> bool:
        """Add ``state`` as the newest step (the steps undone are dropped); ``False`` when it is the current one
        (or ``None``). Moving again the point the newest step moved replaces that step (a drag is one step)."""
        current = self.current
        if state is None or (current is not None and sameSnapshot(current, state)):
            return False
        moved = movedPoint(current, state) if current is not None else None
        if moved is not None and moved == self._dragged and self.index == len(self.states) - 1:
            self.states[self.index] = state
            return True
        del self.states[self.index + 1 :]
        self.states.append(state)
        if len(self.states) > self.limit:
            del self.states[: len(self.states) - self.limit]
        self.index, self._dragged = len(self.states) - 1, moved
        return True

    def undo(self) -> Optional[Tuple[Snapshot, Snapshot]]:
        """Step back: ``(the state left, the state to restore)``; ``None`` when there is nothing to undo."""
        if not self.canUndo():
            return None
        self.index, self._dragged = self.index - 1, None
        return self.states[self.index + 1], self.states[self.index]

    def redo(self) -> Optional[Tuple[Snapshot, Snapshot]]:
        if not self.canRedo():
            return None
        self.index, self._dragged = self.index + 1, None
        return self.states[self.index - 1], self.states[self.index]

    def endDrag(self) -> None:
        """The drag of a point ended (the Markups widget's ``PointEndInteractionEvent``): moving it again is a new
        step."""
        self._dragged = None

    def renameNodes(self, newIDs: Dict[str, str]) -> None:
        """A restored node is a new node: every step refers to it by its new ID."""
        if newIDs:
            self.states = [[replace(o, nodeID=newIDs.get(o.nodeID, o.nodeID)) for o in s] for s in self.states]


class VolumeHistories:
    """An :class:`UndoHistory` per volume node; those of volumes gone from the scene are dropped.

    A history is the node's itself, not its ID's: a closed scene resets the ID counters, so the next case's volume
    gets the ID of the last one (the panel also calls :meth:`clear` when the scene closes)."""

    def __init__(self) -> None:
        self._histories: Dict[str, Tuple[object, UndoHistory]] = {}  # volume ID → (the volume node, its history)

    def of(self, volumeNode) -> UndoHistory:
        held = self._histories.get(volumeNode.GetID())
        if held is None or held[0] is not volumeNode:  # another node under a reused ID: a history of its own
            held = self._histories[volumeNode.GetID()] = (volumeNode, UndoHistory())
        return held[1]

    def prune(self, scene) -> None:
        for volumeID in [i for i, (node, _h) in self._histories.items() if scene.GetNodeByID(i) is not node]:
            del self._histories[volumeID]

    def clear(self) -> None:
        """Forget every history (the scene closed: its volumes are gone, their IDs are used again)."""
        self._histories.clear()

    def record(self, scene, volumeNode) -> bool:
        return volumeNode is not None and self.of(volumeNode).record(snapshot(scene, volumeNode))


def removeObject(scene, node) -> None:
    """Remove an object node with its display and storage nodes."""
    owned = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    owned += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for extra in owned:
        if extra is not None and extra.GetScene() is not None:
            scene.RemoveNode(extra)


def _setPoints(node, volumeNode, obj: ObjectSnapshot) -> None:
    if kinds.isRoi(node):
        if obj.points.get("lo") is not None and obj.points.get("hi") is not None:
            kinds.setRoiCornersLps(node, volumeNode, obj.points["lo"], obj.points["hi"], objects.boxAxes(obj.axes))
        elif kinds.roiDrawn(node):
            node.RemoveAllControlPoints()  # undrawn: place mode draws it again
        return
    current = objects.placedPointsLps(node, volumeNode)
    for index, label in enumerate(kinds.kindLabels(obj.kind)):
        target = obj.points.get(label)
        if target is None and node.GetNthControlPointPositionStatus(index) != node.PositionUndefined:
            node.UnsetNthControlPointPosition(index)
        elif target is not None and not _samePoint(current.get(label), target):
            objects.setPlacedPointsLps(node, volumeNode, {label: target})


def _setDense(node, obj: ObjectSnapshot) -> None:
    segmentation = node.GetScene().GetNodeByID(obj.dense[0]) if obj.dense[0] else None
    if segmentation is None:
        node.RemoveNodeReferenceIDs(kinds.DENSE_ROLE)
        return
    try:
        kinds.setDenseSource(node, segmentation, obj.dense[1])
    except ValueError:  # the segment is gone: the whole segmentation
        kinds.setDenseSource(node, segmentation)


def restore(scene, volumeNode, state: Snapshot) -> Dict[str, str]:
    """Make the volume's object nodes show ``state``: nodes it lacks are removed, nodes it has but the scene lacks
    are created again, names, points and dense labels are set. Returns old → new node IDs of the nodes created."""
    target = _byID(state)
    for node in objects.objectNodes(scene, volumeNode):
        if node.GetID() not in target:
            removeObject(scene, node)
    newIDs: Dict[str, str] = {}
    for obj in state:
        node = scene.GetNodeByID(obj.nodeID)
        if node is None or objects.volumeOf(node) is not volumeNode:
            node = objects.addObjectNode(scene, volumeNode, obj.name, kind=obj.kind)
            newIDs[obj.nodeID] = node.GetID()
        if node.GetName() != obj.name:
            node.SetName(obj.name)
        if obj.kind == "dense":
            segmentation, segmentId = kinds.denseSource(node)
            if obj.dense != (segmentation.GetID() if segmentation is not None else "", segmentId):
                _setDense(node, obj)
        else:
            _setPoints(node, volumeNode, obj)
    return newIDs


def checkNewName(scene, volumeNode, node, name: str) -> str:
    """The tumour name ``name`` stripped; ``ValueError`` when it is empty or another tumour of the volume has it."""
    cleaned = str(name or "").strip()
    if not cleaned:
        raise ValueError("a tumour's name cannot be empty")
    others = [n.GetName() for n in objects.objectNodes(scene, volumeNode) if n.GetID() != node.GetID()]
    if cleaned in others:
        raise ValueError(f"another tumour of {volumeNode.GetName()!r} is named {cleaned!r}: choose another name")
    return cleaned
