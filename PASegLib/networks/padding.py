"""Pad-to-divisible wrapper so every network accepts any (odd) input size.

Why: the encoders downsample with stride-2 convolutions and the decoders upsample with stride-2 transposed
convolutions. For a size that is not a multiple of the total stride, ``ceil(n / 2) * 2 != n`` and the
upsampled map no longer matches its skip connection, so MONAI's DynUNet and AttentionUnet fail on e.g.
37×29×13 patches or whole images of arbitrary size. The wrapper pads each spatial axis at its high end up
to the next multiple of the network's divisor, runs the network and crops the output back, so the output
voxel ``[i, j, k]`` is aligned with the input voxel ``[i, j, k]``. Inputs no larger than the divisor get
one axis padded to twice the divisor, so the bottleneck never holds a single voxel (instance norm rejects
that).

Padded voxels take part in the instance-norm statistics, so outputs near the border can differ slightly
from those of a tightly fitting input; training patches (128×128×48 etc.) are already multiples and are
unaffected.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PadToDivisible"]

_PAD_MODES = ("constant", "replicate", "reflect")


class PadToDivisible(nn.Module):
    """Wrap ``net`` so that inputs ``[B, Ch, I, J, K]`` of any size work and outputs keep their size.

    Args:
        net: a fully convolutional network whose spatial input sizes must be multiples of ``divisor``.
        divisor: required multiple per spatial axis ``(d_i, d_j, d_k)`` (product of the strides).
        mode: padding mode of :func:`torch.nn.functional.pad`: ``"constant"`` (zeros, the mean of a z-scored
            image), ``"replicate"`` or ``"reflect"``.

    The wrapped network is ``self.net`` (state-dict keys start with ``net.``); ``self.divisor`` is the tuple.
    """

    def __init__(self, net: nn.Module, divisor: Sequence[int], *, mode: str = "constant") -> None:
        super().__init__()
        divisor = tuple(int(d) for d in divisor)
        if len(divisor) != 3 or any(d < 1 for d in divisor):
            raise ValueError(f"divisor must be 3 positive integers (i, j, k), got {divisor}")
        if mode not in _PAD_MODES:
            raise ValueError(f"mode must be one of {_PAD_MODES}, got {mode!r}")
        self.net = net
        self.divisor: Tuple[int, int, int] = divisor  # type: ignore[assignment]
        self.mode = mode

    def padded_shape(self, spatial: Sequence[int]) -> Tuple[int, ...]:
        """The spatial size the inner network sees for an input of spatial size ``spatial``.

        Each axis is rounded up to a multiple of the divisor. If that would leave a one-voxel bottleneck
        (every axis equal to its divisor), the first axis is doubled: instance norm cannot normalise a
        single voxel (it raises in training and in evaluation alike).
        """
        if len(spatial) != 3:
            raise ValueError(f"expected 3 spatial sizes (I, J, K), got {tuple(spatial)}")
        padded = [math.ceil(int(n) / d) * d for n, d in zip(spatial, self.divisor)]
        if padded == list(self.divisor) and math.prod(self.divisor) > 1:
            padded[0] *= 2
        return tuple(padded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, I, J, K]`` for an input ``[B, Ch, I, J, K]`` of any spatial size."""
        if x.ndim != 5:
            raise ValueError(f"input must be [B, Ch, I, J, K], got shape {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        if min(spatial) < 1:
            raise ValueError(f"input has an empty spatial axis: {spatial}")
        padded = self.padded_shape(spatial)
        pad = [p - n for p, n in zip(padded, spatial)]
        if any(pad):
            # F.pad lists (low, high) pairs starting from the last axis.
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode=self.mode)
        y = self.net(x)
        if any(pad):
            y = y[:, :, : spatial[0], : spatial[1], : spatial[2]]
        return y

    def extra_repr(self) -> str:
        return f"divisor={self.divisor}, mode={self.mode!r}"
