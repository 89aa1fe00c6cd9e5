"""Read and write 3D images (NIfTI, NRRD, MHA, …) with their full geometry, through SimpleITK.

Arrays are returned in ``[i, j, k]`` index order (the transpose of ``SimpleITK.GetArrayFromImage``) and
geometry as :class:`~PASegLib.geometry.ImageGeometry` (LPS, ITK conventions). Writes are atomic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import PathLike, atomic_path
from .geometry import ImageGeometry

#: File suffixes recognised as images (lower case).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class ImageReadError(ValueError):
    """An image file is missing, unreadable, or not a usable 3D image."""


@dataclass
class Volume:
    """A 3D image: ``array`` of shape ``geometry.shape`` indexed ``[i, j, k]``, plus its geometry."""

    array: np.ndarray
    geometry: ImageGeometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D [i, j, k], got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise ValueError(f"Volume.array shape {self.array.shape} != geometry.shape {self.geometry.shape}")


def image_suffix(path: PathLike) -> Optional[str]:
    """Return the recognised image suffix of ``path`` (``".nii.gz"``, ``".nrrd"`` …) or ``None``."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def strip_image_suffix(path: PathLike) -> str:
    """File name of ``path`` without its image suffix (``"a_image.nii.gz"`` → ``"a_image"``)."""
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else name


def _sitk():
    import SimpleITK as sitk  # SimpleITK is a core dependency; imported here to keep package import light

    return sitk


def read_image(path: PathLike, *, role: str = "image") -> Volume:
    """Read a scalar 3D image.

    Args:
        path: image file (any format SimpleITK reads: NIfTI, NRRD, MHA, …).
        role: what the file is, used in error messages (``"image"``, ``"label"`` …).

    Returns:
        :class:`Volume` with the voxel array ``[i, j, k]`` in the file's pixel type.

    Raises:
        ImageReadError: missing or unreadable file, not 3D, or multi-component pixels.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{role} file not found: {p}")
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageReadError(f"cannot read {role} file {p}: {first}") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise ImageReadError(f"{role} file {p} is {image.GetDimension()}D; PASeg needs a 3D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{role} file {p} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "PASeg needs a scalar image"
        )
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    geometry = ImageGeometry(
        shape=tuple(image.GetSize()),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=image.GetDirection(),
    )
    return Volume(array=array, geometry=geometry)


def write_image(path: PathLike, array: np.ndarray, geometry: ImageGeometry, *, compress: bool = True) -> Path:
    """Write ``array`` (``[i, j, k]``, shape ``geometry.shape``) with ``geometry`` to ``path`` atomically.

    The format follows the suffix (``.nii.gz``, ``.nrrd``, ``.mha`` …). Boolean arrays are written as uint8.
    """
    arr = np.asarray(array)
    if arr.ndim != 3 or tuple(arr.shape) != geometry.shape:
        raise ValueError(f"array shape {arr.shape} does not match geometry shape {geometry.shape} for {path}")
    if image_suffix(path) is None:
        raise ValueError(f"unsupported image file suffix for {path}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return Path(path)


def check_intensities(volume: Volume, *, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` when the image holds NaN/inf or is constant."""
    arr = volume.array
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{source}: image holds {int(bad.sum())} NaN/inf voxels (first at index {first})")
    if arr.size == 0 or arr.min() == arr.max():
        raise ValueError(f"{source}: image is constant (all voxels = {arr.flat[0] if arr.size else 'n/a'})")
