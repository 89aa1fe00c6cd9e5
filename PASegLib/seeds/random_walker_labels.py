"""The random-walker pseudo labels themselves (see :mod:`PASegLib.seeds.random_walker` for the method,
the settings and the random walker): the extreme-point protocol's first labels (Going to Extremes §2.2),
a bounding box's labels, and the §2.4 regularisation of a prediction. Arrays ``[i, j, k]``; spacing and every
radius in mm; labels uint8, 0 background, 1 foreground, for the whole image.

Clicks with an expected error (``RandomWalkerConfig.click_error_mm`` > 0): the extreme points' box is the object's
extent only up to the error, so :func:`extreme_points_pseudo_label` grows it by ``config.click_margin_mm`` (rounded
up to voxels per axis, clipped to the image) before taking its outside as the background seeds and the labels'
background, and grows the crop with it; the foreground seeds (the paths between the points) stay those of the
clicked points. With ``click_error_mm`` 0 the grown box is the box: the labels of before. A box is drawn loose
around the object, so :func:`box_pseudo_label` keeps its seeds at the box (growing them lowered the labels' mean
Dice on la_heart, ``random_walker.py``); the unlabeled shell around either box grows with the error
(:meth:`~PASegLib.seeds.random_walker.RandomWalkerConfig.box_shell_mm`, applied by
:func:`~PASegLib.seeds.pseudo_labels.pseudo_label_map` and the refinement).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from PASegLib.seeds.masks import (
    box_mask,
    box_slices,
    check_image,
    check_index,
    check_mask,
    erode_mask,
    grow_mask,
)
from PASegLib.seeds.random_walker import (
    LabelsOrPair,
    RandomWalkerConfig,
    extreme_point_scribbles,
    labels_and_probability,
    random_walker_probability,
)
from PASegLib.utils.checks import check_spacing

__all__ = ["box_pseudo_label", "extreme_points_pseudo_label", "refine_with_random_walker"]

#: the settings used when none are given
DEFAULT_CONFIG = RandomWalkerConfig()
#: the refinement's band is at most this share of the prediction's greatest depth (mm) wide on each side
REFINE_DEPTH_SHARE = 0.5


def extreme_points_pseudo_label(
    image: np.ndarray,
    points: np.ndarray,
    *,
    spacing: Sequence[float],
    config: RandomWalkerConfig = DEFAULT_CONFIG,
    return_probability: bool = False,
) -> LabelsOrPair:
    """The "Going to Extremes" pseudo label of one object from its six extreme points (paper §2.2).

    Crop = the points' inclusive box grown by ``config.margin_mm`` (clipped to the image). Foreground seeds =
    :func:`extreme_point_scribbles`; background seeds = every crop voxel outside the tight box. The paper
    instead takes the complement of the scribbles dilated by a 30-voxel ball; the box is used here because the
    extreme points define the object's extent exactly, so everything outside their box is certainly background
    (no organ-size-dependent radius to tune, and a 30-voxel ball around the scribbles of a large or thin object
    both misses background inside the box's corners and can cut into a large object). The random walker
    (:func:`random_walker_probability`) runs on the crop; label = probability ≥ 0.5 inside the box. With
    ``config.click_error_mm`` > 0 "the box" of the background seeds and of the labels is the points' box grown by
    ``config.click_margin_mm`` (module docstring), and the crop is that box grown by ``config.margin_mm``.

    Args:
        image: ``[I, J, K]`` real intensities (the whole image).
        points: ``(6, 3)`` voxel indices of the extreme points (pairs along i, j, k; see
            :func:`extreme_point_scribbles`).
        spacing: ``(3,)`` voxel size in mm along i, j, k.
        config: the parameters (β, tol, mode, fg_radius_mm, margin_mm, path_epsilon, click_error_mm are used).
        return_probability: also return the float32 ``[I, J, K]`` foreground probability (0 outside the crop).

    Returns:
        uint8 ``[I, J, K]`` labels (0 = background, 1 = foreground; 0 outside the (grown) box), or ``(labels,
        probability)`` when ``return_probability``.

    Raises:
        ValueError: bad points / spacing, or a box that spans the whole image (no voxel left for the background
            seeds).
    """
    arr = check_image(image)
    sp = np.asarray(check_spacing(spacing))
    pts = check_index(points, arr.shape, "points", rows=6)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    glo, ghi = grow_mask(lo, hi, config.click_margin_mm, sp, arr.shape)  # (lo, hi) itself without click error
    clo, chi = grow_mask(glo, ghi, config.margin_mm, sp, arr.shape)
    crop = box_slices(clo, chi)
    scribbles = extreme_point_scribbles(
        arr[crop], pts - clo, spacing=sp, fg_radius_mm=config.fg_radius_mm, path_epsilon=config.path_epsilon
    )
    inside = box_mask(scribbles.shape, glo - clo, ghi - clo)
    if inside.all():
        grown = f" grown by click_margin_mm {config.click_margin_mm:g} mm" if config.click_margin_mm > 0 else ""
        raise ValueError(
            f"the extreme points' box {lo.tolist()}..{hi.tolist()}{grown} spans the whole image of shape "
            f"{arr.shape}: no voxel is left for the background seeds"
        )
    prob = random_walker_probability(arr[crop], scribbles, ~inside, beta=config.beta, tol=config.tol, mode=config.mode)
    return labels_and_probability(arr.shape, crop, prob, inside, return_probability)


def box_pseudo_label(
    image: np.ndarray,
    lo: Sequence[int],
    hi: Sequence[int],
    *,
    spacing: Sequence[float],
    config: RandomWalkerConfig = DEFAULT_CONFIG,
    return_probability: bool = False,
) -> LabelsOrPair:
    """Random-walker pseudo label of one object from a loose bounding box (the object lies inside it).

    Crop = the box grown by ``config.margin_mm`` (clipped). Foreground seeds = the central ellipsoid of the box
    with semi-axes ``config.box_core_fraction`` × the box's half-extents (in voxels, per axis; the central voxel
    is always included); background seeds = crop voxels outside the box. Label = probability ≥ 0.5 inside the
    box, 0 elsewhere. The core assumes the object covers the box centre (true of compact, roughly convex
    objects; not of e.g. a C-shaped one). ``config.click_error_mm`` does not change them (module docstring).

    Args:
        image: ``[I, J, K]`` real intensities (the whole image).
        lo, hi: ``(3,)`` inclusive voxel box ``[lo, hi]`` (``lo <= hi``, inside the image).
        spacing: ``(3,)`` voxel size in mm along i, j, k.
        config: the parameters (β, tol, mode, margin_mm, box_core_fraction are used).
        return_probability: also return the float32 ``[I, J, K]`` foreground probability (0 outside the crop).

    Returns:
        uint8 ``[I, J, K]`` labels (0 / 1), or ``(labels, probability)`` when ``return_probability``.

    Raises:
        ValueError: a box outside the image, ``lo > hi`` on some axis, a box spanning the whole image.
    """
    arr = check_image(image)
    sp = np.asarray(check_spacing(spacing))
    blo = check_index(lo, arr.shape, "lo")
    bhi = check_index(hi, arr.shape, "hi")
    if np.any(blo > bhi):
        raise ValueError(f"box lo {blo.tolist()} must be <= hi {bhi.tolist()} on every axis")
    clo, chi = grow_mask(blo, bhi, config.margin_mm, sp, arr.shape)
    crop = box_slices(clo, chi)
    shape = tuple(int(b - a + 1) for a, b in zip(clo, chi))
    inside = box_mask(shape, blo - clo, bhi - clo)
    if inside.all():
        raise ValueError(
            f"the box {blo.tolist()}..{bhi.tolist()} spans the whole image of shape {arr.shape}: "
            "no voxel is left for the background seeds"
        )
    center = (blo + bhi) / 2.0 - clo
    semi = np.maximum(config.box_core_fraction * (bhi - blo + 1) / 2.0, 0.5)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    core = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, center, semi)) <= 1.0
    core[tuple(np.floor(center).astype(np.int64))] = True
    prob = random_walker_probability(arr[crop], core, ~inside, beta=config.beta, tol=config.tol, mode=config.mode)
    return labels_and_probability(arr.shape, crop, prob, inside, return_probability)


def refine_with_random_walker(
    image: np.ndarray,
    probability: np.ndarray,
    *,
    spacing: Sequence[float],
    config: RandomWalkerConfig = DEFAULT_CONFIG,
    outside: Optional[np.ndarray] = None,
    return_probability: bool = False,
) -> LabelsOrPair:
    """Regularise a prediction with the random walker (paper §2.4).

    Foreground seeds = ``probability >= 0.5`` eroded by a ball of ``config.refine_radius_mm`` (at most
    :data:`REFINE_DEPTH_SHARE` of the prediction's greatest depth, so that a small object keeps its inner part as
    seeds); background seeds = ``probability < 0.5`` eroded by the same ball, plus ``outside``; the band of about
    twice the radius around the predicted boundary is left unmarked and filled by the random walker. It runs on
    the crop around the prediction (the box of ``probability >= 0.5`` grown by ``config.margin_mm``, clipped);
    voxels outside the crop and in ``outside`` are 0 in the result.

    Edge cases: an empty prediction returns all zeros (nothing to regularise; no error). A prediction thinner
    than the ball (its erosion is empty) keeps its innermost voxels (the maxima of its distance transform) as
    foreground seeds. If no background seed is left in the crop (a prediction covering the whole image), the
    thresholded prediction is returned unchanged. Outside voxels win over foreground seeds.

    Args:
        image: ``[I, J, K]`` real intensities (the whole image).
        probability: ``[I, J, K]`` foreground probability in [0, 1] (or a 0/1 / bool prediction).
        spacing: ``(3,)`` voxel size in mm along i, j, k.
        config: the parameters (β, tol, mode, refine_radius_mm, margin_mm are used).
        outside: optional bool ``[I, J, K]`` of voxels known to be background (e.g. outside the object's box).
        return_probability: also return the float32 ``[I, J, K]`` random-walker probability (0 outside the crop).

    Returns:
        uint8 ``[I, J, K]`` labels (0 / 1), or ``(labels, probability)`` when ``return_probability``.
    """
    from scipy.ndimage import distance_transform_edt

    arr = check_image(image)
    sp = np.asarray(check_spacing(spacing))
    prob_in = np.asarray(probability)
    if prob_in.shape != arr.shape:
        raise ValueError(f"probability shape {prob_in.shape} does not match image shape {arr.shape}")
    if not np.issubdtype(prob_in.dtype, np.number) and prob_in.dtype != bool:
        raise ValueError(f"probability must be numeric, got dtype {prob_in.dtype}")
    known_bg = None if outside is None else check_mask(outside, arr.shape, "outside")
    pred = prob_in >= 0.5
    if known_bg is not None:
        pred &= ~known_bg
    if not pred.any():
        labels = np.zeros(arr.shape, dtype=np.uint8)
        return (labels, np.zeros(arr.shape, dtype=np.float32)) if return_probability else labels

    where = np.argwhere(pred)
    clo, chi = grow_mask(where.min(axis=0), where.max(axis=0), config.margin_mm, sp, arr.shape)
    crop = box_slices(clo, chi)
    pred_c = pred[crop]
    # the band never swallows a small object: at most half the prediction's deepest point (on la_heart's atria,
    # 8 mm and more deep, the radius stays refine_radius_mm; the demo's 4-6 mm tumours kept only a few voxels)
    depth = distance_transform_edt(pred_c, sampling=sp)
    radius = min(float(config.refine_radius_mm), REFINE_DEPTH_SHARE * float(depth.max()))
    fg = erode_mask(pred_c, radius, sp)
    if not fg.any():
        fg = pred_c & (depth >= depth.max())
    bg = erode_mask(~pred_c, radius, sp)
    if known_bg is not None:
        bg |= known_bg[crop]
        fg &= ~known_bg[crop]
    keep = np.ones(pred_c.shape, dtype=bool) if known_bg is None else ~known_bg[crop]
    if not bg.any():
        return labels_and_probability(arr.shape, crop, pred_c.astype(np.float32), keep, return_probability)
    rw = random_walker_probability(arr[crop], fg, bg, beta=config.beta, tol=config.tol, mode=config.mode)
    return labels_and_probability(arr.shape, crop, rw, keep, return_probability)
