"""Drop-in ``nn.Conv3d`` that runs as a 2D convolution over the folded slice axis ``K`` on CPU.

Why this exists instead of using MONAI's ``nn.Conv3d`` layers as-is (measured with torch 2.13, CPU):

* Torch picks the CPU convolution backend with a heuristic written for 2D inputs: for batch 1 it uses
  oneDNN only if ``N * C * I * J > 20480``, ignoring the last axis ``K``. Many layers of a 3D U-Net trained
  with batch 1 (all deep levels, and the 32-channel level of ``unet2d5`` at 48×48×24) therefore fall back
  to ``aten::slow_conv3d`` (im2col + GEMM), 2-4.5× slower than oneDNN in forward + backward.
* oneDNN (v3.12 in torch 2.13, on an AVX2 CPU) computes the weight gradient of 3D convolutions with its
  GEMM-based ``backward_weights`` (the 2D convolutions get its JIT kernel). Single-threaded it is 2-3×
  slower than the forward pass; with two threads on a busy CPU (other jobs, data loading) it collapses
  (measured: 10 ms -> 740 ms for a 16-channel ``(3, 3, 1)`` layer at 48×48×24).

:class:`SliceFoldConv3d` computes the same convolution with the same parameters (same state-dict keys and
shapes) as one ``F.conv2d`` over ``[B * K_out, k_d * C, I, J]``: ``K`` is moved into the batch (a blocked
2D transpose), the ``k_d`` taps along ``K`` are stacked on the channel axis (no copy for ``k_d == 1``) and
the weight is reshaped to ``[O, k_d * C, k_i, k_j]``. A batch ``K_out > 1`` always reaches oneDNN's JIT
kernels, in forward and in both backward passes. Only the summation order changes (~1e-6 relative in
float32). The anisotropic strides of ``unet2d5`` (``(2, 2, 1)``) are plain 2D strides here, which also
avoids slow_conv3d's slow grad-input for them.

When the 2D path is taken (``mode="auto"``, the default), measured on a 2-core CPU:

* only on ``fold_devices`` (CPU). On CUDA cuDNN runs these 3D convolutions well and the transposes would
  only cost bandwidth (not measured on a GPU), so CUDA uses ``nn.Conv3d.forward``;
* wherever torch would fall back to slow_conv3d (:func:`torch_uses_onednn` is false);
* for kernels of depth 1 (the in-plane ``(3, 3, 1)`` kernels of ``unet2d5``) that torch sends to oneDNN,
  when their weight gradient will be computed with more than one thread, to avoid that GEMM
  ``backward_weights``. Single-threaded, or without a weight gradient (inference), oneDNN's 3D kernels are
  faster than the 2D path plus its two transposes. Deeper kernels are not folded there: their tap copies
  cost more than they save (up to 2.7× slower single-threaded at 128×128×48). Pointwise ``(1, 1, 1)``
  kernels are never folded (a plain GEMM on every backend).

The 2D path itself is exact on any device (``mode="always"`` forces it). It needs zero padding with
integer padding, and groups 1 for kernels deeper than 1; other layers always use ``nn.Conv3d.forward``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SliceFoldConv3d", "conv3d_as_conv2d", "fold_slice_convs", "foldable", "torch_uses_onednn"]

#: torch's batch-1 threshold on ``N * C * I * J`` above which it uses oneDNN for a 3D convolution on CPU.
TORCH_ONEDNN_MIN_NCIJ = 20480
_MODES = ("auto", "always", "never")


def _swap_last_two(t: torch.Tensor) -> torch.Tensor:
    """``t.transpose(1, 2).contiguous()`` for a contiguous ``[B, M, N]`` tensor, one 2D copy per batch
    element: torch has a cache-blocked kernel for 2D transposes that is 2-4× faster than its generic strided
    copy of the equivalent 5D permutation."""
    t = t.contiguous()
    out = t.new_empty((t.shape[0], t.shape[2], t.shape[1]))
    for b in range(t.shape[0]):
        out[b].copy_(t[b].transpose(0, 1))
    return out


class _SlicesToBatch(torch.autograd.Function):
    """``[B, C, I, J, K] -> [B, K, C, I, J]`` (contiguous); the backward is the inverse move."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, i, j, k = x.shape
        return _swap_last_two(x.reshape(b, c * i * j, k)).view(b, k, c, i, j)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _BatchToSlices.apply(grad)


