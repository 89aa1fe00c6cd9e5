"""Read and write 3D images (NIfTI, NRRD, MHA, …) with their full geometry, through SimpleITK.

Arrays are returned in ``[i, j, k]`` index order (the transpose of ``SimpleITK.GetArrayFromImage``) and
geometry as :class:`~PASegLib.image.geometry.ImageGeometry` (LPS, ITK conventions). Writes are atomic. A truncated
or damaged file is refused with a message naming it, and NaN/±inf voxels are returned as the file holds them,
NIfTI included (:mod:`PASegLib.image.integrity` checks what ITK's readers do not).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.integrity import ImageReadError, verify_metaimage, verify_nifti
from PASegLib.utils.atomic import PathLike, atomic_path

#: File suffixes recognised as images (lower case).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


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


# -- ITK's error messages ------------------------------------------------------------------------------------
_TRUNCATION = re.compile(r"expected \d+ bytes but received|fread got only|not read completely|end of file|"
                         r"unexpected end|premature", re.IGNORECASE)


def describe_itk_error(exc: BaseException, *, path: Optional[Path] = None) -> str:
    """The informative part of a SimpleITK exception (its last line without ITK's class/source prefixes).

    ``path``: the file the caller names itself (left out of the description); without it, the description
    names the file when ITK's message does.
    """
    lines = []
    for line in str(exc).splitlines():
        line = re.sub(r"^\s*(ITK ERROR: \w+\(0x[0-9a-f]+\):|sitk::ERROR:)\s*", "", line).strip()
        if line and not line.startswith("Exception thrown in SimpleITK") and not line.startswith("Reason:"):
            lines.append(line)
    detail = lines[-1] if lines else "unknown error"
    unknown = re.match(r'Unable to determine ImageIO reader for "(.*)"', detail)
    if unknown:
        what = f"not an image in a format PASeg reads ({', '.join(IMAGE_SUFFIXES)}), or damaged"
        return what if path is not None else f"{unknown.group(1)}: {what}"
    return detail


def _read_error(path: Path, role: str, exc: RuntimeError) -> ImageReadError:
    detail = describe_itk_error(exc, path=path)
    if _TRUNCATION.search(str(exc)):
        return ImageReadError(f"{role} file {path} is truncated or damaged: {detail}")
    return ImageReadError(f"cannot read {role} file {path}: {detail}")


# -- reading and writing -------------------------------------------------------------------------------------
def read_image(path: PathLike, *, role: str = "image") -> Volume:
    """Read a scalar 3D image.

    Args:
        path: image file (any format SimpleITK reads: NIfTI, NRRD, MHA, …).
        role: what the file is, used in error messages (``"image"``, ``"label"`` …).

    Returns:
        :class:`Volume` with the voxel array ``[i, j, k]`` in the file's pixel type. NaN/±inf voxels are
        returned as the file holds them (for NIfTI too, see the module docstring).

    Raises:
        ImageReadError: missing, unreadable, truncated or damaged file, not 3D, or multi-component pixels.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{role} file not found: {p}")
    suffix = image_suffix(p)
    nonfinite = verify_nifti(p, role) if suffix in (".nii", ".nii.gz") else None
    if suffix in (".mha", ".mhd"):
        verify_metaimage(p, role)
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise _read_error(p, role, exc) from None
    image = _scalar_3d(image, p, role)
    array = sitk.GetArrayFromImage(image)  # [k, j, i], a copy
    if nonfinite is not None and nonfinite[0].max() < array.size:
        index, values, (slope, inter) = nonfinite
        if np.isfinite(slope) and slope != 0:
            values = values * slope + inter
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float64)
        array.reshape(-1)[index] = values
    try:
        geometry = ImageGeometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    except ValueError as exc:
        raise ImageReadError(f"{role} file {p}: unusable geometry ({exc})") from None
    return Volume(array=np.ascontiguousarray(array.transpose(2, 1, 0)), geometry=geometry)


