"""Seven-point annotation with markups nodes: one fiducial node per object, guided placement, live validation.

An object node is created with its seven control points already named and ordered (``F`` then ``R L A P I
S``) but not yet placed; Slicer's place mode fills the first unplaced point, so the user is guided point by
point and :func:`placementStatus` says which one is expected and whether what is placed is valid. Nodes are
tied to their volume by the attribute :data:`OBJECT_ATTRIBUTE`. Points are world RAS in the scene and LPS in
PASegLib; :func:`caseFromNodes` / :func:`nodesFromCase` convert through the volume's local frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from PASegLib.annotations import (
    AXIS_NAMES,
    FOREGROUND,
    SIDE_NAMES,
    SIDES,
    AnnotationError,
    CaseAnnotation,
    ObjectAnnotation,
    side_axis,
    validate_case,
    validate_object,
)  # fmt: skip
from PASegLib.geometry import ImageGeometry, lps_to_ras
from PASegLib.markups_io import read_markups, write_markups

from .volumes import geometryFromVolumeNode, localToWorld, worldToLocal

VOLUME_REFERENCE_ROLE = "PASegVolume"
OBJECT_ATTRIBUTE = "PASeg.ObjectOfVolume"  # before the node reference: a node ID, not remapped by scene import
POINT_LABELS = (FOREGROUND,) + SIDES
#: Events of a markups node after which its status must be re-read (``vtkMRMLMarkupsNode`` event names, and VTK's
#: ``ModifiedEvent``). Point moves, placements and unplacements, from the views, the Markups module's table or
#: the API, fire the point events and never ``ModifiedEvent``; a rename fires only ``ModifiedEvent``. One edit
#: fires several of them: coalesce (e.g. a zero-delay single-shot timer).
OBSERVED_EVENTS = (
    "PointModifiedEvent", "PointPositionDefinedEvent", "PointPositionUndefinedEvent",
    "PointPositionMissingEvent", "PointPositionNonMissingEvent", "PointAddedEvent", "PointRemovedEvent",
    "ModifiedEvent",
)  # fmt: skip
COMPLETE_MESSAGE = ("{name}: all 7 points are placed. Drag a point to move it; to place one again, unplace it "
                    "first (Markups module: the position status column of its row).")  # fmt: skip
POINT_HINTS = {FOREGROUND: "foreground: inside the tumor, near its centre",
               **{s: f"background: {SIDE_NAMES[s]} of the tumor, just outside it" for s in SIDES}}  # fmt: skip
_COLOR = (0.9, 0.4, 0.2)


@dataclass
class PlacementStatus:
    """State of one object node: the expected point (``None`` when all seven are placed), a prompt, an error."""

    expectedLabel: Optional[str]
    placed: int
    prompt: str
    error: str = ""

    @property
    def complete(self) -> bool:
        return self.expectedLabel is None

    @property
    def valid(self) -> bool:
        return self.complete and not self.error


def observedEvents() -> List[int]:
    """The event ids of :data:`OBSERVED_EVENTS` (``vtkMRMLMarkupsNode`` constants, ``ModifiedEvent`` from VTK)."""
    import slicer
    import vtk

    owners = (slicer.vtkMRMLMarkupsNode, vtk.vtkCommand)
    return [int(next(getattr(o, name) for o in owners if hasattr(o, name))) for name in OBSERVED_EVENTS]


def volumeOf(node):
    """The volume node an object node belongs to (``None`` when it is not a PASeg object).

    A node of an older scene, tied by the attribute :data:`OBJECT_ATTRIBUTE`, gets the node reference instead.
    """
    volume = node.GetNodeReference(VOLUME_REFERENCE_ROLE)
    legacy = node.GetAttribute(OBJECT_ATTRIBUTE)
    if volume is None and legacy and node.GetScene() is not None:
        volume = node.GetScene().GetNodeByID(legacy)
        volume = volume if volume is not None and volume.IsA("vtkMRMLVolumeNode") else None
        if volume is not None:
            node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, volume.GetID())
            node.RemoveAttribute(OBJECT_ATTRIBUTE)
    return volume


def objectNodes(scene, volumeNode) -> List:
    """Object nodes of ``volumeNode``, in creation order."""
    nodes = []
    if volumeNode is None:
        return nodes
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLMarkupsFiducialNode")
        volume = volumeOf(node)
        if volume is not None and volume.GetID() == volumeNode.GetID():
            nodes.append(node)
    return nodes


def nextObjectName(scene, volumeNode) -> str:
    """``"tumor N"`` with the smallest N not used by the volume's objects."""
    used = {node.GetName() for node in objectNodes(scene, volumeNode)}
    n = 1
    while f"tumor {n}" in used:
        n += 1
    return f"tumor {n}"


