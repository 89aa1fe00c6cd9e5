"""Read a DICOM series (a folder of 2D slices, one file each) as a :class:`~PASegLib.image.io.Volume`, through
SimpleITK's GDCM series reader.

A folder may hold several series; :func:`list_dicom_series` lists them (UID, description, files in slice order)
and :func:`select_dicom_series` picks one (the only one, or the one named by its Series Instance UID, else a
:class:`~PASegLib.image.integrity.ImageReadError` listing them all). :func:`read_dicom_series` returns the same
:class:`~PASegLib.image.io.Volume` as :func:`~PASegLib.image.io.read_image`: the array ``[i, j, k]`` with ``i``
along the rows' direction (DICOM columns), ``j`` down the columns (DICOM rows) and ``k`` the slice
(``files[k]``); the geometry in LPS mm (ITK's convention, which is DICOM's patient coordinate system), with the
modality rescale (slope/intercept) applied. Every slice's Image Position (Patient) and Image Orientation
(Patient) is checked against that geometry: a series with missing or unevenly spaced slices, a tilted gantry,
repeated positions or mixed orientations is refused rather than read on a wrong grid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.integrity import ImageReadError
from PASegLib.image.io import Volume, describe_itk_error
from PASegLib.utils.atomic import PathLike

#: DICOM tags as SimpleITK names them (``group|element``, lower-case hex).
SERIES_DESCRIPTION_TAG = "0008|103e"
IMAGE_POSITION_TAG = "0020|0032"
IMAGE_ORIENTATION_TAG = "0020|0037"

#: Largest distance (mm) allowed between a slice's Image Position (Patient) and where the volume's geometry puts
#: it, and largest difference of two slices' direction cosines: positions are decimal strings (at most 16
#: characters), so a series written by any scanner agrees to far better than this.
POSITION_TOLERANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-4


def _sitk():
    import SimpleITK as sitk  # SimpleITK is a core dependency; imported here to keep package import light

    return sitk


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series of a folder.

    Attributes:
        folder: the folder holding the series' files (not searched recursively).
        uid: its Series Instance UID.
        files: its files in slice order (GDCM's order along the slice normal): slice ``k`` of the volume is
            ``files[k]``.
        description: its Series Description (``""`` when absent).
    """

    folder: Path
    uid: str
    files: Tuple[Path, ...]
    description: str = ""

    @property
    def case_id(self) -> str:
        """A file-name-safe case id: the description (characters other than letters, digits, ``.``, ``-`` and
        ``_`` become ``_``), or the UID when the description is empty."""
        return safe_case_id(self.description) or safe_case_id(self.uid)

    def summary(self) -> str:
        """One line naming the series: UID, description and slice count."""
        return f"{self.uid} ({self.description or 'no description'}, {len(self.files)} file(s))"


def safe_case_id(text: str, *, max_length: int = 64) -> str:
    """``text`` as a case id usable in file names: runs of other characters than ``[A-Za-z0-9._-]`` become one
    ``_``, leading/trailing ``_``/``.`` are dropped, at most ``max_length`` characters (``""`` if none is left)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[:max_length].strip("_.")


def _header_value(path: Path, tag: str) -> str:
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


def list_dicom_series(folder: PathLike) -> List[DicomSeries]:
    """The DICOM series whose files lie directly in ``folder`` (sorted by UID; ``[]`` when there is none).

    Raises:
        ImageReadError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(f"DICOM folder not found: {root}")
    reader = _sitk().ImageSeriesReader
    series = []
    for uid in sorted(reader.GetGDCMSeriesIDs(str(root))):
        files = tuple(Path(f) for f in reader.GetGDCMSeriesFileNames(str(root), uid))
        if files:
            series.append(DicomSeries(root, uid, files, _header_value(files[0], SERIES_DESCRIPTION_TAG)))
    return series


def contains_dicom_series(folder: PathLike) -> bool:
    """Whether ``folder`` is a folder holding at least one DICOM series (its files directly inside)."""
    root = Path(folder)
    return root.is_dir() and bool(_sitk().ImageSeriesReader.GetGDCMSeriesIDs(str(root)))


def select_dicom_series(folder: PathLike, series_uid: Optional[str] = None) -> DicomSeries:
    """The series of ``folder`` to read: the only one, or the one whose Series Instance UID is ``series_uid``.

    Raises:
        ImageReadError: no DICOM series in ``folder``; several and no ``series_uid`` (the message lists each
            series' UID, description and file count and says to name one with ``--series UID``); or no series
            with that UID.
    """
    root = Path(folder)
    series = list_dicom_series(root)
    if not series:
        raise ImageReadError(f"{root}: no DICOM series found (PASeg reads the series whose files lie directly "
                             "in the folder; subfolders are not searched)")
    listing = "; ".join(s.summary() for s in series)
    if series_uid is None:
        if len(series) > 1:
            raise ImageReadError(f"{root} holds {len(series)} DICOM series; name one with --series UID: {listing}")
        return series[0]
    chosen = [s for s in series if s.uid == series_uid.strip()]
    if not chosen:
        raise ImageReadError(f"{root}: no DICOM series with UID {series_uid!r}; the folder holds: {listing}")
    return chosen[0]


