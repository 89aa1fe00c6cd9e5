"""Extreme-point loss of "Going to Extremes" (Roth et al., "Point loss" and its implementation, Eq. 6–8),
normalised by the heatmap mass.

Shapes and axis order: ``logits [B, C, I, J, K]`` (``C >= 2``; ``P = softmax(logits, dim=1)[:, 1:2]``, the
foreground probability, computed in float32 — float64 kept — also under autocast), ``points [B, 1, I, J, K]``
(the point channel ``ĝ = G({e})``: Gaussians at the extreme points, values in ``[0, 1]``, made by the caller,
e.g. with :func:`PASegLib.data.clickmaps.gaussian_point_heatmap`; not differentiated through), optional
``valid [B, 1, I, J, K]`` (non-zero = valid).

* ``G0 = box^B(P)``: ``B = iterations`` successive ``n × n × n`` box filters (each element ``1/n³``, Eq. 8),
  ``n = kernel_size`` odd. Each filter pads by **replicate** padding of ``n // 2`` voxels so the shape is
  kept (the paper does not say; replicate treats the patch border as a continuation of the prediction and
  does not pull it toward 0 as zero padding would). A box filter is separable, so each is done as three 1D
  ``avg_pool3d`` passes; the backward pass applies the transposed filters one at a time instead of
  keeping the ``3B`` intermediate volumes.
* ``b(P) = G = exp(−s · (G0 − 0.5)²)``, the boundary enhancement map: largest (1) where the smoothed
  prediction crosses 0.5. ``s = sharpness``; ``s = 1`` is the paper's Eq. 8.
* ``L_points = −Σ_{n,i} g_i ĝ_i / Σ_{n,i} ĝ_i``, the sums over the (valid) voxels ``i`` of every sample ``n``
  of the batch: Eq. 6 with the heatmap mass ``M = Σ ĝ`` in place of the paper's voxel count ``N``. The value is
  minus the heatmap-weighted mean of ``g`` at the points, in ``[−1, 0]`` whatever the patch size; a batch
  without heatmap mass (no point in any patch, or none in the valid region) gives an exact zero attached to
  ``logits``. Summing the mass over the batch weighs a patch by the points it holds (one that holds only the
  tail of a point outside it weighs little). The smoothing itself runs over the whole patch; ``valid`` only
  selects the voxels summed.

Why not ``1/N`` (the paper's Eq. 6): the six points' Gaussians (σ 3 mm) hold a few hundred voxels' mass in a
patch of tens of thousands, so ``1/N`` made the term inert. Measured on a 16-mm-radius sphere with its six
extreme points (CPU preset: 48 × 48 × 32 patch at 2 mm, N = 73,728, M = 318; 5 box filters), prediction
boundaries 0 and ±8 mm off: with ``1/N`` the norm of its logit gradient was 0.0008–0.0019 of the data term's
(CE + Dice) at weight 1 and moving the boundary 8 mm changed its value by 0.0005–0.0006; with ``1/M`` the
ratio is 0.19–0.43 and the change 0.11–0.15 (a 128 × 128 × 48 patch at 1 mm: 0.0003–0.0025 → 0.11–0.79).
``1/M`` is the paper's loss times ``N / M`` (the same gradient direction within a patch), so ``α`` (Eq. 7) means
the same at every patch and grid size.

Sharpness: with ``s = 1`` the map spans only ``[exp(−1/4), 1] ≈ [0.78, 1]``, so the loss value changes
little between a boundary on the point and one far from it, although its gradient
``2 s ĝ g (G0 − 0.5)`` still pulls ``G0`` toward 0.5 at the points. ``s > 1`` narrows the band
(``s = 16``: ``[0.018, 1]``); the default keeps the paper's form.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from PASegLib.losses.inputs import check_logits, check_map, check_valid
from PASegLib.utils.checks import check_int, check_number

__all__ = ["ExtremePointLoss", "extreme_point_loss"]

_AXIS_PADS = ((0, 0, 0, 0, 1, 1), (0, 0, 1, 1, 0, 0), (1, 1, 0, 0, 0, 0))  # F.pad order: K, J, I


def _box_step(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """One ``n × n × n`` mean filter of ``x [B, 1, I, J, K]`` with replicate padding, as three 1D passes."""
    half = kernel_size // 2
    for axis, unit_pad in enumerate(_AXIS_PADS):
        kernel = [1, 1, 1]
        kernel[axis] = kernel_size
        padded = F.pad(x, [p * half for p in unit_pad], mode="replicate")
        x = F.avg_pool3d(padded, kernel_size=tuple(kernel), stride=1)
    return x


class _BoxSmoothing(torch.autograd.Function):
    """``box^B`` whose backward applies the transposed step ``B`` times (memory of one step, not ``3B``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, iterations: int, kernel_size: int) -> torch.Tensor:
        ctx.iterations, ctx.kernel_size = iterations, kernel_size
        for _ in range(iterations):
            x = _box_step(x, kernel_size)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, None, None]:
        with torch.enable_grad():  # the step is linear: its vector-Jacobian product does not depend on x
            for _ in range(ctx.iterations):
                probe = torch.zeros_like(grad, requires_grad=True)
                (grad,) = torch.autograd.grad(_box_step(probe, ctx.kernel_size), probe, grad)
        return grad, None, None


