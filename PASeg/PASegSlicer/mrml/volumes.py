"""Volume nodes ↔ PASegLib volumes (``array[i, j, k]`` + LPS :class:`~PASegLib.image.geometry.ImageGeometry`).

Slicer stores a volume's geometry in RAS (``IJKToRAS`` = directions × spacing, origin); PASegLib in LPS.
The conversions here are exact, oblique directions included. A volume may sit under a parent transform:
its *local* frame is what the image file holds, and :func:`worldToLocal` maps world RAS points (where
markups are placed) into it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume

_FLIP = np.diag([-1.0, -1.0, 1.0])
#: numpy dtype → VTK scalar type (the types ``vtk.util.numpy_support`` maps exactly).
_SUPPORTED = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)


def _vtk():
    import vtk
    from vtk.util import numpy_support

    return vtk, numpy_support


def ijkToRasMatrix(volumeNode) -> np.ndarray:
    """The node's 4×4 ``IJKToRAS`` matrix as numpy."""
    vtk, _ = _vtk()
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def geometryFromVolumeNode(volumeNode) -> ImageGeometry:
    """LPS geometry of a volume node's local frame (shape from its image data)."""
    imageData = volumeNode.GetImageData() if volumeNode is not None else None
    if imageData is None:
        raise ValueError(f"volume {volumeNode.GetName() if volumeNode else None!r} holds no image data")
    matrix = ijkToRasMatrix(volumeNode)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    directionLps = _FLIP @ (matrix[:3, :3] / spacing[None, :])
    originLps = _FLIP @ matrix[:3, 3]
    shape = tuple(imageData.GetDimensions())
    return ImageGeometry(shape, tuple(spacing), tuple(originLps), tuple(directionLps.ravel()))


def volumeFromNode(volumeNode, *, copy: bool = True) -> Volume:
    """The node's voxels as a :class:`~PASegLib.image.io.Volume` (``array[i, j, k]``).

    ``copy=False`` returns a read-only view of the node's memory instead of a copy (no allocation: 100 MB saved
    on a 512×512×200 int16 volume); use it only for reading, while the node's image data is unchanged.
    """
    _, numpy_support = _vtk()
    geometry = geometryFromVolumeNode(volumeNode)
    imageData = volumeNode.GetImageData()
    if imageData.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume {volumeNode.GetName()!r} has {imageData.GetNumberOfScalarComponents()} components; "
                         "PASeg needs a scalar volume")  # fmt: skip
    flat = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    i, j, k = geometry.shape
    array = flat.reshape(k, j, i).transpose(2, 1, 0)
    if copy:
        return Volume(np.array(array, copy=True), geometry)
    array.flags.writeable = False
    return Volume(array, geometry)


def _setGeometry(node, geometry: ImageGeometry) -> None:
    vtk, _ = _vtk()
    directionRas = _FLIP @ geometry.direction_matrix
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(directionRas[r, c]))
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(*geometry.spacing)
    node.SetOrigin(*(float(v) for v in _FLIP @ np.asarray(geometry.origin)))


def imageDataFromArray(array: np.ndarray):
    """A ``vtkImageData`` holding ``array[i, j, k]`` (copied; geometry is set on the node, not here)."""
    vtk, numpy_support = _vtk()
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.type not in _SUPPORTED:
        arr = arr.astype(np.float32)
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(*arr.shape)
    vtkArray = numpy_support.numpy_to_vtk(np.ascontiguousarray(arr.transpose(2, 1, 0)).ravel(), deep=True)
    imageData.AllocateScalars(vtkArray.GetDataType(), 1)
    imageData.GetPointData().GetScalars().DeepCopy(vtkArray)
    return imageData


def updateVolumeNode(node, volume: Volume) -> None:
    """Replace the voxels and the geometry of ``node`` with ``volume``."""
    _setGeometry(node, volume.geometry)
    node.SetAndObserveImageData(imageDataFromArray(volume.array))


def createVolumeNode(scene, volume: Volume, name: str, *, labelmap: bool = False):
    """Add a scalar (or label map) volume node showing ``volume`` with default display settings."""
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, name)
    updateVolumeNode(node, volume)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None and not labelmap:
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOn()
    return node


def worldToLocal(volumeNode, pointsRas: np.ndarray) -> np.ndarray:
    """Map world RAS points ``(n, 3)`` into the volume's local RAS frame (through its parent transforms)."""
    points = np.asarray(pointsRas, dtype=np.float64).reshape(-1, 3)
    transform = _worldToParent(volumeNode)
    if transform is None:
        return points.copy()
    return np.array([transform.TransformPoint(*(float(v) for v in p)) for p in points])


def localToWorld(volumeNode, pointsRas: np.ndarray) -> np.ndarray:
    """Inverse of :func:`worldToLocal`."""
    points = np.asarray(pointsRas, dtype=np.float64).reshape(-1, 3)
    transform = _worldToParent(volumeNode, inverse=True)
    if transform is None:
        return points.copy()
    return np.array([transform.TransformPoint(*(float(v) for v in p)) for p in points])


def _worldToParent(volumeNode, inverse: bool = False) -> Optional[object]:
    parent = volumeNode.GetParentTransformNode() if volumeNode is not None else None
    if parent is None:
        return None
    import slicer

    vtk, _ = _vtk()
    transform = vtk.vtkGeneralTransform()
    if inverse:
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(parent, None, transform)
    else:
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, transform)
    return transform
