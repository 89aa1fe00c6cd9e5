"""Resampling to a training grid and intensity normalisation, shared by training and prediction.

Resampling keeps the physical extent of the image (the box spanned by the voxel *edges*): an axis of ``n``
voxels of spacing ``s`` becomes ``n' = max(1, round(n·s/t))`` voxels of spacing ``s' = n·s/n'`` for a target
spacing ``t``, and the origin (centre of voxel 0) moves by ``(s' − s)/2`` along that axis' direction. This is
exactly the mapping of ``scipy.ndimage.zoom(..., grid_mode=True)``, used here, so going to the grid and back
is consistent to sub-voxel precision. numpy/scipy only (no torch).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from PASegLib.image.geometry import ImageGeometry

__all__ = ["normalize_intensities", "resample_to_shape", "resampled_geometry"]


def resampled_geometry(geometry: ImageGeometry, target_spacing_mm: Optional[Sequence[float]]) -> ImageGeometry:
    """Geometry of ``geometry``'s extent sampled at about ``target_spacing_mm`` (``None`` = unchanged).

    Args:
        geometry: the source grid.
        target_spacing_mm: ``(t_i, t_j, t_k)`` in mm, > 0.

    Returns:
        The new grid: shape ``round(n·s/t)`` (at least 1) per axis, spacing ``n·s/n'``, same direction.
    """
    if target_spacing_mm is None:
        return geometry
    target = np.asarray(target_spacing_mm, dtype=float)
    if target.shape != (3,) or not np.all(np.isfinite(target)) or np.any(target <= 0):
        raise ValueError(f"target_spacing_mm must be three positive numbers, got {target_spacing_mm!r}")
    shape = np.asarray(geometry.shape, dtype=float)
    spacing = np.asarray(geometry.spacing, dtype=float)
    new_shape = np.maximum(1, np.round(shape * spacing / target)).astype(int)
    new_spacing = shape * spacing / new_shape
    shift = geometry.direction_matrix @ ((new_spacing - spacing) / 2.0)
    return ImageGeometry(
        shape=tuple(int(n) for n in new_shape),
        spacing=tuple(float(s) for s in new_spacing),
        origin=tuple(float(o) for o in np.asarray(geometry.origin, dtype=float) + shift),
        direction=geometry.direction,
    )


def resample_to_shape(array: np.ndarray, shape: Sequence[int], *, order: int) -> np.ndarray:
    """Resample ``array`` ``[I, J, K]`` to ``shape`` keeping the voxel-edge extent.

    Args:
        array: 3D array.
        shape: target ``(I', J', K')``.
        order: 0 = nearest (label maps; dtype kept), 1 = linear (intensities, probabilities; float32).
    """
    from scipy.ndimage import zoom

    arr = np.asarray(array)
    shape = tuple(int(n) for n in shape)
    if arr.ndim != 3 or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"resample_to_shape needs a 3D array and a 3D target shape, got {arr.shape} -> {shape}")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    if tuple(arr.shape) == shape:
        return arr.copy() if order == 0 else arr.astype(np.float32, copy=True)
    factors = [n / m for n, m in zip(shape, arr.shape)]
    source = arr if order == 0 else arr.astype(np.float32, copy=False)
    out = zoom(source, factors, order=order, mode="nearest", grid_mode=True, prefilter=False)
    if out.shape != shape:  # pragma: no cover - scipy rounds the same way; guard a future change
        raise RuntimeError(f"scipy zoom returned {out.shape}, expected {shape}")
    return out


def normalize_intensities(image: np.ndarray, valid: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float, float]:
    """Z-score ``image`` with the mean and standard deviation of its valid voxels.

    Args:
        image: ``[I, J, K]`` intensities.
        valid: optional boolean ``[I, J, K]`` valid region (default: everywhere); voxels outside are set to 0.

    Returns:
        ``(normalised float32 image, mean, std)``.
    """
    arr = np.asarray(image, dtype=np.float32)
    region = np.ones(arr.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if region.shape != arr.shape:
        raise ValueError(f"valid mask shape {region.shape} does not match image shape {arr.shape}")
    if not region.any():
        raise ValueError("the valid region is empty; cannot normalise the image")
    values = arr[region].astype(np.float64)
    mean, std = float(values.mean()), float(values.std())
    if not np.isfinite(std) or std <= 0:
        raise ValueError("the image is constant inside its valid region; cannot normalise it")
    out = ((arr - mean) / std).astype(np.float32)
    out[~region] = 0.0
    return out, mean, std