def _check_parameters(iterations: Any, kernel_size: Any, sharpness: Any) -> Tuple[int, int, float]:
    iterations = check_int("iterations", iterations, minimum=0)
    kernel_size = check_int("kernel_size", kernel_size, minimum=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the shape is kept by n // 2 voxels of padding each side), "
                         f"got {kernel_size}")
    return iterations, kernel_size, check_number("sharpness", sharpness, minimum=0.0, open_minimum=True)


def extreme_point_loss(
    logits: torch.Tensor,
    points: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    iterations: int = 25,
    kernel_size: int = 3,
    sharpness: float = 1.0,
) -> torch.Tensor:
    """``L_points`` (Eq. 6–8) of logits ``[B, C, I, J, K]`` and point channel ``points [B, 1, I, J, K]``.

    Args:
        logits: raw logits, ``C >= 2``; channel 1 is the foreground.
        points: point heatmap ``ĝ`` on the same grid (values in ``[0, 1]``, not checked).
        valid: optional ``[B, 1, I, J, K]`` mask, non-zero = valid; only valid voxels enter both sums.
        iterations: ``B >= 0`` box filters (0: ``G0 = P``).
        kernel_size: odd ``n >= 1``.
        sharpness: ``s > 0`` in ``exp(−s (G0 − 0.5)²)``.

    Returns:
        float32 (float64 for float64 logits) scalar in ``[−1, 0]`` for ``ĝ`` in ``[0, 1]``: minus the
        heatmap-weighted mean of ``g`` over the batch (0 when the heatmaps are empty).
    """
    iterations, kernel_size, sharpness = _check_parameters(iterations, kernel_size, sharpness)
    check_logits(logits)
    check_map("points", points, logits)
    check_valid(valid, logits)

    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32  # float32 also under autocast
    prob = torch.softmax(logits.to(dtype), dim=1)[:, 1:2]  # P, [B, 1, I, J, K]
    with torch.autocast(device_type=prob.device.type, enabled=False):
        smoothed = _BoxSmoothing.apply(prob, iterations, kernel_size) if iterations else prob  # G0
    boundary = torch.exp(-sharpness * (smoothed - 0.5) ** 2)  # b(P) = G, Eq. 8
    heat = points.detach().to(dtype)  # ĝ
    if valid is not None:
        heat = heat * (valid != 0).to(dtype)  # only the valid voxels are summed
    # −Σ g ĝ / M with M = Σ ĝ (the heatmap mass); M = 0 means no ĝ anywhere: 0 / 1e-12 = an exact, attached 0
    return -(boundary * heat).sum() / heat.sum().clamp_min(1e-12)


class ExtremePointLoss(nn.Module):
    """Going to Extremes' point loss (Eq. 6–8): ``forward(logits, points, valid=None)`` → scalar ``L_points``.

    The boundary map, padding, sharpness and ``valid`` rules are in the module docstring; the caller
    weights the result (the paper's ``α`` in ``L = L_Dice + α L_points``, Eq. 7).

    Args:
        iterations: ``B >= 0`` successive box filters (default 25, the paper's setting; adjust it to the
            patch and organ scale, as the paper says).
        kernel_size: odd ``n >= 1`` (default 3; the paper leaves ``n`` open).
        sharpness: ``s > 0`` in ``exp(−s (G0 − 0.5)²)`` (default 1.0 = the paper's Eq. 8).

    Example::

        from PASegLib.data.clickmaps import gaussian_point_heatmap

        heat = gaussian_point_heatmap(extreme_points_ijk, (96, 96, 64), sigma_voxels=2.0)
        points = torch.from_numpy(heat)[None, None]          # [1, 1, 96, 96, 64]
        loss = ExtremePointLoss()(logits, points, valid)     # logits [1, 2, 96, 96, 64]
    """

    def __init__(self, *, iterations: int = 25, kernel_size: int = 3, sharpness: float = 1.0) -> None:
        super().__init__()
        self.iterations, self.kernel_size, self.sharpness = _check_parameters(iterations, kernel_size, sharpness)

    def forward(
        self, logits: torch.Tensor, points: torch.Tensor, valid: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar ``L_points`` of logits ``[B, C, I, J, K]``, points and valid ``[B, 1, I, J, K]``."""
        return extreme_point_loss(logits, points, valid, iterations=self.iterations,
                                  kernel_size=self.kernel_size, sharpness=self.sharpness)

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, kernel_size={self.kernel_size}, sharpness={self.sharpness}"