def addObjectNode(scene, volumeNode, name: Optional[str] = None):
    """Create an object node with seven named, unplaced control points (fixed count, placed in order)."""
    import vtk

    if volumeNode is None:
        raise ValueError("select a volume before adding a tumor")
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name or nextObjectName(scene, volumeNode))
    node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, volumeNode.GetID())
    for label in POINT_LABELS:
        index = node.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), label)
        node.SetNthControlPointDescription(index, POINT_HINTS[label])
        node.UnsetNthControlPointPosition(index)
    node.SetMaximumNumberOfControlPoints(len(POINT_LABELS))
    node.SetFixedNumberOfControlPoints(True)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*_COLOR)
    return node


def setControlPoint(node, label: str, worldRas) -> None:
    """Place the point ``label`` (``F``, ``R``…) of an object node at a world RAS position."""
    if label not in POINT_LABELS:
        raise ValueError(f"unknown point {label!r}; points are {', '.join(POINT_LABELS)}")
    index = POINT_LABELS.index(label)
    _checkLayout(node)
    node.SetNthControlPointPositionWorld(index, *(float(v) for v in worldRas))


def _checkLayout(node) -> None:
    if node.GetNumberOfControlPoints() != len(POINT_LABELS):
        raise AnnotationError(
            f"object {node.GetName()!r} has {node.GetNumberOfControlPoints()} control points; "
            f"a PASeg object has exactly 7 ({', '.join(POINT_LABELS)})"
        )


def placedPointsLps(node, volumeNode) -> Dict[str, np.ndarray]:
    """Placed points of ``node`` as LPS positions in the volume's local frame, by label."""
    _checkLayout(node)
    placed = {}
    for index, label in enumerate(POINT_LABELS):
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            continue
        world = np.array(node.GetNthControlPointPositionWorld(index), dtype=np.float64)
        placed[label] = lps_to_ras(worldToLocal(volumeNode, world)[0])
    return placed


def fillIndex(node) -> Optional[int]:
    """Index of the point Slicer fills at the next click in place mode (``None``: it would add a point, which a
    fixed-count object refuses). Slicer's rule (``vtkMRMLMarkupsDisplayNode::UpdateActiveControlPointWorld``):
    the point being previewed, else the placement start index when that point is unplaced, else the first
    undefined point from the start index on, wrapping around."""
    statuses = [node.GetNthControlPointPositionStatus(i) for i in range(node.GetNumberOfControlPoints())]
    if node.PositionPreview in statuses:
        return statuses.index(node.PositionPreview)
    start = node.GetControlPointPlacementStartIndex()
    if 0 <= start < len(statuses) and statuses[start] == node.PositionUndefined:
        return start
    start = start if 0 <= start < len(statuses) else 0
    for offset in range(len(statuses)):
        index = (start + offset) % len(statuses)
        if statuses[index] == node.PositionUndefined:
            return index
    return None


def startPlacement(markupsLogic, node) -> bool:
    """Place mode on ``node`` from its first unplaced point (what the prompt names); ``False`` (nothing done)
    when all seven points are placed: Slicer would try to add an eighth point at every mouse move.

    Points marked "missing" in the Markups module are made placeable again (PASeg needs all seven).
    """
    _checkLayout(node)
    unplaced = [i for i in range(len(POINT_LABELS)) if node.GetNthControlPointPositionStatus(i) != node.PositionDefined]
    if not unplaced:
        return False
    for index in unplaced:
        if node.GetNthControlPointPositionStatus(index) == node.PositionMissing:
            node.UnsetNthControlPointPosition(index)
    node.SetControlPointPlacementStartIndex(unplaced[0])  # a start index left by the Markups table would win
    markupsLogic.SetActiveList(node)
    return bool(markupsLogic.StartPlaceMode(True))


