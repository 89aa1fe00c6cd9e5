"""Tests of PASegLib.synthetic.generator: geometry, objects, realism (contrast, partial volume), determinism, files."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from scipy import ndimage

from PASegLib.evaluation.metrics import dice
from PASegLib.image.io import read_image
from PASegLib.synthetic.generator import SyntheticConfig, case_name, generate_case, write_synthetic_dataset

SEEDS = (0, 1, 2, 3)
CROSS = ndimage.generate_binary_structure(3, 1)


@pytest.fixture(scope="module")
def cases():
    return {seed: generate_case(seed=seed) for seed in SEEDS}


def _shell_and_core(case, *, shell_mm=(2.0, 6.0), core_mm=2.5):
    lab = case.label.array.astype(bool)
    spacing = case.image.geometry.spacing
    d_out = ndimage.distance_transform_edt(~lab, sampling=spacing)
    d_in = ndimage.distance_transform_edt(lab, sampling=spacing)
    return (d_out > shell_mm[0]) & (d_out < shell_mm[1]), d_in > core_mm


# -- geometry and types -------------------------------------------------------------------------------------
def test_geometry_is_anisotropic_oblique_and_offset(cases):
    cfg = SyntheticConfig()
    for case in cases.values():
        geo = case.image.geometry
        assert geo == case.label.geometry == cfg.geometry()
        assert geo.shape == (96, 96, 32)
        assert max(geo.spacing) / min(geo.spacing) > 2 and geo.spacing[2] == max(geo.spacing)
        off_diagonal = geo.direction_matrix[~np.eye(3, dtype=bool)]
        assert np.abs(off_diagonal).max() > 0.1
        assert np.linalg.norm(geo.origin) > 1.0
        assert case.image.array.dtype == np.float32 and case.label.array.dtype == np.uint8
        assert set(np.unique(case.label.array)) == {0, 1}
        assert np.isfinite(case.image.array).all() and case.image.array.min() >= 0


def test_each_object_is_one_component_of_reasonable_size(cases):
    counts = set()
    for case in cases.values():
        lab = case.label.array
        n = len(case.objects)
        counts.add(n)
        assert 1 <= n <= 2
        for structure in (CROSS, np.ones((3, 3, 3))):
            components, n_components = ndimage.label(lab, structure=structure)
            assert n_components == n
        sizes = np.bincount(components.ravel())[1:]
        assert sizes.min() > 200
        assert sorted(sizes) == sorted(o["n_voxels"] for o in case.objects)
        for obj in case.objects:
            # The recorded centre is inside the image and its world position matches the geometry.
            assert case.image.geometry.contains_index(obj["centre_index"])
            np.testing.assert_allclose(case.image.geometry.world_to_index(obj["centre_lps"]), obj["centre_index"])
            assert components[tuple(np.rint(obj["centre_index"]).astype(int))] > 0 or obj["n_lobes"] > 1
        # Tumours do not touch the image border.
        assert not (lab[[0, -1]].any() or lab[:, [0, -1]].any() or lab[:, :, [0, -1]].any())
    assert counts == {1, 2}, "the default range (1, 2) should give both counts over a few seeds"


def test_label_is_thresholded_occupancy(cases):
    for case in cases.values():
        assert case.occupancy.dtype == np.float32
        np.testing.assert_array_equal(case.label.array, case.occupancy >= 0.5)


# -- realism -------------------------------------------------------------------------------------------------
def test_objects_are_visible_but_not_thresholdable(cases):
    cfg = SyntheticConfig()
    sigma = cfg.noise_std * cfg.intensity_scale
    for seed, case in cases.items():
        img, lab = case.image.array, case.label.array.astype(bool)
        shell, _ = _shell_and_core(case)
        contrast = img[lab].mean() - np.median(img[shell])
        assert contrast > 4 * sigma, f"seed {seed}: contrast {contrast / sigma:.1f} sigma"
        # Intensity histograms overlap: no global threshold segments the tumours.
        thresholds = np.quantile(img, np.linspace(0.5, 0.9999, 200))
        best = max(dice(img > t, lab) for t in thresholds)
        assert best < 0.95, f"seed {seed}: a global threshold reaches Dice {best:.3f}"
        assert img[lab].min() < np.quantile(img[~lab], 0.99)


def test_background_is_textured_and_has_distractors(cases):
    for case in cases.values():
        img, lab = case.image.array, case.label.array.astype(bool)
        # Far from the tumours, some voxels are as bright as the tumour (vessels, similar structures).
        far = ndimage.distance_transform_edt(~lab, sampling=case.image.geometry.spacing) > 4
        assert np.count_nonzero(img[far] > np.median(img[lab])) > 30
        # Smooth texture: the background varies more than noise once smoothed.
        smooth = ndimage.uniform_filter(img, size=(7, 7, 3))
        assert smooth[far].std() > 0.03 * np.median(img[far])


def test_partial_volume_at_boundaries():
    cfg = SyntheticConfig(noise_std=0.0, bias_strength=0.0, n_distractors=(0, 0), necrosis_probability=0.0)
    for seed in (0, 3):
        case = generate_case(config=cfg, seed=seed)
        img, lab, occ = case.image.array, case.label.array.astype(bool), case.occupancy
        inner = lab & ~ndimage.binary_erosion(lab, CROSS)
        outer = ndimage.binary_dilation(lab, CROSS) & ~lab
        boundary_occ = occ[inner | outer]
        assert np.mean((boundary_occ > 0.02) & (boundary_occ < 0.98)) > 0.3
        shell, core = _shell_and_core(case)
        bg, fg = np.median(img[shell]), np.median(img[core])
        for voxels in (outer & (occ > 0.2), inner & (occ < 0.8)):
            assert voxels.sum() > 50
            relative = (img[voxels].mean() - bg) / (fg - bg)
            assert 0.15 < relative < 0.85, f"seed {seed}: boundary value at {relative:.2f} of the contrast"


# -- determinism, speed, files --------------------------------------------------------------------------------
def test_deterministic_for_a_seed(cases):
    again = generate_case(seed=1)
    np.testing.assert_array_equal(again.image.array, cases[1].image.array)
    np.testing.assert_array_equal(again.label.array, cases[1].label.array)
    assert again.objects == cases[1].objects
    assert not np.array_equal(cases[0].image.array, cases[1].image.array)
    assert not np.array_equal(cases[0].label.array, cases[1].label.array)


def test_generation_is_fast():
    elapsed = []
    for seed in (10, 11):
        start = time.perf_counter()
        generate_case(seed=seed)
        elapsed.append(time.perf_counter() - start)
    assert min(elapsed) < 1.0, f"generate_case took {min(elapsed):.2f} s"


def test_write_dataset_round_trips(tmp_path):
    cfg = SyntheticConfig(shape=(48, 40, 20), radius_mm=(4.0, 6.0))
    paths = write_synthetic_dataset(tmp_path / "data", n_cases=2, config=cfg, seed=5)
    assert [p.name for p in paths] == [
        "synth_000_image.nii.gz", "synth_000_label.nii.gz", "synth_001_image.nii.gz", "synth_001_label.nii.gz"
    ]
    assert case_name(12) == "synth_012"
    image, label = read_image(paths[0]), read_image(paths[1], role="label")
    assert image.geometry.mismatch(cfg.geometry()) == ""
    assert label.geometry.mismatch(cfg.geometry()) == ""
    assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
    again = write_synthetic_dataset(tmp_path / "again", n_cases=2, config=cfg, seed=5, suffix=".nrrd")
    np.testing.assert_array_equal(read_image(again[0]).array, image.array)
    np.testing.assert_array_equal(read_image(again[3]).array, read_image(paths[3]).array)
    assert not np.array_equal(read_image(paths[2]).array, image.array)


# -- configuration ---------------------------------------------------------------------------------------------
def test_config_json_round_trip():
    cfg = SyntheticConfig(shape=(64, 64, 24), n_objects=(2, 2), noise_std=0.05)
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert SyntheticConfig.from_dict(data) == cfg
    case = generate_case(config=cfg, seed=0)
    assert case.image.array.shape == (64, 64, 24) and len(case.objects) == 2


@pytest.mark.parametrize(
    "field, value",
    [
        ("shape", (96, 96)),
        ("shape", (4, 96, 32)),
        ("spacing", (0.8, -0.8, 2.5)),
        ("origin", (0.0, float("nan"), 0.0)),
        ("n_objects", (0, 2)),
        ("n_objects", (3, 2)),
        ("radius_mm", (6.0, 60.0)),
        ("irregularity", 0.9),
        ("necrosis_probability", "high"),
        ("noise_std", -0.1),
        ("n_distractors", (1,)),
        ("supersample_mm", 0.0),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"SyntheticConfig.{field}"):
        SyntheticConfig(**{field: value})


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown SyntheticConfig field"):
        SyntheticConfig.from_dict({"shape": [8, 8, 8], "colour": "red"})
    with pytest.raises(ValueError, match="seed"):
        generate_case(seed=-1)
    with pytest.raises(ValueError, match="config"):
        generate_case(config={"shape": (8, 8, 8)})
    with pytest.raises(ValueError, match="n_cases"):
        write_synthetic_dataset(tmp_path, n_cases=0)
    with pytest.raises(ValueError, match="suffix"):
        write_synthetic_dataset(tmp_path, suffix=".png")


def test_a_small_field_of_view_gives_a_case_not_an_error(tmp_path):
    """``paseg synth --shape 20 20 10`` failed with numpy's "high - low < 0" (found by the bad-input matrix)."""
    from PASegLib.cli.main import main

    assert main(["synth", str(tmp_path / "d"), "--cases", "1", "--shape", "20", "20", "10"]) == 0
    assert read_image(next((tmp_path / "d").glob("*_image.nii.gz"))).array.shape == (20, 20, 10)
