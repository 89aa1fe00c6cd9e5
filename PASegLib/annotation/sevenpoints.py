"""The official PA-Seg click format: a label map ``<case>_7points.nii.gz`` in the image's geometry.

Encoding of the official code: for object ``n`` (0-based) the foreground click is ``2 + 2n`` and its six
background clicks are ``1 + 2n`` (a second tumour uses 4/3, a third 6/5, …); everything else is 0. The file
stores no sides, so they are inferred from the geometry (:func:`~PASegLib.annotation.model.assign_sides`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from PASegLib.annotation.model import AnnotationError, CaseAnnotation, make_object
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import read_image, write_image
from PASegLib.utils.atomic import PathLike


def case_to_label_map(case: CaseAnnotation, geometry: ImageGeometry) -> np.ndarray:
    """Rasterise ``case`` into a uint8 label map ``[i, j, k]`` of ``geometry.shape`` (official encoding)."""
    out = np.zeros(geometry.shape, dtype=np.uint8)
    if 2 * len(case.objects) > 255:
        raise AnnotationError(f"the 7-point label map holds at most 127 objects, got {len(case.objects)}")
    for n, obj in enumerate(case.objects):
        fg_value, bg_value = 2 + 2 * n, 1 + 2 * n
        for label, point in obj.points().items():
            voxel = geometry.world_to_voxel(point)
            if not geometry.contains_index(voxel):
                raise AnnotationError(f"object {obj.name!r}: point {label} is outside the image")
            out[tuple(voxel)] = fg_value if label == "F" else bg_value
    return out


def case_from_label_map(
    labels: np.ndarray, geometry: ImageGeometry, *, source: str = "7-point label map"
) -> CaseAnnotation:
    """Read objects from an official-format label map ``[i, j, k]`` (see module docstring)."""
    arr = np.asarray(labels)
    if arr.shape != geometry.shape:
        raise AnnotationError(f"{source}: shape {arr.shape} does not match the image shape {geometry.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise AnnotationError(f"{source}: values must be integers")
        arr = arr.astype(np.int64)
    values = np.unique(arr[arr != 0])
    if values.size == 0:
        raise AnnotationError(f"{source}: holds no click (all voxels are 0)")
    if values.min() < 1:
        raise AnnotationError(f"{source}: negative label values {values[values < 1].tolist()}")
    n_objects = int((values.max() + 1) // 2)
    objects = []
    for n in range(n_objects):
        fg_value, bg_value = 2 + 2 * n, 1 + 2 * n
        fg = np.argwhere(arr == fg_value)
        bg = np.argwhere(arr == bg_value)
        if len(fg) == 0 and len(bg) == 0:
            continue
        name = f"object {n + 1}"
        if len(fg) != 1 or len(bg) != 6:
            raise AnnotationError(
                f"{source}: {name} (values {fg_value}/{bg_value}) has {len(fg)} foreground and {len(bg)} background "
                "click voxels; expected 1 and 6"
            )
        objects.append(
            make_object(
                name,
                foreground=geometry.index_to_world(fg.astype(float)),
                background=geometry.index_to_world(bg.astype(float)),
                geometry=geometry,
            )
        )
    return CaseAnnotation(objects)


def read_seven_points(path: PathLike, geometry: ImageGeometry) -> CaseAnnotation:
    """Read ``*_7points.nii.gz`` (or any image format) and check it lies on ``geometry``."""
    volume = read_image(path, role="7-point label map")
    mismatch = geometry.mismatch(volume.geometry)
    if mismatch:
        raise AnnotationError(f"{path}: geometry differs from the image's ({mismatch})")
    return case_from_label_map(volume.array, geometry, source=str(path))


def write_seven_points(path: PathLike, case: CaseAnnotation, geometry: ImageGeometry) -> Path:
    """Write ``case`` in the official label-map format, atomically."""
    return write_image(path, case_to_label_map(case, geometry), geometry)
