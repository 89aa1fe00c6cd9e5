"""Label-free seed expansion (``ExpansionConfig(extent="auto")``) and the GeodisTK expansion backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LA_HEART, ellipsoid, real_la_cases

from PASegLib.annotation.model import CaseAnnotation, ObjectAnnotation
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.annotation.validation import object_box
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume, read_image
from PASegLib.seeds import extent
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds, seed_precision_recall
from PASegLib.seeds.geodesic import geodesic_distance

SHAPE = (40, 40, 40)


def sphere_case(contrast=100.0, background=20.0, noise=2.0, spacing=(1.0, 1.0, 1.0)):
    """A bright sphere (radius 8 voxels) in a dark box, clicks: centre and 4 voxels beyond each side."""
    geometry = ImageGeometry(SHAPE, spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    label = ellipsoid(SHAPE, (20, 20, 20), (8, 8, 8))
    rng = np.random.default_rng(0)
    image = (background + contrast * label + rng.normal(0, noise, SHAPE)).astype(np.float32)
    world = geometry.index_to_world
    sides = {
        "R": (7, 20, 20),
        "L": (32, 20, 20),
        "A": (20, 7, 20),
        "P": (20, 32, 20),
        "I": (20, 20, 7),
        "S": (20, 20, 32),
    }
    background_points = {k: world(np.array(v, float)) for k, v in sides.items()}
    obj = ObjectAnnotation("tumor 1", world(np.array([20.0, 20.0, 20.0])), background_points)
    return Volume(image, geometry), label, CaseAnnotation([obj])


@pytest.mark.parametrize("contrast", [100.0, 2000.0, -60.0])
def test_auto_covers_the_sphere_and_nothing_outside(contrast):
    """The extent follows the object's edge whatever the intensity scale (bright or dark object)."""
    image, label, case = sphere_case(contrast=contrast, background=200.0)
    partial = expand_seeds(image, case, config=ExpansionConfig(extent="auto"))
    fg = partial == 1
    assert not np.any(fg & ~label), "auto extent must not leave the sphere"
    # the reach cap (extent.REACH_FRACTION) keeps a core: 0.58 of the sphere on every scale (the competition
    # alone reached 0.92)
    assert fg.sum() > 0.5 * label.sum(), f"auto extent covers only {fg.sum() / label.sum():.2f} of the sphere"
    fixed = expand_seeds(image, case, config=ExpansionConfig())
    assert (fixed == 1).sum() < fg.sum()  # the default ε keeps a smaller core of it


def test_auto_without_contrast_stays_within_the_reach_cap():
    """No edge at all: the foreground is inside the click's Voronoi cell ([14, 25] per axis, strictly closer than
    the faces 13 / 12 away) and the reach cap cuts it to a ball of 0.15 × 13·√3 ≈ 3.4 voxels."""
    image, label, case = sphere_case(contrast=0.0, noise=0.0)
    fg = expand_seeds(image, case, config=ExpansionConfig(extent="auto")) == 1
    idx = np.argwhere(fg)
    assert fg[20, 20, 20] and idx.min(0).tolist() == [17, 17, 17] and idx.max(0).tolist() == [23, 23, 23]


def test_auto_uses_box_faces_only_inside_the_image():
    flags = [True, False, True, True, False, True]
    mask = extent.background_seeds((5, 6, 7), np.array([[2, 3, 3]]), flags)
    assert mask[0].all() and not mask[-1, 1:-1, 1:-1].any() and mask[2, 3, 3]
    assert not mask[1:-1, 1:-1, 0].any() and mask[1:-1, 1:-1, -1].all()


def test_config_validation_and_serialisation():
    with pytest.raises(ValueError, match=r"^extent must be one of \('fixed', 'auto'\), got 'otsu'$"):
        ExpansionConfig(extent="otsu")
    with pytest.raises(ValueError, match=r"^backend must be one of \('numpy', 'torch', 'geodistk'\), got 'fmm'$"):
        ExpansionConfig(backend="fmm")
    config = ExpansionConfig(extent="auto", epsilon=0.3)
    assert ExpansionConfig.from_dict(config.to_dict()) == config
    assert ExpansionConfig().extent == "fixed" and ExpansionConfig().epsilon == 0.175


def test_geodistk_backend_missing(monkeypatch):
    monkeypatch.setattr(extent, "geodistk_available", lambda: False)
    with pytest.raises(ValueError) as err:
        ExpansionConfig(backend="geodistk")
    assert str(err.value) == (
        "backend 'geodistk' needs the GeodisTK package, which is not installed; install it with: "
        "CPPFLAGS=-DNPY_IN_ARRAY=NPY_ARRAY_IN_ARRAY pip install --no-build-isolation GeodisTK==0.1.7"
    )


