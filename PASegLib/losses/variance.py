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

Shapes and axis order: ``logits [B, C, *spatial]`` (``spatial`` = ``I, J, K`` in ITK index order for
volumes, ``C >= 2``), ``image [B, Ch, *spatial]`` on the same grid, optional ``valid [B, 1, *spatial]``
(non-zero = valid). Arithmetic is float32 (float64 for float64 ``logits``), also under autocast.

Differences from the official implementation, which (a) restricts only the background term to the valid
region and (b) defines the valid region as the voxels above the image minimum: here both terms use ``Ω_M``
as Eq. 9–10 state, and ``Ω_M`` is whatever ``valid`` mask the caller passes (padding excluded);
:func:`above_minimum_mask` reproduces the official definition of the region.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from PASegLib.losses.inputs import check_logits, check_map, check_tensor, check_valid

__all__ = ["VarianceMinimizationLoss", "above_minimum_mask", "variance_minimization"]


def above_minimum_mask(image: torch.Tensor, *, tol: float = 1e-5) -> torch.Tensor:
    """Boolean ``[B, 1, *spatial]`` mask of voxels whose intensity exceeds the sample's minimum by ``> tol``.

    ``image`` is ``[B, Ch, *spatial]`` (any dtype); ``tol`` is in its intensity units. The result serves as
    the ``valid`` argument of the losses. This is how the official PA-Seg code defines the valid region
    (skull-stripped or zero-filled background sits at the minimum). For a multi-channel image a voxel is valid
    if any channel is above its minimum.
    """
    check_tensor("image", image, spatial_dims=None, channel="Ch", floating=False)
    flat = image.reshape(image.shape[0], image.shape[1], -1)
    minimum = flat.amin(dim=2, keepdim=True)
    valid = ((flat - minimum) > tol).any(dim=1, keepdim=True)
    return valid.reshape(image.shape[0], 1, *image.shape[2:])


def variance_minimization(
    logits: torch.Tensor,
    image: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``L_vm`` (Eq. 10) of ``logits [B, C, *spatial]`` and ``image [B, Ch, *spatial]``.

    Args:
        logits: raw network outputs, ``C >= 2``, softmax over ``C`` (axis 1).
        image: intensities on the same grid (z-scored in PA-Seg). Not differentiated through.
        valid: optional ``[B, 1, *spatial]`` valid region ``Ω_M`` (non-zero = valid); default: everywhere.
        eps: added to each region's soft volume ``Σ p`` before dividing (``>= 0``).

    Returns:
        float32 (float64 for float64 ``logits``) scalar in (image intensity)²; samples with an empty valid
        region are left out of the batch mean (an all-empty batch gives an exact zero attached to ``logits``).

    Raises:
        ValueError: an input of the wrong type, dtype or shape (see :mod:`PASegLib.losses.inputs`), or
            ``eps < 0``.
    """
    check_logits(logits, spatial_dims=None)
    check_map("image", image, logits, channels=None)
    check_valid(valid, logits)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    batch, n_classes = logits.shape[:2]
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32  # float32 also under autocast
    prob = torch.softmax(logits.to(dtype).reshape(batch, n_classes, -1), dim=1)  # [B, C, N]
    x = image.detach().to(dtype).reshape(batch, image.shape[1], -1)  # [B, Ch, N]
    if valid is not None:
        region = (valid.reshape(batch, 1, -1) != 0).to(dtype)  # [B, 1, N]
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
        counted = torch.ones(batch, dtype=dtype, device=logits.device)
    else:
        counted = (region.sum(dim=(1, 2)) > 0).to(dtype)
    return (per_sample * counted).sum() / counted.sum().clamp_min(1.0)


class VarianceMinimizationLoss(nn.Module):
    """Module form of :func:`variance_minimization`: ``forward(logits, image, valid=None)`` → scalar ``L_vm``.

    Args:
        eps: added to each region's soft volume before dividing.

    Example::

        vm = VarianceMinimizationLoss()
        loss = vm(logits, image, valid)   # logits [B, 2, I, J, K], image and valid [B, 1, I, J, K]
    """

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def forward(
        self, logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scalar VM loss; see :func:`variance_minimization` for shapes."""
        return variance_minimization(logits, image, valid, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
