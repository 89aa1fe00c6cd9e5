"""Variance Minimization (VM) loss of PA-Seg stage 1 (paper Eq. 9–10), after the Chan–Vese energy.

For each class ``c`` the softmax probabilities ``p_{i,c}`` act as soft region weights inside the valid region
``Ω_M``; the loss is the sum over classes of the weighted intensity variance of the region:

* ``u_c = Σ_{i∈Ω_M} x_i p_{i,c} / Σ_{i∈Ω_M} p_{i,c}`` (Eq. 9)
* ``L_vm = Σ_c Σ_{i∈Ω_M} (x_i − u_c)² p_{i,c} / Σ_{i∈Ω_M} p_{i,c}`` (Eq. 10)

With ``C = 2`` (``p_{i,1} = p_i`` foreground, ``p_{i,0} = 1 − p_i`` background) this is exactly Eq. 10; for
``C > 2`` it is the natural multi-phase Chan–Vese generalisation. For a multi-channel image
``[B, Ch, ...]`` the squared difference is averaged over the ``Ch`` channels (vector-valued Chan–Vese with
equal channel weights), so the scale of the loss, and hence the weight ``β``, does not depend on ``Ch``.
The loss is computed per sample and averaged over the samples whose valid region is not empty.

Units: the loss is in (image intensity)²; PA-Seg applies it to z-scored images (``β = 0.1``).

Differences from the official implementation, which (a) restricts only the background term to the valid
region and (b) defines the valid region as the voxels above the image minimum: here both terms use ``Ω_M``
as Eq. 9–10 state, and ``Ω_M`` is whatever ``mask`` the caller passes (padding excluded);
:func:`above_minimum_mask` reproduces the official definition of the region.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["VarianceMinimizationLoss", "above_minimum_mask", "variance_minimization"]


def above_minimum_mask(image: torch.Tensor, *, tol: float = 1e-5) -> torch.Tensor:
    """Boolean ``[B, 1, *spatial]`` mask of voxels whose intensity exceeds the sample's minimum by ``> tol``.

    This is how the official PA-Seg code defines the valid region (skull-stripped or zero-filled background
    sits at the minimum). For a multi-channel image a voxel is valid if any channel is above its minimum.
    """
    if not isinstance(image, torch.Tensor) or image.ndim < 3:
        shape = tuple(getattr(image, "shape", ()))
        raise ValueError(f"image must be a tensor [B, Ch, *spatial], got shape {shape}")
    flat = image.reshape(image.shape[0], image.shape[1], -1)
    minimum = flat.amin(dim=2, keepdim=True)
    valid = ((flat - minimum) > tol).any(dim=1, keepdim=True)
    return valid.reshape(image.shape[0], 1, *image.shape[2:])


def variance_minimization(
    pred: torch.Tensor,
    image: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``L_vm`` (Eq. 10) of logits ``pred [B, C, *spatial]`` and image ``image [B, Ch, *spatial]``.

    Args:
        pred: logits, ``C >= 2``, softmax over ``C``.
        image: intensities on the same grid (z-scored in PA-Seg). Not differentiated through.
        mask: optional ``[B, 1, *spatial]`` valid region ``Ω_M`` (non-zero = valid); default: everywhere.
        eps: added to each region's soft volume ``Σ p`` before dividing (``>= 0``).

    Returns:
        float32 (float64 for float64 ``pred``) scalar; samples with an empty valid region are left out
        of the batch mean (an all-empty batch gives an exact zero attached to ``pred``).
    """
    if not isinstance(pred, torch.Tensor) or pred.ndim < 3 or not pred.is_floating_point():
        raise ValueError(f"pred must be floating-point logits [B, C, *spatial], got shape "
                         f"{tuple(getattr(pred, 'shape', ()))}")
    if pred.shape[1] < 2:
        raise ValueError(f"pred must have C >= 2 channels (softmax logits), got C={pred.shape[1]}")
    if (not isinstance(image, torch.Tensor) or image.ndim != pred.ndim or image.shape[0] != pred.shape[0]
            or image.shape[2:] != pred.shape[2:]):
        raise ValueError(f"image must have shape [B, Ch, *spatial] = [{pred.shape[0]}, Ch, "
                         f"{', '.join(map(str, pred.shape[2:]))}], got {tuple(getattr(image, 'shape', ()))}")
    expected_mask = (pred.shape[0], 1, *pred.shape[2:])
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != expected_mask):
        raise ValueError(f"mask must have shape {expected_mask}, got {tuple(getattr(mask, 'shape', ()))}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    batch, n_classes = pred.shape[:2]
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32  # float32 also under autocast
    prob = torch.softmax(pred.to(dtype).reshape(batch, n_classes, -1), dim=1)  # [B, C, N]
    x = image.detach().to(dtype).reshape(batch, image.shape[1], -1)  # [B, Ch, N]
    if mask is not None:
        region = (mask.reshape(batch, 1, -1) != 0).to(dtype)  # [B, 1, N]
        weight = prob * region
    else:
        region = None
        weight = prob
    volume = weight.sum(dim=2) + eps  # [B, C]
    volume = torch.where(volume > 0, volume, torch.ones_like(volume))  # empty region with eps = 0
    # One class at a time keeps memory at O(B·Ch·N); only elementwise ops and sums, which autocast leaves
    # in float32 (an einsum/matmul would be downcast to half precision).
    per_class = []
    for c in range(n_classes):
        w = weight[:, c : c + 1]  # [B, 1, N]
        mean = (w * x).sum(dim=2) / volume[:, c : c + 1]  # u_c per image channel (Eq. 9), [B, Ch]
        sq = (x - mean[:, :, None]) ** 2  # [B, Ch, N]
        per_class.append((sq * w).sum(dim=2).mean(dim=1) / volume[:, c])  # Eq. 10 term, [B]
    per_sample = torch.stack(per_class, dim=1).sum(dim=1)  # [B]

    if region is None:
        valid = torch.ones(batch, dtype=dtype, device=pred.device)
    else:
        valid = (region.sum(dim=(1, 2)) > 0).to(dtype)
    return (per_sample * valid).sum() / valid.sum().clamp_min(1.0)


class VarianceMinimizationLoss(nn.Module):
    """Module form of :func:`variance_minimization`: ``forward(pred, image, mask=None)`` → scalar ``L_vm``.

    Args:
        eps: added to each region's soft volume before dividing.

    Example::

        vm = VarianceMinimizationLoss()
        loss = vm(logits, image, valid_mask)   # logits [B, 2, I, J, K], image [B, 1, I, J, K]
    """

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def forward(
        self, pred: torch.Tensor, image: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar VM loss; see :func:`variance_minimization` for shapes."""
        return variance_minimization(pred, image, mask, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
