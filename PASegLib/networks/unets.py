"""The three PA-Seg segmentation networks, built from MONAI 1.6 blocks, and their registry.

All networks take ``[B, in_channels, I, J, K]`` and return logits ``[B, out_channels, I, J, K]`` (no
softmax, no deep supervision) for **any** spatial size: each is wrapped in
:class:`~PASegLib.networks.padding.PadToDivisible`. Axis order is ``[i, j, k]`` with ``k`` the slice axis of
anisotropic scans (the largest spacing), so a ``(3, 3, 1)`` kernel is an in-plane (2D) convolution.

Channels follow the paper (Sec. IV-B): 16 in the first block, doubled after each downsampling, 256 at the
bottleneck (four downsamplings, five resolution levels). All normalisation is instance norm (affine), as in
the official code; PA-Seg trains with batch size 1, where batch norm would be a per-sample norm in training
but use running statistics at inference.

Mapping to the official networks and the deviations, which are standard nnU-Net / MONAI design choices
that change the receptive field and capacity only marginally:

* ``unet2d5`` ↔ ``U_Net2D5`` (nnU-Net-style generic U-Net, Wang et al. MICCAI 2019 2.5D design):
  MONAI ``DynUNet``; levels 0–1 use ``(3, 3, 1)`` kernels, levels 2–4 ``(3, 3, 3)``; the first two
  downsamplings are in-plane only ``(2, 2, 1)`` (for VS spacing ≈ 0.4×0.4×1.5 mm this makes the voxels
  roughly isotropic before 3D convolutions start). The official code pools ``(2, 2, 2)`` at every level
  even with 2D kernels; ``inplane_only_downsamplings=0`` reproduces that. Downsampling is a stride-2
  convolution instead of max-pooling, upsampling a transposed convolution instead of trilinear
  interpolation, and the bottleneck has 256 channels (official: 128) as the paper states.
* ``unet3d`` ↔ ``U_Net``: ``DynUNet`` with isotropic 3×3×3 kernels and stride-2 downsampling. Official:
  max-pooling, nearest upsampling + 3×3×3 conv, ReLU, non-affine instance norm; here LeakyReLU(0.01),
  affine instance norm, strided / transposed convolutions (nnU-Net defaults).
* ``attention_unet`` ↔ ``AttU_Net`` (Oktay et al. 2018): MONAI ``AttentionUnet`` with channels
  16…256. MONAI hard-codes ``BatchNorm3d``; every batch norm is replaced by an affine ``InstanceNorm3d``
  (identical to batch norm in training at batch size 1, and consistent at inference, matching the
  official all-instance-norm network). MONAI downsamples with stride-2 convolutions (official:
  max-pooling) and fuses each decoder level with one 3×3×3 convolution after the attention-gated skip
  (official: two), so it has fewer decoder parameters; the attention gates (``F_int = F/2``) match.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from torch import nn

from PASegLib.networks.fast_conv import fold_slice_convs
from PASegLib.networks.padding import PadToDivisible
from PASegLib.utils.registry import Registry

__all__ = ["NETWORKS", "build_network", "count_parameters", "network_divisor"]

NETWORKS = Registry("network")

DEFAULT_FILTERS: Tuple[int, ...] = (16, 32, 64, 128, 256)
_INSTANCE_NORM = ("INSTANCE", {"affine": True})


def _check_filters(filters: Sequence[int], minimum: int = 3) -> Tuple[int, ...]:
    filters = tuple(int(f) for f in filters)
    if len(filters) < minimum or any(f < 1 for f in filters):
        raise ValueError(f"filters must list >= {minimum} positive channel counts (one per level; DynUNet "
                         f"needs 3, AttentionUnet 2), got {filters}")
    return filters


def _check_channels(in_channels: int, out_channels: int) -> None:
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if int(out_channels) < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}")


def _divisor(strides: Sequence[Tuple[int, int, int]]) -> Tuple[int, int, int]:
    out = [1, 1, 1]
    for s in strides:
        out = [o * si for o, si in zip(out, s)]
    return (out[0], out[1], out[2])


def _unet2d5_layout(
    n_levels: int, num_2d_stages: int, inplane_only_downsamplings: Optional[int]
) -> Tuple[list, list]:
    if inplane_only_downsamplings is None:
        inplane_only_downsamplings = num_2d_stages
    if not 0 <= num_2d_stages <= n_levels:
        raise ValueError(f"num_2d_stages must be in [0, {n_levels}], got {num_2d_stages}")
    if not 0 <= inplane_only_downsamplings <= n_levels - 1:
        raise ValueError(f"inplane_only_downsamplings must be in [0, {n_levels - 1}], got "
                         f"{inplane_only_downsamplings}")
    kernels = [(3, 3, 1) if level < num_2d_stages else (3, 3, 3) for level in range(n_levels)]
    # strides[0] is the input block (no downsampling); strides[l] downsamples into level l.
    strides = [(1, 1, 1)] + [
        (2, 2, 1) if level <= inplane_only_downsamplings else (2, 2, 2) for level in range(1, n_levels)
    ]
    return kernels, strides


def _dynunet(in_channels: int, out_channels: int, filters: Tuple[int, ...], kernels: list, strides: list,
             dropout: float) -> nn.Module:
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(filters),
        dropout=dropout or None,
        norm_name=_INSTANCE_NORM,
        deep_supervision=False,
        res_block=False,
    )


@NETWORKS.register("unet2d5")
def build_unet2d5(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    filters: Sequence[int] = DEFAULT_FILTERS,
    num_2d_stages: int = 2,
    inplane_only_downsamplings: Optional[int] = None,
    dropout: float = 0.0,
    pad_mode: str = "constant",
    fold_convs: bool = True,
) -> PadToDivisible:
    """2.5D U-Net for anisotropic volumes (primary network for VS).

    Args:
        in_channels / out_channels: image channels / classes (logits).
        filters: channels per level (paper: 16 → 256).
        num_2d_stages: levels (from the top) whose convolutions are in-plane ``(3, 3, 1)``.
        inplane_only_downsamplings: how many of the first downsamplings are ``(2, 2, 1)``; default
            ``num_2d_stages``; ``0`` gives the official code's ``(2, 2, 2)`` pooling everywhere.
        dropout: dropout probability in the conv blocks.
        pad_mode: padding mode of :class:`PadToDivisible`.
        fold_convs: replace the ``nn.Conv3d`` layers by
            :class:`~PASegLib.networks.fast_conv.SliceFoldConv3d`, which computes the same convolutions
            (same parameters and state dict) as 2D convolutions over the folded slice axis where torch's CPU
            backend would otherwise be slow (in-plane ``(3, 3, 1)`` kernels, batch-1 layers that fall back
            to ``slow_conv3d``); e.g. 1.6× faster CPU training steps at 48×48×24. CUDA is unaffected.

    Size divisor with the defaults: ``(16, 16, 4)``.
    """
    _check_channels(in_channels, out_channels)
    filters = _check_filters(filters)
    kernels, strides = _unet2d5_layout(len(filters), num_2d_stages, inplane_only_downsamplings)
    net = _dynunet(in_channels, out_channels, filters, kernels, strides, dropout)
    if fold_convs:
        fold_slice_convs(net)
    return PadToDivisible(net, _divisor(strides), mode=pad_mode)


@NETWORKS.register("unet3d")
def build_unet3d(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    filters: Sequence[int] = DEFAULT_FILTERS,
    dropout: float = 0.0,
    pad_mode: str = "constant",
) -> PadToDivisible:
    """Isotropic 3D U-Net (primary network for BraTS). Size divisor with the defaults: ``(16, 16, 16)``.

    Arguments as :func:`build_unet2d5`.
    """
    _check_channels(in_channels, out_channels)
    filters = _check_filters(filters)
    n = len(filters)
    kernels = [(3, 3, 3)] * n
    strides = [(1, 1, 1)] + [(2, 2, 2)] * (n - 1)
    net = _dynunet(in_channels, out_channels, filters, kernels, strides, dropout)
    return PadToDivisible(net, _divisor(strides), mode=pad_mode)


def _batch_to_instance_norm(module: nn.Module) -> int:
    """Replace every ``BatchNorm3d`` below ``module`` by an affine ``InstanceNorm3d``; return the count."""
    replaced = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm3d):
            setattr(module, name, nn.InstanceNorm3d(child.num_features, eps=child.eps, affine=True))
            replaced += 1
        else:
            replaced += _batch_to_instance_norm(child)
    return replaced


@NETWORKS.register("attention_unet")
def build_attention_unet(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    filters: Sequence[int] = DEFAULT_FILTERS,
    dropout: float = 0.0,
    pad_mode: str = "constant",
) -> PadToDivisible:
    """Attention U-Net (auxiliary network of SCM). Size divisor with the defaults: ``(16, 16, 16)``.

    Arguments as :func:`build_unet2d5`; batch norm of MONAI's ``AttentionUnet`` is replaced by instance norm.
    """
    from monai.networks.nets import AttentionUnet

    _check_channels(in_channels, out_channels)
    filters = _check_filters(filters, minimum=2)
    net = AttentionUnet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=filters,
        strides=[2] * (len(filters) - 1),
        kernel_size=3,
        up_kernel_size=3,
        dropout=float(dropout),
    )
    if _batch_to_instance_norm(net) == 0:  # pragma: no cover - guards a future MONAI change
        raise RuntimeError("MONAI AttentionUnet has no BatchNorm3d to replace; its layout changed")
    divisor = 2 ** (len(filters) - 1)
    return PadToDivisible(net, (divisor, divisor, divisor), mode=pad_mode)


def build_network(name: str, *, in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> PadToDivisible:
    """Build the network registered as ``name`` (``unet2d5``, ``unet3d``, ``attention_unet``).

    Extra keyword arguments go to the factory (see :func:`build_unet2d5`). Unknown names raise a
    ``ValueError`` listing the known ones.
    """
    return NETWORKS.build(name, in_channels=in_channels, out_channels=out_channels, **kwargs)


def network_divisor(name_or_net: Any, **kwargs: Any) -> Tuple[int, int, int]:
    """Per-axis multiple ``(d_i, d_j, d_k)`` the inner network needs (inputs of other sizes are padded).

    Accepts a network built here or a registered name (plus the factory's keyword arguments). Patch sizes
    that are multiples of it avoid padding, e.g. 128×128×48 for ``unet2d5`` (divisor ``(16, 16, 4)``).
    """
    if isinstance(name_or_net, PadToDivisible):
        return name_or_net.divisor
    if isinstance(name_or_net, str):
        filters = _check_filters(kwargs.get("filters", DEFAULT_FILTERS), minimum=2)
        if name_or_net == "unet2d5":
            _, strides = _unet2d5_layout(
                len(filters), kwargs.get("num_2d_stages", 2), kwargs.get("inplane_only_downsamplings")
            )
            return _divisor(strides)
        if name_or_net in NETWORKS:
            d = 2 ** (len(filters) - 1)
            return (d, d, d)
        NETWORKS.get(name_or_net)  # raises the registry's ValueError
    raise ValueError(f"expected a registered network name or a PadToDivisible network, got {name_or_net!r}")


def count_parameters(net: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
