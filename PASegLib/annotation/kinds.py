"""Annotation kinds: what a radiologist gives per object, and how PASeg checks it.

Pure data: every kind is an :class:`AnnotationKind` in the :data:`ANNOTATION_KINDS` registry; an
:class:`~PASegLib.annotation.model.ObjectAnnotation` names its kind in ``kind``. Points are LPS millimetres.

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

"Sides" are tied to index axes by :func:`~PASegLib.annotation.model.side_axis`, so the checks live in the image's
index space, as for seven points. A ``dense`` object makes its case densely labelled: it must be the case's
only object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from PASegLib.utils.registry import Registry

__all__ = ["ANNOTATION_KINDS", "AXIS_NAMES", "BOXED_KINDS", "FOREGROUND", "POINT_LABELS", "SIDES", "SIDE_NAMES",
           "AnnotationKind", "get_kind", "kind_names"]

#: The foreground click of a seven-point object (inside the object).
FOREGROUND = "F"
#: Background sides in the order R, L, A, P, I, S (right, left, anterior, posterior, inferior, superior).
SIDES: Tuple[str, ...] = ("R", "L", "A", "P", "I", "S")
SIDE_NAMES = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "I": "inferior", "S": "superior"}
#: The seven points of a seven-point object, in placement order.
POINT_LABELS: Tuple[str, ...] = (FOREGROUND,) + SIDES
#: Names of the index axes ``i, j, k``.
AXIS_NAMES = ("i", "j", "k")
#: The kinds whose clicks span a box holding the object (outside it is background).
BOXED_KINDS: Tuple[str, ...] = ("seven_points", "extreme_points", "box")


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
    "seven_points", "seven points (PA-Seg)", POINT_LABELS,
    prompts={"F": "a point inside the object, near its centre",
             **{s: f"a background point just beyond the object's {w} side" for s, w in SIDE_NAMES.items()}},
    clicks=7, pseudo_label="geodesic"))
_register(AnnotationKind(
    "extreme_points", "extreme points", SIDES,
    prompts={s: f"the object's outermost point towards the patient's {w}" for s, w in SIDE_NAMES.items()},
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