def _numbers(text: str, count: int, *, path: Path, name: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        values = np.zeros(0)
    if values.size != count or not np.all(np.isfinite(values)):
        raise ImageReadError(f"DICOM file {path}: {name} must hold {count} numbers, got {text!r}")
    return values


def _slice_tags(reader, series: DicomSeries) -> Tuple[np.ndarray, np.ndarray]:
    """``(positions [K, 3], orientations [K, 6])`` of the slices ``reader`` (an executed ``ImageSeriesReader``
    with its metadata dictionary array on) read: Image Position (Patient) and Image Orientation (Patient)."""
    positions, orientations = [], []
    for k, path in enumerate(series.files):
        values = []
        for tag, count, name in ((IMAGE_POSITION_TAG, 3, "Image Position (Patient)"),
                                 (IMAGE_ORIENTATION_TAG, 6, "Image Orientation (Patient)")):
            if not reader.HasMetaDataKey(k, tag):
                raise ImageReadError(f"DICOM file {path} has no {name} ({tag.replace('|', ',')}): not a slice of a "
                                     "3D series")
            values.append(_numbers(reader.GetMetaData(k, tag), count, path=path, name=name))
        positions.append(values[0])
        orientations.append(values[1])
    return np.stack(positions), np.stack(orientations)


def check_slice_geometry(series: DicomSeries, geometry: ImageGeometry, positions: np.ndarray,
                         orientations: np.ndarray) -> None:
    """Raise :class:`~PASegLib.image.integrity.ImageReadError` unless slice ``k`` of ``geometry`` lies at
    ``positions[k]`` (within :data:`POSITION_TOLERANCE_MM`) with ``orientations[k]`` equal to the first slice's
    and to the geometry's in-plane directions (within :data:`ORIENTATION_TOLERANCE`).

    Args:
        series: the series (named in the message).
        geometry: the volume's geometry; ``geometry.shape[2] == len(series.files)``.
        positions: ``[K, 3]`` LPS mm, each slice's Image Position (Patient).
        orientations: ``[K, 6]``, each slice's Image Orientation (Patient).
    """
    where = f"DICOM series {series.uid} in {series.folder}"
    direction = geometry.direction_matrix
    expected_orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    off = np.abs(orientations - expected_orientation).max(axis=1)
    if off.max() > ORIENTATION_TOLERANCE:
        k = int(np.argmax(off))
        raise ImageReadError(f"{where}: slice {k} ({series.files[k].name}) has another orientation "
                             f"{np.round(orientations[k], 5).tolist()} than the first slice "
                             f"{np.round(orientations[0], 5).tolist()}; PASeg needs slices of one orientation")
    expected = geometry.index_to_world(np.stack([np.zeros(geometry.shape[2]), np.zeros(geometry.shape[2]),
                                                 np.arange(geometry.shape[2])], axis=1))
    distance = np.linalg.norm(positions - expected, axis=1)
    tolerance = max(POSITION_TOLERANCE_MM, 0.01 * geometry.spacing[2])
    if distance.max() > tolerance:
        k = int(np.argmax(distance))
        gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        raise ImageReadError(
            f"{where}: slice {k} ({series.files[k].name}) lies at {np.round(positions[k], 3).tolist()} mm, "
            f"{distance[k]:.3f} mm away from where evenly spaced slices put it "
            f"({np.round(expected[k], 3).tolist()} mm; gaps between slices {gaps.min():.3f}–{gaps.max():.3f} mm): "
            "missing or unevenly spaced slices, a tilted gantry, or several images per position (echoes, time "
            "points) in one series; PASeg needs one regular 3D grid")


def read_dicom_series(source: Union[DicomSeries, PathLike], *, series_uid: Optional[str] = None,
                      role: str = "image") -> Volume:
    """Read one DICOM series as a 3D volume.

    Args:
        source: a :class:`DicomSeries` (from :func:`list_dicom_series`), or a folder (the series is chosen by
            :func:`select_dicom_series` with ``series_uid``).
        series_uid: the Series Instance UID to read when ``source`` is a folder holding several series.
        role: what the series is, used in error messages.

    Returns:
        :class:`~PASegLib.image.io.Volume`: array ``[i, j, k]`` (``i`` along a row, ``j`` down a column, ``k``
        = ``files[k]``) with the modality rescale applied (the pixel type SimpleITK gives: integers, or float64
        for a non-integer rescale); geometry in LPS mm.

    Raises:
        ImageReadError: no such series, several series and no ``series_uid``, fewer than two slices, an
            unreadable file, or slices that do not form one regular grid (see :func:`check_slice_geometry`).
    """
    series = source if isinstance(source, DicomSeries) else select_dicom_series(source, series_uid)
    where = f"{role} DICOM series {series.uid} in {series.folder}"
    if len(series.files) < 2:
        raise ImageReadError(f"{where} holds {len(series.files)} file ({series.files[0].name}); PASeg reads a 3D "
                             "series of 2D slices, one file each (single-file multi-frame images are not supported)")
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's header: its position and orientation are checked
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"cannot read {where}: {describe_itk_error(exc)}") from None
    if image.GetDimension() != 3 or image.GetSize()[2] != len(series.files):
        raise ImageReadError(f"{where}: its {len(series.files)} files read as an image of size "
                             f"{list(image.GetSize())}, not one slice per file (multi-frame files?)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{where} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour?); "
                             "PASeg needs a scalar image")
    try:
        geometry = ImageGeometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    except ValueError as exc:
        raise ImageReadError(f"{where}: unusable geometry ({exc}); repeated slice positions?") from None
    positions, orientations = _slice_tags(reader, series)
    check_slice_geometry(series, geometry, positions, orientations)
    array = sitk.GetArrayFromImage(image)  # [k, j, i]
    return Volume(array=np.ascontiguousarray(array.transpose(2, 1, 0)), geometry=geometry)

