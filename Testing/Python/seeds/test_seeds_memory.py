"""The seed expansion reads the image box by box: its result does not depend on the image's
dtype, and its memory stays near the label map it returns (no float32 copy of the volume, no full-size masks)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds


@pytest.fixture(scope="module")
def two_tumours():
    geometry = ImageGeometry((60, 50, 30), (0.8, 0.9, 2.0), (0.0, 0.0, 0.0))
    grid = np.indices(geometry.shape)
    first = ((grid[0] - 20) / 8) ** 2 + ((grid[1] - 20) / 7) ** 2 + ((grid[2] - 12) / 4) ** 2 <= 1
    second = ((grid[0] - 44) / 7) ** 2 + ((grid[1] - 36) / 6) ** 2 + ((grid[2] - 16) / 5) ** 2 <= 1
    label = (first.astype(np.uint8) + 2 * (second & ~first)).astype(np.uint8)
    image = 100 + 300 * label.astype(np.float64) + np.random.default_rng(0).normal(0, 30, geometry.shape)
    image[:, :, :9] = image.min()  # a band outside the valid region ("nonzero"), crossing the boxes
    return Volume(image.astype(np.int16), geometry), simulate_clicks(label, geometry)


@pytest.mark.parametrize("settings", [{}, {"smooth_sigma_mm": 1.5}, {"valid_region": "nonzero"},
                                      {"valid_region": "above_threshold", "valid_threshold": 150.0},
                                      {"extent": "auto"}])  # fmt: skip
def test_expansion_does_not_depend_on_the_image_dtype(two_tumours, settings):
    volume, case = two_tumours
    config = ExpansionConfig(**settings)
    as_int = expand_seeds(volume, case, config=config)
    as_float = expand_seeds(Volume(volume.array.astype(np.float32), volume.geometry), case, config=config)
    assert len(case.objects) == 2 and (as_int == as_float).all()
    assert set(np.unique(as_int)) == {0, 1, 2}
    read_only = volume.array.copy()
    read_only.flags.writeable = False  # the Slicer module passes a read-only view of the node's voxels
    assert (expand_seeds(Volume(read_only, volume.geometry), case, config=config) == as_int).all()


def test_expansion_memory_stays_near_its_label_map():
    geometry = ImageGeometry((256, 256, 96), (0.8, 0.8, 1.5), (0.0, 0.0, 0.0))
    grid = np.indices((30, 30, 16)).astype(np.float64)
    image = np.random.default_rng(1).normal(100, 10, geometry.shape).astype(np.int16)
    blob = ((grid[0] - 15) / 8) ** 2 + ((grid[1] - 15) / 8) ** 2 + ((grid[2] - 8) / 4) ** 2 <= 1
    label = np.zeros(geometry.shape, dtype=np.uint8)
    label[100:130, 100:130, 40:56] = blob
    image[label > 0] += 200
    case = simulate_clicks(label, geometry)
    volume = Volume(image, geometry)
    tracemalloc.start()
    try:
        expand_seeds(volume, case, config=ExpansionConfig(valid_region="nonzero"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    label_map = int(np.prod(geometry.shape))  # uint8: 6.3 MB; a float32 copy of the image alone would be 4×
    assert peak < 1.5 * label_map, f"peak {peak / 2**20:.1f} MB for a {label_map / 2**20:.1f} MB label map"
