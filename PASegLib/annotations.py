"""Seven-point annotations: one foreground point inside an object, six background points around it.

An object is annotated with a foreground point ``F`` near its centre and one background point beyond each of
its six sides. Sides are named anatomically as a radiologist clicks them — ``R``/``L`` (right/left),
``A``/``P`` (anterior/posterior), ``I``/``S`` (inferior/superior) — and each side is tied to one **index
axis** of the image (and a direction along it) by :func:`axis_sides`, so oblique images work: the box that the
background points span, and the checks below, live in the image's index space, as in the official PA-Seg.

Points are stored in world millimetres, LPS. Validation against an image (:func:`validate_case`) checks:
wrong counts, points outside the image, two points in the same voxel, a labelled side point that is not
beyond the foreground point on its side, and background points that do not enclose the foreground point on
every index axis. Overlapping boxes of two objects are legal and produce a warning.

Other annotation kinds (issue 13: ``single_point``, ``extreme_points``, ``box``, ``dense``) use the same
:class:`ObjectAnnotation` with ``kind`` set; their points live in ``marks`` (label → LPS mm) and their
validation, boxes and click counts are defined in :mod:`PASegLib.annotation.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .geometry import ImageGeometry, lps_to_ras

FOREGROUND = "F"
#: Background sides in the order R, L, A, P, I, S.
SIDES: Tuple[str, ...] = ("R", "L", "A", "P", "I", "S")
SIDE_NAMES = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "I": "inferior", "S": "superior"}
_SIDE_RAS = {
    "R": (1.0, 0.0, 0.0), "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
    "I": (0.0, 0.0, -1.0), "S": (0.0, 0.0, 1.0),
}  # fmt: skip
AXIS_NAMES = ("i", "j", "k")


class AnnotationError(ValueError):
    """An annotation is invalid; the message names the object, the point and what is wrong."""


@dataclass
class ObjectAnnotation:
    """One annotated object.

    Attributes:
        name: display name, e.g. ``"tumor 1"``.
        foreground: LPS position (mm) of the foreground click, shape ``(3,)``.
        background: side (``"R"``, ``"L"``, ``"A"``, ``"P"``, ``"I"``, ``"S"``) → LPS position (mm), shape ``(3,)``;
            for ``single_point`` optionally ``{"B": point}``, the one background click of PSCV.
        kind: the annotation kind (:data:`PASegLib.annotation.kinds.ANNOTATION_KINDS`), ``"seven_points"`` default.
        marks: the points of the other kinds, label → LPS (mm): ``extreme_points`` the six sides (the outermost
            object voxel towards each side), ``box`` two opposite corners ``"lo"`` / ``"hi"``.
        label_file: ``dense`` only: the dense label file (relative to the annotation file's folder); ``None``
            = the case's ``<case>_label`` file.
    """

    name: str
    foreground: Optional[np.ndarray] = None
    background: Dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "seven_points"
    marks: Dict[str, np.ndarray] = field(default_factory=dict)
    label_file: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind != "seven_points":
            from .annotation.kinds import check_object_points

            check_object_points(self)
            return
        if self.foreground is None:
            raise AnnotationError(f"object {self.name!r}: a seven-point object needs its foreground point F")
        self.foreground = _as_point(self.foreground, f"object {self.name!r} foreground point")
        unknown = sorted(set(self.background) - set(SIDES))
        if unknown:
            raise AnnotationError(
                f"object {self.name!r}: unknown background side(s) {unknown}; sides are {', '.join(SIDES)}"
            )
        missing = [s for s in SIDES if s not in self.background]
        if missing:
            raise AnnotationError(
                f"object {self.name!r}: expected 6 background points (one per side R, L, A, P, I, S), "
                f"got {len(self.background)}; missing {', '.join(missing)}"
            )
        self.background = {s: _as_point(self.background[s], f"object {self.name!r} point {s}") for s in SIDES}

    def points(self) -> Dict[str, np.ndarray]:
        """All placed points, label → LPS (mm): seven points foreground first; other kinds their own labels
        (:mod:`PASegLib.annotation.kinds`); a dense object has none."""
        fg = {FOREGROUND: self.foreground} if self.foreground is not None else {}
        return {**fg, **self.background, **self.marks}

    def background_array(self) -> np.ndarray:
        """Background points as an array ``(6, 3)`` in :data:`SIDES` order (LPS, mm)."""
        return np.stack([self.background[s] for s in SIDES])


@dataclass
class CaseAnnotation:
    """All annotated objects of one image."""

    objects: List[ObjectAnnotation] = field(default_factory=list)

    def names(self) -> List[str]:
        return [o.name for o in self.objects]


def _as_point(value: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise AnnotationError(f"{what} must be 3 finite coordinates, got {value!r}")
    return arr


# -- sides ↔ index axes ----------------------------------------------------------------------------------------
def axis_sides(geometry: ImageGeometry) -> List[Tuple[str, str]]:
    """For each index axis ``i, j, k``: the sides ``(towards -index, towards +index)``.

    Each index axis is matched to the anatomical axis (R–L, A–P, I–S) it is most aligned with; the matching
    is a permutation (Hungarian assignment on ``|direction|``), so even a 45° oblique image gets three
    distinct axes. Example: an identity-direction LPS image gives ``[("R", "L"), ("A", "P"), ("I", "S")]``
    because index ``i`` grows towards the patient's left.
    """
    from scipy.optimize import linear_sum_assignment

    ras_axes = lps_to_ras(geometry.direction_matrix.T)  # row a: index axis a in RAS
    rows, cols = linear_sum_assignment(-np.abs(ras_axes))
    pairs = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}  # (negative RAS direction, positive)
    result: List[Tuple[str, str]] = [("", "")] * 3
    for axis, anat in zip(rows, cols):
        neg, pos = pairs[int(anat)]
        result[int(axis)] = (neg, pos) if ras_axes[axis, anat] > 0 else (pos, neg)
    return result


def side_axis(geometry: ImageGeometry) -> Dict[str, Tuple[int, int]]:
    """Side → ``(index axis, sign)``: e.g. ``{"L": (0, +1), "R": (0, -1), …}`` for an LPS-aligned image."""
    out: Dict[str, Tuple[int, int]] = {}
    for axis, (neg, pos) in enumerate(axis_sides(geometry)):
        out[neg] = (axis, -1)
        out[pos] = (axis, +1)
    return out


def assign_sides(foreground: np.ndarray, background: np.ndarray, geometry: ImageGeometry) -> Dict[str, np.ndarray]:
    """Label six unlabelled background points (``(6, 3)``, LPS mm) with sides.

    Used for formats that do not store sides (the official ``*_7points`` label maps). Each side gets the
    point that lies farthest beyond the foreground point in that side's index direction (an optimal one-to-one
    assignment), so a valid annotation is always labelled consistently.
    """
    bg = np.asarray(background, dtype=np.float64)
    if bg.shape != (6, 3):
        raise AnnotationError(f"expected 6 background points, got {bg.shape[0] if bg.ndim == 2 else bg.shape}")
    return dict(_assign_subset(np.asarray(foreground, dtype=np.float64), list(bg), list(SIDES), geometry))


# -- boxes and validation -----------------------------------------------------------------------------------
def object_box(obj: ObjectAnnotation, geometry: ImageGeometry) -> Tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel box ``(lo, hi)`` (each ``(3,)`` int, ``[i, j, k]``) spanned by the background points.

    Voxels outside the box are background. The box is clipped to the image.
    """
    if obj.kind != "seven_points":
        from .annotation.kinds import kind_box

        return kind_box(obj, geometry)
    idx = geometry.world_to_voxel(obj.background_array())
    lo = np.clip(idx.min(axis=0), 0, np.asarray(geometry.shape) - 1)
    hi = np.clip(idx.max(axis=0), 0, np.asarray(geometry.shape) - 1)
    return lo, hi


