"""Label maps ↔ segments of a segmentation node; ``.seg.nrrd`` reading and writing.

Partial labels (0 background, 1 foreground, 2 unlabeled) become three named, coloured segments; predictions
(0 background, k = object k) become one segment per object (``"tumor 1"``, …). Label arrays are
``[i, j, k]`` on a PASegLib geometry (LPS); the segments are placed in world space exactly on that grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.atomic import atomic_path
from PASegLib.geometry import ImageGeometry

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


def _orientedImage(mask: np.ndarray, geometry: ImageGeometry):
    """A ``vtkOrientedImageData`` of ``mask`` cropped to its bounding box (extent), on ``geometry``'s grid."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(geometry.index_to_ras_matrix[r, c]))
    image.SetImageToWorldMatrix(matrix)
    nonzero = np.argwhere(mask)
    if nonzero.size == 0:
        image.SetExtent(0, -1, 0, -1, 0, -1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        return image
    lo, hi = nonzero.min(axis=0), nonzero.max(axis=0)
    crop = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].astype(np.uint8)
    image.SetExtent(int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    values = numpy_support.numpy_to_vtk(np.ascontiguousarray(crop.transpose(2, 1, 0)).ravel(), deep=True)
    image.GetPointData().GetScalars().DeepCopy(values)
    return image


def setLabelsToSegmentation(
    segmentationNode, labels: np.ndarray, geometry: ImageGeometry, segments: Sequence[Segment], referenceVolumeNode=None
) -> Dict[str, str]:
    """Write each ``(value, name, colour)`` of ``segments`` as the segment ``name`` (created or replaced).

    Returns segment name → segment id. Other segments of the node are left alone.
    """
    import slicer

    labels = np.asarray(labels)
    if labels.shape != geometry.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the geometry {geometry.shape}")
    if referenceVolumeNode is not None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentation = segmentationNode.GetSegmentation()
    ids: Dict[str, str] = {}
    for value, name, color in segments:
        segmentId = segmentation.GetSegmentIdBySegmentName(name)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment("", name, list(color))
        segmentation.GetSegment(segmentId).SetColor(*color)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            _orientedImage(labels == value, geometry), segmentationNode, segmentId
        )
        if not ok:
            raise RuntimeError(f"could not set the voxels of segment {name!r}")
        ids[name] = segmentId
    return ids


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
    from PASegLib.image_io import Volume

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
