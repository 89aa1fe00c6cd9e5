"""Label maps ↔ segments of a segmentation node; ``.seg.nrrd`` reading and writing.

Partial labels (0 background, 1 foreground, 2 unlabeled) become three named, coloured segments; predictions
(0 background, k = object k) become one segment per object (``"tumor 1"``, …). Label arrays are
``[i, j, k]`` on a PASegLib geometry (LPS); the segments are placed in world space exactly on that grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.image.geometry import ImageGeometry
from PASegLib.utils.atomic import atomic_path

from .volumes import createVolumeNode, volumeFromNode

Segment = Tuple[int, str, Tuple[float, float, float]]

#: Segments of a seed-expansion preview: (label value, name, colour).
PARTIAL_SEGMENTS: Tuple[Segment, ...] = (
    (1, "foreground", (0.90, 0.30, 0.20)),
    (0, "background", (0.25, 0.75, 0.35)),
    (2, "unlabeled", (0.95, 0.85, 0.25)),
)
_TUMOR_COLORS = [(0.85, 0.25, 0.25), (0.25, 0.55, 0.90), (0.95, 0.65, 0.15), (0.55, 0.35, 0.80),
                 (0.20, 0.75, 0.70), (0.90, 0.45, 0.70)]  # fmt: skip


def predictionSegments(labels: np.ndarray, objectNames: Optional[Sequence[str]] = None) -> List[Segment]:
    """One segment per non-zero label ``k``: named after object ``k`` (``objectNames[k-1]``) or ``"tumor k"``."""
    names = list(objectNames or [])
    values = [int(v) for v in np.unique(np.asarray(labels)) if v > 0]
    if not values:
        values = [1]  # keep an (empty) "tumor 1" segment so the user sees that nothing was found
    return [
        (v, names[v - 1] if v - 1 < len(names) else f"tumor {v}", _TUMOR_COLORS[(v - 1) % len(_TUMOR_COLORS)])
        for v in values
    ]


#: Voxels along i and along k of one block of the transposed copy into VTK's x-fastest layout. numpy copies a whole
#: ``transpose(2, 1, 0)`` view element by element across cache lines; 16×16 blocks take a third of the time
#: (measured on 512×512×200 uint8: 250 ms whole, 85–90 ms in blocks of 16; vtkImagePermute also 250 ms).
_BLOCK = 16


def _imageToWorld(geometry: ImageGeometry):
    """``geometry``'s IJK → RAS matrix as a ``vtkMatrix4x4`` (exact, oblique directions included)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(geometry.index_to_ras_matrix[r, c]))
    return matrix


def _indexLookup(values: Sequence, dtype) -> Optional[np.ndarray]:
    """For uint8 labels, a 256-entry table label → ``n + 1`` of ``values[n]`` (0 when unlisted), else ``None``."""
    if dtype != np.uint8:
        return None
    table = np.zeros(256, np.uint8)
    for n, value in enumerate(values):
        if float(value).is_integer() and 0 <= value <= 255:
            table[int(value)] = n + 1
    return table


def _segmentIndices(block: np.ndarray, values: Sequence, table: Optional[np.ndarray]) -> np.ndarray:
    """uint8 array of ``block``'s shape: ``n + 1`` where ``block == values[n]``, 0 elsewhere."""
    if table is not None:
        return table[block]
    out = np.zeros(block.shape, np.uint8)
    for n, value in enumerate(values):
        np.copyto(out, n + 1, where=block == value)
    return out


