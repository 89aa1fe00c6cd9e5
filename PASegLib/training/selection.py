"""Label-free model selection: criteria computed on held-out annotated cases, and how to judge them.

Users have clicks, not dense masks. Every validation round computes, per held-out case and averaged
(:data:`CRITERIA` maps a ``TrainConfig.selection`` name to its validation key and direction):

* ``click_score`` (key ``score``): agreement with the clicks and expanded seeds, below;
* ``heldout_loss``: the stage-one loss (data term on the seeds + α·mCRF + β·VM at full weight) of the
  predicted probabilities on the whole held-out case — lower is better; computed only when it is the selection
  rule (seconds per case on a CPU);
* ``pseudo_label_dice`` (key ``partial_dice``): Dice against the case's pseudo labels on their labelled voxels
  only — the expanded seeds, or the dense box fill when ``ExpansionConfig.fill`` is on (the click score's
  first term alone);
* ``flip_agreement``: Dice between the prediction of the image and the (flipped back) prediction of its
  copy flipped along every axis;
* ``network_agreement`` (key ``agreement``, SCM): Dice between the two networks' predictions.

Whether a criterion can be trusted is measured, not assumed (:func:`selection_quality`: over the
validation rounds of benchmark runs with labels, the Spearman correlation of the criterion with the
held-out Dice and whether the round it picks is within 0.01 Dice of the best). ``"last"`` (the last
epoch's weights) is the default unless a criterion passes (``docs/BENCHMARKS.md``).

The click score:

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

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["CRITERIA", "criterion_value", "label_free_score", "selection_quality"]

#: selection name → (validation key, +1 when higher is better / −1 when lower is better)
CRITERIA: Dict[str, Tuple[str, int]] = {
    "click_score": ("score", 1),
    "heldout_loss": ("heldout_loss", -1),
    "flip_agreement": ("flip_agreement", 1),
    "pseudo_label_dice": ("partial_dice", 1),
    "network_agreement": ("agreement", 1),
}


def criterion_value(selection: str, result: Dict[str, float]) -> Optional[float]:
    """The value to maximise for ``selection`` in a validation ``result`` (``None`` when it is absent)."""
    if selection not in CRITERIA:
        raise ValueError(f"selection must be one of {', '.join(CRITERIA)}, got {selection!r}")
    key, sign = CRITERIA[selection]
    value = result.get(key)
    return None if value is None else sign * float(value)


def selection_quality(rounds: Sequence[Dict[str, float]], selection: str, *, tolerance: float = 0.01
                      ) -> Optional[Dict[str, float]]:
    """How well ``selection`` ranks the validation ``rounds`` of one run (each a dict with ``"dice"``).

    Returns ``{"spearman", "picked_dice", "best_dice", "within"}``: the Spearman rank correlation between the
    criterion (oriented so that higher is better) and the held-out Dice; the Dice of the round the criterion
    picks (the first of ties) and the best Dice; ``within`` = 1.0 when they differ by at most ``tolerance``.
    ``None`` when fewer than three rounds carry both numbers (or either is constant: no ranking to judge).
    """
    from scipy.stats import spearmanr

    pairs = [(criterion_value(selection, r), r.get("dice")) for r in rounds]
    pairs = [(c, d) for c, d in pairs if c is not None and d is not None]
    if len(pairs) < 3:
        return None
    crit, dice = np.array(pairs, dtype=float).T
    if np.ptp(crit) == 0 or np.ptp(dice) == 0:
        return None
    picked, best = float(dice[int(np.argmax(crit))]), float(dice.max())
    return {"spearman": float(spearmanr(crit, dice).statistic), "picked_dice": picked, "best_dice": best,
            "within": float(best - picked <= tolerance + 1e-9)}


def _voxel(point: np.ndarray, shape: Sequence[int]) -> tuple:
    return tuple(int(np.clip(np.round(p), 0, n - 1)) for p, n in zip(point, shape))


def label_free_score(
    prediction: np.ndarray,
    partial: np.ndarray,
    clicks: Sequence[np.ndarray],
    kinds: Optional[Sequence[str]] = None,
) -> Dict[str, float]:
    """Label-free agreement of a binary ``prediction`` with the clicks and seeds of one case.

    Args:
        prediction: bool/0-1 array ``[I, J, K]`` (foreground = true).
        partial: uint8 partial labels ``[I, J, K]`` (0 background, 1 foreground, 2 unlabeled) on the same grid.
        clicks: per object a ``(7, 3)`` array of continuous ``[i, j, k]`` indices on the same grid: row 0 the
            foreground click, rows 1–6 the background clicks.
        kinds: per object its annotation kind (``None``: all seven points). A ``single_point`` object's row 0 is
            its F click and a second row its B click; extreme points, boxes and dense objects have no click to
            check (the share of a term with no click is ``partial_dice``).

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
    fg_hits, bg_hits, n_bg, n_fg = 0, 0, 0, 0
    for n, points in enumerate(clicks):
        kind = kinds[n] if kinds is not None else "seven_points"
        if kind not in ("seven_points", "single_point"):
            continue  # extreme points lie on the boundary, box corners anywhere, a dense case has no click
        pts = np.asarray(points, dtype=float)
        if kind == "single_point":
            n_fg += 1
            fg_hits += bool(pred[_voxel(pts[0], pred.shape)])
            for p in pts[1:]:
                bg_hits += not bool(pred[_voxel(p, pred.shape)])
                n_bg += 1
            continue
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 2:
            raise ValueError(f"each object's clicks must be a (7, 3) index array, got shape {pts.shape}")
        n_fg += 1
        fg_hits += bool(pred[_voxel(pts[0], pred.shape)])
        for p in pts[1:]:
            bg_hits += not bool(pred[_voxel(p, pred.shape)])
            n_bg += 1
    result = {
        "partial_dice": float(partial_dice),
        "foreground_clicks": fg_hits / n_fg if n_fg else float(partial_dice),
        "background_clicks": bg_hits / n_bg if n_bg else float(partial_dice),
    }
    result["score"] = float(np.mean(list(result.values())))
    return result
