"""Random-walker fill of the seven-point seeds inside the click box (PASegLib.seeds.seed_fill)."""

from __future__ import annotations

import numpy as np
import pytest

from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.annotation.validation import object_box
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds, seed_precision_recall
from PASegLib.seeds.pseudo_labels import pseudo_label_map
from PASegLib.seeds.random_walker import RandomWalkerConfig
from PASegLib.seeds.seed_fill import fill_seeds


def _box_mask(shape, lo, hi):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))] = True
    return mask


@pytest.fixture
def filled(blob_case):
    """(image, label, case, seeds, fill, probability-free fill with margin 0) on the oblique ellipsoid."""
    image, label = blob_case
    case = simulate_clicks(label, image.geometry, seed=0)
    seeds = expand_seeds(image, case)
    fill = pseudo_label_map(image, case, expansion=ExpansionConfig(fill="random_walker"))
    return image, label, case, seeds, fill


def test_fill_labels_more_of_the_object_precisely(filled):
    image, label, case, seeds, fill = filled
    assert fill.dtype == np.uint8 and set(np.unique(fill)) <= {0, 1, 2}
    plain = seed_precision_recall(seeds, label)
    grown = seed_precision_recall(fill, label)
    assert grown["fg_recall"] > plain["fg_recall"] + 0.2, (plain, grown)
    assert grown["fg_precision"] >= 0.9, grown
    assert grown["bg_error"] < 0.2, grown  # the 2 mm working grid on a 7-slice-thick object
    assert np.all(fill[seeds == 1] == 1), "the expanded seeds stay foreground"


def test_fill_keeps_box_exterior_background_and_band_unlabelled(filled):
    image, label, case, seeds, fill = filled
    lo, hi = object_box(case.objects[0], image.geometry)
    inside = _box_mask(label.shape, lo, hi)
    assert np.all(fill[~inside] == 0), "everything outside the click box is background"
    assert (fill[inside] == 0).any(), "the fill labels background inside the box"
    band = fill[inside] == 2
    assert 0 < band.sum() < 0.5 * inside.sum(), "an uncertain band stays unlabelled, not the whole box"
    # the band lies at the object's boundary: within 2 voxels of the true surface (most of it)
    from scipy.ndimage import distance_transform_edt

    to_surface = np.minimum(distance_transform_edt(label == 0), distance_transform_edt(label > 0))
    assert np.median(to_surface[inside & (fill == 2)]) <= 2.0
    # no band at margin 0: every box voxel is labelled
    none = pseudo_label_map(image, case, expansion=ExpansionConfig(fill="random_walker", fill_margin=0.0))
    assert not (none == 2).any()
    # a wider margin leaves more unlabelled
    wide = pseudo_label_map(image, case, expansion=ExpansionConfig(fill="random_walker", fill_margin=0.45))
    assert (wide == 2).sum() > (fill == 2).sum()


def test_default_is_the_fill_and_none_gives_the_plain_seeds(blob_case):
    image, label = blob_case
    case = simulate_clicks(label, image.geometry, seed=0)
    d = ExpansionConfig()
    assert d.fill == "random_walker" and d.to_dict()["fill"] == "random_walker"  # chosen on tuning cases (issue 20)
    plain = ExpansionConfig(fill="none")
    assert "fill" not in plain.cache_dict() and plain.to_dict()["fill"] == "none"  # plain seeds' cache keys unchanged
    np.testing.assert_array_equal(pseudo_label_map(image, case, expansion=plain), expand_seeds(image, case))
    filled = pseudo_label_map(image, case)
    assert (filled == 1).sum() > (expand_seeds(image, case) == 1).sum()  # the default fills the box
    c = ExpansionConfig(fill="random_walker", fill_margin=0.1, fill_bg_radius_mm=3.0)
    assert ExpansionConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kw, match", [
    ({"fill": "graph_cut"}, "'graph_cut'"),
    ({"fill": "random_walker", "fill_margin": 0.5}, "fill_margin.*0.5"),
    ({"fill": "random_walker", "fill_margin": -0.1}, "fill_margin.*-0.1"),
    ({"fill": "random_walker", "fill_bg_radius_mm": float("nan")}, "fill_bg_radius_mm.*nan"),
])
def test_bad_fill_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        ExpansionConfig(**kw)


def test_fill_seeds_refuses_bad_inputs(blob_case):
    image, label = blob_case
    case = simulate_clicks(label, image.geometry, seed=0)
    seeds = expand_seeds(image, case)
    with pytest.raises(ValueError, match="margin.*0.7"):
        fill_seeds(image, case, seeds, margin=0.7, bg_radius_mm=2.0)
    with pytest.raises(ValueError, match="radius.*-1"):
        fill_seeds(image, case, seeds, margin=0.2, bg_radius_mm=-1.0)
    with pytest.raises(ValueError, match=r"seeds shape \(3, 3, 3\)"):
        fill_seeds(image, case, np.zeros((3, 3, 3), np.uint8), margin=0.2, bg_radius_mm=2.0)
    with pytest.raises(ValueError, match="beta"):
        pseudo_label_map(image, case, expansion=ExpansionConfig(fill="random_walker"), random_walker={"beta": -1})
    assert RandomWalkerConfig().working_spacing_mm == 2.0


def test_paseg_expand_fill_option(blob_case, tmp_path, capsys):
    import json

    from PASegLib.annotation.markups import write_markups
    from PASegLib.cli.main import main
    from PASegLib.image.io import read_image, write_image

    image, label = blob_case
    write_image(tmp_path / "blob_image.nii.gz", image.array, image.geometry)
    write_image(tmp_path / "blob_label.nii.gz", label, image.geometry)
    write_markups(tmp_path / "blob.mrk.json", simulate_clicks(label, image.geometry, seed=0))
    base = ["expand", str(tmp_path), "--no-preview", "--json", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "plain"), "--fill", "none"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plain["config"]["fill"] == "none", "paseg expand keeps offering the plain seeds"
    assert main(base + ["--out", str(tmp_path / "default")]) == 0
    default = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert default["config"]["fill"] == "random_walker", "by default, the labels training uses"
    assert main(base + ["--out", str(tmp_path / "fill"), "--fill", "random_walker", "--fill-margin", "0.1"]) == 0
    grown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert grown["config"]["fill"] == "random_walker" and grown["config"]["fill_margin"] == 0.1
    assert grown["mean"]["fg_recall"] > plain["mean"]["fg_recall"] + 0.2
    partial = read_image(tmp_path / "fill" / "blob_partial.nii.gz").array
    assert (partial == 2).any() and (partial == 1).any()
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "bad"), "--fill", "graph_cut"])
    assert main(base + ["--out", str(tmp_path / "bad"), "--fill", "random_walker", "--fill-margin", "0.6"]) != 0
    assert "fill_margin" in capsys.readouterr().err
