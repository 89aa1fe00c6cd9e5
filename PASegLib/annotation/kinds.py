"""Annotation kinds: what a radiologist gives per object, and how PASeg checks it.

Every kind is an :class:`AnnotationKind` in the :data:`ANNOTATION_KINDS` registry; an
:class:`~PASegLib.annotations.ObjectAnnotation` names its kind in ``kind``. Points are LPS millimetres.

=================  ============================================================  ====================  ==========
kind               points (labels)                                               pseudo label          clicks
=================  ============================================================  ====================  ==========
``seven_points``   ``F`` inside; ``R L A P I S`` beyond each side (PA-Seg)       geodesic expansion    7
``extreme_points`` ``R L A P I S``: the object's outermost voxel towards each      random walker         6
                   side (Going to Extremes, 004)
``single_point``   ``F`` anywhere inside; optional ``B``: one background click   the clicked voxels    1 (+1)
                   (PSCV labels one voxel per class, 002)
``box``            ``lo`` / ``hi``: two opposite corners of a box holding the       random walker         2
                   object (a Slicer ROI node; mixed supervision, 003)
``dense``          none: the case's dense label (``<case>_label`` or                passes through        contours
                   ``label_file``)
=================  ============================================================  ====================  ==========

"Sides" are tied to index axes by :func:`~PASegLib.annotations.side_axis`, so the checks live in the image's
index space, as for seven points. A ``dense`` object makes its case densely labelled: it must be the case's
only object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Tuple

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from ..annotations import CaseAnnotation, ObjectAnnotation
    from ..geometry import ImageGeometry

__all__ = ["ANNOTATION_KINDS", "AnnotationKind", "check_case_kinds", "check_object_points", "kind_box",
           "kind_names", "validate_kind_object"]

SIDES = ("R", "L", "A", "P", "I", "S")
_SIDE_WORDS = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "I": "inferior", "S": "superior"}


@dataclass(frozen=True)
class AnnotationKind:
    """One annotation protocol.

    Attributes:
        name: registry name (stored in the markups file as ``pasegKind``).
        title: short human name.
        labels: required point labels, in placement order.
        optional: optional point labels (placed after the required ones).
        prompts: placement guidance per label (the Slicer module shows it).
        clicks: clicks per object (the annotation-time proxy of the protocols benchmark); ``dense``: 0 (its
            cost is one contour per slice, counted separately).
        pseudo_label: how training labels are made: ``"geodesic"``, ``"random_walker"``, ``"points"``,
            ``"dense"``.
        markup_type: the Slicer markup type that holds it (``"Fiducial"``; ``"ROI"`` for a box).
    """

    name: str
    title: str
    labels: Tuple[str, ...]
    optional: Tuple[str, ...] = ()
    prompts: Dict[str, str] = field(default_factory=dict)
    clicks: int = 0
    pseudo_label: str = "geodesic"
    markup_type: str = "Fiducial"


ANNOTATION_KINDS = Registry("annotation kind")
_ORDER: List[str] = []  # registration order (the registry lists names sorted)


def _register(kind: AnnotationKind) -> None:
    ANNOTATION_KINDS.register(kind.name)(kind)
    _ORDER.append(kind.name)


_register(AnnotationKind(
    "seven_points", "seven points (PA-Seg)", ("F",) + SIDES,
    prompts={"F": "a point inside the object, near its centre",
             **{s: f"a background point just beyond the object's {w} side" for s, w in _SIDE_WORDS.items()}},
    clicks=7, pseudo_label="geodesic"))
_register(AnnotationKind(
    "extreme_points", "extreme points", SIDES,
    prompts={s: f"the object's outermost point towards the patient's {w}" for s, w in _SIDE_WORDS.items()},
    clicks=6, pseudo_label="random_walker"))
_register(AnnotationKind(
    "single_point", "single point (PSCV)", ("F",), optional=("B",),
    prompts={"F": "one point anywhere inside the object", "B": "optional: one point on the background"},
    clicks=1, pseudo_label="points"))
_register(AnnotationKind(
    "box", "box", ("lo", "hi"),
    prompts={"lo": "one corner of a box holding the whole object", "hi": "the opposite corner"},
    clicks=2, pseudo_label="random_walker", markup_type="ROI"))
_register(AnnotationKind("dense", "dense label", (), clicks=0, pseudo_label="dense"))


def kind_names() -> List[str]:
    """The registered kinds, in registration order (seven points first)."""
    return list(_ORDER)


def get_kind(name: str) -> AnnotationKind:
    """The :class:`AnnotationKind` called ``name``; ``ValueError`` naming the known kinds otherwise."""
    if name not in ANNOTATION_KINDS:
        raise ValueError(f"unknown annotation kind {name!r}; kinds are {', '.join(kind_names())}")
    return ANNOTATION_KINDS.get(name)


def check_object_points(obj: ObjectAnnotation) -> None:
    """Counts and labels of a non-seven-point object (no image needed); normalises points to float ``(3,)``."""
    from ..annotations import AnnotationError, _as_point

    where = f"object {obj.name!r}"
    if obj.kind not in ANNOTATION_KINDS:
        raise AnnotationError(f"{where}: unknown annotation kind {obj.kind!r}; kinds are {', '.join(kind_names())}")
    kind = get_kind(obj.kind)
    if obj.kind == "single_point":
        if obj.foreground is None:
            raise AnnotationError(f"{where} (single point): the point F inside the object is missing")
        obj.foreground = _as_point(obj.foreground, f"{where} point F")
        unknown = sorted(set(obj.background) - {"B"})
        if unknown or len(obj.background) > 1:
            raise AnnotationError(f"{where} (single point): at most one background point B, got labels "
                                  f"{sorted(obj.background)}")
        obj.background = {k: _as_point(v, f"{where} point {k}") for k, v in obj.background.items()}
    else:
        if obj.foreground is not None or obj.background:
            raise AnnotationError(f"{where} ({kind.title}): holds foreground/background clicks; "
                                  f"its points are {', '.join(kind.labels) or 'none'}")
    if obj.kind != "single_point":
        missing = [lab for lab in kind.labels if lab not in obj.marks]
        extra = sorted(set(obj.marks) - set(kind.labels) - set(kind.optional))
        if missing or extra:
            raise AnnotationError(
                f"{where} ({kind.title}): expected points {', '.join(kind.labels) or 'none'}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unexpected {', '.join(extra)}" if extra else ""))
        obj.marks = {k: _as_point(obj.marks[k], f"{where} point {k}") for k in kind.labels}
    elif obj.marks:
        raise AnnotationError(f"{where} (single point): unexpected points {sorted(obj.marks)}")
    if obj.kind != "dense" and obj.label_file is not None:
        raise AnnotationError(f"{where}: only a dense object names a label file")


def _voxels(obj: ObjectAnnotation, geometry: ImageGeometry) -> Dict[str, np.ndarray]:
    from ..annotations import AnnotationError

    out = {}
    for label, point in obj.points().items():
        index = geometry.world_to_index(point)
        if not geometry.contains_index(index):
            raise AnnotationError(
                f"object {obj.name!r}: point {label} at LPS {np.round(point, 2).tolist()} mm is outside the image "
                f"(voxel index {np.round(index, 1).tolist()}, image shape {list(geometry.shape)})")
        out[label] = np.rint(index).astype(int)
    return out


def validate_kind_object(obj: ObjectAnnotation, geometry: ImageGeometry) -> None:
    """Raise :class:`~PASegLib.annotations.AnnotationError` when a non-seven-point ``obj`` does not fit
    ``geometry``: a point outside the image; single point: F and B in one voxel; extreme points: a side's point
    on the wrong half of the six points' extent along its axis (a click lands near the extreme, so another point
    may reach a little further; a swapped or misplaced side is caught), or less than 2 voxels of extent;
    box: less than 2 voxels wide on an axis."""
    from ..annotations import AXIS_NAMES, AnnotationError, side_axis

    where = f"object {obj.name!r}"
    if obj.kind == "box":  # a box's corners may lie beyond the image (it is clipped); it must overlap it
        corners = geometry.world_to_index(_box_corners(obj))
        shape = np.asarray(geometry.shape) - 1
        if np.any(corners.max(axis=0) < 0) or np.any(corners.min(axis=0) > shape):
            raise AnnotationError(f"{where}: the box lies outside the image (corners at voxel indices "
                                  f"{np.round(corners, 1).tolist()}, image shape {list(geometry.shape)})")
        vox = {}
    else:
        vox = _voxels(obj, geometry)
    if obj.kind == "single_point" and "B" in vox and np.array_equal(vox["F"], vox["B"]):
        raise AnnotationError(f"{where}: points F and B are in the same voxel {vox['F'].tolist()}")
    if obj.kind == "extreme_points":
        table = side_axis(geometry)
        for side in SIDES:
            axis, sign = table[side]
            along = [vox[s][axis] for s in SIDES]
            middle = (max(along) + min(along)) / 2.0
            if sign * (vox[side][axis] - middle) <= 0:  # clicks land near, not on, the extreme: only the half
                raise AnnotationError(
                    f"{where}: the extreme point {side} (index {AXIS_NAMES[axis]} = {vox[side][axis]}) is not on the "
                    f"object's {_SIDE_WORDS[side]} side: the six points span {AXIS_NAMES[axis]} = "
                    f"{min(along)}..{max(along)}; place {side} on the object's {_SIDE_WORDS[side]}-most boundary")
        lo, hi = kind_box(obj, geometry)
        if np.any(hi - lo < 1):
            raise AnnotationError(f"{where}: the extreme points span less than 2 voxels along index axis "
                                  f"{AXIS_NAMES[int(np.argmin(hi - lo))]}; the object is too thin to train from")
    if obj.kind in ("box", "extreme_points"):
        lo, hi = kind_box(obj, geometry)
        if np.all(lo == 0) and np.all(hi == np.asarray(geometry.shape) - 1):
            what = "the box spans" if obj.kind == "box" else "the extreme points span"
            raise AnnotationError(f"{where}: {what} the whole image (shape {list(geometry.shape)}): no voxel is left "
                                  "outside to learn the background from; annotate the object, not the image")
    if obj.kind == "box":
        lo, hi = kind_box(obj, geometry)
        if np.any(hi - lo < 2):
            raise AnnotationError(f"{where}: the box is less than 3 voxels wide along index axis "
                                  f"{AXIS_NAMES[int(np.argmin(hi - lo))]} ({lo.tolist()}..{hi.tolist()})")


def kind_box(obj: ObjectAnnotation, geometry: ImageGeometry) -> Tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel box ``(lo, hi)`` (``(3,)`` int, ``[i, j, k]``, clipped to the image) of a non-seven-point
    object: extreme points — their box (the object's exact extent); box — its corners (the 8 corners mapped to
    index space, so an oblique image gets the enclosing index box); single point — the F voxel; dense — the whole
    image (its extent comes from the label)."""
    shape = np.asarray(geometry.shape)
    if obj.kind == "dense":
        return np.zeros(3, dtype=int), shape - 1
    if obj.kind == "single_point":
        v = np.clip(geometry.world_to_voxel(obj.foreground), 0, shape - 1)
        return v, v.copy()
    pts = _box_corners(obj) if obj.kind == "box" else np.stack(list(obj.marks.values()))
    idx = geometry.world_to_voxel(pts)
    return np.clip(idx.min(axis=0), 0, shape - 1), np.clip(idx.max(axis=0), 0, shape - 1)


def _box_corners(obj: ObjectAnnotation) -> np.ndarray:
    """The 8 LPS corners ``(8, 3)`` of a box object's axis-aligned LPS box."""
    a, b = obj.marks["lo"], obj.marks["hi"]
    return np.array([[x, y, z] for x in (a[0], b[0]) for y in (a[1], b[1]) for z in (a[2], b[2])])


def check_case_kinds(case: CaseAnnotation) -> None:
    """A dense object must be the case's only object (its label covers the whole image)."""
    from ..annotations import AnnotationError

    dense = [o.name for o in case.objects if o.kind == "dense"]
    if dense and len(case.objects) > 1:
        raise AnnotationError(f"object {dense[0]!r} is a dense label, which covers the whole image: it must be the "
                              f"case's only object (the case also holds "
                              f"{', '.join(repr(o.name) for o in case.objects if o.kind != 'dense')})")


def clicks_of(obj: ObjectAnnotation) -> int:
    """Clicks the object took (the annotation-time proxy): its placed points; a box 2; a dense label 0."""
    return 0 if obj.kind == "dense" else len(obj.points())
