"""The click channel of a click-conditioned model (Going to Extremes / DEXTR).

With ``TrainConfig.point_channel`` the network takes a second input channel: Gaussian heatmaps
(:func:`gaussian_point_heatmap`, peak 1, σ = ``point_sigma_mm``) at each object's
*positive* points — the six extreme points of an ``extreme_points`` object, the ``F`` click of a seven-point or
single-point object (background clicks are not drawn; boxes and dense objects have no point). The same map is
the target of the point loss. Training patches get it cut to the patch (:class:`~PASegLib.data.sampler.
PatchSampler`), validation and prediction on the whole training grid; prediction without clicks feeds an empty
channel (the model is trained with ``point_channel_dropout`` of empty channels, so it knows both).

With ``TrainConfig.click_map = "box"`` the channel is instead a box mask (:func:`box_mask`): 1 inside every
object's box, 0 outside — the teacher of mixed supervision (paper 003) is told where each object is. Training
patches get it from the patch's boxes (:class:`~PASegLib.training.stage1.Stage1Trainer`, grown by a random margin,
``box_channel_margin_mm``), validation from the prepared case's boxes, prediction from the annotation
(:func:`annotation_box_mask`).

numpy only.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import numpy as np

from PASegLib.utils.checks import check_number, check_numbers

__all__ = ["annotation_box_mask", "annotation_points", "box_mask", "click_heatmap", "gaussian_point_heatmap",
           "positive_points"]


def positive_points(clicks: Sequence[np.ndarray], kinds: Optional[Sequence[str]]) -> np.ndarray:
    """The points drawn in the click channel, ``(P, 3)`` continuous indices, from a prepared case's ``clicks``
    (per object ``(Q, 3)`` in its kind's label order) and ``kinds`` (``None`` = all seven points)."""
    rows = []
    for n, pts in enumerate(clicks):
        kind = kinds[n] if kinds is not None else "seven_points"
        pts = np.asarray(pts, dtype=float).reshape(-1, 3)
        if kind == "extreme_points":
            rows.append(pts)
        elif kind in ("seven_points", "single_point") and len(pts):
            rows.append(pts[:1])
    return np.concatenate(rows) if rows else np.zeros((0, 3))


def click_heatmap(points: np.ndarray, shape: Sequence[int], spacing_mm: Sequence[float], sigma_mm: float, *,
                  offset: Optional[Sequence[int]] = None) -> np.ndarray:
    """float32 ``[I, J, K]`` heatmap of ``points`` (``(P, 3)`` continuous indices of the grid whose voxels are
    ``spacing_mm``) on a box of ``shape`` starting at index ``offset`` (default the origin: the whole grid)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    if offset is not None:
        pts = pts - np.asarray(offset, dtype=float)
    sigma = float(sigma_mm) / np.asarray(spacing_mm, dtype=float)
    return gaussian_point_heatmap(pts, tuple(int(n) for n in shape), sigma)


def annotation_points(annotation, grid) -> np.ndarray:
    """The click-channel points of an annotation (LPS mm, any kinds) as continuous indices ``(P, 3)`` on
    ``grid`` (an :class:`~PASegLib.image.geometry.ImageGeometry`, e.g. the training grid)."""
    clicks, kinds = [], []
    for obj in annotation.objects:
        points = list(obj.points().values())
        clicks.append(grid.world_to_index(np.stack(points)) if points else np.zeros((0, 3)))
        kinds.append(obj.kind)
    return positive_points(clicks, kinds)


def box_mask(boxes: Sequence, shape: Sequence[int], *, offset: Optional[Sequence[int]] = None) -> np.ndarray:
    """float32 ``[I, J, K]`` box channel: 1 inside any of ``boxes``, 0 elsewhere.

    Args:
        boxes: inclusive voxel boxes ``(lo, hi)`` (each ``(3,)`` integer ``[i, j, k]``, ``lo <= hi``) of the grid
            whose box of ``shape`` starts at index ``offset`` (default the origin); the part of a box outside that
            box is dropped (a box may miss it entirely). An ``[M, 2, 3]`` array works as well.
        shape: ``(I, J, K)``, each ``>= 1``.
        offset: the first voxel of the mask on the boxes' grid (e.g. a patch's start).
    """
    dims = check_numbers("shape", shape, length=3, cast=int, minimum=1)
    start = np.zeros(3, dtype=np.int64) if offset is None else np.asarray(offset, dtype=np.int64).reshape(3)
    out = np.zeros(dims, dtype=np.float32)
    for n, box in enumerate(boxes):
        lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in box)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) \
                or np.any(lo > hi) or np.any(lo != np.round(lo)) or np.any(hi != np.round(hi)):
            raise ValueError(f"boxes[{n}] must be an inclusive integer voxel box (lo, hi) with lo <= hi, got "
                             f"{np.asarray(box).tolist()!r}")
        a = np.maximum(lo.astype(np.int64) - start, 0)
        b = np.minimum(hi.astype(np.int64) - start + 1, dims)
        if np.all(b > a):
            out[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = 1.0
    return out


def annotation_box_mask(annotation, grid) -> np.ndarray:
    """float32 ``[I, J, K]`` box channel of an annotation on ``grid`` (an
    :class:`~PASegLib.image.geometry.ImageGeometry`, e.g. the training grid): 1 inside each object's box
    (:func:`~PASegLib.annotation.validation.object_box`: a box, the extent of extreme points, the box of seven
    points' background clicks). An object without a box (a single point, a dense object) is refused naming it."""
    from PASegLib.annotation.kinds import BOXED_KINDS
    from PASegLib.annotation.validation import object_box

    boxes = []
    for obj in annotation.objects:
        if obj.kind not in BOXED_KINDS:
            raise ValueError(f"object {obj.name!r} ({obj.kind}) has no box for the box channel; the kinds with one: "
                             f"{', '.join(sorted(BOXED_KINDS))}")
        boxes.append(object_box(obj, grid))
    return box_mask(boxes, grid.shape)


def gaussian_point_heatmap(
    points_ijk: Union[np.ndarray, Sequence[Sequence[float]]],
    shape: Sequence[int],
    sigma_voxels: Union[float, Sequence[float]],
    *,
    truncate: float = 3.0,
) -> np.ndarray:
    """Point channel ``G({e})``: float32 ``[I, J, K]``, the max over points of ``exp(−Σ_d (x_d − p_d)² / 2σ_d²)``.

    Args:
        points_ijk: ``(P, 3)`` continuous voxel indices ``[i, j, k]`` (``P = 0`` gives zeros); points outside
            the volume still contribute the part of their window that lies inside it.
        shape: ``(I, J, K)``, each ``>= 1``.
        sigma_voxels: ``σ`` in voxels, ``> 0``: one number or one per axis (anisotropic spacing).
        truncate: each Gaussian is evaluated only in the box ``|x_d − p_d| <= truncate · σ_d`` (0 outside;
            the largest value dropped is ``exp(−truncate² / 2)``, 0.011 for 3), so the cost is per point
            window, not per volume.
    """
    pts = np.asarray(points_ijk, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 3)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points_ijk must be a finite (P, 3) array of voxel indices, got shape {pts.shape}")
    dims = check_numbers("shape", shape, length=3, cast=int, minimum=1)
    if isinstance(sigma_voxels, numbers.Real) and not isinstance(sigma_voxels, bool):
        sigma = (check_number("sigma_voxels", sigma_voxels, minimum=0.0, open_minimum=True),) * 3
    else:
        sigma = check_numbers("sigma_voxels", sigma_voxels, length=3, minimum=0.0, open_minimum=True)
    truncate = check_number("truncate", truncate, minimum=0.0, open_minimum=True)

    out = np.zeros(dims, dtype=np.float32)
    for point in pts:
        profiles, window = [], []
        for d in range(3):
            reach = truncate * sigma[d]
            lo, hi = max(math.ceil(point[d] - reach), 0), min(math.floor(point[d] + reach), dims[d] - 1)
            if lo > hi:
                break  # the window misses the volume on this axis
            offsets = np.arange(lo, hi + 1, dtype=np.float64) - point[d]
            profiles.append(np.exp(-offsets**2 / (2.0 * sigma[d] ** 2)))
            window.append(slice(lo, hi + 1))
        else:
            block = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
            view = out[tuple(window)]
            np.maximum(view, block.astype(np.float32), out=view)
    return out