def _boundsOfDifferent(labels: np.ndarray, common) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Inclusive index box ``(lo, hi)`` (``[i, j, k]``) of the voxels ``!= common``, or ``None``.

    Per-axis projections over slabs of the array's slowest axis (contiguous reads, C or Fortran order) instead
    of ``np.argwhere``, which builds an N×3 int64 array (1.2 GB for a full 512×512×200 mask) and takes
    seconds; here the temporaries are a few MB.
    """
    axis = int(np.argmax(np.abs(labels.strides)))
    others = tuple(a for a in range(3) if a != axis)
    along = np.zeros(labels.shape[axis], bool)
    plane = np.zeros([labels.shape[a] for a in others], bool)
    step = max(1, 4_000_000 // max(1, plane.size))
    for start in range(0, labels.shape[axis], step):
        slab = [slice(None)] * 3
        slab[axis] = slice(start, start + step)
        differs = labels[tuple(slab)] != common
        along[start : start + step] = differs.any(axis=others)
        plane |= differs.any(axis=axis)
    if not along.any():
        return None
    projections = {axis: along, others[0]: plane.any(axis=1), others[1]: plane.any(axis=0)}
    lo = np.array([int(np.argmax(projections[a])) for a in range(3)])
    hi = np.array([len(projections[a]) - 1 - int(np.argmax(projections[a][::-1])) for a in range(3)])
    return lo, hi


def _labelImage(labels: np.ndarray, geometry: ImageGeometry, values: Sequence):
    """One uint8 ``vtkOrientedImageData`` for all segments: ``n + 1`` where ``labels == values[n]``, else 0.

    ``labels`` is ``[i, j, k]`` on ``geometry``; the image's extent is the whole grid when the value of most
    voxels (taken to be the corner voxel's) belongs to a segment, else the box of the other voxels. Only that
    box is mapped and transposed into VTK's x-fastest memory; the rest is one fill. The image is the one
    buffer of the result (52 MB for 512×512×200 when it covers the volume).

    Own code rather than a label map volume node and ``ImportLabelmapToSegmentationNode(labelmapNode, …)``:
    Slicer has no call that takes a numpy array and a value → segment mapping; the node route would copy the
    array three times (``createVolumeNode``) and then once more to crop it (``vtkImageConstantPad``).
    """
    import slicer
    import vtk
    from vtk.util import numpy_support

    table = _indexLookup(values, labels.dtype)
    common = labels.flat[0]
    fill = int(_segmentIndices(np.array([common], labels.dtype), values, table)[0])
    box = _boundsOfDifferent(labels, common)
    image = slicer.vtkOrientedImageData()
    image.SetImageToWorldMatrix(_imageToWorld(geometry))
    if fill:
        lo, hi = np.zeros(3, int), np.array(labels.shape) - 1
    elif box is not None:
        lo, hi = box
    else:
        lo, hi = np.zeros(3, int), np.full(3, -1)  # no voxel in any segment: an empty image
    image.SetExtent(int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    if hi[0] < lo[0]:
        return image
    # A view of VTK's own buffer ([k, j, i], x fastest), written in place: no copy of the volume.
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(tuple((hi - lo + 1)[::-1]))
    view.fill(fill)
    if box is None:
        return image
    (i0, j0, k0), (i1, j1, k1) = box[0] - lo, box[1] - lo + 1
    source = labels[tuple(slice(int(a), int(b) + 1) for a, b in zip(*box))]
    for i in range(i0, i1, _BLOCK):
        for k in range(k0, k1, _BLOCK):
            block = _segmentIndices(source[i - i0 : i - i0 + _BLOCK, :, k - k0 : k - k0 + _BLOCK], values, table)
            view[k : min(k + _BLOCK, k1), j0:j1, i : min(i + _BLOCK, i1)] = block.transpose(2, 1, 0)
    return image


def setLabelsToSegmentation(
    segmentationNode, labels: np.ndarray, geometry: ImageGeometry, segments: Sequence[Segment], referenceVolumeNode=None
) -> Dict[str, str]:
    """Write each ``(value, name, colour)`` of ``segments`` as the segment ``name`` (created or replaced).

    ``labels`` is ``[i, j, k]`` on ``geometry`` (LPS); segment ``name`` gets exactly the voxels
    ``labels == value``. Returns segment name → segment id. Other segments of the node are left alone.

    All the segments share one label image (Slicer's shared labelmap, segment ``n`` is label ``n + 1``),
    built once and imported with ``ImportLabelmapToSegmentationNode``: no per-segment full-volume mask, crop
    or merge. Values must be distinct (a shared labelmap holds one segment per voxel) and at most 255.
    """
    import slicer
    import vtk

    labels = np.asarray(labels)
    if labels.shape != geometry.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the geometry {geometry.shape}")
    values = [value for value, _, _ in segments]
    if len(set(values)) != len(values) or len(values) > 255:
        raise ValueError(f"segment values must be distinct and at most 255 of them, got {values}")
    if referenceVolumeNode is not None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentation = segmentationNode.GetSegmentation()
    image = _labelImage(labels, geometry, values)
    wasModifying = segmentationNode.StartModify()  # one round of node events, after the segments are set
    try:
        ids: Dict[str, str] = {}
        updated = vtk.vtkStringArray()
        for _, name, color in segments:
            segmentId = segmentation.GetSegmentIdBySegmentName(name)
            if not segmentId:
                segment = slicer.vtkSegment()
                segment.SetName(name)
                segmentation.AddSegment(segment)
                segmentId = segmentation.GetSegmentIdBySegment(segment)
            segmentation.GetSegment(segmentId).SetColor(*color)
            updated.InsertNextValue(segmentId)
            ids[name] = segmentId
        derived = _detachSegments(segmentation, list(ids.values()))
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ImportLabelmapToSegmentationNode(image, segmentationNode, updated):
            raise RuntimeError(f"could not set the voxels of segments {list(ids)}")
        for representation in derived:  # converts the segments that lack it: these
            segmentation.CreateRepresentation(representation)
    finally:
        segmentationNode.EndModify(wasModifying)
    return ids


def _detachSegments(segmentation, segmentIds: List[str]) -> List[str]:
    """Make ``segmentIds`` ready for new voxels; returns the derived representations to rebuild for them.

    Derived representations (e.g. a 3D closed surface) are dropped from these segments, to be converted again
    after the import as ``SetBinaryLabelmapToSegment`` does (the import alone would leave the old surfaces).
    ``ImportLabelmapToSegmentationNode`` clears each segment from its old labelmap, one full-image threshold
    per segment; a labelmap that only these segments use is dropped whole instead. A labelmap shared with
    another segment is left to that clearing, so the other segment keeps exactly its voxels.
    """
    source = segmentation.GetSourceRepresentationName()
    ours, derived = set(segmentIds), set()
    for segmentId in segmentIds:
        segment = segmentation.GetSegment(segmentId)
        names: List[str] = []
        segment.GetContainedRepresentationNames(names)
        derived.update(name for name in names if name != source)
        segment.RemoveAllRepresentations(source)
        shared: List[str] = []
        segmentation.GetSegmentIDsSharingBinaryLabelmapRepresentation(segmentId, shared, True)
        if shared and set(shared) <= ours:
            segment.RemoveRepresentation(source)
    return sorted(derived)


def segmentationToLabels(segmentationNode, referenceVolumeNode, segmentNames: Sequence[str]) -> np.ndarray:
    """Label map ``[i, j, k]`` on the reference volume's grid: segment ``segmentNames[n]`` → ``n + 1``."""
    import slicer
    import vtk

    segmentation = segmentationNode.GetSegmentation()
    ids = vtk.vtkStringArray()
    for name in segmentNames:
        segmentId = segmentation.GetSegmentIdBySegmentName(name)
        if not segmentId:
            raise ValueError(f"segmentation {segmentationNode.GetName()!r} has no segment named {name!r}")
        ids.InsertNextValue(segmentId)
    scene = segmentationNode.GetScene()
    labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PASeg temporary labelmap")
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(segmentationNode, ids, labelmapNode, referenceVolumeNode):
            raise RuntimeError(f"could not export the segments of {segmentationNode.GetName()!r}")
        return volumeFromNode(labelmapNode).array.astype(np.uint8)
    finally:
        scene.RemoveNode(labelmapNode)


def segmentVoxelCounts(segmentationNode, referenceVolumeNode, segmentNames: Sequence[str]) -> Dict[str, int]:
    """Number of voxels of each named segment on the reference volume's grid."""
    counts = {}
    for name in segmentNames:  # one at a time: segments may overlap
        counts[name] = int(segmentationToLabels(segmentationNode, referenceVolumeNode, [name]).sum())
    return counts


def labelVolumeNode(scene, labels: np.ndarray, geometry: ImageGeometry, name: str):
    """A label map volume node of ``labels`` (e.g. to compare with a file or export)."""
    from PASegLib.image.io import Volume

    return createVolumeNode(scene, Volume(np.asarray(labels), geometry), name, labelmap=True)


def writeSegmentation(segmentationNode, path) -> Path:
    """Write ``segmentationNode`` as ``.seg.nrrd`` atomically."""
    import slicer

    target = Path(path)
    if not target.name.lower().endswith(".seg.nrrd"):
        raise ValueError(f"a segmentation file must end with .seg.nrrd, got {target.name}")
    with atomic_path(target) as tmp:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(tmp))
        if not storage.WriteData(segmentationNode):
            raise OSError(f"could not write segmentation {segmentationNode.GetName()!r} to {target}")
    return target


def readSegmentation(scene, path, name: Optional[str] = None):
    """Load a ``.seg.nrrd`` file as a new segmentation node."""
    import slicer

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"segmentation file not found: {source}")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or source.name[: -len(".seg.nrrd")])
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(source))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise OSError(f"could not read segmentation file {source}")
    node.CreateDefaultDisplayNodes()
    return node
