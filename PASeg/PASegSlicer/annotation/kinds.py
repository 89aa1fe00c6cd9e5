"""Annotation kinds in the scene: the kind an object node holds, its point labels and prompts, boxes as
ROI nodes, dense labels as segments, and the pseudo-label preview of every kind.

The kinds are PASegLib's (:mod:`PASegLib.annotation.kinds`): ``seven_points``, ``extreme_points`` and
``single_point`` are fiducial nodes whose control points are the kind's labels (required, then optional), created
unplaced and filled in order; ``box`` is an ROI node (``vtkMRMLMarkupsROINode``) that the user draws and adjusts,
kept in the volume's frame (same parent transform) and, on an oblique volume, along the volume's index axes
(:func:`alignRoiWithVolume`: its voxel box is then tight), read as two opposite LPS corners and its axes
(:func:`roiCornersLps`, :func:`roiAxesLps`; an axis-aligned one as its smallest and largest corner); ``dense`` is a
fiducial node without control points that refers to a segmentation node (:data:`DENSE_ROLE`) and optionally names
one of its segments (:data:`DENSE_SEGMENT_ATTRIBUTE`; none = all segments, segment ``n`` is label ``n + 1``).
The kind is the node attribute :data:`KIND_ATTRIBUTE`; a node without it (older scenes) holds seven points.

The preview of any kind goes through :func:`pseudoLabelMap`, the one call into PASegLib's pseudo labels.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from PASegLib.annotation.kinds import AXIS_NAMES, SIDE_NAMES, SIDES, get_kind, kind_names
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, box_axes, is_axis_aligned, side_axis
from PASegLib.annotation.validation import object_box
from PASegLib.image.geometry import ImageGeometry, lps_to_ras

from ..mrml.volumes import localToWorld, worldToLocal

KIND_ATTRIBUTE = "PASeg.Kind"
DEFAULT_KIND = "seven_points"
DENSE_ROLE = "PASegDenseLabel"  # node reference: dense object node → the segmentation node holding its label
DENSE_SEGMENT_ATTRIBUTE = "PASeg.DenseSegment"  # the segment's ID; empty: every segment of the node
#: Node reference role from PASeg's preview segmentation node to its volume (and the attribute of older scenes).
PREVIEW_ROLE, PREVIEW_ATTRIBUTE = "PASegPreviewOf", "PASeg.PreviewOf"
FIDUCIAL_CLASS, ROI_CLASS = "vtkMRMLMarkupsFiducialNode", "vtkMRMLMarkupsROINode"
SEVEN_POINT_HINTS = {"F": "foreground: inside the tumor, near its centre",
                     **{s: f"background: {SIDE_NAMES[s]} of the tumor, just outside it" for s in SIDES}}  # fmt: skip
#: Work of a random-walker preview (extreme points, box) per voxel of its crop on the random walker's working grid
#: (the crop resampled to ``RandomWalkerConfig.working_spacing_mm``), in geodesic box voxels. Measured on boxes
#: around ellipsoids in 4–9 M voxel volumes (0.625–2 mm): up to :data:`RANDOM_WALKER_KNEE` voxels inside the box
#: (working grid) 0.04–0.09 s, 1.4 geodesic voxels per crop voxel; beyond it the conjugate gradient needs far more
#: iterations: 0.9–8.6 s, about 24 per crop voxel. (The former weight, 6 per crop voxel at the image's resolution,
#: overestimated fine-spaced boxes 15–57× and underestimated 2 mm ones.)
RANDOM_WALKER_WEIGHT, RANDOM_WALKER_SLOW_WEIGHT, RANDOM_WALKER_KNEE = 1.4, 24.0, 8000
#: Seconds per geodesic box voxel on one CPU core, and the longest preview that runs by itself after an edit (it
#: runs on the GUI thread); a longer one waits for the Preview button.
GEODESIC_SECONDS_PER_VOXEL, AUTO_PREVIEW_MAX_SECONDS = 1.2e-6, 0.5


#: The order the kind selector lists them in (then any other registered kind).
KIND_ORDER = ("seven_points", "extreme_points", "single_point", "box", "dense")


def kindNames() -> List[str]:
    """The registered annotation kinds, seven points first (:data:`KIND_ORDER`)."""
    names = list(kind_names())
    return [k for k in KIND_ORDER if k in names] + [k for k in names if k not in KIND_ORDER]


def kindTitle(kind: str) -> str:
    return get_kind(kind).title


def isRoi(node) -> bool:
    return node is not None and node.IsA(ROI_CLASS)


def kindOf(node) -> str:
    """The annotation kind of an object node: an ROI node is a box; a fiducial node's kind is its
    :data:`KIND_ATTRIBUTE`, seven points without it (scenes saved before the other kinds existed)."""
    if isRoi(node):
        return "box"
    return (node.GetAttribute(KIND_ATTRIBUTE) if node is not None else None) or DEFAULT_KIND


def requiredLabels(kind: str) -> Tuple[str, ...]:
    return get_kind(kind).labels


def kindLabels(kind: str) -> Tuple[str, ...]:
    """The point labels of ``kind``: required, then optional (``single_point``: ``F``, ``B``)."""
    spec = get_kind(kind)
    return spec.labels + spec.optional


def markupClass(kind: str) -> str:
    return ROI_CLASS if get_kind(kind).markup_type == "ROI" else FIDUCIAL_CLASS


def pointHint(kind: str, label: str) -> str:
    """What to click for ``label``: the seven-point hints, else the kind's placement prompt."""
    if kind == DEFAULT_KIND:
        return SEVEN_POINT_HINTS[label]
    return get_kind(kind).prompts.get(label, label)


