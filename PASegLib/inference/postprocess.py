"""From a foreground probability to a label map: threshold, object indices, box restriction, largest component.

:func:`labels_from_probability` is the last stage of :meth:`PASegLib.inference.predictor.Predictor.predict` (and is
re-exported by :mod:`PASegLib.inference.predictor`). Arrays are ``[i, j, k]`` (ITK index order) on an
:class:`~PASegLib.image.geometry.ImageGeometry`; clicks are LPS mm. numpy/scipy only (no torch).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from PASegLib.annotation.model import CaseAnnotation
from PASegLib.annotation.validation import object_box
from PASegLib.image.geometry import ImageGeometry

__all__ = ["check_label_options", "check_threshold", "labels_from_probability", "largest_component_mask"]


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float; ``ValueError`` unless it is a number in ``(0, 1)``."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    return float(threshold)


def check_label_options(threshold: float, annotation: Optional[CaseAnnotation], restrict_to_box: bool) -> float:
    """Check the options of :func:`labels_from_probability` before any work; returns the threshold."""
    if restrict_to_box and annotation is None:
        raise ValueError("restrict_to_box needs an annotation (the objects' seven clicks); none was given")
    if restrict_to_box and annotation is not None:
        boxless = [o.name for o in annotation.objects if o.kind in ("single_point", "dense")]
        if boxless:
            raise ValueError(f"restrict_to_box needs a box per object; {boxless[0]!r} is a "
                             f"{annotation.objects[[o.name for o in annotation.objects].index(boxless[0])].kind} "
                             "annotation, which has none (predict without restricting to boxes)")
    if annotation is not None and not 1 <= len(annotation.objects) <= 255:
        raise ValueError(f"the annotation must hold 1 to 255 objects for a uint8 label map, got "
                         f"{len(annotation.objects)}")
    return check_threshold(threshold)


def largest_component_mask(mask: np.ndarray) -> np.ndarray:
    """Largest 26-connected component of a boolean ``mask`` (empty stays empty; ties: lowest label)."""
    from scipy import ndimage

    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def labels_from_probability(probability: np.ndarray, geometry: ImageGeometry, *,
                            annotation: Optional[CaseAnnotation] = None, restrict_to_box: bool = False,
                            largest_component: bool = False, threshold: float = 0.5) -> np.ndarray:
    """Label map ``uint8 [I, J, K]`` from a foreground probability on ``geometry``'s grid.

    Rule, applied in this order:

    1. foreground = ``probability > threshold`` (strict, like the argmax of a 2-class softmax at 0.5);
    2. without ``annotation``: every foreground voxel is 1;
    3. with ``annotation`` (objects ``1 … n`` in annotation order, boxes from
       :func:`~PASegLib.annotation.validation.object_box` on ``geometry``, inclusive voxel indices): a foreground voxel
       inside one or more boxes gets the index of the *first* object whose box contains it; a foreground voxel
       outside every box is 0 when ``restrict_to_box``, else it gets the index of the object whose box is
       nearest in mm (Euclidean distance from the voxel centre to the box, with ``geometry.spacing``; ties →
       the first object);
    4. ``largest_component``: per label value (overall when there is no annotation), only its largest
       26-connected component is kept.

    Args:
        probability: float ``[I, J, K]`` in ``[0, 1]`` with ``(I, J, K) = geometry.shape``.
        geometry: the grid of ``probability`` (the annotation's points are LPS mm on it).
        annotation: optional clicks of the objects.
        restrict_to_box: zero every voxel outside all object boxes (needs ``annotation``).
        largest_component: keep the largest connected component per object (overall without annotation).
        threshold: foreground threshold in ``(0, 1)``.

    Raises:
        ValueError: shape mismatch, a threshold outside ``(0, 1)``, ``restrict_to_box`` without an annotation,
            an annotation without objects, or more than 255 objects.
    """
    prob = np.asarray(probability)
    if prob.ndim != 3 or tuple(prob.shape) != geometry.shape:
        raise ValueError(f"probability shape {prob.shape} does not match geometry shape {geometry.shape}")
    foreground = prob > check_label_options(threshold, annotation, restrict_to_box)
    if annotation is None:
        if largest_component:
            foreground = largest_component_mask(foreground)
        return foreground.astype(np.uint8)
    n_objects = len(annotation.objects)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    boxes = [object_box(obj, geometry) for obj in annotation.objects]
    for index, (lo, hi) in reversed(list(enumerate(boxes, start=1))):  # reversed: the first object wins
        box = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
        labels[box] = np.where(foreground[box], index, labels[box])
    outside = foreground & (labels == 0)
    if not restrict_to_box and outside.any():
        points = np.argwhere(outside)
        spacing = np.asarray(geometry.spacing, dtype=np.float64)
        distances = np.stack([
            np.linalg.norm(np.maximum(np.maximum(lo - points, points - hi), 0) * spacing, axis=1) for lo, hi in boxes
        ])
        labels[tuple(points.T)] = (np.argmin(distances, axis=0) + 1).astype(np.uint8)
    if largest_component:
        for index in range(1, n_objects + 1):
            mask = labels == index
            if mask.any():
                labels[mask & ~largest_component_mask(mask)] = 0
    return labels
