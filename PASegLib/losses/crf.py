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

Implementation. ``L = Σ_c Σ_i p_{c,i} (F_i − G_{c,i})`` with ``F = K·1`` and ``G_c = K·p_c`` (both
bilateral filterings), and for symmetric ``K`` (zero diagonal, masked rows/columns zeroed)
``∂L/∂p_c = F − 2 G_c``. Both are accumulated in one loop over half of the window offsets (each unordered
pair once, added at both ends), so memory is ``O(N·C)`` and the kernel is evaluated once per pair; the
gradient is kept from the forward pass (no double backward). Arithmetic is float32 (float64 inputs stay
float64), also under autocast; the two sums of the value are reduced in float64, the value is then exact to
~1e-7 of ``Σ K`` (like Gated-CRF's ``Σ K − Σ p·Kp``) and the gradient to float32 rounding. Kernel values
below ``e^-60`` are computed as ``e^-60`` (avoids slow denormal arithmetic). Works on any torch device.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from PASegLib.losses.inputs import check_logits, check_map, check_valid
from PASegLib.utils.checks import check_int, check_number

__all__ = ["VIEW_AXES", "MultiViewCRFLoss", "multi_view_crf_loss"]

#: spatial axes (0 = i, 1 = j, 2 = k) spanning the 2D slices of each view
VIEW_AXES: Dict[str, Tuple[int, int]] = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
_ACTIVATIONS = ("softmax", "sigmoid", "none")
_MASK_VALID_THRESHOLD = 0.999
# Denormal floats are ~10-100x slower on x86: exp() of arguments below about -87 yields them, and so would
# K·q with K tiny. K < e^-60 ≈ 9e-27 is therefore computed as e^-60; as q = 1 − 2p is 0 or >= 6e-8 in
# magnitude in float32, every product stays a normal float. The error (< 1e-26 per pair) is immaterial.
_MIN_LOG_KERNEL = -60.0

Offset = Tuple[int, int, int]


def _check_options(
    sigma_xy: float,
    sigma_intensity: float,
    radius: int,
    views: Sequence[str],
    downsample_to: Optional[Sequence[int]],
    activation: str,
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
    return views, grid  # type: ignore[return-value]


def _check_inputs(logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor], activation: str) -> None:
    if activation == "softmax":
        check_logits(logits, channels_note="activation='softmax'; use activation='sigmoid' for one foreground "
                                           "channel")
    else:
        check_logits(logits, min_channels=1, channels_note=f"activation={activation!r}")
    check_map("image", image, logits, channels=None, floating=True)
    check_valid(valid, logits)


def _half_window_offsets(views: Sequence[str], radius: int) -> Dict[Offset, float]:
    """Offsets of the window, one per unordered pair, with weight = (number of views holding it) / views."""
    weights: Dict[Offset, float] = {}
    for view in views:
        a, b = VIEW_AXES[view]
        for da in range(0, radius + 1):
            for db in range(-radius, radius + 1):
                if da == 0 and db <= 0:
                    continue
                offset = [0, 0, 0]
                offset[a], offset[b] = da, db
                key = (offset[0], offset[1], offset[2])
                weights[key] = weights.get(key, 0.0) + 1.0 / len(views)
    return weights


def _pair_slices(offset: Offset, size: Sequence[int]) -> Optional[Tuple[tuple, tuple]]:
    """Index tuples of the voxels ``x`` and ``y = x + offset`` (both inside), or None when there are none."""
    src, dst = [slice(None), slice(None)], [slice(None), slice(None)]
    for o, n in zip(offset, size):
        if abs(o) >= n:
            return None
        src.append(slice(0, n - o) if o >= 0 else slice(-o, n))
        dst.append(slice(o, n) if o >= 0 else slice(0, n + o))
    return tuple(src), tuple(dst)


class _BilateralPottsFunction(torch.autograd.Function):
    """``Σ_c Σ_i Σ_j p_{c,i}(1 − p_{c,j}) w_ij K_ij`` summed (not normalised); gradient only w.r.t. ``prob``.

    With ``q = 1 − 2p`` and symmetric ``K``: ``Σ_ij K_ij p_i (1 − p_j) = (Σ_ij K_ij − qᵀ K q) / 4`` (the terms
    linear in ``q`` cancel) and ``∂/∂p = K q = F − 2 G``. Per unordered pair the loop evaluates ``K`` once and
    adds it to the kernel total and ``K q`` at both ends.
    """

    @staticmethod
    def forward(ctx, prob, feat, valid, offsets, sigma_xy):  # type: ignore[override]
        size = prob.shape[2:]
        q = 1.0 - 2.0 * prob
        kq = torch.zeros_like(prob)  # A = K q
        totals = []  # Σ over unordered pairs of K, per offset
        inv_two_s2 = 1.0 / (2.0 * sigma_xy * sigma_xy)
        buf = torch.empty(feat.numel(), dtype=prob.dtype, device=prob.device)
        kbuf = torch.empty(kq[:, :1].numel(), dtype=prob.dtype, device=prob.device)
        items = []  # (voxels x, voxels x + offset, log of the offset's view weight × spatial kernel)
        for offset, weight in offsets.items():
            sl = _pair_slices(offset, size)
            if sl is not None:
                items.append((*sl, math.log(weight) - inv_two_s2 * sum(o * o for o in offset)))
        log_ws = torch.tensor([item[2] for item in items], dtype=prob.dtype, device=prob.device)
        for n, (sx, sy, log_w) in enumerate(items):
            fx = feat[sx]
            diff = buf[: fx.numel()].view(fx.shape)
            torch.sub(fx, feat[sy], out=diff)
            if fx.shape[1] == 1:  # log K = log w − Δ² in one pass
                kern = torch.addcmul(log_ws[n], diff, diff, value=-1.0, out=diff)
            else:
                kern = kbuf[: diff[:, :1].numel()].view(fx.shape[0], 1, *fx.shape[2:])
                torch.sum(diff.mul_(diff), dim=1, keepdim=True, out=kern)
                kern.neg_().add_(log_w)
            kern.clamp_(min=_MIN_LOG_KERNEL).exp_()
            if valid is not None:
                kern.mul_(valid[sx]).mul_(valid[sy])
            totals.append(kern.sum(dtype=torch.float64))
            kq[sx].addcmul_(kern, q[sy])
            kq[sy].addcmul_(kern, q[sx])
        del buf, kbuf
        n_cls = prob.shape[1]
        # ordered pairs: Σ_ij K = 2 Σ_unordered K; qᵀKq = Σ q·(Kq). The difference cancels (it is ~0 where
        # labels are hard and uniform), so both sums are accumulated in float64.
        total = torch.stack(totals).sum(dtype=torch.float64) if totals else prob.new_zeros((), dtype=torch.float64)
        loss = ((2.0 * n_cls * total - torch.sum(q * kq, dtype=torch.float64)) / 4.0).to(prob.dtype)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(kq)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None


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

    Raises:
        ValueError: on a bad option or on inputs of wrong shape, naming the bad argument.
    """
    views, grid = _check_options(sigma_xy, sigma_intensity, radius, views, downsample_to, activation)
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
        count = float(prob.shape[0] * prob[0, 0].numel()) if region is None else float(region.sum().item())
        feat = feat * (1.0 / (math.sqrt(2.0) * sigma_intensity))  # |ΔI|²/(2σ²) becomes |Δfeat|²
        offsets = _half_window_offsets(views, radius)
        total = _BilateralPottsFunction.apply(prob.contiguous(), feat.contiguous(), region, offsets, sigma_xy)
        return total * (scale / max(count, 1.0))


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
    ) -> None:
        super().__init__()
        self.views, self.downsample_to = _check_options(
            sigma_xy, sigma_intensity, radius, views, downsample_to, activation)
        self.sigma_xy = float(sigma_xy)
        self.sigma_intensity = float(sigma_intensity)
        self.radius = radius
        self.activation = activation

    def forward(self, logits: torch.Tensor, image: torch.Tensor, valid: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """Scalar mCRF loss of ``logits [B, C, I, J, K]``, ``image [B, Ch, I, J, K]`` and ``valid``."""
        return multi_view_crf_loss(
            logits, image, valid, sigma_xy=self.sigma_xy, sigma_intensity=self.sigma_intensity,
            radius=self.radius, views=self.views, downsample_to=self.downsample_to, activation=self.activation)

    def extra_repr(self) -> str:
        return (f"sigma_xy={self.sigma_xy}, sigma_intensity={self.sigma_intensity}, radius={self.radius}, "
                f"views={self.views}, downsample_to={self.downsample_to}, activation={self.activation!r}")