class _BatchToSlices(torch.autograd.Function):
    """``[B, K, C, I, J] -> [B, C, I, J, K]`` (contiguous); the backward is the inverse move."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, k, c, i, j = y.shape
        return _swap_last_two(y.reshape(b, k, c * i * j)).view(b, c, i, j, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _SlicesToBatch.apply(grad)


def conv3d_as_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Tuple[int, ...],
    padding: Tuple[int, ...],
    dilation: Tuple[int, ...],
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride, padding, dilation, groups)`` computed with one ``F.conv2d``.

    ``x`` is ``[B, C, I, J, K]``. Returns ``[B, O, I_out, J_out, K_out]``, contiguous, or
    ``channels_last_3d`` when ``x`` is. Grouped convolutions need a kernel depth of 1.
    """
    out_channels, _, k_i, k_j, k_d = weight.shape
    if groups != 1 and k_d != 1:
        raise ValueError("conv3d_as_conv2d: grouped convolutions need a kernel depth of 1")
    channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    b, c, size_i, size_j = x.shape[:4]
    if padding[2]:
        x = F.pad(x, (padding[2], padding[2]))
    xt = _SlicesToBatch.apply(x)  # [B, K, C, I, J]
    if k_d == 1 and stride[2] == 1:
        k_out = xt.shape[1]
        x2d = xt.reshape(b * k_out, c, size_i, size_j)  # a view
    else:
        taps = xt.unfold(1, dilation[2] * (k_d - 1) + 1, stride[2])[..., :: dilation[2]]  # [B, K_out, C, I, J, k_d]
        k_out = taps.shape[1]
        # channel index = tap * C + c, matching the weight reshape below
        x2d = taps.permute(0, 1, 5, 2, 3, 4).reshape(b * k_out, k_d * c, size_i, size_j)
    w2d = weight.permute(0, 4, 1, 2, 3).reshape(out_channels, k_d * weight.shape[1], k_i, k_j)
    y2d = F.conv2d(x2d, w2d, bias, stride[:2], padding[:2], dilation[:2], groups)
    y = _BatchToSlices.apply(y2d.reshape(b, k_out, out_channels, y2d.shape[2], y2d.shape[3]))
    return y.contiguous(memory_format=torch.channels_last_3d) if channels_last else y


def torch_uses_onednn(x: torch.Tensor) -> bool:
    """Whether torch (2.x) runs a float32 3D convolution of ``x`` with oneDNN on CPU rather than with
    ``aten::slow_conv3d``: batch > 1, or ``N * C * I * J`` above the threshold (``K`` is not counted)."""
    return x.shape[0] > 1 or x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] > TORCH_ONEDNN_MIN_NCIJ


def _fold_supported(conv: nn.Conv3d) -> bool:
    """The 2D formulation covers this layer's configuration."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    return conv.groups == 1 or conv.kernel_size[2] == 1


def _flat(conv: nn.Conv3d) -> bool:
    """Kernel depth 1 along ``K`` (no ``K`` padding or stride): each slice is an independent 2D conv."""
    return conv.kernel_size[2] == 1 and conv.padding[2] == 0 and conv.stride[2] == 1


def foldable(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain ``nn.Conv3d`` that :func:`fold_slice_convs` would replace."""
    return type(conv) is nn.Conv3d and _fold_supported(conv)  # type: ignore[arg-type]


class SliceFoldConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs as one 2D convolution over the folded ``K`` axis where that is faster.

    Same constructor, parameters, state dict and results (up to float rounding) as ``nn.Conv3d``; see the
    module docstring for why and when. ``mode``: ``"auto"`` (default), ``"always"`` (2D path on every
    device, wherever the configuration allows; for tests) or ``"never"`` (plain ``nn.Conv3d``).
    Convert existing layers with :meth:`from_conv3d` or :func:`fold_slice_convs`.
    """

    fold_devices: Tuple[str, ...] = ("cpu",)
    mode: str = "auto"

    @classmethod
    def from_conv3d(cls, conv: nn.Conv3d, *, mode: str = "auto") -> SliceFoldConv3d:
        """A :class:`SliceFoldConv3d` sharing ``conv``'s parameters (the same ``Parameter`` objects)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta")
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        if mode != cls.mode:
            new.mode = mode
        return new

    def uses_fold(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the 2D path for the input ``x``."""
        if self.mode == "never" or x.dim() != 5 or x.numel() == 0 or not _fold_supported(self):
            return False
        if self.mode == "always":
            return True
        if x.device.type not in self.fold_devices or self.kernel_size == (1, 1, 1):
            return False  # a pointwise convolution is a plain GEMM on every backend
        if not torch_uses_onednn(x):
            return True  # torch would run aten::slow_conv3d
        if not _flat(self):
            return False  # oneDNN's 3D kernels are as fast as the 2D path plus its tap copies
        # oneDNN would compute the weight gradient of this depth-1 kernel with its GEMM fallback
        return self.weight.requires_grad and torch.is_grad_enabled() and torch.get_num_threads() > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_fold(x):
            return super().forward(x)
        return conv3d_as_conv2d(x, self.weight, self.bias, self.stride, self.padding,  # type: ignore[arg-type]
                                self.dilation, self.groups)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"


def fold_slice_convs(module: nn.Module, *, mode: str = "auto") -> int:
    """Replace, in place, every plain ``nn.Conv3d`` below ``module`` that the 2D formulation covers by a
    :class:`SliceFoldConv3d` sharing its parameters; return how many were replaced.

    Module names and ``Parameter`` objects are kept, so the state dict (checkpoints) is unchanged and an
    optimiser built before the call still holds the right tensors.
    """
    replaced = 0
    for name, child in module.named_children():
        if foldable(child):
            setattr(module, name, SliceFoldConv3d.from_conv3d(child, mode=mode))  # type: ignore[arg-type]
            replaced += 1
        else:
            replaced += fold_slice_convs(child, mode=mode)
    return replaced
