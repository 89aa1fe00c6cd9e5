"""Annotation with markups nodes: one node per object, of any annotation kind (:mod:`.kinds`), guided placement,
live validation.

A point object (seven points, extreme points, a single point) is a fiducial node created with its control points
already named and ordered (the kind's labels, required then optional: ``F R L A P I S`` for seven points) but not
yet placed; Slicer's place mode fills the first unplaced point, so the user is guided point by point and
:func:`placementStatus` says which one is expected (with the kind's prompt) and whether what is placed is valid. A
box is an ROI node the user draws and adjusts; a dense object refers to a segmentation (:mod:`.kinds`). Nodes are
tied to their volume by a node reference (:data:`VOLUME_REFERENCE_ROLE`). Points are world RAS in the scene and LPS
in PASegLib; :func:`caseFromNodes` / :func:`nodesFromCase` convert through the volume's local frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from PASegLib.annotation.kinds import SIDES, get_kind
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation
from PASegLib.annotation.validation import check_case_kinds, validate_case, validate_object
from PASegLib.image.geometry import ImageGeometry, lps_to_ras

from ..mrml.volumes import geometryFromVolumeNode, localToWorld, worldToLocal
from . import kinds
from .kinds import kindLabels, kindOf

VOLUME_REFERENCE_ROLE = "PASegVolume"
OBJECT_ATTRIBUTE = "PASeg.ObjectOfVolume"  # before the node reference: a node ID, not remapped by scene import
#: Events of a markups node after which its status must be re-read (``vtkMRMLMarkupsNode`` event names, and VTK's
#: ``ModifiedEvent``). Point moves, placements and unplacements, from the views, the Markups module's table or
#: the API, fire the point events and never ``ModifiedEvent``; a rename, an ROI resize or a dense object's new
#: segment fire only ``ModifiedEvent``. One edit fires several of them: coalesce (e.g. a zero-delay single-shot
#: timer).
OBSERVED_EVENTS = (
    "PointModifiedEvent", "PointPositionDefinedEvent", "PointPositionUndefinedEvent",
    "PointPositionMissingEvent", "PointPositionNonMissingEvent", "PointAddedEvent", "PointRemovedEvent",
    "ModifiedEvent",
)  # fmt: skip
COMPLETE_MESSAGE = ("{name}: all 7 points are placed. Drag a point to move it; to place one again, unplace it "
                    "first (Markups module: the position status column of its row).")  # fmt: skip
POINT_HINTS = kinds.SEVEN_POINT_HINTS
_COLOR = (0.9, 0.4, 0.2)


@dataclass
class PlacementStatus:
    """State of one object node: the point Slicer fills next (``None`` when every point, optional ones included, is
    placed), a prompt, an error, and the required points still missing."""

    expectedLabel: Optional[str]
    placed: int
    prompt: str
    error: str = ""
    missing: Tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every required point is placed (a single point's optional ``B`` may still be placed)."""
        return not self.missing

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
    """Object nodes of ``volumeNode`` (fiducial and ROI nodes), in creation order."""
    nodes = []
    if volumeNode is None:
        return nodes
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLMarkupsNode")
        if not (node.IsA(kinds.FIDUCIAL_CLASS) or node.IsA(kinds.ROI_CLASS)):
            continue
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


def addObjectNode(scene, volumeNode, name: Optional[str] = None, kind: str = kinds.DEFAULT_KIND):
    """Create an object node of ``kind``: a fiducial node with the kind's named, unplaced control points (fixed
    count, placed in order); an undrawn ROI node in the volume's frame for a box, along the volume's index axes
    when they are oblique (:func:`.kinds.alignRoiWithVolume`: the box drawn is tight in voxels); a pointless node
    for a dense label."""
    import vtk

    if volumeNode is None:
        raise ValueError("select a volume before adding a tumor")
    get_kind(kind)  # ValueError naming the kinds
    node = scene.AddNewNodeByClass(kinds.markupClass(kind), name or nextObjectName(scene, volumeNode))
    node.SetAttribute(kinds.KIND_ATTRIBUTE, kind)
    node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, volumeNode.GetID())
    if kind == "box":
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())  # drawn along the volume's axes
        kinds.alignRoiWithVolume(node, volumeNode)
    else:
        for label in kindLabels(kind):
            index = node.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), label)
            node.SetNthControlPointDescription(index, kinds.pointHint(kind, label))
            node.UnsetNthControlPointPosition(index)
        node.SetMaximumNumberOfControlPoints(len(kindLabels(kind)))
        node.SetFixedNumberOfControlPoints(True)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*_COLOR)
    return node


