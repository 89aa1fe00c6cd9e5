"""Seven-point annotations: one foreground point inside an object, six background points around it.

An object is annotated with a foreground point ``F`` near its centre and one background point beyond each of
its six sides. Sides are named anatomically as a radiologist clicks them — ``R``/``L`` (right/left),
``A``/``P`` (anterior/posterior), ``I``/``S`` (inferior/superior) — and each side is tied to one **index
axis** of the image (and a direction along it) by :func:`axis_sides`, so oblique images work: the box that the
background points span, and the checks below, live in the image's index space, as in the official PA-Seg.

Points are stored in world millimetres, LPS. Validation against an image
(:func:`PASegLib.annotation.validation.validate_case`) checks:
wrong counts, points outside the image, two points in the same voxel, a labelled side point that is not
beyond the foreground point on its side, and background points that do not enclose the foreground point on
every index axis. Overlapping boxes of two objects are legal and produce a warning.

Other annotation kinds (``single_point``, ``extreme_points``, ``box``, ``dense``) use the same
:class:`ObjectAnnotation` with ``kind`` set; their points live in ``marks`` (label → LPS mm) and their
labels and click counts are defined in :mod:`PASegLib.annotation.kinds`, their image checks and boxes in
:mod:`PASegLib.annotation.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from PASegLib.annotation.kinds import ANNOTATION_KINDS, FOREGROUND, SIDES, get_kind, kind_names
from PASegLib.image.geometry import ImageGeometry, lps_to_ras
from PASegLib.utils.checks import short_repr


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
        axes: ``box`` only: the box's orientation, a ``(3, 3)`` orthonormal matrix whose columns are the box's
            edge directions in LPS (e.g. an oblique image's index axes, ``geometry.direction_matrix``, so that its
            voxel box is tight); ``lo`` / ``hi`` are then two opposite corners along those edges. ``None``: the
            box is axis-aligned in LPS (``lo`` / ``hi`` any two opposite corners). An axis-aligned frame (a signed
            permutation of the identity) is stored as ``None``, with ``lo`` / ``hi`` its smallest and largest
            corner; any other is made exactly orthonormal (:func:`box_axes`).
    """

    name: str
    foreground: Optional[np.ndarray] = None
    background: Dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "seven_points"
    marks: Dict[str, np.ndarray] = field(default_factory=dict)
    label_file: Optional[str] = None
    axes: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.axes is not None and self.kind != "box":
            raise AnnotationError(f"object {self.name!r} ({self.kind}): only a box has an orientation (axes), got "
                                  f"{short_repr(self.axes, 80)}")
        if self.kind != "seven_points":
            check_object_points(self)
            return
        if self.foreground is None:
            raise AnnotationError(f"object {self.name!r}: a seven-point object needs its foreground point F")
        self.foreground = as_point(self.foreground, f"object {self.name!r} foreground point")
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
        self.background = {s: as_point(self.background[s], f"object {self.name!r} point {s}") for s in SIDES}

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


def as_point(value: Sequence[float], what: str) -> np.ndarray:
    """``value`` as a float ``(3,)`` point; :class:`AnnotationError` naming ``what`` when it is not 3 finite numbers."""
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


def check_object_points(obj: ObjectAnnotation) -> None:
    """Counts and labels of a non-seven-point object (no image needed); normalises points to float ``(3,)``."""
    from PASegLib.annotation.model import AnnotationError

    where = f"object {obj.name!r}"
    if obj.kind not in ANNOTATION_KINDS:
        raise AnnotationError(f"{where}: unknown annotation kind {obj.kind!r}; kinds are {', '.join(kind_names())}")
    kind = get_kind(obj.kind)
    if obj.kind == "single_point":
        if obj.foreground is None:
            raise AnnotationError(f"{where} (single point): the point F inside the object is missing")
        obj.foreground = as_point(obj.foreground, f"{where} point F")
        unknown = sorted(set(obj.background) - {"B"})
        if unknown or len(obj.background) > 1:
            raise AnnotationError(f"{where} (single point): at most one background point B, got labels "
                                  f"{sorted(obj.background)}")
        obj.background = {k: as_point(v, f"{where} point {k}") for k, v in obj.background.items()}
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
        obj.marks = {k: as_point(obj.marks[k], f"{where} point {k}") for k in kind.labels}
    elif obj.marks:
        raise AnnotationError(f"{where} (single point): unexpected points {sorted(obj.marks)}")
    if obj.kind != "dense" and obj.label_file is not None:
        raise AnnotationError(f"{where}: only a dense object names a label file")
    if obj.kind == "box" and obj.axes is not None:
        obj.axes = box_axes(obj.axes, f"{where} (box) axes")
        if is_axis_aligned(obj.axes):  # axis-aligned: its smallest and largest corner
            corners = box_corners(obj.marks["lo"], obj.marks["hi"], obj.axes)
            obj.marks, obj.axes = {"lo": corners.min(axis=0), "hi": corners.max(axis=0)}, None


#: How far (max absolute entry of ``AᵀA − I``) box axes may be from orthonormal (a file's rounded digits).
AXES_TOLERANCE = 1e-4


def box_axes(value: Any, what: str) -> np.ndarray:
    """``value`` as box axes: a ``(3, 3)`` float matrix with orthonormal columns (LPS), made exactly orthonormal
    (the nearest rotation or reflection); :class:`AnnotationError` naming ``what`` and the value when it is not 9
    finite numbers or its columns are not orthonormal within :data:`AXES_TOLERANCE`."""
    try:
        axes = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{what} must be a 3×3 matrix of numbers, got {short_repr(value, 120)}") from None
    if axes.size != 9 or not np.all(np.isfinite(axes)):
        raise AnnotationError(f"{what} must be a 3×3 matrix of 9 finite numbers, got {short_repr(value, 120)}")
    axes = axes.reshape(3, 3)
    error = float(np.abs(axes.T @ axes - np.eye(3)).max())
    if error > AXES_TOLERANCE:
        raise AnnotationError(f"{what} must have orthonormal columns (unit length, at right angles), got "
                              f"{np.round(axes, 6).tolist()} (off by {error:.2g})")
    if error <= 1e-12:
        return axes.copy()
    u, _, vt = np.linalg.svd(axes)
    return u @ vt


def box_corners(lo: np.ndarray, hi: np.ndarray, axes: Optional[np.ndarray] = None) -> np.ndarray:
    """The 8 LPS corners ``(8, 3)`` of the box with opposite corners ``lo`` and ``hi`` (LPS mm) whose edges run
    along the columns of ``axes`` (``None``: the LPS axes). Order: ``[x, y, z]`` for x, y, z in (lo, hi) along the
    box's own axes."""
    frame = np.eye(3) if axes is None else np.asarray(axes, dtype=np.float64)
    a, b = frame.T @ np.asarray(lo, dtype=np.float64), frame.T @ np.asarray(hi, dtype=np.float64)
    local = np.array([[x, y, z] for x in (a[0], b[0]) for y in (a[1], b[1]) for z in (a[2], b[2])])
    return local @ frame.T


def is_axis_aligned(axes: np.ndarray) -> bool:
    """Whether each column of the ``(3, 3)`` ``axes`` is ± one LPS axis (a box along them is axis-aligned)."""
    return bool(np.allclose(np.sort(np.abs(axes), axis=0), [[0, 0, 0], [0, 0, 0], [1, 1, 1]], atol=1e-9))


def clicks_of(obj: ObjectAnnotation) -> int:
    """Clicks the object took (the annotation-time proxy): its placed points; a box 2; a dense label 0."""
    return 0 if obj.kind == "dense" else len(obj.points())
