"""Multi-view CRF loss of PA-Seg stage 1 (paper Eq. 7–8), with O(N) memory.

For one 2D slice ``s`` the relaxed Potts CRF energy is ``Σ_c Σ_i Σ_{j∈W(i), j≠i} p_{c,i} (1 − p_{c,j}) K_ij``
with the bilateral Gaussian kernel

    ``K_ij = exp(−|x_i − x_j|² / (2 σ_xy²) − |I_i − I_j|² / (2 σ_I²))``

where ``x`` are voxel coordinates in the slice (units: voxels of the grid the loss is computed on),
``I`` the (already normalised, e.g. z-scored) image intensities (a Euclidean norm over image channels) and
``W(i)`` the square ``(2r + 1) × (2r + 1)`` window centred on ``i`` (as the official Gated-CRF ``unfold``
implementation). Every ordered pair is counted, i.e. each unordered pair twice, exactly as Eq. 7.

Shapes and conventions (see :mod:`PASegLib`):

* ``logits``: raw network outputs ``[B, C, I, J, K]`` (probabilities with ``activation="none"``); spatial
  axes in ITK index order ``[i, j, k]``.
* ``image``: ``[B, Ch, I, J, K]``, floating point, already normalised; no gradient flows into it.
* ``valid``: optional ``[B, 1, I, J, K]`` valid-voxel mask (non-zero = valid); every pair with an invalid
  voxel is excluded.
* Views (for an axis-aligned LPS/RAS volume): ``"axial"`` = planes of constant ``k`` (windows in ``(i, j)``),
  ``"coronal"`` = constant ``j`` (windows in ``(i, k)``), ``"sagittal"`` = constant ``i`` (``(j, k)``).

Class sum. ``activation="softmax"`` (default, ``C >= 2``) sums the pair term over all classes (the Potts
relaxation used by Gated-CRF and the official code). For the binary case ``C = 2`` this is exactly
``2 ×`` Eq. 7 with ``p = softmax(logits)[:, 1]`` (because ``K`` is symmetric) and is computed that way.
``activation="sigmoid"`` treats each channel as an independent foreground probability (``C = 1`` gives
Eq. 7 itself); ``activation="none"`` takes ``logits`` as probabilities in ``[0, 1]`` and sums over its
channels.

Normalisation. Each view's loss is the sum over all slices of that view divided by the number of valid
voxels in the batch (``B·I·J·K`` without ``valid``): without ``valid`` this is the paper's "slice loss averaged
over the slices" with each slice loss divided by its pixel count (as Gated-CRF divides by pixels), and the
batch mean. Views are averaged (Eq. 8). Offsets that lie in two views (along one axis) are computed once.

Downsampling (``downsample_to``). As the official code (64×64×48 grid for VS), probabilities (after the
activation) and the image are resampled with trilinear interpolation (``align_corners=False``) before the
loss; a coarse voxel is valid when the trilinearly resampled ``valid`` mask is ``>= 0.999`` (it interpolates
valid voxels only). ``sigma_xy`` and ``radius`` are then in voxels of the coarse grid.

Implementation: :mod:`PASegLib.losses.bilateral` (``O(N)`` memory, the gradient kept from the forward pass,
float32 arithmetic with float64 sums, no host synchronisation). ``compute_mode`` picks how its loop over the
window offsets runs, with the same value and gradient: ``"per_offset"`` (the fastest on a CPU, the least
memory, ~1,500 kernel launches per forward + backward at the paper's settings), ``"chunked"`` (a fixed ~160
launches, for GPUs) or ``"auto"`` (``per_offset`` on the CPU, ``chunked`` elsewhere).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from PASegLib.losses.bilateral import VIEW_AXES, bilateral_potts_energy, resolve_compute_mode
from PASegLib.losses.inputs import check_logits, check_map, check_valid
from PASegLib.utils.checks import check_int, check_number

__all__ = ["VIEW_AXES", "MultiViewCRFLoss", "multi_view_crf_loss"]

_ACTIVATIONS = ("softmax", "sigmoid", "none")
_MASK_VALID_THRESHOLD = 0.999


def _check_options(
    sigma_xy: float,
    sigma_intensity: float,
    radius: int,
    views: Sequence[str],
    downsample_to: Optional[Sequence[int]],
    activation: str,
    compute_mode: str,
) -> Tuple[Tuple[str, ...], Optional[Tuple[int, int, int]]]:
    for name, value in (("sigma_xy", sigma_xy), ("sigma_intensity", sigma_intensity)):
        check_number(name, value, minimum=0, open_minimum=True)
    check_int("radius", radius, minimum=1, unit="voxels")
    if isinstance(views, str):
        views = (views,)
    views = tuple(views)
    if not views or any(v not in VIEW_AXES for v in views) or len(set(views)) != len(views):
        raise ValueError(f"views must be a non-empty list of distinct names from {sorted(VIEW_AXES)}, "
                         f"got {views!r}")
    grid = None
    if downsample_to is not None:
        grid = tuple(downsample_to)
        if len(grid) != 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in grid):
            raise ValueError(f"downsample_to must be None or 3 ints >= 1 (I, J, K), got {downsample_to!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    resolve_compute_mode(compute_mode, torch.device("cpu"))  # raises naming compute_mode
    return views, grid  # type: ignore[return-value]


def _check_inputs(logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor], activation: str) -> None:
    if activation == "softmax":
        check_logits(logits, channels_note="activation='softmax'; use activation='sigmoid' for one foreground "
                                           "channel")
    else:
        check_logits(logits, min_channels=1, channels_note=f"activation={activation!r}")
    check_map("image", image, logits, channels=None, floating=True)
    check_valid(valid, logits)


def multi_view_crf_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    *,
    sigma_xy: float = 6.0,
    sigma_intensity: float = 0.1,
    radius: int = 5,
    views: Sequence[str] = ("axial", "sagittal", "coronal"),
    downsample_to: Optional[Sequence[int]] = None,
    activation: str = "softmax",
    compute_mode: str = "auto",
) -> torch.Tensor:
    """Multi-view CRF loss (scalar tensor, float32 or float64); see the module docstring for the formula.

    Args:
        logits: raw network outputs ``[B, C, I, J, K]`` (probabilities if ``activation="none"``), axes in ITK
            index order.
        image: normalised image ``[B, Ch, I, J, K]``, floating point (``sigma_intensity`` is in its units);
            not differentiated.
        valid: optional valid-voxel mask ``[B, 1, I, J, K]`` (non-zero = valid).
        sigma_xy: spatial bandwidth in voxels (of the ``downsample_to`` grid when given).
        sigma_intensity: intensity bandwidth in units of ``image``.
        radius: window half-size ``r`` in voxels; the window is ``(2r + 1)²`` minus its centre.
        views: any of ``"axial"`` (windows in ``(i, j)``), ``"coronal"`` (``(i, k)``), ``"sagittal"``
            (``(j, k)``); their losses are averaged.
        downsample_to: optional ``(I', J', K')`` grid for the loss (official VS setting ``(64, 64, 48)``).
        activation: ``"softmax"`` (``C >= 2``), ``"sigmoid"`` or ``"none"``.
        compute_mode: ``"auto"`` (default), ``"per_offset"`` or ``"chunked"``: how the offsets are looped over
            (same value and gradient; see the module docstring).

    Raises:
        ValueError: on a bad option or on inputs of wrong shape, naming the bad argument.
    """
    views, grid = _check_options(sigma_xy, sigma_intensity, radius, views, downsample_to, activation, compute_mode)
    _check_inputs(logits, image, valid, activation)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.to(dtype)
        if activation == "softmax":
            prob = torch.softmax(z, dim=1)
        elif activation == "sigmoid":
            prob = torch.sigmoid(z)
        else:
            prob = z
        feat = image.detach().to(device=logits.device, dtype=dtype)
        region = None if valid is None else (valid.detach().to(logits.device) != 0).to(dtype)
        if grid is not None and tuple(prob.shape[2:]) != grid:
            prob = F.interpolate(prob, size=grid, mode="trilinear", align_corners=False)
            feat = F.interpolate(feat, size=grid, mode="trilinear", align_corners=False)
            if region is not None:
                region = F.interpolate(region, size=grid, mode="trilinear", align_corners=False)
                region = (region >= _MASK_VALID_THRESHOLD).to(dtype)
        scale = 1.0
        if activation == "softmax" and prob.shape[1] == 2:
            prob, scale = prob[:, 1:2], 2.0  # Σ over both classes == 2 × foreground-only sum
        feat = feat * (1.0 / (math.sqrt(2.0) * sigma_intensity))  # |ΔI|²/(2σ²) becomes |Δfeat|²
        return bilateral_potts_energy(prob, feat, region, views=views, radius=radius, sigma_xy=sigma_xy,
                                      scale=scale, compute_mode=compute_mode)


class MultiViewCRFLoss(nn.Module):
    """Multi-view CRF loss of PA-Seg (Eq. 7–8) as a module; ``forward(logits, image, valid=None) -> scalar``.

    Keyword-only options as :func:`multi_view_crf_loss` (defaults are the paper's: ``sigma_xy=6`` voxels,
    ``sigma_intensity=0.1`` on the normalised image, ``radius=5``, all three views). Inputs: ``logits``
    ``[B, C, I, J, K]``, ``image`` ``[B, Ch, I, J, K]``, optional ``valid`` ``[B, 1, I, J, K]``;
    ``[i, j, k]`` is ITK index order and axial slices are planes of constant ``k``.

    Example::

        loss_fn = MultiViewCRFLoss(downsample_to=(64, 64, 48))
        loss = loss_fn(logits, image)  # logits [1, 2, 128, 128, 48], image [1, 1, 128, 128, 48]
    """

    def __init__(
        self,
        *,
        sigma_xy: float = 6.0,
        sigma_intensity: float = 0.1,
        radius: int = 5,
        views: Sequence[str] = ("axial", "sagittal", "coronal"),
        downsample_to: Optional[Sequence[int]] = None,
        activation: str = "softmax",
        compute_mode: str = "auto",
    ) -> None:
        super().__init__()
        self.views, self.downsample_to = _check_options(
            sigma_xy, sigma_intensity, radius, views, downsample_to, activation, compute_mode)
        self.sigma_xy = float(sigma_xy)
        self.sigma_intensity = float(sigma_intensity)
        self.radius = radius
        self.activation = activation
        self.compute_mode = compute_mode

    def forward(self, logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """Scalar mCRF loss of ``logits [B, C, I, J, K]``, ``image [B, Ch, I, J, K]`` and ``valid``."""
        return multi_view_crf_loss(
            logits, image, valid, sigma_xy=self.sigma_xy, sigma_intensity=self.sigma_intensity,
            radius=self.radius, views=self.views, downsample_to=self.downsample_to, activation=self.activation,
            compute_mode=self.compute_mode)

    def extra_repr(self) -> str:
        return (f"sigma_xy={self.sigma_xy}, sigma_intensity={self.sigma_intensity}, radius={self.radius}, "
                f"views={self.views}, downsample_to={self.downsample_to}, activation={self.activation!r}, "
                f"compute_mode={self.compute_mode!r}")
