"""Tests of PASegLib.evaluation.metrics on analytic shapes whose metric values are known."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

import PASegLib.evaluation.metrics as metrics
from PASegLib.evaluation.metrics import (
    assd,
    compute_metrics,
    dice,
    hausdorff_distance,
    hd95,
    precision,
    recall,
    surface_distances,
    surface_voxels,
)

ANISO = (0.8, 0.8, 2.5)


def box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def sphere_mm(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm))
    return r2 <= radius_mm**2


# -- overlap ---------------------------------------------------------------------------------------------
def test_overlap_on_nested_boxes_hand_computed():
    pred = box((30, 30, 30), (5, 5, 5), (15, 15, 15))  # 1000 voxels
    target = box((30, 30, 30), (5, 5, 5), (15, 15, 10))  # 500 voxels, inside pred
    assert precision(pred, target) == pytest.approx(0.5)
    assert recall(pred, target) == pytest.approx(1.0)
    assert dice(pred, target) == pytest.approx(2 * 500 / 1500)


def test_overlap_on_partially_overlapping_boxes():
    pred = box((30, 30, 30), (0, 0, 0), (10, 10, 10))  # 1000
    target = box((30, 30, 30), (4, 0, 0), (24, 10, 10))  # 2000, overlap 6*10*10 = 600
    assert precision(pred, target) == pytest.approx(0.6)
    assert recall(pred, target) == pytest.approx(0.3)
    assert dice(pred, target) == pytest.approx(1200 / 3000)


def test_non_boolean_masks_use_nonzero_as_foreground():
    pred = box((10, 10, 10), (2, 2, 2), (6, 6, 6)).astype(np.uint8) * 3
    target = box((10, 10, 10), (2, 2, 2), (6, 6, 6)).astype(np.float32)
    assert dice(pred, target) == 1.0


# -- analytic distances --------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 3])
def test_boxes_offset_along_anisotropic_axis_exact(d):
    shape = (30, 30, 40)
    a = box(shape, (10, 10, 5), (20, 20, 15))
    b = box(shape, (10, 10, 5 + d), (20, 20, 15 + d))
    assert dice(a, b) == pytest.approx((10 - d) / 10)
    assert hausdorff_distance(a, b, spacing=ANISO) == pytest.approx(d * 2.5)
    assert hd95(a, b, spacing=ANISO) == pytest.approx(d * 2.5)
    # ASSD against a brute-force evaluation over all pairs of surface voxels (A's surface: 488 voxels).
    pa = np.argwhere(surface_voxels(a)) * np.asarray(ANISO)
    pb = np.argwhere(surface_voxels(b)) * np.asarray(ANISO)
    pair = cdist(pa, pb)
    assert len(pa) == 488
    want = np.concatenate([pair.min(axis=1), pair.min(axis=0)]).mean()
    assert assd(a, b, spacing=ANISO) == pytest.approx(want)
    # The same shift along an in-plane axis is measured with the in-plane spacing.
    c = box(shape, (10 + d, 10, 5), (20 + d, 20, 15))
    assert hausdorff_distance(a, c, spacing=ANISO) == pytest.approx(d * 0.8)
    assert hd95(a, c, spacing=(1.0, 1.0, 1.0)) == pytest.approx(d)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO])
def test_concentric_spheres_distance_equals_radius_difference(spacing):
    r1, r2 = 9.0, 15.0
    shape = tuple(int(math.ceil(44.0 / s)) for s in spacing)
    centre = tuple((n - 1) * s / 2 for n, s in zip(shape, spacing))
    inner = sphere_mm(shape, spacing, centre, r1)
    outer = sphere_mm(shape, spacing, centre, r2)
    tol = max(spacing)  # voxel discretisation of both surfaces
    out = compute_metrics(inner, outer, spacing=spacing)
    assert out["assd"] == pytest.approx(r2 - r1, abs=tol)
    assert out["hd95"] == pytest.approx(r2 - r1, abs=tol)
    assert out["dice"] == pytest.approx(2 * r1**3 / (r1**3 + r2**3), rel=0.05)
    assert out["precision"] == 1.0
    assert out["recall"] == pytest.approx((r1 / r2) ** 3, rel=0.05)


def test_anisotropic_spacing_scales_distances():
    shape = (30, 30, 30)
    a = box(shape, (8, 8, 8), (16, 16, 16))
    b = box(shape, (8, 8, 8), (16, 16, 18))  # grows by 2 slices along k
    iso = hausdorff_distance(a, b, spacing=(1.0, 1.0, 1.0))
    aniso = hausdorff_distance(a, b, spacing=(1.0, 1.0, 3.0))
    assert iso == pytest.approx(2.0)
    assert aniso == pytest.approx(6.0)
    assert hausdorff_distance(a, b, spacing=(3.0, 3.0, 1.0)) == pytest.approx(2.0)


def test_identical_masks_have_zero_distances():
    a = sphere_mm((40, 40, 20), ANISO, (16.0, 16.0, 25.0), 8.0)
    out = compute_metrics(a, a.copy(), spacing=ANISO)
    assert out == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "assd": 0.0, "hd95": 0.0}


def test_disjoint_boxes():
    shape = (40, 20, 20)
    a = box(shape, (2, 5, 5), (8, 10, 10))
    b = box(shape, (20, 5, 5), (26, 10, 10))
    out = compute_metrics(a, b, spacing=(1.0, 1.0, 1.0))
    assert out["dice"] == 0.0 and out["precision"] == 0.0 and out["recall"] == 0.0
    # Face i=7 of A to face i=20 of B: 13 mm; farthest points: far faces, 18 mm apart along i.
    assert hausdorff_distance(a, b, spacing=(1.0, 1.0, 1.0), percentile=0) == pytest.approx(13.0)
    assert hausdorff_distance(a, b, spacing=(1.0, 1.0, 1.0)) == pytest.approx(18.0)
    assert 13.0 < out["assd"] < 18.0


def test_surface_is_six_connected_boundary():
    a = box((9, 9, 9), (2, 2, 2), (7, 7, 7))  # 5^3 cube
    s = surface_voxels(a)
    assert int(s.sum()) == 125 - 27
    assert not s[3:6, 3:6, 3:6].any()
    # Voxels on the image border count as surface.
    full = np.ones((4, 4, 4), dtype=bool)
    assert int(surface_voxels(full).sum()) == 64 - 8


# -- empty masks ---------------------------------------------------------------------------------------------
def test_both_empty():
    e = np.zeros((8, 8, 8), dtype=bool)
    assert compute_metrics(e, e, spacing=ANISO) == {
        "dice": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "assd": 0.0,
        "hd95": 0.0,
    }
    d1, d2 = surface_distances(e, e, spacing=ANISO)
    assert d1.size == 0 and d2.size == 0


@pytest.mark.parametrize("empty_pred", [True, False])
def test_one_empty(empty_pred):
    e = np.zeros((12, 12, 12), dtype=bool)
    m = box(e.shape, (3, 3, 3), (7, 7, 7))
    pred, target = (e, m) if empty_pred else (m, e)
    out = compute_metrics(pred, target, spacing=ANISO)
    assert out["dice"] == 0.0 and out["precision"] == 0.0 and out["recall"] == 0.0
    assert math.isinf(out["assd"]) and math.isinf(out["hd95"])
    assert math.isinf(hausdorff_distance(pred, target, spacing=ANISO))
    d_pt, d_tp = surface_distances(pred, target, spacing=ANISO)
    nonempty = d_tp if empty_pred else d_pt
    assert nonempty.size == 64 - 8 and np.isinf(nonempty).all()


# -- cropping is exact -------------------------------------------------------------------------------------
def _reference_distances(p, t, spacing):
    """Uncropped reference computation."""
    ps = p & ~ndimage.binary_erosion(p, structure=ndimage.generate_binary_structure(3, 1))
    ts = t & ~ndimage.binary_erosion(t, structure=ndimage.generate_binary_structure(3, 1))
    return (
        ndimage.distance_transform_edt(~ts, sampling=spacing)[ps],
        ndimage.distance_transform_edt(~ps, sampling=spacing)[ts],
    )


def test_cropped_distances_match_full_volume_including_border_objects():
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.normal(size=(40, 36, 20)), 2.0)
    p = noise > 0.05
    t = np.roll(noise, 2, axis=0) > 0.0
    p[:, :, 0] |= t[:, :, 0]  # objects touching the image border
    for got, want in zip(surface_distances(p, t, spacing=ANISO), _reference_distances(p, t, ANISO)):
        np.testing.assert_allclose(got, want)


# -- validation and cost ----------------------------------------------------------------------------------
def test_validation_errors():
    a = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="target shape"):
        dice(a, np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="pred must be a 3D"):
        compute_metrics(np.zeros((4, 4)), np.zeros((4, 4)), spacing=ANISO)
    with pytest.raises(ValueError, match="target must be a 3D"):
        precision(a, np.zeros((1, 4, 4, 4)))
    for bad in [(1.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0), "abc", None]:
        with pytest.raises(ValueError, match="spacing"):
            assd(a, a, spacing=bad)
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(a, a, spacing=ANISO, percentile=101)


@pytest.mark.serial  # a duration: measured alone (make test)
def test_large_volume_with_small_objects_is_fast():
    shape = (240, 240, 155)
    pred = sphere_mm((30, 30, 30), (1.0, 1.0, 1.0), (15.0, 15.0, 15.0), 10.0)
    a = np.zeros(shape, dtype=bool)
    b = np.zeros(shape, dtype=bool)
    a[100:130, 90:120, 60:90] = pred
    b[102:132, 90:120, 61:91] = pred
    compute_metrics(a, b, spacing=(1.0, 1.0, 1.0))  # warm-up
    start = time.perf_counter()
    out = compute_metrics(a, b, spacing=(1.0, 1.0, 1.0))
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"compute_metrics took {elapsed:.2f} s"
    assert 0.7 < out["dice"] < 1.0 and 0 < out["assd"] < out["hd95"] <= math.sqrt(5) + 1e-9


def test_module_is_torch_free():
    code = "import sys, PASegLib.evaluation.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert metrics.__all__