# -- boxes: ROI nodes --------------------------------------------------------------------------------------------
def _corners(center: np.ndarray, size: np.ndarray, axes: np.ndarray) -> np.ndarray:
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    return center + (signs * size / 2.0) @ axes.T


def roiDrawn(node) -> bool:
    """Whether the ROI is drawn: Slicer places a box ROI as two corners (``RequiredNumberOfControlPoints`` 2), then
    replaces them with its centre (1); an ROI set through the API or read from a file has its centre only."""
    defined = node.GetNumberOfDefinedControlPoints()
    return defined >= 1 and defined >= node.GetRequiredNumberOfControlPoints()


def _objectToNode(node) -> np.ndarray:
    matrix = node.GetObjectToNodeMatrix()
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _roiFrameLps(node, volumeNode) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(lo, hi, axes) of the ROI in the volume's local LPS frame: oriented, its ``−−−`` and ``+++`` corners and its
    axes (columns); axis-aligned (or through a transform that is not rigid), its smallest and largest corner and
    ``None``, as :class:`~PASegLib.annotation.model.ObjectAnnotation` stores a box."""
    m = _objectToNode(node)
    center, rotation = m[:3, 3], m[:3, :3]
    corners = _corners(center, np.array(node.GetSize(), dtype=np.float64), rotation)
    ends = np.vstack([center[None, :], center[None, :] + rotation.T])  # the centre and one step along each axis
    lps = lps_to_ras(worldToLocal(volumeNode, localToWorld(node, np.vstack([corners, ends]))))
    corners, ends = lps[:8], lps[8:]
    steps = ends[1:] - ends[0]
    try:
        axes = box_axes((steps / np.linalg.norm(steps, axis=1, keepdims=True)).T, f"ROI {node.GetName()!r} axes")
    except AnnotationError:  # sheared or scaled by a parent transform: its enclosing box
        axes = None
    if axes is None or is_axis_aligned(axes):
        return corners.min(axis=0), corners.max(axis=0), None
    return corners[0], corners[7], axes


def roiCornersLps(node, volumeNode) -> Dict[str, np.ndarray]:
    """``{"lo", "hi"}``: two opposite corners of the ROI (LPS, volume's local frame) along its axes
    (:func:`roiAxesLps`; an axis-aligned ROI: its smallest and largest corner); ``{}`` until drawn."""
    if not roiDrawn(node):
        return {}
    lo, hi, _ = _roiFrameLps(node, volumeNode)
    return {"lo": lo, "hi": hi}


def roiAxesLps(node, volumeNode) -> Optional[np.ndarray]:
    """The ROI's axes ``(3, 3)`` (columns, LPS, volume's local frame), ``None`` when it is axis-aligned there (or
    not drawn): the box's ``axes`` of :class:`~PASegLib.annotation.model.ObjectAnnotation`."""
    return _roiFrameLps(node, volumeNode)[2] if roiDrawn(node) else None


def _setObjectToNode(node, rotationRas: np.ndarray, centerRas: np.ndarray) -> None:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(rotationRas[r, c]))
        matrix.SetElement(r, 3, float(centerRas[r]))
    node.GetObjectToNodeMatrix().DeepCopy(matrix)


def _rotationRas(axesLps) -> np.ndarray:
    """LPS axes (columns) as the rotation of an ROI's ``ObjectToNode`` matrix (RAS; a reflection gets its third axis
    negated: the same box)."""
    rotation = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(axesLps, dtype=np.float64)
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] = -rotation[:, 2]
    return rotation


