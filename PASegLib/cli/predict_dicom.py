"""``paseg predict`` on a DICOM series: the series as the command's one case, and its DICOM SEG output.

INPUT is a DICOM series folder when it holds no ``<case>_image.<ext>`` file but DICOM files
(:func:`dicom_input`). The chosen series (``--series UID`` among several) is read once
(:func:`PASegLib.image.dicom.read_dicom_series`), checked like any image, and handed to the prediction as a
temporary MetaImage (exact geometry, removed afterwards); its case id is the series' sanitised description, else
its UID. ``--dicom-seg`` then writes ``<case>_seg.dcm`` beside the NIfTI outputs, in the same staging folder
(:meth:`DicomInput.write_segs`), so that a failure leaves nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from PASegLib.data.dataset import CaseFiles, DatasetError
from PASegLib.image.dicom import DicomSeries, contains_dicom_series, read_dicom_series, select_dicom_series
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import check_intensities, image_suffix, read_image, strip_image_suffix, write_image
from PASegLib.interop.dicom_seg import DEFAULT_CATEGORY, DEFAULT_TYPE, CodedTerm, require_highdicom, segment_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The DICOM options of ``paseg predict``."""
    group = parser.add_argument_group("DICOM")
    group.add_argument("--series", metavar="UID", default=None,
                       help="INPUT is a folder holding several DICOM series: predict the one with this Series "
                       "Instance UID (the error for such a folder lists them)")
    group.add_argument("--dicom-seg", action="store_true",
                       help="also write <case>_seg.dcm: the prediction as a DICOM Segmentation referencing the input "
                       "series, one segment per object (needs a DICOM series as INPUT and highdicom: "
                       'pip install "PASegLib[dicom]")')
    group.add_argument("--seg-category", metavar="CODE:SCHEME:MEANING", default=None,
                       help=f"the segments' category with --dicom-seg (default {DEFAULT_CATEGORY})")
    group.add_argument("--seg-type", metavar="CODE:SCHEME:MEANING", default=None,
                       help=f"the segments' type with --dicom-seg (default {DEFAULT_TYPE}; e.g. 4147007:SCT:Mass)")


def has_case_images(folder: Path) -> bool:
    """Whether ``folder`` holds a ``<case>_image.<ext>`` file (a dataset folder)."""
    return any(image_suffix(p) is not None and strip_image_suffix(p).endswith("_image") for p in folder.iterdir())


@dataclass
class DicomInput:
    """The DICOM series INPUT of one ``paseg predict``: the case handed to the prediction and what the SEG needs."""

    series: DicomSeries
    geometry: ImageGeometry
    cases: List[CaseFiles]
    category: CodedTerm = DEFAULT_CATEGORY
    segment_type: CodedTerm = DEFAULT_TYPE
    dicom_seg: bool = False
    folder: Any = field(default=None, repr=False)  # the TemporaryDirectory of the converted image

    def cleanup(self) -> None:
        """Remove the temporary image (also done when the object is garbage collected)."""
        if self.folder is not None:
            self.folder.cleanup()

    def write_segs(self, stage: Path, rows: List[Dict[str, Any]]) -> None:
        """With ``--dicom-seg``, write ``stage/<case>_seg.dcm`` for each predicted row and add its ``seg`` path."""
        if not self.dicom_seg:
            return
        from PASegLib.interop.dicom_seg import write_dicom_seg

        for row in rows:
            pred = read_image(Path(row["pred"]), role="prediction")
            mismatch = self.geometry.mismatch(pred.geometry)
            if mismatch:  # written on the series' own grid: a mismatch is a bug, not bad input
                raise RuntimeError(f"prediction {row['pred']} is not on the grid of the DICOM series ({mismatch})")
            files = next(c for c in self.cases if c.case_id == row["case"])
            names = _object_names(files, self.geometry)
            count = max(len(names), int(pred.array.max(initial=0)), 1)
            path = write_dicom_seg(stage / f"{row['case']}_seg.dcm", pred.array, self.geometry, self.series,
                                   segment_names=segment_labels(count, names), category=self.category,
                                   segment_type=self.segment_type)
            row["seg"] = str(path)


