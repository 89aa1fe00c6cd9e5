"""Click simulation and geodesic seed expansion (synthetic and real left-atrium cases)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LA_HEART, ellipsoid, real_la_cases

from PASegLib.annotation.model import CaseAnnotation, side_axis
from PASegLib.annotation.simulation import ClickSimulationConfig, mask_objects, simulate_clicks
from PASegLib.annotation.validation import object_box, validate_case
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume, read_image
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds, seed_precision_recall, valid_region_mask


def two_blobs(shape=(40, 36, 20)):
    mask = ellipsoid(shape, (12, 12, 8), (5, 5, 3)) | ellipsoid(shape, (28, 24, 11), (6, 4, 4))
    mask |= ellipsoid(shape, (35, 5, 3), (0.5, 0.5, 0.5))  # a 1-voxel speck, below min_size
    return mask.astype(np.uint8)


def test_simulated_clicks_are_valid_and_reproducible(oblique_geometry):
    mask = two_blobs()
    case = simulate_clicks(mask, oblique_geometry, seed=4)
    assert case.names() == ["tumor 1", "tumor 2"]
    validate_case(case, oblique_geometry)
    again = simulate_clicks(mask, oblique_geometry, seed=4)
    other = simulate_clicks(mask, oblique_geometry, seed=5)
    for a, b in zip(case.objects, again.objects):
        for label in a.points():
            np.testing.assert_array_equal(a.points()[label], b.points()[label])
    assert any(not np.allclose(a.background["R"], b.background["R"]) for a, b in zip(case.objects, other.objects))


def test_simulated_clicks_geometry_rules(oblique_geometry):
    g = oblique_geometry
    mask = two_blobs()
    config = ClickSimulationConfig(margin_mm=(2.0, 4.0))
    components = mask_objects(mask, min_size=config.min_size)
    for seed in range(5):
        case = simulate_clicks(mask, g, seed=seed, config=config)
        for obj, component in zip(case.objects, components):
            fg = g.world_to_voxel(obj.foreground)
            assert component[tuple(fg)], "foreground click must lie inside the object"
            voxels = np.argwhere(component)
            for side, (axis, sign) in side_axis(g).items():
                p = g.world_to_voxel(obj.background[side])
                extreme = voxels[:, axis].max() if sign > 0 else voxels[:, axis].min()
                beyond_mm = sign * (p[axis] - extreme) * g.spacing[axis]
                at_edge = p[axis] in (0, g.shape[axis] - 1)
                assert at_edge or 1.0 <= beyond_mm <= 4.0 + g.spacing[axis], (side, beyond_mm)
            lo, hi = object_box(obj, g)
            assert np.all(lo <= voxels.min(0)) and np.all(hi >= voxels.max(0)), "box must cover the object"


def test_largest_only_and_min_size(oblique_geometry):
    mask = two_blobs()
    assert len(mask_objects(mask, min_size=1)) == 3
    case = simulate_clicks(mask, oblique_geometry, config=ClickSimulationConfig(largest_only=True))
    assert case.names() == ["tumor 1"]
    with pytest.raises(ValueError, match="no object of at least 10 voxels"):
        simulate_clicks(np.zeros(oblique_geometry.shape), oblique_geometry)
    with pytest.raises(ValueError, match="does not match geometry"):
        simulate_clicks(np.zeros((3, 3, 3)), oblique_geometry)
    with pytest.raises(ValueError, match="margin_mm"):
        ClickSimulationConfig(margin_mm=(5.0, 1.0))


def test_expansion_labels_box_foreground_and_background(blob_case):
    image, label = blob_case
    g = image.geometry
    case = simulate_clicks(label, g, seed=0)
    partial = expand_seeds(image, case, config=ExpansionConfig(epsilon=0.2))
    assert partial.dtype == np.uint8 and set(np.unique(partial)) <= {0, 1, 2}
    lo, hi = object_box(case.objects[0], g)
    inside = np.zeros(g.shape, dtype=bool)
    inside[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = True
    assert np.all(partial[~inside] == 0), "everything outside the box is background"
    assert np.all(partial[inside] != 0), "nothing inside the box is background with valid_region='all'"
    assert partial[tuple(g.world_to_voxel(case.objects[0].foreground))] == 1
    stats = seed_precision_recall(partial, label)
    assert stats["fg_precision"] > 0.95 and stats["fg_recall"] > 0.1 and stats["bg_error"] == 0.0


def test_expansion_epsilon_extremes_and_monotonicity(blob_case):
    image, label = blob_case
    case = simulate_clicks(label, image.geometry, seed=0)
    sizes = [
        int((expand_seeds(image, case, config=ExpansionConfig(epsilon=e, smooth_sigma_mm=0)) == 1).sum())
        for e in (0, 0.1, 0.3, 1)
    ]
    assert sizes[0] == 1, "epsilon 0 keeps only the click"
    assert sizes == sorted(sizes)
    lo, hi = object_box(case.objects[0], image.geometry)
    assert sizes[-1] == int(np.prod(hi - lo + 1)) - 1, "epsilon 1 labels the whole box except its farthest voxel"


def test_expansion_valid_region(blob_case):
    image, label = blob_case
    arr = image.array.copy()
    arr[:, :, :9] = arr.min() - 1  # an "outside the body" slab below the object centre
    volume = Volume(arr, image.geometry)
    case = simulate_clicks(label, image.geometry, seed=0)
    config = ExpansionConfig(valid_region="nonzero")
    valid = valid_region_mask(volume.array, config)
    assert not valid[:, :, :9].any() and valid[:, :, 9:].all()
    partial = expand_seeds(volume, case, config=config)
    assert np.all(partial[:, :, :9] == 0)
    thr = expand_seeds(volume, case, config=ExpansionConfig(valid_region="above_threshold", valid_threshold=1e9))
    assert np.all(thr == 0)
    with pytest.raises(ValueError, match="valid_threshold"):
        ExpansionConfig(valid_region="above_threshold")
    with pytest.raises(ValueError, match="valid_mask shape"):
        expand_seeds(volume, case, valid_mask=np.ones((2, 2, 2), bool))


def test_expansion_two_objects_union(oblique_geometry):
    g = oblique_geometry
    mask = two_blobs()
    rng = np.random.default_rng(0)
    image = Volume((50 + 100 * mask + rng.normal(0, 3, g.shape)).astype(np.float32), g)
    case = simulate_clicks(mask, g, seed=1)
    partial = expand_seeds(image, case)
    for obj in case.objects:
        assert partial[tuple(g.world_to_voxel(obj.foreground))] == 1
    single = expand_seeds(image, CaseAnnotation(case.objects[:1]))
    assert (partial == 1).sum() > (single == 1).sum()
    assert (partial == 2).sum() >= (single == 2).sum()


def test_expansion_config_validation_and_json():
    for kwargs, message in [
        (dict(epsilon=1.5), "epsilon"),
        (dict(lamb=-0.1), "lamb"),
        (dict(valid_region="skull"), "valid_region"),
        (dict(max_iterations=0), "max_iterations"),
        (dict(backend="cuda"), "backend"),
    ]:
        with pytest.raises(ValueError, match=message):
            ExpansionConfig(**kwargs)
    config = ExpansionConfig(epsilon=0.1, lamb=0.7)
    assert ExpansionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown expansion setting"):
        ExpansionConfig.from_dict({"epsilon": 0.1, "sigma": 2})


def test_expansion_torch_backend_matches_numpy(blob_case):
    pytest.importorskip("torch")
    image, label = blob_case
    case = simulate_clicks(label, image.geometry, seed=2)
    a = expand_seeds(image, case, config=ExpansionConfig(backend="numpy"))
    b = expand_seeds(image, case, config=ExpansionConfig(backend="torch"))
    assert (a != b).sum() <= 2  # float32 ties at the threshold may differ


@pytest.mark.realdata
def test_expansion_on_real_left_atrium_cases():
    ids = real_la_cases(2)
    for case_id in ids:
        image = read_image(LA_HEART / f"{case_id}_image.nii.gz")
        label = read_image(LA_HEART / f"{case_id}_label.nii.gz")
        assert image.geometry.mismatch(label.geometry) == ""
        np.testing.assert_allclose(image.geometry.spacing, (0.625, 0.625, 0.625), atol=1e-4)
        case = simulate_clicks(label.array, image.geometry, seed=0, config=ClickSimulationConfig(largest_only=True))
        validate_case(case, image.geometry)
        partial = expand_seeds(image, case, config=ExpansionConfig())
        stats = seed_precision_recall(partial, label.array)
        assert stats["bg_error"] == 0.0, "simulated boxes must contain the whole atrium"
        assert stats["fg_precision"] > 0.7 and stats["fg_recall"] > 0.1, stats


def test_geometry_oblique_expansion_is_index_space(oblique_geometry):
    """Expansion on an oblique image equals expansion on the same array with identity geometry."""
    mask = two_blobs()
    rng = np.random.default_rng(2)
    arr = (50 + 100 * mask + rng.normal(0, 3, mask.shape)).astype(np.float32)
    plain = ImageGeometry(oblique_geometry.shape, oblique_geometry.spacing)
    case_oblique = simulate_clicks(mask, oblique_geometry, seed=3, config=ClickSimulationConfig(bg_jitter=0))
    case_plain = simulate_clicks(mask, plain, seed=3, config=ClickSimulationConfig(bg_jitter=0))
    a = expand_seeds(Volume(arr, oblique_geometry), case_oblique)
    b = expand_seeds(Volume(arr, plain), case_plain)
    np.testing.assert_array_equal(a, b)
