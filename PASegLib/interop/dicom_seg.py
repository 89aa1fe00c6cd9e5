"""Write a prediction as a DICOM Segmentation (highdicom) that references the DICOM series it was predicted on.

One segment per object (label ``n`` of the prediction is segment ``n``), each with its label (the annotation's
object name, else ``"tumor n"``), a SNOMED-CT coded category and type (default: "Morphologically Abnormal
Structure" / "Neoplasm", as in pydicom's ``codes.SCT``; any ``CODE:SCHEME:MEANING`` through
:meth:`CodedTerm.parse`) and PASeg as its algorithm (type AUTOMATIC). Frames are BINARY, one per slice with
voxels of the segment; an empty prediction still declares its segments (then every frame is written, empty,
because a Segmentation needs at least one frame). The SEG joins the source's study and frame of reference and
lists the source instances in its Referenced Series Sequence and, frame by frame, in the Derivation Image
Sequence.

The prediction is on the source volume's grid (:func:`PASegLib.image.dicom.read_dicom_series`): slice ``k`` is
matched to the source instance whose Image Position (Patient) is that slice's position, not assumed from the
file order. Requires the optional packages ``highdicom`` and ``pydicom`` (``pip install "PASegLib[dicom]"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from PASegLib.image.dicom import ORIENTATION_TOLERANCE, POSITION_TOLERANCE_MM, DicomSeries
from PASegLib.image.geometry import ImageGeometry
from PASegLib.utils.atomic import PathLike, atomic_path
from PASegLib.utils.version import __version__

#: What to install for DICOM SEG output.
INSTALL_HINT = 'pip install "PASegLib[dicom]" (highdicom and pydicom; Python >= 3.10)'
#: Software named in the SEG (manufacturer, model, algorithm name).
SOFTWARE = "PASeg"


@dataclass(frozen=True)
class CodedTerm:
    """A coded concept: code value, coding scheme designator (``SCT`` = SNOMED-CT, ``DCM`` …) and meaning."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        for name in ("value", "scheme", "meaning"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"CodedTerm.{name} must be a non-empty string, got {text!r}")
        if len(self.value) > 64 or not re.fullmatch(r"[A-Za-z0-9._-]+", self.value):
            raise ValueError(f"code value must be letters, digits, '.', '-' or '_' (at most 64), got {self.value!r}")
        if len(self.scheme) > 16 or not re.fullmatch(r"[A-Z0-9_ -]+", self.scheme):
            raise ValueError(f"coding scheme must be upper-case letters, digits, '_', '-' or spaces (at most 16), "
                             f"got {self.scheme!r} (SNOMED-CT is 'SCT')")
        if len(self.meaning) > 64 or "\\" in self.meaning:
            raise ValueError(f"code meaning must be at most 64 characters without '\\', got {self.meaning!r}")

    @classmethod
    def parse(cls, text: str, *, option: str = "code") -> CodedTerm:
        """``"CODE:SCHEME:MEANING"`` (the meaning may itself hold ``:``), e.g. ``"4147007:SCT:Mass"``.

        Raises:
            ValueError: naming ``option`` and the text, when it is not three non-empty parts or a part is invalid.
        """
        parts = [p.strip() for p in str(text).split(":", 2)]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{option} expects CODE:SCHEME:MEANING (e.g. 108369006:SCT:Neoplasm), got {text!r}")
        try:
            return cls(*parts)
        except ValueError as exc:
            raise ValueError(f"{option} {text!r}: {exc}") from None

    def __str__(self) -> str:
        return f"{self.value}:{self.scheme}:{self.meaning}"

    def to_code(self) -> Any:
        """As a ``highdicom.sr.CodedConcept``."""
        from highdicom.sr import CodedConcept

        return CodedConcept(self.value, self.scheme, self.meaning)


#: The default segment category: SNOMED-CT 49755003 (pydicom's ``codes.SCT.MorphologicallyAbnormalStructure``).
DEFAULT_CATEGORY = CodedTerm("49755003", "SCT", "Morphologically Abnormal Structure")
#: The default segment type: SNOMED-CT 108369006 (pydicom's ``codes.SCT.Neoplasm``).
DEFAULT_TYPE = CodedTerm("108369006", "SCT", "Neoplasm")


def require_highdicom() -> None:
    """Raise ``ValueError`` (with :data:`INSTALL_HINT`) unless highdicom and pydicom are importable."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"DICOM SEG output needs highdicom and pydicom ({exc}); {INSTALL_HINT}") from None


def segment_labels(count: int, object_names: Optional[Sequence[str]] = None) -> List[str]:
    """Segment ``n``'s label for ``n = 1 … count``: ``object_names[n-1]`` when given and not blank, else
    ``"tumor n"``. DICOM labels are at most 64 characters (longer names are cut)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    names = list(object_names or [])
    out = []
    for n in range(1, count + 1):
        name = names[n - 1].strip() if n - 1 < len(names) and names[n - 1] else ""
        out.append((name or f"tumor {n}").replace("\\", "/")[:64])
    return out


