"""Masked Gaussian smoothing of the image a regulariser sees (not of the network input).

``smooth = G_σ ∗ (image · valid) / G_σ ∗ valid`` (normalised convolution): a Gaussian of ``sigma`` voxels on
every spatial axis, where voxels outside ``valid`` (e.g. patch padding) neither contribute nor get diluted
toward 0 at the mask border; voxels whose smoothed mask weight is 0 keep their value. The kernel is the one of
MONAI's :class:`~monai.networks.layers.GaussianFilter` (``gaussian_1d``, ``"erf"``, truncated at 4 σ), created
once per σ, device and dtype; MONAI's ``separable_filtering`` (zero padding) filters ``image · valid`` and
``valid`` in one call, with no host synchronisation.

Why: on z-scored 8-bit MRI the intensity difference of neighbouring voxels inside one tissue is often
2–3.5 × the mCRF's ``σ_I = 0.1``, so its bilateral kernel mostly measures noise; smoothing the image fed to
the mCRF (``TrainConfig.crf_image_sigma``) makes the kernel follow edges (``benchmarks/bench_energy.py``).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from PASegLib.losses.inputs import check_tensor, check_valid
from PASegLib.utils.checks import check_number

__all__ = ["masked_gaussian_smooth"]


@functools.lru_cache(maxsize=32)
def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """MONAI's 1-D ``"erf"`` Gaussian of ``sigma`` voxels truncated at 4 σ (as ``GaussianFilter``), on ``device``."""
    from monai.networks.layers import gaussian_1d  # lazy: importing PASegLib.losses must not import MONAI

    return gaussian_1d(torch.tensor(sigma, dtype=torch.float32), truncated=4.0, approx="erf").to(device, dtype)


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
    from monai.networks.layers import separable_filtering

    with torch.no_grad():
        kernel = _gaussian_kernel(float(sigma), image.device, image.dtype)
        weight = torch.ones_like(image[:, :1]) if valid is None else (valid != 0).to(image.dtype)
        both = separable_filtering(torch.cat([image * weight, weight], dim=1), [kernel] * (image.ndim - 2))
        num, den = both[:, :-1], both[:, -1:]
        return torch.where(den > 1e-6, num / den.clamp_min(1e-6), image)
