"""Masks, boxes and input checks shared by the random-walker pseudo labels (numpy, scipy).

Arrays are ``[i, j, k]``; ``spacing`` is ``(s_i, s_j, s_k)`` in mm; boxes are inclusive voxel index corners
``lo``, ``hi`` (each ``(3,)`` int).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["box_mask", "box_slices", "check_image", "check_index", "check_mask", "dilate_mask",
           "erode_mask", "grow_mask"]


def check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be 3-D [i, j, k], got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"image is empty, shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"image must hold real numbers, got dtype {arr.dtype}")
    return arr


def check_mask(mask: np.ndarray, shape: Tuple[int, ...], name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"{name} shape {m.shape} does not match image shape {shape}")
    return m.astype(bool, copy=False)


def check_index(values, shape: Tuple[int, ...], name: str, rows: Optional[int] = None) -> np.ndarray:
    """Integer voxel indices ``[..., 3]`` inside ``shape`` (real values are rounded to the nearest voxel)."""
    arr = np.asarray(values)
    expected = (3,) if rows is None else (rows, 3)
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape {expected} (voxel indices i, j, k), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite voxel indices, got {arr.tolist()!r}")
    idx = np.rint(arr).astype(np.int64)
    bad = (idx < 0) | (idx >= np.asarray(shape))
    if bad.any():
        raise ValueError(f"{name} {arr.tolist()!r} lies outside the image of shape {tuple(shape)}")
    return idx


def grow_mask(lo: np.ndarray, hi: np.ndarray, margin_mm: float, spacing: np.ndarray, shape) -> Tuple[np.ndarray, ...]:
    """The inclusive box ``[lo, hi]`` grown by ``margin_mm`` (rounded up to voxels per axis), clipped."""
    pad = np.ceil(margin_mm / spacing - 1e-9).astype(np.int64)
    return np.maximum(lo - pad, 0), np.minimum(hi + pad, np.asarray(shape) - 1)


def box_slices(lo: np.ndarray, hi: np.ndarray) -> Tuple[slice, ...]:
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))


def dilate_mask(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """``mask`` dilated by the ball ``{d : |d|_mm <= radius_mm}`` (exact, via the Euclidean distance transform)."""
    from scipy.ndimage import distance_transform_edt

    if not mask.any() or radius_mm <= 0:
        return mask.copy()
    return distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def erode_mask(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """``mask`` eroded by the ball of ``radius_mm``; the array border is not treated as outside the mask."""
    from scipy.ndimage import distance_transform_edt

    if mask.all() or not mask.any() or radius_mm <= 0:
        return mask.copy()
    return distance_transform_edt(mask, sampling=spacing) > radius_mm


def box_mask(shape, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box_slices(lo, hi)] = True
    return mask
