"""Segmentation networks of PA-Seg (2.5D U-Net, 3D U-Net, Attention U-Net) and their registry.

Importing this package imports torch (MONAI is imported when a network is built). See
:mod:`PASegLib.networks.unets` for how each network maps to the paper.

Example::

    from PASegLib.networks import build_network
    net = build_network("unet2d5", in_channels=1, out_channels=2)
    logits = net(image)  # [B, 1, I, J, K] -> [B, 2, I, J, K], any I, J, K
"""

from PASegLib.networks.fast_conv import SliceFoldConv3d, fold_slice_convs
from PASegLib.networks.padding import PadToDivisible
from PASegLib.networks.unets import (
    DEFAULT_FILTERS,
    NETWORKS,
    build_attention_unet,
    build_network,
    build_unet2d5,
    build_unet3d,
    count_parameters,
    network_divisor,
)

__all__ = [
    "DEFAULT_FILTERS",
    "NETWORKS",
    "PadToDivisible",
    "SliceFoldConv3d",
    "build_attention_unet",
    "build_network",
    "build_unet2d5",
    "build_unet3d",
    "count_parameters",
    "fold_slice_convs",
    "network_divisor",
]
