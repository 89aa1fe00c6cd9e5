"""Box-tightness prior for stage one: the click box is close to a tight bounding box of the object.

After Kervadec et al., "Bounding boxes for weakly supervised segmentation: global constraints get close to
full supervision" (MIDL 2020): every line crossing a tight box along an axis meets the object, so the summed
foreground probability on the line's segment inside the box is at least ``w`` voxels. The six background
clicks of an object lie 2–10 mm beyond its extreme voxels, so their inclusive voxel box ``[lo, hi]`` is only
*nearly* tight and the object is a blob, not a box: only lines through the central part of the box's
cross-section are constrained.

Shapes and axis order: ``logits [B, C, I, J, K]`` (``C >= 2``, ``p = softmax(logits)[:, 1]``, computed in
float32 — float64 kept — also under autocast); ``boxes[b]`` lists the boxes ``(lo, hi)`` of sample ``b`` in
the patch's own voxel indices ``[i, j, k]``, inclusive; optional ``valid [B, 1, I, J, K]`` (non-zero =
valid). ``w`` (``min_width``) is in voxels; the loss is unitless, in ``[0, 1]`` per term.

Per box and axis ``a`` (the two other axes ``u, v``), with ``c_d = (lo_d + hi_d) / 2``,
``h_d = (hi_d − lo_d) / 2`` and the kept offsets ``r_d = max(shrink · h_d, 0.5)`` (so at least the one or two
voxels nearest the centre are kept):

* central range ``R_d = {x ∈ ℤ : |x − c_d| <= r_d}``;
* **tightness lines** along ``a``: one per ``(x_u, x_v) ∈ R_u × R_v`` inside the patch; segment
  ``S = Σ_{x_a = lo_a}^{hi_a} p``; penalty ``φ(S) = (max(0, w − S) / w)²``;
* **extent slices** perpendicular to ``a``: one per ``x_a ∈ R_a`` inside the patch; mass
  ``E = Σ_{x_u = lo_u}^{hi_u} Σ_{x_v = lo_v}^{hi_v} p`` (the whole box cross-section); penalty ``φ(E)``.

A line is constrained only if its whole segment ``lo_a … hi_a`` is inside the patch (a segment cut by the
patch border may legitimately miss the object) and no voxel of it is invalid in ``valid``; a slice likewise
needs its whole box cross-section inside the patch and valid. Lines (slices) of all boxes of all samples are
pooled per axis: ``T_a = mean of φ over the constrained lines along a``, ``tightness = mean of T_a over the
axes that have at least one constrained line`` (0 if none); ``extent`` likewise over slices; ``loss =
tightness + extent_weight · extent``. With no constrained line or slice the result is an exact zero that
stays attached to ``logits`` (``backward`` works, gradients zero).

Penalty choice: a squared hinge normalised by ``w`` rather than the paper's log-barrier. It is bounded in
``[0, 1]`` per line whatever ``w`` and the box size (its weight does not need retuning per dataset), is
smooth with a gradient that fades at the constraint, and needs neither a feasible start nor the barrier's
``t`` schedule, which the PA-Seg stage-one ramp-up already provides.

Caveat: the prior assumes the object's half-extent is large compared with the click margin; a small object
with 10 mm margins, off-centre in its box, may truly miss some central lines — lower ``shrink`` then.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from PASegLib.losses.inputs import check_boxes, check_logits, check_valid
from PASegLib.utils.checks import check_number

__all__ = ["BoxTightnessLoss", "box_tightness_terms"]


def _central_range(lo: int, hi: int, shrink: float) -> Tuple[int, int]:
    """Inclusive ``(start, stop)`` of the integers ``x`` with ``|x − c| <= max(shrink · h, 0.5)``."""
    centre, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    reach = max(shrink * half, 0.5)
    return math.ceil(centre - reach - 1e-9), math.floor(centre + reach + 1e-9)


def _penalty(total: torch.Tensor, width: float) -> torch.Tensor:
    """Squared hinge ``(max(0, w − total) / w)²``."""
    return (torch.clamp(width - total, min=0.0) / width) ** 2


def box_tightness_terms(
    logits: torch.Tensor,
    boxes: Sequence[Sequence[Any]],
    valid: Optional[torch.Tensor] = None,
    *,
    shrink: float = 0.5,
    min_width: float = 1.0,
    extent_weight: float = 0.0,
) -> Dict[str, torch.Tensor]:
    """``{"tightness", "extent", "loss"}`` of the box prior (see the module docstring for the formula).

    Args:
        logits: raw network outputs ``[B, C, I, J, K]``, ``C >= 2`` (softmax over ``C``; channel 1 is the
            foreground).
        boxes: length-``B`` sequence; ``boxes[b]`` is a (possibly empty) sequence of ``(lo, hi)``, each a
            length-3 int sequence of inclusive voxel indices ``[i, j, k]``; boxes may reach beyond the patch.
        valid: optional ``[B, 1, I, J, K]`` valid region (non-zero = valid).
        shrink: fraction in ``[0, 1]`` of each perpendicular half-width kept around the box centre.
        min_width: ``w``, the foreground mass (voxels) each central line / slice must hold, ``> 0``.
        extent_weight: weight of the extent term in ``loss``, ``>= 0``.

    Returns:
        float32 (float64 for float64 logits) scalars ``tightness``, ``extent`` and ``loss``.
    """
    shrink = check_number("shrink", shrink, minimum=0.0, maximum=1.0)
    width = check_number("min_width", min_width, minimum=0.0, open_minimum=True)
    extent_weight = check_number("extent_weight", extent_weight, minimum=0.0)
    check_logits(logits)
    check_valid(valid, logits)
    parsed = check_boxes(boxes, logits.shape[0])

    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32  # float32 also under autocast
    prob = torch.softmax(logits.to(dtype), dim=1)[:, 1]  # [B, I, J, K]
    invalid = None if valid is None else valid[:, 0] == 0  # [B, I, J, K]
    shape = tuple(prob.shape[1:])
    zero = prob.sum() * 0.0  # attached to the graph
    line_sum: List[List[torch.Tensor]] = [[], [], []]  # per axis: sums of penalties
    line_count: List[List[torch.Tensor]] = [[], [], []]
    slice_sum: List[List[torch.Tensor]] = [[], [], []]
    slice_count: List[List[torch.Tensor]] = [[], [], []]

    def add(pen: torch.Tensor, bad: Optional[torch.Tensor], sums: List[torch.Tensor],
            counts: List[torch.Tensor]) -> None:
        if bad is None:
            sums.append(pen.sum())
            counts.append(torch.full((), float(pen.numel()), dtype=dtype, device=prob.device))  # no host copy
        else:
            keep = (~bad).to(dtype)
            sums.append((pen * keep).sum())
            counts.append(keep.sum())

    for b, sample_boxes in enumerate(parsed):
        for lo, hi in sample_boxes:
            central = [_central_range(lo[d], hi[d], shrink) for d in range(3)]
            inner = [(max(s, 0), min(e, shape[d] - 1)) for d, (s, e) in enumerate(central)]
            full_inside = [lo[d] >= 0 and hi[d] < shape[d] for d in range(3)]
            for axis in range(3):
                others = [d for d in range(3) if d != axis]
                # Tightness lines along `axis`: full segment lo..hi on `axis`, central range on the others.
                if full_inside[axis] and all(inner[d][0] <= inner[d][1] for d in others):
                    index = [slice(inner[d][0], inner[d][1] + 1) for d in range(3)]
                    index[axis] = slice(lo[axis], hi[axis] + 1)
                    totals = prob[(b, *index)].sum(dim=axis)  # [n_u, n_v]
                    bad = None if invalid is None else invalid[(b, *index)].any(dim=axis)
                    add(_penalty(totals, width), bad, line_sum[axis], line_count[axis])
                # Extent slices across `axis`: central range on `axis`, whole box cross-section on the others.
                if all(full_inside[d] for d in others) and inner[axis][0] <= inner[axis][1]:
                    index = [slice(lo[d], hi[d] + 1) for d in range(3)]
                    index[axis] = slice(inner[axis][0], inner[axis][1] + 1)
                    masses = prob[(b, *index)].sum(dim=tuple(others))  # [n_a]
                    bad = None if invalid is None else invalid[(b, *index)].any(dim=others[1]).any(dim=others[0])
                    add(_penalty(masses, width), bad, slice_sum[axis], slice_count[axis])

    def pooled(sums: List[List[torch.Tensor]], counts: List[List[torch.Tensor]]) -> torch.Tensor:
        axis_means, axis_has = [], []
        for a in range(3):
            if not sums[a]:
                continue
            count = torch.stack(counts[a]).sum()
            axis_means.append(torch.stack(sums[a]).sum() / count.clamp_min(1.0))
            axis_has.append((count > 0).to(dtype))
        if not axis_means:
            return zero
        has = torch.stack(axis_has)
        return zero + (torch.stack(axis_means) * has).sum() / has.sum().clamp_min(1.0)

    tightness = pooled(line_sum, line_count)
    extent = pooled(slice_sum, slice_count)
    return {"tightness": tightness, "extent": extent, "loss": tightness + extent_weight * extent}


class BoxTightnessLoss(nn.Module):
    """Box-tightness prior of the click boxes (after Kervadec et al., MIDL 2020), an optional stage-one term.

    ``forward(logits, boxes, valid=None)`` returns the scalar ``tightness + extent_weight · extent``;
    :meth:`terms` returns ``{"tightness", "extent", "loss"}``. The formula, shapes and the patch-border and
    ``valid`` rules are in the module docstring.

    Args:
        shrink: fraction in ``[0, 1]`` of the box half-width kept around the box centre (default 0.5).
        min_width: ``w`` in voxels, the foreground mass every constrained line / slice must hold (``> 0``).
        extent_weight: weight of the extent term (``>= 0``; default 0 = tightness only).

    Example::

        prior = BoxTightnessLoss(shrink=0.5, min_width=1.0)
        boxes = [[((3, 4, 2), (20, 25, 14))]]      # one object in the single patch, inclusive [i, j, k]
        loss = prior(logits, boxes, valid)         # logits [1, 2, 48, 48, 32], valid [1, 1, 48, 48, 32]
    """

    def __init__(self, *, shrink: float = 0.5, min_width: float = 1.0, extent_weight: float = 0.0) -> None:
        super().__init__()
        self.shrink = check_number("shrink", shrink, minimum=0.0, maximum=1.0)
        self.min_width = check_number("min_width", min_width, minimum=0.0, open_minimum=True)
        self.extent_weight = check_number("extent_weight", extent_weight, minimum=0.0)

    def terms(
        self, logits: torch.Tensor, boxes: Sequence[Sequence[Any]], valid: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """``{"tightness", "extent", "loss"}``; see :func:`box_tightness_terms`."""
        return box_tightness_terms(logits, boxes, valid, shrink=self.shrink, min_width=self.min_width,
                                   extent_weight=self.extent_weight)

    def forward(
        self, logits: torch.Tensor, boxes: Sequence[Sequence[Any]], valid: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar ``tightness + extent_weight · extent`` for logits ``[B, C, I, J, K]``."""
        return self.terms(logits, boxes, valid)["loss"]

    def extra_repr(self) -> str:
        return f"shrink={self.shrink}, min_width={self.min_width}, extent_weight={self.extent_weight}"
