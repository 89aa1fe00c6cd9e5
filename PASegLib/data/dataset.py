"""Dataset folders: ``<case>_image.<ext>``, optional ``<case>_label.<ext>``, ``<case>.mrk.json`` and
``<case>_7points.<ext>`` (the official PA-Seg click format).

``<ext>`` is any format of :data:`~PASegLib.image.io.IMAGE_SUFFIXES` (``.nii.gz``, ``.nrrd``, ``.mha`` …).
Annotations may also live in a separate folder (``annotations_dir``), as written by
``paseg simulate-clicks --out DIR``. Every problem is reported with the file it concerns; what is only suspicious
(a click that disagrees with the case's label, overlapping boxes) is reported as a warning naming the case.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from PASegLib.annotation.kinds import FOREGROUND
from PASegLib.annotation.markups import read_markups
from PASegLib.annotation.model import CaseAnnotation
from PASegLib.annotation.sevenpoints import read_seven_points
from PASegLib.annotation.validation import validate_case
from PASegLib.image.io import (
    Volume,
    check_intensities,
    check_label_values,
    image_suffix,
    read_image,
    strip_image_suffix,
)
from PASegLib.utils.atomic import PathLike

ROLES = ("image", "label", "7points")


class DatasetError(ValueError):
    """A dataset folder or one of its files is not usable; the message names the file."""


@dataclass(frozen=True)
class CaseFiles:
    """Files of one case; ``None`` where absent."""

    case_id: str
    image: Path
    label: Optional[Path] = None
    markups: Optional[Path] = None
    seven_points: Optional[Path] = None

    @property
    def has_annotation(self) -> bool:
        return self.markups is not None or self.seven_points is not None


@dataclass
class Case:
    """A loaded case: image, optional label, optional (validated) annotation and its warnings."""

    case_id: str
    image: Volume
    label: Optional[Volume] = None
    annotation: Optional[CaseAnnotation] = None
    warnings: Optional[List[str]] = None
    annotation_path: Optional[Path] = None


def _split_role(path: Path) -> Optional[tuple]:
    stem = strip_image_suffix(path)
    for role in ROLES:
        if stem.endswith("_" + role) and len(stem) > len(role) + 1:
            return stem[: -len(role) - 1], role
    return None


def list_cases(folder: PathLike, *, annotations_dir: Optional[PathLike] = None) -> List[CaseFiles]:
    """List the cases of a dataset folder, sorted by case id.

    Raises:
        DatasetError: the folder is missing or holds no ``*_image.*`` file; a label, 7-point or markups file has
            no matching image; a case has two images (e.g. ``.nii.gz`` and ``.nrrd``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    found: dict = {}
    for path in sorted(root.iterdir()):
        if not path.is_file() or image_suffix(path) is None:
            continue
        split = _split_role(path)
        if split is None:
            continue
        case_id, role = split
        entry = found.setdefault(case_id, {})
        if role in entry:
            raise DatasetError(f"case {case_id!r} has two {role} files: {entry[role].name} and {path.name}")
        entry[role] = path
    markup_dirs = [root] + ([Path(annotations_dir)] if annotations_dir is not None else [])
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise DatasetError(f"annotations folder not found: {annotations_dir}")
    markups: dict = {}
    for directory in markup_dirs:
        for path in sorted(directory.glob("*.mrk.json")):
            markups[path.name[: -len(".mrk.json")]] = path  # a file in annotations_dir wins
    orphans = [f"{p.name} ({role})" for cid, e in found.items() if "image" not in e for role, p in e.items()]
    orphans += [p.name + " (annotation)" for cid, p in markups.items() if "image" not in found.get(cid, {})]
    if orphans:
        raise DatasetError(f"{root}: file(s) without a matching <case>_image file: {', '.join(sorted(orphans))}")
    cases = [
        CaseFiles(cid, e["image"], e.get("label"), markups.get(cid), e.get("7points"))
        for cid, e in sorted(found.items())
    ]
    if not cases:
        raise DatasetError(f"{root}: no <case>_image.<ext> file found (ext: .nii.gz, .nrrd, .mha, …)")
    return cases


def select_cases(cases: Sequence[CaseFiles], case_ids: Optional[Sequence[str]]) -> List[CaseFiles]:
    """Keep the cases named in ``case_ids`` (all when ``None``); unknown names raise :class:`DatasetError`."""
    if not case_ids:
        return list(cases)
    by_id = {c.case_id: c for c in cases}
    unknown = [c for c in case_ids if c not in by_id]
    if unknown:
        raise DatasetError(f"unknown case id(s): {', '.join(unknown)}")
    return [by_id[c] for c in case_ids]


def print_warning(case_id: str, message: str) -> None:
    """Default ``warn`` of :func:`load_case`: ``warning: <case>: <message>`` on stderr."""
    print(f"warning: {case_id}: {message}", file=sys.stderr)


def load_case(files: CaseFiles, *, load_label: bool = True, load_annotation: bool = True,
              warn: Optional[Callable[[str, str], None]] = print_warning) -> Case:
    """Read a case's image (checked for NaN/constant), label (checked: same geometry, non-negative integer values)
    and annotation (checked against the image, and against the label when both are loaded).

    Warnings (overlapping object boxes; a foreground click outside the labeled object or a background click
    on it) are returned in :attr:`Case.warnings` and passed to ``warn(case_id, message)`` (default: printed on
    stderr; ``None``: not reported).
    """
    image = read_image(files.image, role="image")
    check_intensities(image, source=str(files.image))
    label = None
    if load_label and files.label is not None:
        label = read_image(files.label, role="label")
        mismatch = image.geometry.mismatch(label.geometry)
        if mismatch:
            raise DatasetError(f"{files.label}: label geometry differs from {files.image.name} ({mismatch})")
        try:
            check_label_values(label, source=str(files.label))
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
    annotation, warnings = None, None
    if load_annotation and files.has_annotation:
        source = files.markups if files.markups is not None else files.seven_points
        try:
            if files.markups is not None:
                annotation = read_markups(files.markups, image.geometry)
            else:
                annotation = read_seven_points(files.seven_points, image.geometry)
            warnings = validate_case(annotation, image.geometry)
        except ValueError as exc:  # the readers name what is wrong with the file (AnnotationError); else a bug
            raise DatasetError(_named(source, str(exc))) from None
        if label is not None:
            warnings += click_label_warnings(annotation, label)
        for message in warnings if warn is not None else []:
            warn(files.case_id, message)
    return Case(files.case_id, image, label, annotation, warnings,
                source if load_annotation and files.has_annotation else None)


def _named(source: Path, message: str) -> str:
    """``message`` prefixed with ``source`` unless it already names it."""
    return message if str(source) in message else f"{source}: {message}"


def click_label_warnings(annotation: CaseAnnotation, label: Volume) -> List[str]:
    """What the label says against the clicks: a foreground click on a background voxel, a background click on
    an object voxel (label > 0), each naming the object, the point and its voxel ``(i, j, k)``."""
    out = []
    for obj in annotation.objects:
        if obj.kind not in ("seven_points", "single_point"):
            continue  # extreme points lie on the object's boundary, a box corner anywhere: nothing to check
        for name, point in obj.points().items():
            voxel = tuple(int(v) for v in label.geometry.world_to_voxel(point))
            value = label.array[voxel]
            if name == FOREGROUND and value == 0:
                out.append(f"object {obj.name!r}: the foreground click F at voxel {voxel} is outside the labeled "
                           "object (label 0 there)")
            elif name != FOREGROUND and value != 0:
                out.append(f"object {obj.name!r}: the background click {name} at voxel {voxel} is on the labeled "
                           f"object (label {value:g} there)")
    return out
