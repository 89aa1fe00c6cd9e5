"""The click channel of a click-conditioned model (Going to Extremes / DEXTR; issue 13).

With ``TrainConfig.point_channel`` the network takes a second input channel: Gaussian heatmaps
(:func:`~PASegLib.losses.point_loss.gaussian_point_heatmap`, peak 1, σ = ``point_sigma_mm``) at each object's
*positive* points — the six extreme points of an ``extreme_points`` object, the ``F`` click of a seven-point or
single-point object (background clicks are not drawn; boxes and dense objects have no point). The same map is
the target of the point loss. Training patches get it cut to the patch (:class:`~PASegLib.data.sampler.
PatchSampler`), validation and prediction on the whole training grid; prediction without clicks feeds an empty
channel (the model is trained with ``point_channel_dropout`` of empty channels, so it knows both).

numpy only (the heatmap function lives in the losses package but needs no torch at call time).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["annotation_points", "click_heatmap", "positive_points"]


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
    from PASegLib.losses.point_loss import gaussian_point_heatmap

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