def setRoiCornersLps(node, volumeNode, lo, hi, axes=None) -> None:
    """Make the ROI the box with opposite corners ``lo`` and ``hi`` (LPS, volume's local frame) along ``axes``
    (``(3, 3)`` LPS columns, :func:`roiAxesLps`; ``np.eye(3)``: axis-aligned in the volume's frame); ``None``: along
    the ROI's own axes as they are (what :func:`roiCornersLps` read from it, e.g. an undo)."""
    a, b = lps_to_ras(np.asarray(lo, dtype=np.float64)), lps_to_ras(np.asarray(hi, dtype=np.float64))
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    rotation = _objectToNode(node)[:3, :3] if axes is None else _rotationRas(box_axes(axes, "box axes"))
    _setObjectToNode(node, rotation, (a + b) / 2.0)
    node.SetSize(*(float(v) for v in np.abs(rotation.T @ (b - a))))


def alignRoiWithVolume(node, volumeNode) -> None:
    """Turn an ROI (in the volume's frame) to the volume's index axes when they are oblique, so that the box drawn
    around an object is tight in voxels (an axis-aligned ROI's voxel box on a 20° oblique volume is several times
    larger); on a volume whose axes are the scene's ones it stays axis-aligned."""
    import vtk

    directions = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(directions)
    ras = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    axes = lps_to_ras(ras.T).T  # columns: index axes in LPS
    try:
        axes = box_axes(axes, f"volume {volumeNode.GetName()!r} directions")
    except AnnotationError:
        return
    if not is_axis_aligned(axes):
        _setObjectToNode(node, _rotationRas(axes), _objectToNode(node)[:3, 3])


# -- dense labels: segments ---------------------------------------------------------------------------------------
def denseSource(node) -> Tuple[Optional[object], str]:
    """(segmentation node, segment ID or ``""`` for all segments) of a dense object node."""
    return node.GetNodeReference(DENSE_ROLE), node.GetAttribute(DENSE_SEGMENT_ATTRIBUTE) or ""


def isPreviewSegmentation(segmentationNode) -> bool:
    """Whether ``segmentationNode`` is PASeg's pseudo-label preview of a volume (:data:`PREVIEW_ROLE`): it is
    rewritten by every preview, so it never holds a dense label."""
    return segmentationNode is not None and (segmentationNode.GetNodeReference(PREVIEW_ROLE) is not None
                                             or bool(segmentationNode.GetAttribute(PREVIEW_ATTRIBUTE)))  # fmt: skip


def previewSegmentationIDs(scene) -> List[str]:
    """The IDs of the scene's preview segmentations (:func:`isPreviewSegmentation`)."""
    nodes = [scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
             for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]  # fmt: skip
    return [n.GetID() for n in nodes if isPreviewSegmentation(n)]


def previewProblem(segmentationNode) -> str:
    if not isPreviewSegmentation(segmentationNode):
        return ""
    return (f"segmentation {segmentationNode.GetName()!r} is PASeg's pseudo-label preview (rewritten by each "
            "preview, its segments are background / foreground / unlabeled): pick or import the tumor's own label")


def setDenseSource(node, segmentationNode, segmentId: str = "") -> None:
    """Take the dense label of ``node`` from ``segmentationNode`` (one segment, or all when ``segmentId`` is empty);
    ``ValueError`` for PASeg's preview segmentation (:func:`isPreviewSegmentation`)."""
    problem = previewProblem(segmentationNode)
    if problem:
        raise ValueError(f"object {node.GetName()!r}: {problem}")
    if segmentId and segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"segmentation {segmentationNode.GetName()!r} has no segment {segmentId!r}")
    node.SetAttribute(DENSE_SEGMENT_ATTRIBUTE, segmentId)
    node.SetNodeReferenceID(DENSE_ROLE, segmentationNode.GetID())


def denseSegmentNames(node) -> List[str]:
    """Names of the segments that make the dense label (label ``n + 1`` = the ``n``-th); ``[]`` when none."""
    segmentationNode, segmentId = denseSource(node)
    if segmentationNode is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    ids = [segmentId] if segmentId else list(segmentation.GetSegmentIDs())
    return [segmentation.GetSegment(i).GetName() for i in ids if segmentation.GetSegment(i) is not None]


