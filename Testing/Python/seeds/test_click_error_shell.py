"""The random walker's labels tied to the expected click error (``RandomWalkerConfig.click_error_mm``): the
unlabeled shell and the background rule of extreme points and boxes grow with it; 0 keeps the labels, the
refinement's outside and the cache keys of before."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks
from PASegLib.annotation.validation import object_box
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume
from PASegLib.pipeline.refine import _outside_boxes
from PASegLib.seeds.pseudo_labels import grown_box_mask, pseudo_label_map
from PASegLib.seeds.random_walker import RandomWalkerConfig
from PASegLib.seeds.random_walker_labels import box_pseudo_label, extreme_points_pseudo_label

GEOMETRY = ImageGeometry((36, 34, 20), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
#: the direct solver: labels that do not depend on the conjugate gradient's round-off (every voxel's probability
#: is at least 5e-4 from 0.5 on this case)
EXACT = {"mode": "bf"}


def _case(kind, noise_mm=0.0):
    """(image, object mask, clicks of ``kind`` with ``noise_mm`` of click noise): a bright ellipsoid (radii 8, 7,
    8 mm) on a noisy background."""
    grid = np.indices(GEOMETRY.shape, dtype=float)
    center, radii = np.array([17.0, 16.0, 9.5]), np.array([8.0, 7.0, 4.0])
    mask = (((grid - center[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
    noise = np.random.default_rng(5).normal(0, 4, GEOMETRY.shape)
    image = Volume((100 + 80 * mask + noise).astype(np.float32), GEOMETRY)
    config = ClickSimulationConfig(kind=kind, click_noise_mm=noise_mm)
    annotation = simulate_clicks(mask, GEOMETRY, seed=3, config=config)
    return image, mask, annotation


#: sha256 of the labels and of the refinement's outside mask of :func:`_case` (no click noise) with the default
#: settings, and the label counts (background, foreground, unlabeled), made by the code before ``click_error_mm``
#: existed (commit ade5194)
BEFORE = {
    "extreme_points": ("911094a65612ce71c24ccbf0ff187e3862bdfeddf006b5cce6b693b3f7b4333c", [22475, 711, 1294],
                       "b0c1f984c6e40661", 22185),
    "box": ("999d4f4aa26e488f83d24fda87cedeed96306475659b8e9ae19855fd42e8ed30", [23564, 916, 0],
            "bfe8bd723d2bb67c", 16980),
}


@pytest.mark.parametrize("kind", ["extreme_points", "box"])
@pytest.mark.parametrize("settings", [{}, {"click_error_mm": 0.0}])
def test_no_click_error_gives_the_labels_of_before_bit_for_bit(kind, settings):
    image, _, annotation = _case(kind)
    labels = pseudo_label_map(image, annotation, random_walker={**EXACT, **settings})
    outside = _outside_boxes(annotation, GEOMETRY, RandomWalkerConfig(**settings))
    digest, counts, outside_digest, outside_count = BEFORE[kind]
    assert np.bincount(labels.ravel(), minlength=3).tolist() == counts
    assert hashlib.sha256(labels.tobytes()).hexdigest() == digest
    assert int(outside.sum()) == outside_count
    assert hashlib.sha256(np.packbits(outside).tobytes()).hexdigest()[:16] == outside_digest


@pytest.mark.parametrize("kind", ["extreme_points", "box"])
def test_with_4_mm_of_click_noise_the_unlabeled_shell_and_the_outside_grow(kind):
    image, mask, annotation = _case(kind, noise_mm=4.0)
    rw = RandomWalkerConfig(click_error_mm=4.0, **EXACT)
    shell_mm = rw.box_shell_mm(kind)
    assert shell_mm == pytest.approx((2.0 if kind == "extreme_points" else 0.0) + 8.0 / np.sqrt(3.0))
    lo, hi = object_box(annotation.objects[0], GEOMETRY)
    box = grown_box_mask(GEOMETRY.shape, lo, hi, 0.0, GEOMETRY.spacing)
    grown = grown_box_mask(GEOMETRY.shape, lo, hi, shell_mm, GEOMETRY.spacing)
    before = pseudo_label_map(image, annotation, random_walker=EXACT)
    after = pseudo_label_map(image, annotation, random_walker=rw.to_dict())
    # the shell: unlabeled where it was background; outside it background as before; the box labelled
    assert np.all(after[grown & ~box] == 2) and np.all(after[~grown] == 0)
    assert set(np.unique(after[box])) <= {0, 1}
    assert np.count_nonzero(after == 2) > np.count_nonzero(before == 2) + 1000
    assert np.count_nonzero(mask & (after == 0)) <= np.count_nonzero(mask & (before == 0))  # no object lost
    if kind == "box":  # a box's random walker keeps its seeds: its labels inside the box are those of before
        np.testing.assert_array_equal(after[box], before[box])
    # the refinement's outside (background for the §2.4 random walker) is the outside of the grown box
    outside = _outside_boxes(annotation, GEOMETRY, rw)
    np.testing.assert_array_equal(outside, ~grown)
    assert outside.sum() < _outside_boxes(annotation, GEOMETRY, RandomWalkerConfig()).sum()


def test_the_extreme_points_random_walker_takes_its_background_seeds_outside_the_grown_box():
    """Without click error every voxel outside the extreme points' box is a background seed (probability exactly
    0); with it the ring between the box and the grown box is left to the random walker, and labels reach into it.
    A box (drawn loose) keeps its seeds: its labels do not change."""
    image, mask, annotation = _case("box", noise_mm=4.0)
    arr = np.asarray(image.array)
    exact = RandomWalkerConfig(beta=130.0, margin_mm=3.0)  # a small crop: fast
    noisy = RandomWalkerConfig(beta=130.0, margin_mm=3.0, click_error_mm=4.0)
    points = np.array([np.argwhere(mask)[np.argmin(v)] for v in _extreme_values(mask)])
    tight = grown_box_mask(arr.shape, points.min(axis=0), points.max(axis=0), 0.0, GEOMETRY.spacing)
    ring = grown_box_mask(arr.shape, points.min(axis=0), points.max(axis=0), noisy.click_margin_mm,
                          GEOMETRY.spacing) & ~tight
    labels0, p0 = extreme_points_pseudo_label(arr, points, spacing=GEOMETRY.spacing, config=exact,
                                              return_probability=True)
    labels1, p1 = extreme_points_pseudo_label(arr, points, spacing=GEOMETRY.spacing, config=noisy,
                                              return_probability=True)
    assert np.all(p0[ring] == 0) and np.any(p1[ring] > 0)
    assert not labels0[~tight].any() and labels1[ring].any() and not labels1[~(tight | ring)].any()
    lo, hi = object_box(annotation.objects[0], GEOMETRY)
    np.testing.assert_array_equal(box_pseudo_label(arr, lo, hi, spacing=GEOMETRY.spacing, config=exact),
                                  box_pseudo_label(arr, lo, hi, spacing=GEOMETRY.spacing, config=noisy))


def _extreme_values(mask):
    """Per side (−i, +i, −j, +j, −k, +k) a score whose minimum over the object's voxels is that extreme."""
    idx = np.argwhere(mask).astype(float)
    return [sign * idx[:, axis] for axis in range(3) for sign in (1, -1)]


