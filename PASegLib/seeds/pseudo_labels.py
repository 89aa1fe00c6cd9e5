"""Pseudo labels of every annotation kind behind one interface.

:func:`pseudo_label_map` turns a case's annotation into the partial label map that training reads — the same
contract as :func:`~PASegLib.seeds.expansion.expand_seeds`: uint8 ``[i, j, k]`` on the image's grid, 0
background, 1 foreground, 2 unlabeled. Each object's kind (:mod:`PASegLib.annotation.kinds`) picks its
generator:

* ``seven_points`` — geodesic seed expansion (:func:`~PASegLib.seeds.expansion.expand_seeds`); a case of seven
  points only gives exactly ``expand_seeds``' result, unless ``ExpansionConfig.fill="random_walker"`` grows the
  seeds over the click box (:func:`~PASegLib.seeds.seed_fill.fill_seeds`, an uncertain band left unlabelled);
* ``extreme_points`` — random walker seeded by the geodesic paths between opposite extreme points
  (:func:`~PASegLib.seeds.random_walker_labels.extreme_points_pseudo_label`), every voxel of the object's box labelled;
  a shell of ``RandomWalkerConfig.box_shell_mm`` (``extreme_tolerance_mm`` + the click error's margin) around the
  box is unlabeled (clicks land near the extent, so object voxels may lie just beyond the box);
* ``box`` — random walker from the box's core and its outside
  (:func:`~PASegLib.seeds.random_walker_labels.box_pseudo_label`); with ``RandomWalkerConfig.click_error_mm`` > 0 a
  shell of the click error's margin around the box is unlabeled;
* ``single_point`` — the clicked voxels: a ball of ``point_radius_mm`` around ``F`` (foreground) and ``B``
  (background); the rest unlabeled (PSCV trains from these and its contrastive variance loss);
* ``dense`` — the dense label passes through (every voxel labelled).

The random walker runs on the object's crop resampled to ``RandomWalkerConfig.working_spacing_mm`` (2 mm by
default: 0.1–0.3 s per la_heart object instead of 5–16 s at 0.625 mm; finer for objects less than 12 working
voxels across) and its probability is interpolated back.

Several objects: voxels outside every object's box are background when every object has a box that holds it
(seven points, extreme points, box), else unlabeled; inside a box the object's labels apply, and foreground of
any object wins over another's background. numpy/scipy/scikit-image; no torch.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from PASegLib.annotation.kinds import BOXED_KINDS
from PASegLib.annotation.model import CaseAnnotation, side_axis
from PASegLib.annotation.validation import object_box
from PASegLib.image.io import Volume
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds

__all__ = ["extreme_point_indices", "grown_box_mask", "pseudo_label_map", "to_grid", "working_grid"]

#: kinds whose box holds the whole object (voxels outside every box are background)


def extreme_point_indices(obj: Any, geometry: Any) -> np.ndarray:
    """The six extreme points of ``obj`` as int voxel indices ``(6, 3)``: rows 0/1 the two extremes along index
    axis i (towards −i, +i), rows 2/3 along j, rows 4/5 along k."""
    table = side_axis(geometry)
    rows = []
    for axis in range(3):
        for sign in (-1, +1):
            side = next(s for s, (a, g) in table.items() if a == axis and g == sign)
            rows.append(geometry.world_to_voxel(obj.marks[side]))
    return np.clip(np.asarray(rows, dtype=int), 0, np.asarray(geometry.shape) - 1)


def working_grid(geometry: Any, working_spacing_mm: Optional[float]) -> Any:
    """The grid of ``geometry``'s extent at about ``working_spacing_mm`` per axis, never finer than the image
    (``None``: ``geometry`` itself)."""
    from PASegLib.image.resample import resampled_geometry

    if working_spacing_mm is None:
        return geometry
    target = np.maximum(np.asarray(geometry.spacing, dtype=float), float(working_spacing_mm))
    grid = resampled_geometry(geometry, target)
    return geometry if tuple(grid.shape) == tuple(geometry.shape) else grid


def to_grid(array: np.ndarray, grid: Any, *, order: int) -> np.ndarray:
    """``array`` resampled to ``grid.shape`` (same extent; 0 nearest, 1 linear), unchanged when it has it."""
    from PASegLib.image.resample import resample_to_shape

    arr = np.asarray(array)
    return arr if tuple(arr.shape) == tuple(grid.shape) else resample_to_shape(arr, grid.shape, order=order)


def _random_walker_crop(image: Volume, obj: Any, lo: np.ndarray, hi: np.ndarray, rw: Any):
    """The random walker of one extreme-point or box object on its crop only (the box grown by ``rw.margin_mm``)
    resampled to ``rw.working_spacing_mm``: ``(crop slices, foreground probability on the crop at the image's
    resolution)``. Only the crop is read and converted (a preview of a large image stays small)."""
    from PASegLib.image.resample import resample_to_shape
    from PASegLib.seeds.random_walker_labels import box_pseudo_label, extreme_points_pseudo_label

    geometry = image.geometry
    spacing = np.asarray(geometry.spacing, dtype=float)
    extra = rw.click_margin_mm if obj.kind == "extreme_points" else 0.0  # its seeds' box grows with the click error
    grow = np.ceil((rw.margin_mm + extra) / spacing).astype(int) + 1
    c_lo = np.maximum(np.asarray(lo) - grow, 0)
    c_hi = np.minimum(np.asarray(hi) + grow, np.asarray(geometry.shape) - 1)
    crop = tuple(slice(int(a), int(b) + 1) for a, b in zip(c_lo, c_hi))
    native = np.asarray(image.array[crop], dtype=np.float32)
    n_native = np.asarray(native.shape)
    # the working grid: rw.working_spacing_mm, but at least 12 voxels across the object's smallest extent (a small
    # tumour keeps its detail), and never finer than the image
    extent_mm = (np.asarray(hi) - np.asarray(lo) + 1) * spacing
    working = spacing if rw.working_spacing_mm is None else \
        np.maximum(spacing, min(rw.working_spacing_mm, float(extent_mm.min()) / 12.0))
    n_small = np.maximum(1, np.round(n_native * spacing / working)).astype(int)
    small = native if np.array_equal(n_small, n_native) else resample_to_shape(native, n_small, order=1)
    scale = n_small / n_native  # scipy zoom with grid_mode: voxel edges stay put

    def to_small(index):
        return np.clip(np.rint((np.asarray(index) - c_lo + 0.5) * scale - 0.5), 0, n_small - 1).astype(int)

    small_spacing = spacing * n_native / n_small
    if obj.kind == "extreme_points":
        _, prob = extreme_points_pseudo_label(small, to_small(extreme_point_indices(obj, geometry)),
                                              spacing=small_spacing, config=rw, return_probability=True)
    else:  # box
        _, prob = box_pseudo_label(small, to_small(lo), to_small(hi), spacing=small_spacing, config=rw,
                                   return_probability=True)
    if not np.array_equal(n_small, n_native):
        prob = resample_to_shape(prob, n_native, order=1)
    return crop, prob


def _ball(shape, center: np.ndarray, radius_mm: float, spacing: np.ndarray):
    """Index slices and the boolean ball of ``radius_mm`` around voxel ``center`` inside ``shape``."""
    r = np.floor(radius_mm / spacing + 1e-9).astype(int)
    lo = np.maximum(center - r, 0)
    hi = np.minimum(center + r + 1, shape)
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing))
    return tuple(slice(a, b) for a, b in zip(lo, hi)), d2 <= radius_mm ** 2 + 1e-9


def pseudo_label_map(image: Volume, annotation: CaseAnnotation, *, expansion: Optional[ExpansionConfig] = None,
                     random_walker: Optional[Dict[str, Any]] = None, valid_mask: Optional[np.ndarray] = None,
                     dense_label: Optional[np.ndarray] = None, point_radius_mm: float = 2.0) -> np.ndarray:
    """Partial labels ``[i, j, k]`` (uint8: 0 background, 1 foreground, 2 unlabeled) of ``annotation`` on
    ``image``'s grid.

    Args:
        image: the annotated image.
        annotation: its objects, of any kinds (a ``dense`` object must be the case's only one).
        expansion: seed expansion settings of seven-point objects (default :class:`ExpansionConfig`).
        random_walker: :class:`~PASegLib.seeds.random_walker.RandomWalkerConfig` fields (extreme points, box).
        valid_mask: optional bool ``[i, j, k]`` (seven points: see :func:`expand_seeds`; single points, extreme
            points and boxes: voxels outside it are never foreground; a dense label is returned as it is).
        dense_label: the case's dense label ``[i, j, k]`` (nonzero = object), needed by a ``dense`` object.
        point_radius_mm: radius of the labelled ball around each single-point click (mm; 0 = the voxel).
    """
    expansion = expansion or ExpansionConfig()
    kinds = {o.kind for o in annotation.objects}
    if not annotation.objects:
        raise ValueError("the annotation holds no object")
    if kinds == {"seven_points"}:
        return _seven_points(image, annotation, expansion, random_walker, valid_mask)
    geometry = image.geometry
    if "dense" in kinds:
        if dense_label is None:
            raise ValueError("a dense annotation needs the case's dense label (<case>_label or the object's "
                             "label_file); none was given")
        label = np.asarray(dense_label)
        if label.shape != tuple(geometry.shape):
            raise ValueError(f"dense label shape {label.shape} differs from the image's {tuple(geometry.shape)}")
        return (label > 0).astype(np.uint8)
    from PASegLib.seeds.random_walker import RandomWalkerConfig

    rw = RandomWalkerConfig.from_dict(random_walker or {})
    spacing = np.asarray(geometry.spacing, dtype=float)
    boxed = kinds <= set(BOXED_KINDS)
    out = np.full(geometry.shape, 0 if boxed else 2, dtype=np.uint8)
    fg_any = np.zeros(geometry.shape, dtype=bool)
    for obj in annotation.objects:
        if obj.kind == "single_point":
            sl, ball = _ball(np.asarray(geometry.shape), geometry.world_to_voxel(obj.foreground), point_radius_mm,
                             spacing)
            out[sl][ball] = 1
            fg_any[sl] |= ball
            if "B" in obj.background:
                sl, ball = _ball(np.asarray(geometry.shape), geometry.world_to_voxel(obj.background["B"]),
                                 point_radius_mm, spacing)
                out[sl][ball & ~fg_any[sl]] = 0
            continue
        lo, hi = object_box(obj, geometry)
        box = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
        if obj.kind == "seven_points":
            labels = _seven_points(image, CaseAnnotation([obj]), expansion, random_walker, valid_mask)
        else:
            labels = np.zeros(geometry.shape, dtype=np.uint8)
            crop, prob = _random_walker_crop(image, obj, lo, hi, rw)
            labels[crop] = prob >= 0.5
        sub = labels[box]
        region = out[box]
        region[(sub == 0) & ~fg_any[box]] = 0
        region[(sub == 2) & ~fg_any[box]] = 2
        region[sub == 1] = 1
        fg_any[box] |= sub == 1
    for obj in annotation.objects:  # clicks land near the extent (and err): a shell beyond the box is unknown
        if rw.box_shell_mm(obj.kind) > 0:
            lo, hi = object_box(obj, geometry)
            shell = grown_box_mask(geometry.shape, lo, hi, rw.box_shell_mm(obj.kind), spacing)
            shell[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))] = False
            out[shell & (out == 0)] = 2
    if valid_mask is not None:
        out[~np.asarray(valid_mask, dtype=bool) & (out == 1)] = 0
    return out


def _seven_points(image: Volume, annotation: CaseAnnotation, expansion: ExpansionConfig,
                  random_walker: Optional[Dict[str, Any]], valid_mask: Optional[np.ndarray]) -> np.ndarray:
    """The seven-point objects' labels: the expanded seeds, filled over the click box when ``expansion.fill``
    says so (:func:`~PASegLib.seeds.seed_fill.fill_seeds` with the ``random_walker`` settings)."""
    seeds = expand_seeds(image, annotation, config=expansion, valid_mask=valid_mask)
    if expansion.fill == "none":
        return seeds
    from PASegLib.seeds.random_walker import RandomWalkerConfig
    from PASegLib.seeds.seed_fill import fill_seeds

    return fill_seeds(image, annotation, seeds, margin=expansion.fill_margin,
                      bg_radius_mm=expansion.fill_bg_radius_mm,
                      random_walker=RandomWalkerConfig.from_dict(random_walker or {}))


def grown_box_mask(shape, lo, hi, grow_mm: float, spacing) -> np.ndarray:
    """bool ``shape``: the inclusive voxel box ``lo``..``hi`` grown by ``grow_mm`` on every side (clipped)."""
    grow = np.floor(float(grow_mm) / np.asarray(spacing, dtype=float) + 1e-9).astype(int)
    a = np.maximum(np.asarray(lo) - grow, 0)
    b = np.minimum(np.asarray(hi) + grow, np.asarray(shape) - 1)
    mask = np.zeros(tuple(int(n) for n in shape), dtype=bool)
    mask[tuple(slice(int(x), int(y) + 1) for x, y in zip(a, b))] = True
    return mask
