"""Dense pseudo labels inside the click box from seven points: a random-walker fill of the expanded seeds.

The geodesic expansion (:func:`~PASegLib.seeds.expansion.expand_seeds`) labels only part of the object (about
40 % of a la_heart atrium, precision ≈ 0.92) and leaves the rest of the click box unlabelled. The fill grows
those seeds over the box with the random walker (:func:`~PASegLib.seeds.random_walker.random_walker_probability`,
the machinery of the extreme-point and box labels), per object, on a crop around its box:

* **foreground seeds** = the expansion's foreground inside the crop;
* **background seeds** = every crop voxel outside the click box (one working voxel of shell where the image
  has it), the six background clicks' expansion — a ball of ``fill_bg_radius_mm`` around each, clipped to the
  box, minus the foreground seeds — and the voxels the expansion made background inside the box (outside the
  valid region);
* the crop runs on a grid of about ``RandomWalkerConfig.working_spacing_mm`` (2 mm by default, like the other
  random-walker labels; finer for objects less than 12 working voxels across) and the probability is
  interpolated back;
* **uncertain band**: box voxels whose probability ``p`` lies within ``fill_margin`` of 0.5
  (``|p - 0.5| < fill_margin``) stay unlabelled (2); ``p ≥ 0.5 + fill_margin`` is foreground, ``p ≤ 0.5 -
  fill_margin`` background. A probability margin rather than a band of fixed width: the random walker's
  probability is steep where the image has an edge (a thin band there) and flat where it has none (a wide band
  where the boundary is a guess). The seeds keep their labels.

The box exterior stays background, exactly as in the plain seeds. Several objects: the foreground of any
object wins over another's background or band. numpy/scipy/scikit-image; no torch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from PASegLib.annotation.model import CaseAnnotation
from PASegLib.annotation.validation import object_box
from PASegLib.image.io import Volume
from PASegLib.seeds.masks import box_slices
from PASegLib.seeds.random_walker import RandomWalkerConfig, random_walker_probability

__all__ = ["fill_seeds"]

BACKGROUND, FOREGROUND, UNLABELED = 0, 1, 2
#: the fewest working voxels across an object's smallest box extent (a small object keeps its detail)
MIN_VOXELS_ACROSS = 12.0


def _resample(array: np.ndarray, shape, *, order: int) -> np.ndarray:
    from PASegLib.image.resample import resample_to_shape

    arr = np.asarray(array)
    return arr if tuple(arr.shape) == tuple(int(n) for n in shape) else resample_to_shape(arr, shape, order=order)


def _ball_mask(shape, centers: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """bool ``shape``: the union of balls of ``radius_mm`` around the voxel ``centers`` (each center included)."""
    mask = np.zeros(tuple(int(n) for n in shape), dtype=bool)
    r = np.floor(radius_mm / spacing + 1e-9).astype(int)
    for c in np.asarray(centers, dtype=int).reshape(-1, 3):
        lo = np.maximum(c - r, 0)
        hi = np.minimum(c + r + 1, shape)
        if np.any(lo >= hi):
            continue
        grids = np.ogrid[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
        d2 = sum(((g - ci) * s) ** 2 for g, ci, s in zip(grids, c, spacing))
        mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] |= d2 <= radius_mm ** 2 + 1e-9
    return mask


def _object_probability(arr: np.ndarray, spacing: np.ndarray, lo: np.ndarray, hi: np.ndarray, fg: np.ndarray,
                        bg_inside: np.ndarray, rw: RandomWalkerConfig) -> Tuple[Tuple[slice, ...], np.ndarray]:
    """Random-walker foreground probability of one object on its crop at the image's resolution.

    ``fg`` / ``bg_inside``: bool masks of the box ``[lo, hi]`` (box shape). Returns ``(crop slices of the
    image, float32 probability of the crop)``.
    """
    shape = np.asarray(arr.shape)
    extent_mm = (hi - lo + 1) * spacing
    working = spacing if rw.working_spacing_mm is None else \
        np.maximum(spacing, min(float(rw.working_spacing_mm), float(extent_mm.min()) / MIN_VOXELS_ACROSS))
    shell = np.maximum(1, np.ceil(working / spacing)).astype(int)  # one working voxel outside the box
    c_lo = np.maximum(lo - shell, 0)
    c_hi = np.minimum(hi + shell, shape - 1)
    crop = box_slices(c_lo, c_hi)
    native = np.asarray(arr[crop], dtype=np.float32)
    n_native = np.asarray(native.shape)
    inner = box_slices(lo - c_lo, hi - c_lo)
    fg_c = np.zeros(native.shape, dtype=bool)
    fg_c[inner] = fg
    bg_c = np.ones(native.shape, dtype=bool)
    bg_c[inner] = bg_inside
    n_small = np.maximum(1, np.round(n_native * spacing / working)).astype(int)
    if np.array_equal(n_small, n_native):
        small, fg_s, bg_s = native, fg_c, bg_c
    else:
        small = _resample(native, n_small, order=1)
        fg_s = _resample(fg_c.astype(np.float32), n_small, order=1) >= 0.5
        bg_s = _resample(bg_c.astype(np.float32), n_small, order=1) >= 0.5
        if not fg_s.any():  # a thin expansion: keep its deepest voxel
            where = np.argwhere(fg_c).mean(axis=0)
            fg_s[tuple(np.clip(np.rint((where + 0.5) * n_small / n_native - 0.5), 0, n_small - 1).astype(int))] = True
    bg_s &= ~fg_s
    if not bg_s.any():  # a box filling the image without background clicks inside: nothing bounds the fill
        return crop, fg_c.astype(np.float32)
    prob = random_walker_probability(small, fg_s, bg_s, beta=rw.beta, tol=rw.tol, mode=rw.mode)
    return crop, _resample(prob, n_native, order=1).astype(np.float32)


def fill_seeds(image: Volume, annotation: CaseAnnotation, seeds: np.ndarray, *, margin: float,
               bg_radius_mm: float, random_walker: Optional[RandomWalkerConfig] = None) -> np.ndarray:
    """Fill the click boxes of seven-point objects from their expanded ``seeds`` (module doc).

    Args:
        image: the annotated image (``array`` ``[i, j, k]``).
        annotation: its seven-point objects (validated).
        seeds: uint8 ``[i, j, k]`` partial labels of ``annotation`` from
            :func:`~PASegLib.seeds.expansion.expand_seeds` (0 background, 1 foreground, 2 unlabelled).
        margin: uncertain band: box voxels with ``|p - 0.5| < margin`` stay unlabelled; in [0, 0.5).
        bg_radius_mm: radius (mm) of the ball around each background click whose box voxels are background
            seeds (0 = the click's voxel only); finite, >= 0.
        random_walker: β, tol, mode and working_spacing_mm of the random walker (default
            :class:`~PASegLib.seeds.random_walker.RandomWalkerConfig`).

    Returns:
        uint8 ``[i, j, k]``: 0 background, 1 foreground, 2 unlabelled; outside every box as in ``seeds``.

    Raises:
        ValueError: a non-seven-point object, bad ``seeds`` shape / values, a bad margin or radius.
    """
    if not 0.0 <= float(margin) < 0.5:
        raise ValueError(f"fill margin must be in [0, 0.5), got {margin!r}")
    if not (np.isfinite(float(bg_radius_mm)) and float(bg_radius_mm) >= 0.0):
        raise ValueError(f"fill background radius must be a finite number of mm >= 0, got {bg_radius_mm!r}")
    arr = np.asarray(image.array)
    geometry = image.geometry
    base = np.asarray(seeds)
    if base.shape != arr.shape:
        raise ValueError(f"seeds shape {base.shape} does not match image shape {arr.shape}")
    if base.size and int(base.max()) > UNLABELED:
        raise ValueError(f"seeds must hold 0, 1, 2 only, found {int(base.max())}")
    bad = sorted({o.kind for o in annotation.objects} - {"seven_points"})
    if bad:
        raise ValueError(f"the random-walker fill takes seven-point objects only, got kind(s) {bad}")
    rw = random_walker or RandomWalkerConfig()
    spacing = np.asarray(geometry.spacing, dtype=float)
    out = base.astype(np.uint8, copy=True)
    fg_any = base == FOREGROUND
    for obj in annotation.objects:
        lo, hi = (np.asarray(v, dtype=int) for v in object_box(obj, geometry))
        box = box_slices(lo, hi)
        sub = base[box]
        fg = sub == FOREGROUND
        if not fg.any():
            continue
        clicks = np.asarray(geometry.world_to_voxel(obj.background_array())) - lo
        bg_inside = (_ball_mask(sub.shape, np.clip(clicks, 0, hi - lo), float(bg_radius_mm), spacing)
                     | (sub == BACKGROUND)) & ~fg
        crop, prob = _object_probability(arr, spacing, lo, hi, fg, bg_inside, rw)
        c_lo = np.asarray([s.start for s in crop])
        p = prob[box_slices(lo - c_lo, hi - c_lo)]
        label = np.full(sub.shape, UNLABELED, dtype=np.uint8)
        label[p >= 0.5 + margin] = FOREGROUND
        label[p <= 0.5 - margin] = BACKGROUND
        if margin == 0.0:
            label[p >= 0.5] = FOREGROUND
        label[bg_inside] = BACKGROUND
        label[fg] = FOREGROUND
        region = out[box]
        free = ~fg_any[box]
        region[free & (label != FOREGROUND)] = label[free & (label != FOREGROUND)]
        region[label == FOREGROUND] = FOREGROUND
        fg_any[box] |= label == FOREGROUND
    out[base == BACKGROUND] = BACKGROUND  # outside every box and outside the valid region
    return out