def setControlPoint(node, label: str, worldRas) -> None:
    """Place the point ``label`` (``F``, ``R``…, as the node's kind names them) of an object node at a world RAS
    position."""
    labels = _checkLayout(node)
    if label not in labels:
        raise ValueError(f"unknown point {label!r}; points are {', '.join(labels) or 'none'}")
    node.SetNthControlPointPositionWorld(labels.index(label), *(float(v) for v in worldRas))


def _checkLayout(node) -> Tuple[str, ...]:
    """The point labels of a point object (by control point index); raises when its points cannot be named."""
    kind = kindOf(node)
    if kinds.isRoi(node):
        raise AnnotationError(f"object {node.GetName()!r} is a box: it has corners, not control points to place")
    try:
        labels = kindLabels(kind)
    except ValueError as exc:
        raise AnnotationError(f"object {node.GetName()!r}: {exc}") from None
    if node.GetNumberOfControlPoints() != len(labels):
        raise AnnotationError(
            f"object {node.GetName()!r} has {node.GetNumberOfControlPoints()} control points; "
            f"a PASeg object of kind {kind} has exactly {len(labels)} ({', '.join(labels) or 'none'})"
        )
    return labels


def placedPointsLps(node, volumeNode) -> Dict[str, np.ndarray]:
    """Placed points of ``node`` as LPS positions in the volume's local frame, by label (a box: its corners once
    drawn)."""
    if kinds.isRoi(node):
        return kinds.roiCornersLps(node, volumeNode)
    placed = {}
    for index, label in enumerate(_checkLayout(node)):
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            continue
        world = np.array(node.GetNthControlPointPositionWorld(index), dtype=np.float64)
        placed[label] = lps_to_ras(worldToLocal(volumeNode, world)[0])
    return placed


def setPlacedPointsLps(node, volumeNode, points: Dict[str, np.ndarray], axes=None) -> None:
    """Place the points ``label → LPS`` (volume's local frame); a box: its opposite corners ``lo`` and ``hi`` along
    ``axes`` (:func:`.kinds.setRoiCornersLps`; ``None``: the ROI's own axes, see :func:`boxAxes`)."""
    if kinds.isRoi(node):
        if {"lo", "hi"} <= set(points):
            kinds.setRoiCornersLps(node, volumeNode, points["lo"], points["hi"], axes)
        return
    for label, lps in points.items():
        setControlPoint(node, label, localToWorld(volumeNode, lps_to_ras(lps))[0])


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
    """Place mode on ``node`` from its first unplaced point (what the prompt names: required points first, then
    optional ones); ``False`` (nothing done) when nothing is left to place: Slicer would try to add a point at
    every mouse move. A box: place mode draws its ROI until it is drawn (then its handles adjust it); a dense
    object has nothing to place.

    Points marked "missing" in the Markups module are made placeable again (PASeg needs every point).
    """
    kind = kindOf(node)
    if kind == "dense" or (kinds.isRoi(node) and kinds.roiDrawn(node)):
        return False
    if kinds.isRoi(node):
        markupsLogic.SetActiveList(node)
        return bool(markupsLogic.StartPlaceMode(False))
    labels = _checkLayout(node)
    unplaced = [i for i in range(len(labels)) if node.GetNthControlPointPositionStatus(i) != node.PositionDefined]
    if not unplaced:
        return False
    for index in unplaced:
        if node.GetNthControlPointPositionStatus(index) == node.PositionMissing:
            node.UnsetNthControlPointPosition(index)
    node.SetControlPointPlacementStartIndex(unplaced[0])  # a start index left by the Markups table would win
    markupsLogic.SetActiveList(node)
    return bool(markupsLogic.StartPlaceMode(True))


