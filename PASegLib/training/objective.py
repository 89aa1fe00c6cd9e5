"""The stage-one objective of one config, on training patches and on whole cases.

``L = L_data + a · L_mCRF + b · L_VM + g · L_box + λ_cv · L_CV + α_p · L_point + w_s · L_soft`` (``L_CV``,
``L_point``: the PSCV and Going-to-Extremes protocols; ``L_soft``: the cross-entropy with soft targets on the voxels
of soft pseudo labels, mixed supervision's student, paper 003 — reading them needs ``pseudo_labels``; see
:mod:`PASegLib.training.stage1` for the terms and :class:`~PASegLib.training.config.TrainConfig` for their
settings). :class:`Stage1Objective` builds the loss modules once and evaluates them on logits (training, with
the ramped weights ``a, b, g``) or on a foreground probability map of a whole prepared case at full weight
(validation's ``heldout_loss`` and ``benchmarks/bench_energy.py``, which ranks candidate masks by it).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from PASegLib.data.prepared import SOFT_FIRST, SOFT_STEPS
from PASegLib.losses import LOSSES
from PASegLib.losses.partial import data_term_options
from PASegLib.losses.smoothing import masked_gaussian_smooth
from PASegLib.training.config import TrainConfig

__all__ = ["Stage1Objective"]


class Stage1Objective:
    """The loss modules of ``config`` (data term, mCRF, VM, box prior)."""

    def __init__(self, config: TrainConfig) -> None:
        c = self.config = config
        # the labels are prepared partial maps (0, 1, 2 by construction, data.prepared): no per-call value check,
        # which would read a flag from the device at every step
        self.partial = LOSSES.build("partial_ce_dice", ignore_index=2, check_labels=False,
                                    **data_term_options(c.data_term))
        self.crf = LOSSES.build("mcrf", sigma_xy=c.crf_sigma_xy, sigma_intensity=c.crf_sigma_intensity,
                                radius=c.crf_radius, downsample_to=c.crf_downsample_to)
        self.vm = LOSSES.build("variance")
        self.box = LOSSES.build("box_prior", shrink=c.box_prior_shrink, min_width=c.box_prior_min_width,
                                extent_weight=c.box_prior_extent_weight)
        # the other protocols: PSCV's contrastive variance loss, Going to Extremes' point loss
        self.cv = LOSSES.build("contrastive_variance", weight=1.0, temperature=c.cv_temperature,
                               tv_weight=c.cv_tv_weight / c.cv_weight if c.cv_weight > 0 else 0.0)
        self.point = LOSSES.build("extreme_point", iterations=c.point_loss_iterations)
        # mixed supervision's student: soft pseudo labels come only from a pseudo_labels folder (data.prepared)
        self.soft = LOSSES.build("soft_ce") if c.pseudo_labels is not None else None

    def terms(self, logits: torch.Tensor, labels: torch.Tensor, image: torch.Tensor, valid: torch.Tensor,
              boxes: Sequence[Any], *, a: float, b: float, g: float,
              points: Any = None) -> Dict[str, torch.Tensor]:
        """``{"ce", "dice", "data", "mcrf", "vm", "box", "cv", "point", "soft_ce", "loss"}`` for logits
        ``[B, 2, I, J, K]``.

        ``labels`` ``[B, 1, I, J, K]`` (0, 1, 2 = ignored; with ``pseudo_labels`` also the soft-label codes
        ``SOFT_FIRST … 255`` of :mod:`~PASegLib.data.prepared`, trained by ``soft_ce`` at ``soft_label_weight``
        and kept out of the data term), ``image`` z-scored ``[B, 1, I, J, K]``, ``valid``
        ``[B, 1, I, J, K]``, ``boxes`` per sample the objects' inclusive ``(lo, hi)`` voxel boxes, ``points`` the
        click heatmaps ``[B, 1, I, J, K]`` (needed by the point loss); a term whose weight (``a`` mCRF, ``b`` VM,
        ``g`` box prior, ``cv_weight``, ``point_loss_weight``) is 0 is not computed and reported as 0. The
        contrastive variance and point losses are not ramped (PSCV and Going to Extremes train with them from
        the start).
        """
        c = self.config
        zero = logits.new_zeros(())
        soft = zero
        if self.soft is not None:  # soft codes: out of the hard data term, into the soft cross-entropy
            coded = labels >= SOFT_FIRST
            if c.soft_label_weight > 0:
                target = (labels.clamp_min(SOFT_FIRST) - SOFT_FIRST).to(logits.dtype) / SOFT_STEPS
                soft = self.soft(logits, target, coded & (valid != 0))
            labels = torch.where(coded, torch.full_like(labels, 2), labels)
        data = self.partial.terms(logits, labels)
        crf = self.crf(logits, masked_gaussian_smooth(image, c.crf_image_sigma, valid), valid) \
            if a > 0 else zero
        vm = self.vm(logits, image, valid) if b > 0 else zero
        box = self.box(logits, boxes, valid) if g > 0 else zero
        cv = self.cv(logits, image, valid) if c.cv_weight > 0 else zero
        if c.point_loss_weight > 0 and points is None:
            raise ValueError("the point loss needs the click heatmaps (points)")
        point = self.point(logits, points, valid) if c.point_loss_weight > 0 else zero
        loss = data["loss"] + a * crf + b * vm + g * box + c.cv_weight * cv + c.point_loss_weight * point \
            + c.soft_label_weight * soft
        return {"ce": data["ce"], "dice": data["dice"], "data": data["loss"], "mcrf": crf, "vm": vm, "box": box,
                "cv": cv, "point": point, "soft_ce": soft, "loss": loss}

    def of_probability(self, case: Any, prob: Any, *, device: Optional[torch.device] = None) -> Dict[str, float]:
        """The objective at full weight (α, β, box prior) of the foreground probability ``prob`` ``[I, J, K]``
        (a numpy array, or a tensor already on ``device``) on a whole prepared ``case`` (its seeds, image, valid
        region and boxes on the same grid); ``prob`` is clipped to ``[1e-6, 1 − 1e-6]``. Computed on ``device``
        (default: ``prob``'s, the CPU for an array); the case's maps are sent there as float32 / uint8. Returns
        the float terms and ``"loss"`` (one read from the device)."""
        c = self.config
        if device is None:
            device = prob.device if isinstance(prob, torch.Tensor) else torch.device("cpu")

        def send(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(device)

        p = prob.to(device, torch.float32) if isinstance(prob, torch.Tensor) else send(np.asarray(prob, np.float32))
        p = p.reshape(1, 1, *p.shape[-3:]).clamp(1e-6, 1.0 - 1e-6)
        logits = torch.log(torch.cat([1.0 - p, p], dim=1))  # softmax(logits) = (1 - p, p)
        image = send(np.asarray(case.image, dtype=np.float32))
        valid = send(np.asarray(case.valid).astype(np.uint8)).float()
        partial = send(np.asarray(case.partial).astype(np.uint8)).long()
        partial = torch.where(valid > 0, partial, torch.full_like(partial, 2))
        boxes = [np.array([[lo, hi] for lo, hi in case.boxes], dtype=np.int64).reshape(-1, 2, 3)]
        points = None
        if c.point_loss_weight > 0:
            from PASegLib.data.clickmaps import click_heatmap, positive_points

            heat = click_heatmap(positive_points(case.clicks, getattr(case, "kinds", None)), prob.shape,
                                 case.geometry.spacing, c.point_sigma_mm)
            points = send(heat)
        with torch.no_grad():
            terms = self.terms(logits, partial, image, valid, boxes, a=c.alpha, b=c.beta, g=c.box_prior_weight,
                               points=points)
            values = torch.stack([v.detach().to(torch.float64).reshape(()) for v in terms.values()]).tolist()
        return dict(zip(terms, values))