def placementStatus(node, volumeNode) -> PlacementStatus:
    """The point Slicer fills next, and the first problem among the points placed so far (live validation)."""
    name = node.GetName()
    try:
        geometry = geometryFromVolumeNode(volumeNode)
        placed = placedPointsLps(node, volumeNode)
    except (AnnotationError, ValueError) as exc:
        return PlacementStatus(None, 0, f"{name}: cannot be checked", str(exc))
    index = fillIndex(node)
    expected = POINT_LABELS[index] if index is not None else None
    if expected is None and len(placed) < len(POINT_LABELS):  # only "missing" points left: Place unsets them
        expected = next(label for label in POINT_LABELS if label not in placed)
    if expected is None:
        prompt = f"{name}: all 7 points placed"
    else:
        step = POINT_LABELS.index(expected) + 1
        prompt = f"{name}: place point {step} of 7, {expected} ({POINT_HINTS[expected]})"
    error = _partialError(name, placed, geometry)
    if not error and expected is None:
        try:
            validate_object(objectFromPoints(name, placed), geometry)
        except AnnotationError as exc:
            error = str(exc)
    return PlacementStatus(expected, len(placed), prompt, error)


def _partialError(name: str, placed: Dict[str, np.ndarray], geometry: ImageGeometry) -> str:
    """The first problem among an incomplete set of points (each check needs only the points it names)."""
    voxels = {}
    for label, lps in placed.items():
        index = geometry.world_to_index(lps)
        if not geometry.contains_index(index):
            return f"object {name!r}: the {label} point is outside the image; place it on the image"
        voxels[label] = np.rint(index).astype(int)
    labels = list(voxels)
    for a, first in enumerate(labels):
        for second in labels[a + 1 :]:
            if np.array_equal(voxels[first], voxels[second]):
                return f"object {name!r}: the {first} and {second} points are in the same voxel; move one of them"
    if FOREGROUND in voxels:
        fg = voxels[FOREGROUND]
        for side, (axis, sign) in side_axis(geometry).items():
            if side in voxels and sign * (voxels[side][axis] - fg[axis]) <= 0:
                return (
                    f"object {name!r}: the {side} point is not {SIDE_NAMES[side]} of the F point along the image "
                    f"axis {AXIS_NAMES[axis]} ({side} at {voxels[side][axis]}, F at {fg[axis]}): it lies inside the "
                    f"tumor's extent; move it beyond the tumor on its {SIDE_NAMES[side]} side"
                )
    return ""


def objectFromPoints(name: str, placed: Dict[str, np.ndarray]) -> ObjectAnnotation:
    """An :class:`ObjectAnnotation` from a complete label → LPS mapping."""
    return ObjectAnnotation(name, placed[FOREGROUND], {s: placed[s] for s in SIDES})


def caseFromNodes(scene, volumeNode, *, validate: bool = True) -> CaseAnnotation:
    """All objects of ``volumeNode`` as a case annotation (LPS, local frame); raises on incomplete objects."""
    objects = []
    for node in objectNodes(scene, volumeNode):
        placed = placedPointsLps(node, volumeNode)
        missing = [label for label in POINT_LABELS if label not in placed]
        if missing:
            raise AnnotationError(f"object {node.GetName()!r} is incomplete: place {', '.join(missing)}")
        objects.append(objectFromPoints(node.GetName(), placed))
    case = CaseAnnotation(objects)
    if validate:
        validate_case(case, geometryFromVolumeNode(volumeNode))
    return case


def nodesFromCase(scene, volumeNode, case: CaseAnnotation, *, replace: bool = True) -> List:
    """Create object nodes for ``case`` (LPS, local frame of ``volumeNode``); existing ones are removed first."""
    if replace:
        for node in objectNodes(scene, volumeNode):
            scene.RemoveNode(node)
    nodes = []
    for obj in case.objects:
        node = addObjectNode(scene, volumeNode, obj.name)
        for label, lps in obj.points().items():
            setControlPoint(node, label, localToWorld(volumeNode, lps_to_ras(lps))[0])
        nodes.append(node)
    return nodes


def saveCaseAnnotation(scene, volumeNode, path) -> Path:
    """Validate the volume's objects and write them to ``<case>.mrk.json`` atomically (LPS)."""
    case = caseFromNodes(scene, volumeNode, validate=True)
    return write_markups(path, case)


def loadCaseAnnotation(scene, volumeNode, path) -> List:
    """Read ``<case>.mrk.json`` (PASeg or Slicer markups) into object nodes of ``volumeNode``."""
    case = read_markups(path, geometryFromVolumeNode(volumeNode))
    return nodesFromCase(scene, volumeNode, case)