def _object_names(files: CaseFiles, geometry: ImageGeometry) -> List[str]:
    """The names of the case's annotated objects (``[]`` without an annotation)."""
    if not files.has_annotation:
        return []
    from PASegLib.annotation.markups import read_markups
    from PASegLib.annotation.sevenpoints import read_seven_points

    if files.markups is not None:
        return read_markups(files.markups, geometry).names()
    return read_seven_points(files.seven_points, geometry).names()


def _annotation(annotations: Optional[Path], case_id: str) -> Dict[str, Optional[Path]]:
    """``markups`` / ``seven_points`` of a DICOM case from ``--annotations`` (a file, or a folder holding
    ``<case>.mrk.json`` or ``<case>_7points.<ext>``)."""
    if annotations is None:
        return {}
    if not annotations.exists():
        raise DatasetError(f"annotations not found: {annotations}")
    if annotations.is_dir():
        markups = annotations / f"{case_id}.mrk.json"
        seven = [p for p in sorted(annotations.glob(f"{case_id}_7points.*")) if image_suffix(p)]
        if markups.is_file():
            return {"markups": markups}
        return {"seven_points": seven[0]} if seven else {}
    if annotations.name.lower().endswith(".mrk.json"):
        return {"markups": annotations}
    if image_suffix(annotations) is not None:
        return {"seven_points": annotations}
    raise DatasetError(f"{annotations}: not a .mrk.json or 7-points image file")


def dicom_input(args: argparse.Namespace) -> Optional[DicomInput]:
    """INPUT as a DICOM series folder, read and converted; ``None`` when INPUT is an image file or dataset folder.

    Raises:
        ValueError (``ImageReadError``, ``DatasetError``): ``--series`` or ``--dicom-seg`` without a DICOM series
            folder as INPUT, ``--seg-category`` / ``--seg-type`` without ``--dicom-seg`` or malformed, highdicom
            missing for ``--dicom-seg``, several series and no ``--series``, or a series that cannot be read (each
            message names the folder or file).
    """
    if (args.seg_category is not None or args.seg_type is not None) and not args.dicom_seg:
        raise ValueError("--seg-category and --seg-type apply only with --dicom-seg")
    category = CodedTerm.parse(args.seg_category, option="--seg-category") if args.seg_category else DEFAULT_CATEGORY
    segment_type = CodedTerm.parse(args.seg_type, option="--seg-type") if args.seg_type else DEFAULT_TYPE
    folder = Path(args.input)
    is_dicom = folder.is_dir() and not has_case_images(folder) and contains_dicom_series(folder)
    if not is_dicom:
        for option, given in (("--series", args.series is not None), ("--dicom-seg", args.dicom_seg)):
            if given:
                raise ValueError(f"{option} needs INPUT to be a folder holding a DICOM series; {folder} is "
                                 + ("a dataset folder or holds no DICOM series" if folder.is_dir() else
                                    "not a folder"))
        return None
    if args.dicom_seg:
        require_highdicom()  # before a long prediction, not after it
    series = select_dicom_series(folder, args.series)
    volume = read_dicom_series(series)
    check_intensities(volume, source=f"DICOM series {series.uid} in {folder}")
    case_id = series.case_id
    temporary = tempfile.TemporaryDirectory(prefix="paseg-dicom-")
    try:
        image = write_image(Path(temporary.name) / f"{case_id}_image.mha", volume.array, volume.geometry,
                            compress=False)
        case = CaseFiles(case_id, image, **_annotation(args.annotations, case_id))
    except BaseException:
        temporary.cleanup()
        raise
    return DicomInput(series, volume.geometry, [case], category, segment_type, bool(args.dicom_seg), temporary)
