"""Ramp-up schedule and weights of the stage-1 regularisers (paper Eq. 11 with the official ramp-up).

The official PA-Seg training multiplies the regularisers by the sigmoid-shaped ramp-up of the mean-teacher
paper (Laine & Aila; Tarvainen & Valpola):

``w(t) = exp(−5 (1 − t/T)²)`` for ``0 <= t < T``, ``w(t) = 1`` for ``t >= T`` (``t`` clipped at 0),

with ``T`` = 30 epochs (VS) or 50 epochs (BraTS), so the stage-1 loss is

``L = L_psup + w(t) · (α · L_mcrf + β · L_vm)``, ``α = 1.0``, ``β = 0.1`` (paper Sec. IV-B).

``t`` and ``T`` share one unit (epochs in the official code, which counts epochs from 1; fractional epochs
give a smooth per-iteration ramp). Nothing here imports torch: the weights are plain floats and
:meth:`Stage1LossWeights.combine` works on tensors and floats alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Tuple

from PASegLib.utils.checks import check_number

__all__ = ["Stage1LossWeights", "sigmoid_rampup"]


def sigmoid_rampup(current: float, *, length: float) -> float:
    """Sigmoid ramp-up weight in ``(0, 1]``: ``exp(−5 (1 − t/T)²)`` for ``t < T``, 1 after.

    Args:
        current: ``t``, the training progress (e.g. epochs, may be fractional); negative values count as 0.
        length: ``T``, the ramp-up length in the same unit; ``0`` disables the ramp (always 1).

    Values: ``w(0) = exp(−5) ≈ 0.00674``, ``w(T/2) = exp(−1.25) ≈ 0.2865``, ``w(t >= T) = 1``.
    """
    length = check_number("length", length, minimum=0)
    if not math.isfinite(current):
        raise ValueError(f"current must be finite, got {current}")
    if length == 0:
        return 1.0
    t = min(max(float(current), 0.0), float(length))
    phase = 1.0 - t / length
    return math.exp(-5.0 * phase * phase)


@dataclass(frozen=True)
class Stage1LossWeights:
    """Weights of the stage-1 loss ``L_psup + w(t) · (alpha · L_mcrf + beta · L_vm)``.

    Attributes:
        alpha: weight of the multi-view CRF loss (paper: 1.0).
        beta: weight of the variance-minimization loss (paper: 0.1).
        rampup_length: ``T`` of :func:`sigmoid_rampup` in epochs (official: 30 for VS, 50 for BraTS);
            0 applies the full weights from the start.
    """

    alpha: float = 1.0
    beta: float = 0.1
    rampup_length: float = 30.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "rampup_length"):
            check_number(name, getattr(self, name), minimum=0)

    def ramp(self, epoch: float) -> float:
        """``w(epoch)``, the ramp-up factor at ``epoch`` (same unit as ``rampup_length``)."""
        return sigmoid_rampup(epoch, length=self.rampup_length)

    def regularizer_weights(self, epoch: float) -> Tuple[float, float]:
        """``(w·alpha, w·beta)``: the effective weights of ``L_mcrf`` and ``L_vm`` at ``epoch``."""
        w = self.ramp(epoch)
        return w * self.alpha, w * self.beta

    def combine(self, *, psup: Any, mcrf: Any, vm: Any, epoch: float) -> Any:
        """Total stage-1 loss ``psup + w(epoch) · (alpha · mcrf + beta · vm)`` (tensors or floats)."""
        a, b = self.regularizer_weights(epoch)
        return psup + a * mcrf + b * vm
