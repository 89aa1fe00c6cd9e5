"""The label-free extent rule of ``ExpansionConfig(extent="auto")``: competition with the background seeds AND the
reach cap (:mod:`PASegLib.seeds.extent`)."""

from __future__ import annotations

import numpy as np

from PASegLib.annotation.model import CaseAnnotation, ObjectAnnotation
from PASegLib.annotation.validation import object_box
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume
from PASegLib.seeds import extent
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds, seed_precision_recall, smoothed_crop

SHAPE = (36, 36, 36)
CENTRE = (18, 18, 18)


def _ball(centre, radius):
    grid = np.indices(SHAPE)
    return ((grid - np.asarray(centre, float)[:, None, None, None]) ** 2).sum(0) <= radius * radius


def leaky_case(margin=10, contrast=20.0, noise=4.0):
    """A low-contrast sphere (radius 6, contrast 20 over noise 4) whose box is loose (background clicks ``margin``
    voxels beyond it) and which touches, through a 2-voxel neck, a same-intensity neighbour (radius 5) in a corner
    of the box: the left atrium and its veins / ventricle in small. Label = the sphere only."""
    geometry = ImageGeometry(SHAPE, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    label = _ball(CENTRE, 6)
    bright = label | _ball((27, 27, 18), 5)
    for t in np.linspace(0.0, 1.0, 50):  # the neck
        bright |= _ball(np.asarray(CENTRE) + t * (np.array([27, 27, 18]) - np.asarray(CENTRE)), 2)
    image = 100.0 + contrast * bright + np.random.default_rng(0).normal(0.0, noise, SHAPE)
    world = geometry.index_to_world
    background = {}
    for side, (axis, sign) in zip("RLAPIS", [(0, -1), (0, 1), (1, -1), (1, 1), (2, -1), (2, 1)]):
        point = np.array(CENTRE, float)
        point[axis] += sign * (6 + margin)
        background[side] = world(point)
    obj = ObjectAnnotation("tumor 1", world(np.array(CENTRE, float)), background)
    return Volume(image.astype(np.float32), geometry), label, CaseAnnotation([obj])


def test_reach_cap_keeps_a_connected_neighbour_out():
    """The competition alone labels the neighbour (precision 0.71 here); the reach cap keeps the seeds inside."""
    image, label, case = leaky_case()
    scores = seed_precision_recall(expand_seeds(image, case, config=ExpansionConfig(extent="auto")), label)
    fixed = seed_precision_recall(expand_seeds(image, case, config=ExpansionConfig()), label)
    assert scores["fg_precision"] >= 0.9, scores
    assert scores["fg_recall"] >= 0.4 and scores["fg_recall"] >= fixed["fg_recall"], (scores, fixed)
    assert scores["bg_error"] == 0.0


def test_rule_is_the_competition_and_the_reach_cap():
    """``auto_foreground`` = (d_fg < d_bg) & (d_fg < REACH_FRACTION · max d_fg), both on intensities scaled so that
    the click contrast is CONTRAST_UNITS, as its docstring says."""
    image, _, case = leaky_case()
    obj, geometry = case.objects[0], image.geometry
    lo, hi = object_box(obj, geometry)
    crop = smoothed_crop(image.array, lo, hi, geometry.spacing, 1.0).astype(np.float32)
    fg = tuple(int(v) for v in geometry.world_to_voxel(obj.foreground) - lo)
    bg = np.clip(geometry.world_to_voxel(obj.background_array()) - lo, 0, hi - lo)
    faces = [True] * 6
    kw = dict(lamb=0.5, max_iterations=None, backend="numpy")
    got = extent.auto_foreground(crop, fg, bg, faces, geometry.spacing, **kw)

    scaled = (crop - crop.min()) * np.float32(extent.CONTRAST_UNITS / extent.click_contrast(crop, fg, bg))
    seeds = np.zeros(crop.shape, dtype=bool)
    seeds[fg] = True
    back = extent.background_seeds(crop.shape, bg, faces)
    d_fg = extent.distance(scaled, seeds, geometry.spacing, **kw)
    d_bg = extent.distance(scaled, back, geometry.spacing, **kw)
    competition = d_fg < d_bg
    expected = competition & (d_fg < extent.REACH_FRACTION * d_fg.max())
    expected[fg] = True
    np.testing.assert_array_equal(got, expected)
    assert 0 < got.sum() < competition.sum()  # the cap bites here: the competition alone reaches further


def test_reach_cap_without_an_edge_is_a_ball():
    """No contrast, no noise: the distance is Euclidean-like, the cap is the binding limit: a ball of radius
    REACH_FRACTION × the distance to the farthest box corner around the click."""
    image, _, case = leaky_case(margin=10, contrast=0.0, noise=0.0)
    fg = expand_seeds(image, case, config=ExpansionConfig(extent="auto")) == 1
    radius = extent.REACH_FRACTION * 16 * np.sqrt(3.0)  # the box spans the click ± 16 voxels on every axis
    idx = np.argwhere(fg)
    assert fg[CENTRE] and np.all(np.linalg.norm(idx - np.array(CENTRE), axis=1) <= radius + 1e-6)
    assert idx.min(0).tolist() == [18 - int(radius)] * 3 and idx.max(0).tolist() == [18 + int(radius)] * 3