def validate_object(obj: ObjectAnnotation, geometry: ImageGeometry) -> None:
    """Raise :class:`AnnotationError` when ``obj`` is not a valid annotation of its kind on ``geometry``."""
    if obj.kind != "seven_points":
        from .annotation.kinds import validate_kind_object

        validate_kind_object(obj, geometry)
        return
    where = f"object {obj.name!r}"
    points = obj.points()
    voxels: Dict[str, np.ndarray] = {}
    for label, point in points.items():
        index = geometry.world_to_index(point)
        if not geometry.contains_index(index):
            raise AnnotationError(
                f"{where}: point {label} at LPS {np.round(point, 2).tolist()} mm is outside the image "
                f"(voxel index {np.round(index, 1).tolist()}, image shape {list(geometry.shape)})"
            )
        voxels[label] = np.rint(index).astype(int)
    labels = list(voxels)
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            if np.array_equal(voxels[labels[a]], voxels[labels[b]]):
                raise AnnotationError(
                    f"{where}: points {labels[a]} and {labels[b]} are in the same voxel "
                    f"{voxels[labels[a]].tolist()}; each point must be placed separately"
                )
    fg = voxels[FOREGROUND]
    for side, (axis, sign) in side_axis(geometry).items():
        if sign * (voxels[side][axis] - fg[axis]) <= 0:
            raise AnnotationError(
                f"{where}: the {side} point is not {SIDE_NAMES[side]} of the foreground point along index axis "
                f"{AXIS_NAMES[axis]} ({side} at {voxels[side][axis]}, F at {fg[axis]}); place it outside "
                f"the object on its {SIDE_NAMES[side]} side"
            )
    bg = np.stack([voxels[s] for s in SIDES])
    for axis in range(3):
        lo, hi = bg[:, axis].min(), bg[:, axis].max()
        if not lo < fg[axis] < hi:
            raise AnnotationError(
                f"{where}: background points do not enclose the foreground point along index axis "
                f"{AXIS_NAMES[axis]} (F at {fg[axis]}, background spans {lo}..{hi})"
            )


