"""Label-free model selection: how well a prediction agrees with the user's clicks and expanded seeds.

Users have clicks, not dense masks, so checkpoints are ranked on held-out *annotated* cases by

``score = (partial_dice + foreground_clicks + background_clicks) / 3``

* ``partial_dice``: Dice between the predicted foreground and the expanded seeds on the *labeled* voxels
  only (seed foreground = 1, box exterior and other background = 0; unlabeled voxels are ignored), i.e.
  ``2·TP / (2·TP + FP + FN)`` with TP = predicted ∧ seed-fg, FP = predicted ∧ labeled-bg,
  FN = ¬predicted ∧ seed-fg. It punishes missing the seeds and leaking out of the box.
* ``foreground_clicks``: share of the objects whose foreground click voxel is predicted foreground.
* ``background_clicks``: share of the background click voxels predicted background.

All three are in ``[0, 1]``; higher is better. Dense labels, when they exist, are reported beside it for
information but never used to select (unless a caller explicitly asks). numpy only.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

__all__ = ["label_free_score"]


def _voxel(point: np.ndarray, shape: Sequence[int]) -> tuple:
    return tuple(int(np.clip(np.round(p), 0, n - 1)) for p, n in zip(point, shape))


def label_free_score(
    prediction: np.ndarray,
    partial: np.ndarray,
    clicks: Sequence[np.ndarray],
) -> Dict[str, float]:
    """Label-free agreement of a binary ``prediction`` with the clicks and seeds of one case.

    Args:
        prediction: bool/0-1 array ``[I, J, K]`` (foreground = true).
        partial: uint8 partial labels ``[I, J, K]`` (0 background, 1 foreground, 2 unlabeled) on the same grid.
        clicks: per object a ``(7, 3)`` array of continuous ``[i, j, k]`` indices on the same grid: row 0 the
            foreground click, rows 1–6 the background clicks.

    Returns:
        ``{"score", "partial_dice", "foreground_clicks", "background_clicks"}`` (floats in ``[0, 1]``).
    """
    pred = np.asarray(prediction).astype(bool)
    seeds = np.asarray(partial)
    if pred.shape != seeds.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and partial {seeds.shape} must be 3D arrays of one shape")
    if not clicks:
        raise ValueError("clicks must hold at least one object")
    fg, bg = seeds == 1, seeds == 0
    tp = int(np.count_nonzero(pred & fg))
    fp = int(np.count_nonzero(pred & bg))
    fn = int(np.count_nonzero(~pred & fg))
    partial_dice = 2.0 * tp / (2.0 * tp + fp + fn) if (tp + fp + fn) > 0 else 1.0
    fg_hits, bg_hits, n_bg = 0, 0, 0
    for points in clicks:
        pts = np.asarray(points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 2:
            raise ValueError(f"each object's clicks must be a (7, 3) index array, got shape {pts.shape}")
        fg_hits += bool(pred[_voxel(pts[0], pred.shape)])
        for p in pts[1:]:
            bg_hits += not bool(pred[_voxel(p, pred.shape)])
            n_bg += 1
    result = {
        "partial_dice": float(partial_dice),
        "foreground_clicks": fg_hits / len(clicks),
        "background_clicks": bg_hits / n_bg,
    }
    result["score"] = float(np.mean(list(result.values())))
    return result
