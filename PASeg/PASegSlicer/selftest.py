"""The scenario of the module's self-test, on any scene: run by ``PASegTest`` in Slicer and by pytest headless.

A synthetic volume (a bright ellipsoid on a noisy background, no file, no network, no torch), one object
whose seven points are placed through the logic, the expansion preview, and checks of the segment volumes.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from PASegLib.geometry import ImageGeometry
from PASegLib.image_io import Volume

from . import annotation
from .logic import PASegCoreLogic
from .segments import segmentVoxelCounts
from .volumes import createVolumeNode

#: Voxel index of each click; identity direction, so +i is patient left, +j posterior, +k superior.
CLICKS = {"F": (24, 20, 12), "R": (13, 20, 12), "L": (35, 20, 12), "A": (24, 12, 12),
          "P": (24, 28, 12), "I": (24, 20, 6), "S": (24, 20, 18)}  # fmt: skip
BOX_VOXELS = 23 * 17 * 13  # the inclusive box R..L × A..P × I..S


def syntheticVolume(scene, name: str = "PASegTest volume"):
    """(volume node, tumour mask, geometry): 48×40×24 voxels of 0.8×0.8×1.5 mm, ellipsoid radii 8, 6, 4 voxels."""
    geometry = ImageGeometry((48, 40, 24), (0.8, 0.8, 1.5), (10.0, -20.0, 5.0))
    grid = np.indices(geometry.shape, dtype=np.float64)
    tumor = ((grid[0] - 24) / 8) ** 2 + ((grid[1] - 20) / 6) ** 2 + ((grid[2] - 12) / 4) ** 2 <= 1
    image = (100 + 300 * tumor + np.random.default_rng(0).normal(0, 5, geometry.shape)).astype(np.float32)
    return createVolumeNode(scene, Volume(image, geometry), name), tumor, geometry


def runScenario(scene, epsilon: float = 0.175, lamb: float = 0.5) -> Dict[str, int]:
    """Place the seven clicks through the logic, preview the expansion, check it; returns the voxel counts.

    Raises ``AssertionError`` with a message naming what is wrong.
    """
    volume, tumor, geometry = syntheticVolume(scene)
    logic = PASegCoreLogic(scene)
    node = logic.addObject(volume)
    status = annotation.placementStatus(node, volume)
    assert status.expectedLabel == "F", f"a new tumor should expect the F point first, got {status.expectedLabel}"
    for label, index in CLICKS.items():
        annotation.setControlPoint(node, label, geometry.index_to_world(index, coordinate_system="RAS"))
    status = annotation.placementStatus(node, volume)
    assert status.valid, f"the seven synthetic clicks should be valid: {status.error}"
    segmentation = logic.expansionPreview(volume, epsilon=epsilon, lamb=lamb)
    counts = segmentVoxelCounts(segmentation, volume, ["foreground", "background", "unlabeled"])
    assert sum(counts.values()) == tumor.size, f"segments must cover the volume once: {counts}"
    assert counts["foreground"] + counts["unlabeled"] == BOX_VOXELS, f"box voxels {BOX_VOXELS}: {counts}"
    assert 50 < counts["foreground"] < 1.2 * tumor.sum(), f"foreground should lie in the tumor: {counts}"
    inside = logic.previewLabels(volume)[tumor].tolist().count(1)
    assert inside >= 0.9 * counts["foreground"], f"only {inside} of {counts['foreground']} fg voxels in the tumor"
    return counts