def tumourTitle(name: str, kind: str) -> str:
    """``tumor 2 (extreme points)``: a tumour and its kind, as prompts and messages name it (the kind's title without
    its method: "seven points", not "seven points (PA-Seg)")."""
    return f"{name} ({kinds.kindTitle(kind).split(' (')[0]})"


def completeMessage(node) -> str:
    """Why placement does not start on ``node`` (see :func:`startPlacement`)."""
    kind, name = kindOf(node), node.GetName()
    if kind == "dense":
        return f"{name}: a dense label has no points to place; pick its segmentation (or import a label map)"
    if kinds.isRoi(node):
        return f"{name}: its box is drawn; drag its handles to adjust it"
    title = tumourTitle(name, kind)
    if kind == kinds.DEFAULT_KIND:
        return COMPLETE_MESSAGE.format(name=title)
    return COMPLETE_MESSAGE.replace("all 7", f"all {len(kindLabels(kind))}").format(name=title)


def placementStatus(node, volumeNode) -> PlacementStatus:
    """The point Slicer fills next, and the first problem among the points placed so far (live validation)."""
    name, kind = node.GetName(), kindOf(node)
    try:
        geometry = geometryFromVolumeNode(volumeNode)
        placed = placedPointsLps(node, volumeNode)
        title = tumourTitle(name, kind)  # an unknown kind: ValueError
    except (AnnotationError, ValueError) as exc:
        return PlacementStatus(None, 0, f"{name}: cannot be checked", str(exc))
    if kinds.isRoi(node):
        return _boxStatus(node, volumeNode, name, placed, geometry)
    if kind == "dense":
        problem = kinds.denseProblem(node)
        prompt = f"{title}: " + (", ".join(kinds.denseSegmentNames(node)) if not problem else problem)
        return PlacementStatus(None, 0, prompt, "", ("label",) if problem else ())
    labels, required = kindLabels(kind), kinds.requiredLabels(kind)
    index = fillIndex(node)
    expected = labels[index] if index is not None else None
    if expected is None and len(placed) < len(labels):  # only "missing" points left: Place unsets them
        expected = next(label for label in labels if label not in placed)
    missing = tuple(label for label in required if label not in placed)
    prefix = title  # every kind named: "tumor 2 (extreme points): place point 1 of 6, R (…)"
    if not missing and (expected is None or expected not in required):
        done = f"all {len(required)} points placed" if len(required) > 1 else f"{required[0]} placed"
        prompt = f"{prefix}: {done}"
        optional = [label for label in labels if label not in required and label not in placed]
        if optional:
            prompt += "; " + ", ".join(f"{o}: {kinds.pointHint(kind, o)}" for o in optional)
            prompt += ' ("Continue placing" places it)'
    else:
        label = expected if expected is not None else missing[0]
        step = labels.index(label) + 1
        prompt = f"{prefix}: place point {step} of {len(required)}, {label} ({kinds.pointHint(kind, label)})"
    error = _partialError(name, kind, placed, geometry)
    if not error and not missing:
        try:
            validate_object(objectFromPoints(name, placed, kind), geometry)
        except AnnotationError as exc:
            error = str(exc)
    return PlacementStatus(expected, len(placed), prompt, error, missing)


def boxAxes(axes: Optional[np.ndarray]) -> np.ndarray:
    """The axes to give an ROI for a box whose :class:`~PASegLib.annotation.model.ObjectAnnotation` has ``axes``
    (``None``, axis-aligned: the identity, whatever the ROI's own orientation)."""
    return np.eye(3) if axes is None else np.asarray(axes, dtype=np.float64)