def _scalar_3d(image, path: Path, role: str):
    """``image`` as a 3D scalar image (a 4D image with one time point is reduced); raises otherwise."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise ImageReadError(f"{role} file {path} is {image.GetDimension()}D (size {list(image.GetSize())}); "
                             "PASeg needs a 3D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{role} file {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "PASeg needs a scalar image"
        )
    return image


def read_geometry(path: PathLike, *, role: str = "image") -> ImageGeometry:
    """The geometry of a 3D image file from its header only (no voxel data read; e.g. median spacings).

    Raises:
        ImageReadError: missing or unreadable file, not 3D (a 4D file with one time point is accepted), or
            multi-component pixels; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{role} file not found: {p}")
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _read_error(p, role, exc) from None
    size, n = list(reader.GetSize()), reader.GetDimension()
    if not (n == 3 or (n == 4 and size[3] == 1)):
        raise ImageReadError(f"{role} file {p} is {n}D (size {size}); PASeg needs a 3D image")
    if reader.GetNumberOfComponents() != 1:
        raise ImageReadError(f"{role} file {p} has {reader.GetNumberOfComponents()} components per voxel; "
                             "PASeg needs a scalar image")
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(n, n)[:3, :3]
    try:
        return ImageGeometry(tuple(size[:3]), reader.GetSpacing()[:3], reader.GetOrigin()[:3], tuple(direction.ravel()))
    except ValueError as exc:
        raise ImageReadError(f"{role} file {p}: unusable geometry ({exc})") from None


def write_image(path: PathLike, array: np.ndarray, geometry: ImageGeometry, *, compress: bool = True) -> Path:
    """Write ``array`` (``[i, j, k]``, shape ``geometry.shape``) with ``geometry`` to ``path`` atomically.

    The format follows the suffix (``.nii.gz``, ``.nrrd``, ``.mha`` …). Boolean arrays are written as uint8.
    ``.mhd`` / ``.nhdr`` write a header and a data file beside it (``<name>.raw`` …), each moved in atomically.
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
    dest = Path(path)
    if image_suffix(dest) in (".mhd", ".nhdr"):  # a header and a data file: both written, then moved, data first
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".paseg-write-", dir=dest.parent) as folder:
            sitk.WriteImage(image, str(Path(folder) / dest.name), compress)
            for written in sorted(Path(folder).iterdir(), key=lambda f: f.name == dest.name):
                os.replace(written, dest.parent / written.name)
        return dest
    with atomic_path(dest) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return dest


# -- checks of the voxel values --------------------------------------------------------------------------------
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


#: The most distinct values a label map may hold (uint8 object indices).
MAX_LABEL_VALUES = 256


def check_label_values(volume: Volume, *, source: str, role: str = "label") -> np.ndarray:
    """The distinct values of a label map (0 = background, n > 0 = object); raise ``ValueError`` naming
    ``source`` when it holds a value that is not a non-negative integer (−1, 0.5, NaN, inf) or more than
    :data:`MAX_LABEL_VALUES` distinct values (an image rather than a label map)."""
    values = np.unique(volume.array)
    if values.size > MAX_LABEL_VALUES:
        raise ValueError(f"{source}: a {role} map holds at most {MAX_LABEL_VALUES} distinct values "
                         f"(0 = background, 1, 2 … = objects); this one holds {values.size}: is it an image?")
    if values.dtype.kind in "fc":
        with np.errstate(invalid="ignore"):
            bad = values[~np.isfinite(values) | (np.mod(values, 1) != 0) | (values < 0)]
    else:
        bad = values[values < 0]
    if bad.size:
        shown = ", ".join(repr(float(v)) if values.dtype.kind in "fc" else str(int(v)) for v in bad[:3])
        raise ValueError(f"{source}: a {role} map must hold non-negative integers (0 = background, 1, 2 … = "
                         f"objects); it holds {shown}{' …' if bad.size > 3 else ''}")
    return values