def validate_case(case: CaseAnnotation, geometry: ImageGeometry) -> List[str]:
    """Validate every object of ``case``; return warnings (overlapping boxes), raise on errors."""
    if not case.objects:
        raise AnnotationError("the annotation holds no object; annotate at least one object (7 points or another kind)")
    names = case.names()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AnnotationError(f"object names must be unique, repeated: {', '.join(dupes)}")
    for obj in case.objects:
        validate_object(obj, geometry)
    warnings: List[str] = []
    from .annotation.kinds import check_case_kinds

    check_case_kinds(case)
    boxes = [object_box(o, geometry) for o in case.objects if o.kind != "dense"]
    case_objects = [o for o in case.objects if o.kind != "dense"]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (lo_a, hi_a), (lo_b, hi_b) = boxes[a], boxes[b]
            if np.all(np.maximum(lo_a, lo_b) <= np.minimum(hi_a, hi_b)):
                warnings.append(
                    f"boxes of {case_objects[a].name!r} and {case_objects[b].name!r} overlap; "
                    "only voxels outside every box are background"
                )
    return warnings


def make_object(
    name: str,
    *,
    foreground: Sequence[Sequence[float]],
    background: Sequence[Sequence[float]],
    geometry: ImageGeometry,
    sides: Optional[Sequence[Optional[str]]] = None,
) -> ObjectAnnotation:
    """Build an object from point lists, with count checks and automatic side labels.

    Args:
        name: object name.
        foreground: list of foreground points (LPS mm); exactly one is allowed.
        background: list of background points (LPS mm); exactly six are allowed.
        geometry: image geometry used to label sides that are not given.
        sides: optional side label per background point (``None`` entries are assigned automatically).
    """
    fg = [np.asarray(p, dtype=np.float64) for p in foreground]
    bg = [np.asarray(p, dtype=np.float64) for p in background]
    if len(fg) != 1:
        raise AnnotationError(f"object {name!r}: expected 1 foreground point, got {len(fg)}")
    if len(bg) != 6:
        raise AnnotationError(f"object {name!r}: expected 6 background points, got {len(bg)}")
    given = list(sides) if sides is not None else [None] * 6
    if len(given) != 6:
        raise AnnotationError(f"object {name!r}: expected 6 side labels, got {len(given)}")
    for s in given:
        if s is not None and s not in SIDES:
            raise AnnotationError(f"object {name!r}: unknown side {s!r}; sides are {', '.join(SIDES)}")
    labelled = [s for s in given if s is not None]
    repeated = sorted({s for s in labelled if labelled.count(s) > 1})
    if repeated:
        raise AnnotationError(f"object {name!r}: side(s) {', '.join(repeated)} given to more than one point")
    if all(s is not None for s in given):
        return ObjectAnnotation(name, fg[0], {s: p for s, p in zip(given, bg)})
    if labelled:  # keep given labels; assign the remaining points among the remaining sides
        fixed = {s: p for s, p in zip(given, bg) if s is not None}
        rest = [p for s, p in zip(given, bg) if s is None]
        free = [s for s in SIDES if s not in fixed]
        sub = _assign_subset(fg[0], rest, free, geometry)
        return ObjectAnnotation(name, fg[0], {**fixed, **sub})
    return ObjectAnnotation(name, fg[0], assign_sides(fg[0], np.stack(bg), geometry))


def _assign_subset(
    foreground: np.ndarray, points: List[np.ndarray], sides: List[str], geometry: ImageGeometry
) -> Mapping[str, np.ndarray]:
    """Optimal one-to-one labelling: maximise the summed signed index offsets beyond ``foreground``."""
    from scipy.optimize import linear_sum_assignment

    offsets = geometry.world_to_index(np.stack(points)) - geometry.world_to_index(foreground)
    table = side_axis(geometry)
    score = np.array([[table[s][1] * off[table[s][0]] for s in sides] for off in offsets])
    rows, cols = linear_sum_assignment(-score)
    return {sides[c]: points[r] for r, c in zip(rows, cols)}