def _geodistk():
    if not extent.geodistk_available():
        pytest.skip("GeodisTK not installed (optional backend); install it with: " + extent.GEODISTK_INSTALL)


def test_geodistk_backend_matches_numpy_raster_scan(capfd):
    """Same graph (FACTS §3): with enough iterations GeodisTK equals our converged scan on an anisotropic,
    non-cubic volume, so its spacing and axes are read in our [i, j, k] order."""
    _geodistk()
    rng = np.random.default_rng(1)
    image = (rng.random((9, 7, 5)) * 4).astype(np.float32)
    seeds = np.zeros(image.shape, dtype=bool)
    seeds[1, 5, 3] = True
    spacing = (0.7, 1.3, 3.0)
    ours = geodesic_distance(image, seeds, spacing=spacing, lamb=0.5)
    theirs = extent.distance(image, seeds, spacing, lamb=0.5, max_iterations=50, backend="geodistk")
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    swapped = extent.distance(image, seeds, spacing[::-1], lamb=0.5, max_iterations=50, backend="geodistk")
    assert not np.allclose(swapped, ours, rtol=1e-3)
    four = extent.distance(image, seeds, spacing, lamb=0.5, max_iterations=None, backend="geodistk")
    assert np.all(four >= ours * (1 - 1e-4) - 1e-6)  # the official 4 iterations: an upper bound
    assert capfd.readouterr().out == ""  # GeodisTK's own prints are silenced


def test_geodistk_expansion_reproduces_official_rule():
    """backend='geodistk', raw intensities: foreground = GeodisTK 4-iteration distance < ε·D_max in the box."""
    _geodistk()
    image, label, case = sphere_case(spacing=(0.8, 1.0, 1.5))
    config = ExpansionConfig(backend="geodistk", smooth_sigma_mm=0.0, epsilon=0.2)
    partial = expand_seeds(image, case, config=config)
    lo, hi = object_box(case.objects[0], image.geometry)
    crop = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
    import GeodisTK

    seeds = np.zeros(image.array[crop].shape, dtype=np.uint8)
    seeds[tuple(np.array([20, 20, 20]) - lo)] = 1
    d = GeodisTK.geodesic3d_raster_scan(np.ascontiguousarray(image.array[crop]), seeds, [0.8, 1.0, 1.5], 0.5, 4)
    expected = d < 0.2 * d.max()
    np.testing.assert_array_equal(partial[crop] == 1, expected)
    auto = expand_seeds(image, case, config=ExpansionConfig(backend="geodistk", extent="auto"))
    assert not np.any((auto == 1) & ~label) and (auto == 1).sum() > 0.4 * label.sum()


@pytest.mark.skipif(not LA_HEART.is_dir(), reason=f"real data not found at {LA_HEART}")
def test_auto_on_real_left_atria():
    """Two real cases (clicks from seed 0): the auto extent is mostly inside the atrium and finds a fair part."""
    for case_id in real_la_cases(2):
        image = read_image(LA_HEART / f"{case_id}_image.nii.gz")
        label = read_image(LA_HEART / f"{case_id}_label.nii.gz").array
        case = simulate_clicks(label, image.geometry, seed=0)
        scores = seed_precision_recall(expand_seeds(image, case, config=ExpansionConfig(extent="auto")), label)
        assert scores["fg_precision"] > 0.7 and scores["fg_recall"] > 0.2, (case_id, scores)
        assert scores["bg_error"] == 0.0


def test_cli_expand_extent_auto(tmp_path, capsys):
    import json

    from PASegLib.annotation.markups import write_markups
    from PASegLib.cli.main import main
    from PASegLib.image.io import write_image

    image, label, case = sphere_case()
    write_image(tmp_path / "ball_image.nii.gz", image.array, image.geometry)
    write_image(tmp_path / "ball_label.nii.gz", label.astype(np.uint8), image.geometry)
    write_markups(tmp_path / "ball.mrk.json", case)
    out = tmp_path / "out"
    args = ["expand", str(tmp_path), "--out", str(out), "--extent", "auto", "--no-preview", "--json", "--quiet"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["config"]["extent"] == "auto"
    assert summary["mean"]["fg_precision"] == 1.0 and summary["mean"]["fg_recall"] > 0.5  # the reach cap's core
    with pytest.raises(SystemExit):
        main(["expand", str(tmp_path), "--out", str(tmp_path / "o2"), "--extent", "otsu"])