def denseProblem(node) -> str:
    """Why a dense object has no label yet (``""`` when it has one)."""
    segmentationNode, segmentId = denseSource(node)
    if segmentationNode is None:
        return "pick a segmentation (or import a label map) holding its dense label"
    if isPreviewSegmentation(segmentationNode):
        return previewProblem(segmentationNode)
    if not denseSegmentNames(node):
        missing = f"no segment {segmentId!r}" if segmentId else "no segment"
        return f"segmentation {segmentationNode.GetName()!r} holds {missing}: pick another segment"
    return ""


#: Events of a segmentation node after which a dense label may differ (``vtkSegmentation``'s, which the node
#: forwards): a paint or erase stroke or an import (its source representation), a segment added, removed,
#: reordered (label values of "all segments") or changed. The node's own ``ModifiedEvent`` does not fire on them.
SEGMENTATION_EVENTS = ("SourceRepresentationModified", "MasterRepresentationModified", "RepresentationModified",
                       "SegmentAdded", "SegmentRemoved", "SegmentsOrderModified", "SegmentModified")  # fmt: skip


def segmentationEvents() -> List[int]:
    """The event ids of :data:`SEGMENTATION_EVENTS` this Slicer has ("Master…" before Slicer 5.4)."""
    import slicer

    return [int(getattr(slicer.vtkSegmentation, n)) for n in SEGMENTATION_EVENTS if hasattr(slicer.vtkSegmentation, n)]


def denseSegmentations(nodes) -> List:
    """The segmentation nodes the dense objects among ``nodes`` take their label from (each once, in order)."""
    found: List = []
    for node in nodes:
        segmentation = denseSource(node)[0] if kindOf(node) == "dense" else None
        if segmentation is not None and all(segmentation is not other for other in found):
            found.append(segmentation)
    return found


def denseStamp(node) -> Tuple:
    """What a dense object's label is made of, cheap to read (no voxel is read): the segmentation node's ID, the
    chosen segment ID, then per segment used (in order) its ID and the modification time (``GetMTime``) of its
    voxels, the segmentation's source representation. Every paint or erase stroke and every import advances it;
    reading or exporting the label does not. ``()`` for another kind or without a segmentation.

    Segments sharing one labelmap (Slicer's default) share its time: painting a segment that is not the dense
    label also changes the stamp (an extra draft, never a lost edit). A content hash would not: a CRC-32 of a
    512×512×300 labelmap takes 22 ms, but telling one segment's voxels from the others' (``layer == value``)
    another 170 ms, at every unsaved-changes check."""
    segmentationNode, segmentId = denseSource(node) if kindOf(node) == "dense" else (None, "")
    if segmentationNode is None:
        return ()
    segmentation = segmentationNode.GetSegmentation()
    source = segmentation.GetSourceRepresentationName()
    stamps = []
    for sid in [segmentId] if segmentId else list(segmentation.GetSegmentIDs()):
        segment = segmentation.GetSegment(sid)
        voxels = segment.GetRepresentation(source) if segment is not None else None
        stamps.append((sid, None if segment is None else voxels.GetMTime() if voxels is not None else 0))
    return (segmentationNode.GetID(), segmentId, tuple(stamps))


def denseLabels(node, volumeNode) -> np.ndarray:
    """The dense label of ``node`` on the volume's grid: uint8, segment ``n`` of :func:`denseSegmentNames` → ``n+1``."""
    from ..mrml.segments import segmentationToLabels

    problem = denseProblem(node)
    if problem:
        raise ValueError(f"object {node.GetName()!r} (dense label): {problem}")
    return segmentationToLabels(denseSource(node)[0], volumeNode, denseSegmentNames(node))


# -- live checks of incomplete objects ----------------------------------------------------------------------------
def partialError(name: str, kind: str, voxels: Dict[str, np.ndarray], geometry: ImageGeometry) -> str:
    """The first problem among the placed points (label → voxel index) of an incomplete object: seven points, two
    points in one voxel or a side point not beyond F; extreme points, a side's point not beyond the opposite side's
    (swapped sides: PASegLib's check of the complete six, each on its half of their extent, implies it); other
    kinds have no check before they are complete."""
    if kind == DEFAULT_KIND:
        return _sevenPointError(name, voxels, geometry)
    if kind != "extreme_points":
        return ""
    table = side_axis(geometry)
    for side, (axis, sign) in table.items():
        opposite = next(s for s, (a, g) in table.items() if a == axis and g == -sign)
        if side in voxels and opposite in voxels and sign * (voxels[side][axis] - voxels[opposite][axis]) <= 0:
            return (f"object {name!r}: the extreme point {side} (index {AXIS_NAMES[axis]} = {voxels[side][axis]}) "
                    f"is not {SIDE_NAMES[side]} of {opposite} ({AXIS_NAMES[axis]} = {voxels[opposite][axis]}): place "
                    f"{side} on the object's {SIDE_NAMES[side]}-most boundary")  # fmt: skip
    return ""