def _read_sources(series: DicomSeries) -> list:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    datasets = []
    for path in series.files:
        try:
            datasets.append(dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise ValueError(f"cannot read DICOM file {path}: {exc}") from None
    return datasets


def _frame_order(datasets: list, series: DicomSeries, geometry: ImageGeometry) -> List[int]:
    """``order[k]``: the index in ``datasets`` of the instance at slice ``k`` of ``geometry``.

    Raises ``ValueError`` naming the series when an instance's grid (rows, columns, pixel spacing, orientation)
    differs from ``geometry`` or its position is no slice of it.
    """
    where = f"DICOM series {series.uid} in {series.folder}"
    if len(datasets) != geometry.shape[2]:
        raise ValueError(f"{where} has {len(datasets)} instances; the prediction has {geometry.shape[2]} slices")
    direction = geometry.direction_matrix
    expected_orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    expected = geometry.index_to_world(np.stack([np.zeros(geometry.shape[2]), np.zeros(geometry.shape[2]),
                                                 np.arange(geometry.shape[2])], axis=1))
    tolerance = max(POSITION_TOLERANCE_MM, 0.01 * geometry.spacing[2])
    order = [-1] * geometry.shape[2]
    for index, (ds, path) in enumerate(zip(datasets, series.files)):
        try:
            rows, columns = int(ds.Rows), int(ds.Columns)
            spacing = [float(v) for v in ds.PixelSpacing]
            orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
            position = np.array([float(v) for v in ds.ImagePositionPatient])
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"DICOM file {path}: no usable image plane attributes ({exc})") from None
        if (columns, rows) != geometry.shape[:2] or not np.allclose(spacing, (geometry.spacing[1], geometry.spacing[0]),
                                                                   atol=1e-3):
            raise ValueError(f"DICOM file {path}: {columns}×{rows} pixels of {spacing[::-1]} mm differ from the "
                             f"prediction's {geometry.shape[:2]} slices of {geometry.spacing[:2]} mm")
        if orientation.shape != (6,) or np.abs(orientation - expected_orientation).max() > ORIENTATION_TOLERANCE:
            raise ValueError(f"DICOM file {path}: orientation {orientation.tolist()} differs from the prediction's "
                             f"{np.round(expected_orientation, 6).tolist()}")
        distance = np.linalg.norm(expected - position, axis=1)
        k = int(np.argmin(distance))
        if distance[k] > tolerance or order[k] != -1:
            raise ValueError(f"DICOM file {path}: its position {position.tolist()} mm is no slice of the prediction "
                             f"(nearest: slice {k} at {np.round(expected[k], 3).tolist()} mm)")
        order[k] = index
    return order


def write_dicom_seg(
    path: PathLike,
    labels: np.ndarray,
    geometry: ImageGeometry,
    series: DicomSeries,
    *,
    segment_names: Sequence[str],
    category: CodedTerm = DEFAULT_CATEGORY,
    segment_type: CodedTerm = DEFAULT_TYPE,
    series_description: str = "PASeg prediction",
    series_number: int = 100,
) -> Path:
    """Write ``labels`` as a DICOM Segmentation of ``series`` to ``path`` (atomically).

    Args:
        path: the ``.dcm`` file to write.
        labels: uint8 label map ``[i, j, k]`` of shape ``geometry.shape``: 0 background, ``n`` = segment ``n``.
        geometry: the grid of ``labels``: the source volume's (:func:`PASegLib.image.dicom.read_dicom_series`),
            LPS mm.
        series: the source series (its files are read for the SEG's patient, study and references).
        segment_names: the label of segment ``n`` is ``segment_names[n-1]``; one per segment (see
            :func:`segment_labels`), at least ``labels.max()`` of them. Every one is declared, even without voxels.
        category: the segments' Segmented Property Category (default :data:`DEFAULT_CATEGORY`).
        segment_type: the segments' Segmented Property Type (default :data:`DEFAULT_TYPE`).
        series_description: the SEG's Series Description (at most 64 characters).
        series_number: the SEG's Series Number.

    Returns:
        ``path``.

    Raises:
        ValueError: bad labels (shape, values beyond the named segments), names, or a source series that does not
            match ``geometry`` (each message names the file or series); also when highdicom is not installed.
    """
    require_highdicom()
    import highdicom as hd
    from pydicom.sr.codedict import codes

    labels = np.asarray(labels)
    if labels.shape != geometry.shape:
        raise ValueError(f"labels shape {labels.shape} does not match the geometry {geometry.shape}")
    if labels.dtype.kind not in "ub" and not (labels.dtype.kind == "i" and labels.min(initial=0) >= 0):
        raise ValueError(f"labels must hold non-negative integers (uint8), got dtype {labels.dtype}")
    names = list(segment_names)
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError(f"segment_names must be one non-empty name per segment, got {names!r}")
    top = int(labels.max(initial=0))
    if top > len(names):
        raise ValueError(f"labels hold segment {top} but only {len(names)} segment name(s) were given")
    if len(names) > 255:
        raise ValueError(f"at most 255 segments, got {len(names)}")
    if not isinstance(series_description, str) or len(series_description) > 64:
        raise ValueError(f"series_description must be a string of at most 64 characters, got {series_description!r}")
    datasets = _read_sources(series)
    order = _frame_order(datasets, series, geometry)
    algorithm = hd.AlgorithmIdentificationSequence(name=SOFTWARE, version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(segment_number=n, segment_label=name, segmented_property_category=category.to_code(),
                                  segmented_property_type=segment_type.to_code(),
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                  algorithm_identification=algorithm)
        for n, name in enumerate(names, start=1)
    ]
    frames = np.ascontiguousarray(labels.astype(np.uint8).transpose(2, 1, 0))  # [k, j, i] = [frame, rows, columns]
    seg = hd.seg.Segmentation(
        source_images=[datasets[index] for index in order],
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE,
        manufacturer_model_name=SOFTWARE,
        software_versions=__version__,
        device_serial_number="0",
        content_description=series_description,
        content_label="PASEG",
        series_description=series_description,
        # no frame at all is not a Segmentation: an empty prediction keeps every (empty) frame
        omit_empty_frames=bool(top),
    )
    dest = Path(path)
    with atomic_path(dest) as tmp:
        seg.save_as(tmp)
    return dest
