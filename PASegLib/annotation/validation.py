"""Annotations checked against an image, and the voxel box each object's clicks span.

:func:`validate_case` checks every object of a case on an image geometry (seven points: each point inside the
image, in its own voxel, beyond the foreground point on its side, the six enclosing it; the other kinds: see
:func:`validate_kind_object`) and returns warnings (overlapping boxes). :func:`object_box` is the inclusive voxel
box ``(lo, hi)`` (``[i, j, k]``) outside which every voxel is background. numpy only.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from PASegLib.annotation.kinds import AXIS_NAMES, FOREGROUND, SIDE_NAMES, SIDES
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation, box_corners, side_axis
from PASegLib.image.geometry import ImageGeometry

__all__ = ["check_case_kinds", "kind_box", "object_box", "validate_case", "validate_kind_object", "validate_object"]


def object_box(obj: ObjectAnnotation, geometry: ImageGeometry) -> Tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel box ``(lo, hi)`` (each ``(3,)`` int, ``[i, j, k]``) spanned by the background points.

    Voxels outside the box are background. The box is clipped to the image.
    """
    if obj.kind != "seven_points":
        return kind_box(obj, geometry)
    idx = geometry.world_to_voxel(obj.background_array())
    lo = np.clip(idx.min(axis=0), 0, np.asarray(geometry.shape) - 1)
    hi = np.clip(idx.max(axis=0), 0, np.asarray(geometry.shape) - 1)
    return lo, hi


def validate_object(obj: ObjectAnnotation, geometry: ImageGeometry) -> None:
    """Raise :class:`AnnotationError` when ``obj`` is not a valid annotation of its kind on ``geometry``."""
    if obj.kind != "seven_points":
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


def _voxels(obj: ObjectAnnotation, geometry: ImageGeometry) -> Dict[str, np.ndarray]:
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
    """Raise :class:`~PASegLib.annotation.model.AnnotationError` when a non-seven-point ``obj`` does not fit
    ``geometry``: a point outside the image; single point: F and B in one voxel; extreme points: a side's point
    on the wrong half of the six points' extent along its axis (a click lands near the extreme, so another point
    may reach a little further; a swapped or misplaced side is caught), or less than 2 voxels of extent;
    box: less than 2 voxels wide on an axis."""
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
                    f"object's {SIDE_NAMES[side]} side: the six points span {AXIS_NAMES[axis]} = "
                    f"{min(along)}..{max(along)}; place {side} on the object's {SIDE_NAMES[side]}-most boundary")
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
    object: extreme points — their box (the object's exact extent); box — its corners (the 8 corners, along the
    box's ``axes`` when it has them, mapped to index space: a box aligned with the image's index axes gets exactly
    its own voxel box, any other the enclosing index box); single point — the F voxel; dense — the whole
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
    """The 8 LPS corners ``(8, 3)`` of a box object: along its ``axes`` when it has them (an oriented box, e.g.
    aligned with an oblique image's index axes), else its axis-aligned LPS box."""
    return box_corners(obj.marks["lo"], obj.marks["hi"], obj.axes)


def check_case_kinds(case: CaseAnnotation) -> None:
    """A dense object must be the case's only object (its label covers the whole image)."""
    dense = [o.name for o in case.objects if o.kind == "dense"]
    if dense and len(case.objects) > 1:
        raise AnnotationError(f"object {dense[0]!r} is a dense label, which covers the whole image: it must be the "
                              f"case's only object (the case also holds "
                              f"{', '.join(repr(o.name) for o in case.objects if o.kind != 'dense')})")