def _sevenPointError(name: str, voxels: Dict[str, np.ndarray], geometry: ImageGeometry) -> str:
    labels = list(voxels)
    for a, first in enumerate(labels):
        for second in labels[a + 1 :]:
            if np.array_equal(voxels[first], voxels[second]):
                return f"object {name!r}: the {first} and {second} points are in the same voxel; move one of them"
    if "F" in voxels:
        fg = voxels["F"]
        for side, (axis, sign) in side_axis(geometry).items():
            if side in voxels and sign * (voxels[side][axis] - fg[axis]) <= 0:
                return (
                    f"object {name!r}: the {side} point is not {SIDE_NAMES[side]} of the F point along the image "
                    f"axis {AXIS_NAMES[axis]} ({side} at {voxels[side][axis]}, F at {fg[axis]}): it lies inside the "
                    f"tumor's extent; move it beyond the tumor on its {SIDE_NAMES[side]} side"
                )
    return ""


# -- preview ------------------------------------------------------------------------------------------------------
def pseudoLabelMap(image, case: CaseAnnotation, *, expansion, randomWalker: Optional[dict] = None, validMask=None,
                   denseLabel: Optional[np.ndarray] = None) -> np.ndarray:
    """The partial label map (uint8 ``[i, j, k]``: 0 background, 1 foreground, 2 unlabeled) of ``case``, any kind
    (``denseLabel``: a dense case's label): the one call into PASegLib's pseudo labels
    (:func:`PASegLib.seeds.pseudo_labels.pseudo_label_map`; ``randomWalker``: ``RandomWalkerConfig`` fields)."""
    from PASegLib.seeds.pseudo_labels import pseudo_label_map

    return pseudo_label_map(image, case, expansion=expansion, random_walker=randomWalker, valid_mask=validMask,
                            dense_label=denseLabel)  # fmt: skip


def previewWork(case: CaseAnnotation, geometry: ImageGeometry, *, fill: bool = False) -> int:
    """The work of a preview in geodesic box voxels (:data:`GEODESIC_SECONDS_PER_VOXEL` each): seven points, their
    box (plus, with ``fill`` — ``ExpansionConfig.fill`` on — the random walker over it, :func:`randomWalkerWork`);
    extreme points and boxes, :func:`randomWalkerWork`; a single point or a dense label, nothing to compute."""
    total = 0
    for obj in case.objects:
        method = get_kind(obj.kind).pseudo_label
        if method not in ("geodesic", "random_walker"):
            total += 1
            continue
        lo, hi = (np.asarray(v) for v in object_box(obj, geometry))
        if method == "random_walker":
            total += randomWalkerWork(lo, hi, geometry)
        else:
            total += int(np.prod(hi - lo + 1)) + (randomWalkerWork(lo, hi, geometry) if fill else 0)
    return total


def randomWalkerWork(lo, hi, geometry: ImageGeometry) -> int:
    """The work of the random walker of one object whose voxel box is ``lo``..``hi``, in geodesic box voxels: its
    crop (the box grown by the margin) on the working grid, as PASegLib's preview resamples it, times
    :data:`RANDOM_WALKER_WEIGHT` (or :data:`RANDOM_WALKER_SLOW_WEIGHT` when the box holds more than
    :data:`RANDOM_WALKER_KNEE` working voxels)."""
    from PASegLib.seeds.random_walker import RandomWalkerConfig

    config = RandomWalkerConfig()
    spacing, shape = np.asarray(geometry.spacing, dtype=np.float64), np.asarray(geometry.shape)
    lo, hi = np.asarray(lo), np.asarray(hi)
    grow = np.ceil(config.margin_mm / spacing).astype(int) + 1
    crop = np.minimum(hi + grow, shape - 1) - np.maximum(lo - grow, 0) + 1
    extent = (hi - lo + 1) * spacing
    working = spacing if config.working_spacing_mm is None else \
        np.maximum(spacing, min(config.working_spacing_mm, float(extent.min()) / 12.0))  # fmt: skip
    cropVoxels = int(np.prod(np.maximum(1, np.round(crop * spacing / working))))
    boxVoxels = int(np.prod(np.maximum(1, np.round(extent / working))))
    return int(cropVoxels * (RANDOM_WALKER_WEIGHT if boxVoxels <= RANDOM_WALKER_KNEE else RANDOM_WALKER_SLOW_WEIGHT))
