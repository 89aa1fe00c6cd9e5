"""Masked Gaussian smoothing of the image a regulariser sees (not of the network input).

``smooth = G_σ ∗ (image · valid) / G_σ ∗ valid`` (normalised convolution): a Gaussian of ``sigma`` voxels on
every spatial axis, where voxels outside ``valid`` (e.g. patch padding) neither contribute nor get diluted
toward 0 at the mask border; voxels whose smoothed mask weight is 0 keep their value. MONAI's separable
:class:`~monai.networks.layers.GaussianFilter` (zero padding, truncated at 4 σ) does the filtering.

Why: on z-scored 8-bit MRI the intensity difference of neighbouring voxels inside one tissue is often
2–3.5 × the mCRF's ``σ_I = 0.1``, so its bilateral kernel mostly measures noise; smoothing the image fed to
the mCRF (``TrainConfig.crf_image_sigma``) makes the kernel follow edges (``benchmarks/bench_energy.py``).
"""

from __future__ import annotations

from typing import Optional

import torch

from PASegLib.losses.inputs import check_tensor, check_valid
from PASegLib.utils.checks import check_number

__all__ = ["masked_gaussian_smooth"]


def masked_gaussian_smooth(image: torch.Tensor, sigma: float, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gaussian-smoothed copy of ``image`` ``[B, Ch, I, J, K]`` (σ in voxels; ``0`` returns ``image``).

    Args:
        image: float tensor ``[B, Ch, *spatial]`` (1–3 spatial axes); no gradient is taken through it.
        sigma: standard deviation in voxels, the same on every axis (``>= 0``).
        valid: optional ``[B, 1, *spatial]`` valid region (non-zero = valid).
    """
    sigma = check_number("sigma", sigma, minimum=0)
    check_tensor("image", image, spatial_dims=None, channel="Ch")
    check_valid(valid, image, like_name="image")
    if sigma == 0:
        return image
    from monai.networks.layers import GaussianFilter

    with torch.no_grad():
        filt = GaussianFilter(image.ndim - 2, sigma=float(sigma)).to(image.device)
        weight = torch.ones_like(image[:, :1]) if valid is None else (valid != 0).to(image.dtype)
        num = filt(image * weight)
        den = filt(weight)
        return torch.where(den > 1e-6, num / den.clamp_min(1e-6), image)