def test_click_error_settings():
    rw = RandomWalkerConfig(click_error_mm=3.0)
    assert rw.click_margin_mm == pytest.approx(2 * 3.0 / np.sqrt(3.0))
    assert rw.box_shell_mm("extreme_points") == pytest.approx(2.0 + rw.click_margin_mm)
    assert rw.box_shell_mm("box") == pytest.approx(rw.click_margin_mm)
    assert rw.box_shell_mm("seven_points") == rw.box_shell_mm("single_point") == 0.0
    default = RandomWalkerConfig()
    assert default.box_shell_mm("box") == 0.0 and default.box_shell_mm("extreme_points") == 2.0
    assert RandomWalkerConfig.from_dict(rw.to_dict()) == rw and rw.to_dict()["click_error_mm"] == 3.0
    with pytest.raises(ValueError, match="click_error_mm must be a finite number >= 0"):
        RandomWalkerConfig(click_error_mm=-1.0)
    # the default's dict (hashed into the prepared-data cache key) is that of before click_error_mm: caches stay valid
    assert sorted(RandomWalkerConfig().to_dict()) == sorted(
        ["beta", "tol", "mode", "fg_radius_mm", "margin_mm", "box_core_fraction", "refine_radius_mm", "path_epsilon",
         "working_spacing_mm", "extreme_tolerance_mm"])
    assert RandomWalkerConfig(click_error_mm=0.0).to_dict() == RandomWalkerConfig().to_dict()


def test_the_cache_key_changes_with_the_click_error_only(tiny_dataset):
    from PASegLib.data.cache import cache_key
    from PASegLib.data.dataset import list_cases
    from PASegLib.data.settings import PrepareSettings

    files = list_cases(tiny_dataset)[0]
    keys = [cache_key(files, PrepareSettings(random_walker=rw))
            for rw in ({"beta": 500.0}, {"click_error_mm": 0.0}, {"click_error_mm": 4.0})]
    assert keys[0] == keys[1] != keys[2]