def _boxStatus(node, volumeNode, name: str, placed: Dict[str, np.ndarray], geometry: ImageGeometry) -> PlacementStatus:
    prompts = get_kind("box").prompts
    if not placed:  # Slicer draws a box as two clicks: one corner, then the opposite one
        first = node.GetNumberOfDefinedControlPoints() == 0
        label, step = ("lo", 1) if first else ("hi", 2)
        prompt = f"{name} (box): place point {step} of 2, {label} ({prompts[label]}); then drag its handles"
        return PlacementStatus(label, step - 1, prompt, "", ("lo", "hi") if first else ("hi",))
    error = ""
    try:
        validate_object(objectFromPoints(name, placed, "box", axes=kinds.roiAxesLps(node, volumeNode)), geometry)
    except AnnotationError as exc:
        error = f"{exc}; drag the box's handles"
    return PlacementStatus(None, 2, f"{name} (box): drawn; drag its handles to adjust it", error)


def _partialError(name: str, kind: str, placed: Dict[str, np.ndarray], geometry: ImageGeometry) -> str:
    """The first problem among an incomplete set of points (each check needs only the points it names)."""
    voxels = {}
    for label, lps in placed.items():
        index = geometry.world_to_index(lps)
        if not geometry.contains_index(index):
            return f"object {name!r}: the {label} point is outside the image; place it on the image"
        voxels[label] = np.rint(index).astype(int)
    return kinds.partialError(name, kind, voxels, geometry)


def objectFromPoints(name: str, placed: Dict[str, np.ndarray], kind: str = kinds.DEFAULT_KIND,
                     axes: Optional[np.ndarray] = None) -> ObjectAnnotation:
    """An :class:`ObjectAnnotation` of ``kind`` from its placed points, label → LPS (all required ones); a box's
    ``axes`` (:func:`.kinds.roiAxesLps`, ``None``: axis-aligned)."""
    if kind == kinds.DEFAULT_KIND:
        return ObjectAnnotation(name, placed["F"], {s: placed[s] for s in SIDES})
    if kind == "single_point":
        return ObjectAnnotation(name, placed["F"], {"B": placed["B"]} if "B" in placed else {}, kind=kind)
    return ObjectAnnotation(name, kind=kind, marks=dict(placed), axes=axes if kind == "box" else None)


def objectFromNode(node, volumeNode) -> ObjectAnnotation:
    """The object a node holds (LPS, local frame); raises ``AnnotationError`` when it is incomplete."""
    kind, name = kindOf(node), node.GetName()
    if kind == "dense":
        problem = kinds.denseProblem(node)
        if problem:
            raise AnnotationError(f"object {name!r} is incomplete: {problem}")
        return ObjectAnnotation(name, kind="dense")
    placed = placedPointsLps(node, volumeNode)
    missing = [label for label in kinds.requiredLabels(kind) if label not in placed]
    if kinds.isRoi(node) and missing:
        raise AnnotationError(f"object {name!r} is incomplete: draw its box")
    if missing:
        raise AnnotationError(f"object {name!r} is incomplete: place {', '.join(missing)}")
    return objectFromPoints(name, placed, kind, axes=kinds.roiAxesLps(node, volumeNode) if kinds.isRoi(node) else None)


def caseFromNodes(scene, volumeNode, *, validate: bool = True) -> CaseAnnotation:
    """All objects of ``volumeNode`` as a case annotation (LPS, local frame); raises on incomplete objects (and,
    with ``validate``, on invalid ones, as :func:`~PASegLib.annotation.validation.validate_case`)."""
    case = CaseAnnotation([objectFromNode(node, volumeNode) for node in objectNodes(scene, volumeNode)])
    if validate:
        validate_case(case, geometryFromVolumeNode(volumeNode))
    else:
        check_case_kinds(case)
    return case


def nodesFromCase(scene, volumeNode, case: CaseAnnotation, *, replace: bool = True) -> List:
    """Create object nodes for ``case`` (LPS, local frame of ``volumeNode``); existing ones are removed first. A
    dense object's node is created without its segmentation (see :func:`.casefile.loadCaseAnnotation`)."""
    if replace:
        for node in objectNodes(scene, volumeNode):
            scene.RemoveNode(node)
    nodes = []
    for obj in case.objects:
        node = addObjectNode(scene, volumeNode, obj.name, kind=obj.kind)
        setPlacedPointsLps(node, volumeNode, obj.points(), axes=boxAxes(obj.axes) if obj.kind == "box" else None)
        nodes.append(node)
    return nodes
