"""Clicks of every annotation kind simulated from a ground-truth mask (issue 13).

Seven points follow :func:`PASegLib.simulate.simulate_object` (the PA-Seg simulation). The other kinds, for one
object given as a boolean mask ``[i, j, k]``:

* ``extreme_points`` — towards each side (R, L, A, P, I, S, tied to an index axis by
  :func:`~PASegLib.annotations.side_axis`) a voxel of the object's outermost slice along that axis (its extent),
  drawn at random among those slice voxels that lie on the object's boundary; with ``extreme_jitter_mm`` > 0 the
  point is drawn among the boundary voxels whose index along the axis is within that distance (and within a
  quarter of the object's extent) of the extent (a radiologist's click lands near, not exactly on, the extreme
  voxel). Jitter 0: exactly at the extent. An object less than 2 voxels thick along an axis has no two distinct
  extremes there; :func:`PASegLib.simulate.simulate_clicks` leaves such specks out for this kind.
* ``box`` — the object's index box grown on each side by a margin drawn from ``box_margin_mm`` (a loose box),
  clipped to the image; stored as its two LPS corners.
* ``single_point`` — ``F`` a voxel drawn uniformly among the object's voxels at least one voxel from its boundary
  (anywhere inside, not only at the centre; the whole object when it is thinner); with
  ``single_point_background`` a ``B`` voxel drawn uniformly among the voxels whose distance to the object lies
  in ``background_distance_mm``.
* ``dense`` — no click: the object's label is the annotation.

Deterministic for a given ``numpy.random.Generator``. numpy/scipy only.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..annotations import ObjectAnnotation, side_axis
from ..geometry import ImageGeometry

__all__ = ["simulate_kind_object"]


def _boundary(component: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return component & ~ndimage.binary_erosion(component, border_value=0)


def _extreme_points(component, geometry, rng, jitter_mm: float):
    voxels = np.argwhere(component)
    boundary = _boundary(component)
    spacing = np.asarray(geometry.spacing, dtype=float)
    marks = {}
    for side, (axis, sign) in side_axis(geometry).items():
        extent = voxels[:, axis].max() if sign > 0 else voxels[:, axis].min()
        # within the jitter, and within a quarter of the object's extent (so the click stays on its side)
        length = int(voxels[:, axis].max() - voxels[:, axis].min())
        reach = min(int(np.floor(jitter_mm / spacing[axis] + 1e-9)), length // 4)
        depth = sign * (extent - voxels[:, axis])  # 0 on the extreme slice, > 0 inwards
        near = voxels[depth <= reach]
        near = near[boundary[tuple(near.T)]]
        point = near[int(rng.integers(len(near)))]
        marks[side] = geometry.index_to_world(point.astype(float))
    return marks


def _box(component, geometry, rng, margin_mm: Tuple[float, float]):
    voxels = np.argwhere(component)
    lo, hi = voxels.min(axis=0).astype(float), voxels.max(axis=0).astype(float)
    spacing = np.asarray(geometry.spacing, dtype=float)
    shape = np.asarray(geometry.shape) - 1
    lo = np.clip(lo - np.rint(rng.uniform(*margin_mm, 3) / spacing), 0, shape)
    hi = np.clip(hi + np.rint(rng.uniform(*margin_mm, 3) / spacing), 0, shape)
    corners = geometry.index_to_world(np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                                for z in (lo[2], hi[2])]))
    return {"lo": corners.min(axis=0), "hi": corners.max(axis=0)}


def _single_point(component, geometry, rng, background: bool, distance_mm: Tuple[float, float]):
    from scipy import ndimage

    inner = ndimage.binary_erosion(component, border_value=0)
    candidates = np.argwhere(inner if inner.any() else component)
    fg = candidates[int(rng.integers(len(candidates)))]
    bg = {}
    if background:
        spacing = np.asarray(geometry.spacing, dtype=float)
        grow = np.ceil(distance_mm[1] / spacing).astype(int) + 1
        vox = np.argwhere(component)
        lo = np.maximum(vox.min(axis=0) - grow, 0)
        hi = np.minimum(vox.max(axis=0) + grow + 1, component.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        dist = ndimage.distance_transform_edt(~component[crop], sampling=spacing)
        ring = np.argwhere((dist >= distance_mm[0]) & (dist <= distance_mm[1]))
        if len(ring) == 0:
            raise ValueError(f"no background voxel lies {distance_mm[0]:g}–{distance_mm[1]:g} mm from the object "
                             "inside the image; lower background_distance_mm")
        bg = {"B": geometry.index_to_world((ring[int(rng.integers(len(ring)))] + lo).astype(float))}
    return geometry.index_to_world(fg.astype(float)), bg


def simulate_kind_object(component: np.ndarray, geometry: ImageGeometry, *, name: str, kind: str,
                         rng: np.random.Generator, config) -> ObjectAnnotation:
    """One simulated object of ``kind`` (not ``seven_points``) for the boolean mask ``component`` ``[i, j, k]``
    on ``geometry``; ``config`` is a :class:`~PASegLib.simulate.ClickSimulationConfig`."""
    if not np.any(component):
        raise ValueError(f"object {name!r}: the component is empty")
    if kind == "extreme_points":
        return ObjectAnnotation(name, kind=kind, marks=_extreme_points(component, geometry, rng,
                                                                       config.extreme_jitter_mm))
    if kind == "box":
        return ObjectAnnotation(name, kind=kind, marks=_box(component, geometry, rng, config.box_margin_mm))
    if kind == "single_point":
        fg, bg = _single_point(component, geometry, rng, config.single_point_background,
                               config.background_distance_mm)
        return ObjectAnnotation(name, fg, bg, kind=kind)
    if kind == "dense":
        return ObjectAnnotation(name, kind="dense")
    raise ValueError(f"simulate_kind_object: unknown or seven-point kind {kind!r}")
