"""Validation of the training loop: the held-out cases predicted by sliding window, label-free criteria (click
score, flip agreement, the subclass's terms) and, when labels exist, Dice / precision / recall / volume ratio
(information only), the ``validation`` event and ``best.pt`` by the selection criterion.

:class:`ValidationMixin` is a part of :class:`~PASegLib.training.engine.Trainer` (it uses the trainer's config,
device, networks, validation cases, stop file, events and checkpoints); it is its own module to keep one
concern per file.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from PASegLib.jobs.stopping import StopRequested
from PASegLib.training import distributed
from PASegLib.training.runtime import sliding_window_probability, stop_checking
from PASegLib.training.selection import criterion_value, label_free_score

__all__ = ["ValidationMixin", "label_diagnostics"]


def hard_dice(pred: np.ndarray, label: np.ndarray) -> float:
    a, b = pred.astype(bool), label.astype(bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(a & b)) / denom


def label_diagnostics(pred: np.ndarray, label: np.ndarray) -> Dict[str, float]:
    """``{"dice", "precision", "recall", "volume_ratio"}`` of a binary prediction against a binary label
    (same shape); precision is 1 for an empty prediction, recall 1 for an empty label, ``volume_ratio`` =
    predicted / true voxel count (``inf`` for an empty label with a non-empty prediction)."""
    a, b = pred.astype(bool), label.astype(bool)
    tp, n_pred, n_true = int(np.count_nonzero(a & b)), int(a.sum()), int(b.sum())
    return {"dice": hard_dice(a, b), "precision": tp / n_pred if n_pred else 1.0,
            "recall": tp / n_true if n_true else 1.0,
            "volume_ratio": n_pred / n_true if n_true else (0.0 if n_pred == 0 else float("inf"))}


class ValidationMixin:
    """The validation methods of :class:`~PASegLib.training.engine.Trainer`."""

    # -- validation -------------------------------------------------------------------------------------
    def predict_probability(self, networks: Sequence[torch.nn.Module], image: np.ndarray,
                            clicks: Optional[np.ndarray] = None) -> np.ndarray:
        """Sliding-window foreground probability ``[I, J, K]`` (mean softmax of ``networks``) of ``image``;
        the stop file is checked before every window (:class:`~PASegLib.jobs.stopping.StopRequested`); with
        several processes only before every case (:meth:`validate`: the ranks must stop together)."""
        stop = None if distributed.context().active else self.stop
        return sliding_window_probability(stop_checking(networks, stop), image, patch_size=self.config.patch_size,
                                          overlap=self.config.sw_overlap, device=self.device, amp=self.amp,
                                          clicks=clicks)

    def click_channel(self, case) -> Optional[np.ndarray]:
        """The click heatmap ``[I, J, K]`` of ``case`` for a click-conditioned model (``point_channel``), else
        ``None``."""
        if not self.config.point_channel:
            return None
        from PASegLib.data.clickmaps import click_heatmap, positive_points

        return click_heatmap(positive_points(case.clicks, getattr(case, "kinds", None)), case.image.shape,
                             case.geometry.spacing, self.config.point_sigma_mm)

    def predict_mask(self, networks: Sequence[torch.nn.Module], case) -> np.ndarray:
        """Binary sliding-window prediction (mean softmax of ``networks`` >= 0.5) inside ``case.valid``; a
        click-conditioned model (``point_channel``) gets the case's click heatmap."""
        return (self.predict_probability(networks, case.image, self.click_channel(case)) >= 0.5) & case.valid

    def validation_terms(self, case, pred: np.ndarray, prob: np.ndarray) -> Dict[str, float]:
        """Extra per-case validation numbers (averaged over the held-out cases) from the binary prediction
        ``pred`` and the probability ``prob`` (both ``[I, J, K]``); none in the base trainer."""
        return {}

    def validate(self) -> Optional[Dict[str, float]]:
        """Score the held-out cases: every label-free criterion (``score``, ``flip_agreement``, the subclass's
        terms) and, when the cases are labeled, ``dice``, ``precision``, ``recall`` and ``volume_ratio``
        (information only: dense labels never select).

        With ``W`` processes, rank ``r`` predicts the cases ``r, r + W, …``: before each slot of ``W`` cases rank 0
        checks the stop file for all, and the slot's rows are gathered to every rank, so each rank computes the
        one-process result."""
        if not self.val_cases:
            return None
        n, ctx = len(self.val_cases), distributed.context()
        per_case: List[Dict[str, float]] = []
        nets = self.selection_networks()
        for first in range(0, n, ctx.world_size):
            if not ctx.active:
                self.stop.check()
            elif distributed.agree(self.stop.requested):
                raise StopRequested("stop requested (rank 0 saw the stop file)")
            mine = first + ctx.rank
            rows = distributed.gather_objects(self._validation_row(nets, self.val_cases[mine]) if mine < n else None)
            for index, row in enumerate(rows[:n - first], start=first):
                per_case.append(row)
                self.emit("validation_case", epoch=self.epoch, index=index + 1, total=n,
                          case=self.val_cases[index].case_id)
        for net in self.networks.values():
            net.train()
        keys = [k for k in per_case[0] if all(k in r for r in per_case)]
        return {k: float(np.mean([r[k] for r in per_case])) for k in keys}

    def _validation_row(self, nets: Sequence[torch.nn.Module], case) -> Dict[str, float]:
        """The validation numbers of one held-out case (see :meth:`validate`)."""
        clicks = self.click_channel(case)
        prob = self.predict_probability(nets, case.image, clicks)
        pred = (prob >= 0.5) & case.valid
        flip = (slice(None, None, -1),) * 3
        flipped = self.predict_probability(nets, np.ascontiguousarray(case.image[flip]),
                                           None if clicks is None else np.ascontiguousarray(clicks[flip]))
        free = label_free_score(pred, case.partial, case.clicks, getattr(case, "kinds", None))
        row = {"score": free["score"], "partial_dice": free["partial_dice"],
               "flip_agreement": hard_dice(pred, (flipped[::-1, ::-1, ::-1] >= 0.5) & case.valid),
               **self.validation_terms(case, pred, prob)}
        if case.label is not None:
            row.update(label_diagnostics(pred, case.label))
        return row

    def _validation_round(self) -> None:
        """Validate at the current epoch, emit the event, and save ``best.pt`` when the selection criterion
        improved (never with ``selection = "last"``: then ``best.pt`` is written at the end). A stop raises
        :class:`~PASegLib.jobs.stopping.StopRequested` before anything changed."""
        if self.val_cases:
            self.emit("phase", phase="validating", epoch=self.epoch, total=len(self.val_cases))
        result = self.validate()
        if result is None:
            return
        improved = False
        if self.config.selection != "last":
            value = criterion_value(self.config.selection, result)
            improved = value is not None and (self.best_score is None or value > self.best_score)
            if improved:
                self.best_score, self.best_epoch = value, self.epoch
        self.emit("validation", epoch=self.epoch, best=improved, elapsed_s=self.tick(), **result)
        if improved:
            self.save("best")
