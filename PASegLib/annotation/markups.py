"""The markup fields of the annotation kinds (:mod:`PASegLib.markups_io` reads and writes the files): the kind a
markup holds (``pasegKind``; a Slicer ROI is a box) and the LPS box of a Slicer ROI markup."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..annotations import AnnotationError
from ..checks import short_repr
from ..geometry import lps_to_ras
from .kinds import kind_names

__all__ = ["markup_kind", "roi_box"]


def markup_kind(markup: Dict[str, Any], name: str, source: str) -> str:
    kind = markup.get("pasegKind", "box" if markup.get("type") == "ROI" else "seven_points")
    if kind not in kind_names():
        raise AnnotationError(f"{source}: markup {name!r} has unknown pasegKind {short_repr(kind, 60)}; kinds are "
                              f"{', '.join(kind_names())}")
    if markup.get("type") == "ROI" and kind != "box":
        raise AnnotationError(f"{source}: markup {name!r}: a {markup.get('type', 'Fiducial')} markup cannot hold "
                              f"kind {kind!r} (a box is an ROI markup or a fiducial with corners lo/hi)")
    return kind



def roi_box(markup: Dict[str, Any], name: str, cs: str, scale: float, source: str) -> Dict[str, np.ndarray]:
    """LPS ``lo``/``hi`` of the LPS box enclosing a Slicer ROI's 8 corners."""
    try:
        center = np.asarray(markup["center"], dtype=np.float64) * scale
        size = np.asarray(markup["size"], dtype=np.float64) * scale
        axes = np.asarray(markup.get("orientation", np.eye(3).ravel()), dtype=np.float64).reshape(3, 3)
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(f"{source}: ROI markup {name!r} needs numeric 'center' (3), 'size' (3) and "
                              "'orientation' (9)") from None
    if center.shape != (3,) or size.shape != (3,) or not np.all(np.isfinite(np.r_[center, size, axes.ravel()])):
        raise AnnotationError(f"{source}: ROI markup {name!r} has a malformed center/size/orientation")
    if np.any(size <= 0):
        raise AnnotationError(f"{source}: ROI markup {name!r} has size {size.tolist()}; every side must be > 0")
    corners = np.array([center + axes @ (np.array([x, y, z]) * size / 2.0)
                        for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    if cs == "RAS":
        corners = lps_to_ras(corners)
    return {"lo": corners.min(axis=0), "hi": corners.max(axis=0)}
