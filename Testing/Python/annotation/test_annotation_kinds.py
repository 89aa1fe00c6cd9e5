"""Annotation kinds: markups I/O of every kind, validation messages, simulated clicks, pseudo labels of
every kind and the ``simulate-clicks --kind`` / ``expand`` commands.

Small synthetic volumes only (an ellipsoid on a 40×40×30 grid or on the oblique ``oblique_geometry``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_error, ellipsoid, rotation
from scipy import ndimage

from PASegLib.annotation.kinds import ANNOTATION_KINDS, SIDES, get_kind, kind_names
from PASegLib.annotation.markups import (
    DraftObject,
    case_from_markups_dict,
    case_to_markups_dict,
    drafts_from_markups_dict,
    drafts_to_markups_dict,
    read_markups,
    write_markups,
)
from PASegLib.annotation.model import (
    AnnotationError,
    CaseAnnotation,
    ObjectAnnotation,
    box_corners,
    clicks_of,
    side_axis,
)
from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks
from PASegLib.annotation.validation import object_box, validate_case
from PASegLib.data.dataset import DatasetError, list_cases, load_case
from PASegLib.image.geometry import ImageGeometry, lps_to_ras
from PASegLib.image.io import Volume, read_image, write_image
from PASegLib.seeds.expansion import expand_seeds
from PASegLib.seeds.pseudo_labels import pseudo_label_map

KINDS = ("seven_points", "extreme_points", "single_point", "box", "dense")  # in registration order
#: identity direction, anisotropic spacing, origin off zero (LPS-aligned: i → L, j → P, k → S)
IDENTITY = ImageGeometry((40, 40, 30), (1.0, 0.8, 2.0), (5.0, -3.0, 10.0), tuple(np.eye(3).ravel()))


def _mask(geometry: ImageGeometry) -> np.ndarray:
    """An ellipsoid well inside ``geometry``'s grid (centre and radii in voxels)."""
    if geometry.shape == IDENTITY.shape:
        return ellipsoid(geometry.shape, (19, 21, 14), (8, 10, 5))
    return ellipsoid(geometry.shape, (20, 17, 10), (7, 6, 3))


@pytest.fixture(params=["identity", "oblique"])
def geometry(request) -> ImageGeometry:
    return IDENTITY if request.param == "identity" else request.getfixturevalue("oblique_geometry")


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Object voxels with a background 6-neighbour (voxels outside the grid count as background)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _sim(mask, geometry, kind, seed=0, **settings) -> CaseAnnotation:
    return simulate_clicks(mask, geometry, seed=seed, config=ClickSimulationConfig(kind=kind, **settings))


# ------------------------------------------------------------------------------------------- the registry
def test_registry_holds_the_five_kinds_with_their_labels():
    assert sorted(kind_names()) == sorted(KINDS)
    assert get_kind("extreme_points").labels == SIDES and get_kind("box").markup_type == "ROI"
    assert get_kind("single_point").labels == ("F",) and get_kind("single_point").optional == ("B",)
    assert {k: ANNOTATION_KINDS.get(k).clicks for k in kind_names()} == {
        "seven_points": 7, "extreme_points": 6, "single_point": 1, "box": 2, "dense": 0}
    with pytest.raises(ValueError, match="unknown annotation kind 'circle'; kinds are ") as info:
        get_kind("circle")
    assert all(k in str(info.value) for k in KINDS)
    with pytest.raises(ValueError, match="circle"):
        ClickSimulationConfig(kind="circle")


def test_kind_names_are_in_registration_order():
    assert kind_names() == list(KINDS)


def test_clicks_of_counts_the_placed_points():
    f = np.zeros(3)
    assert clicks_of(ObjectAnnotation("a", f, {"B": np.ones(3)}, kind="single_point")) == 2
    assert clicks_of(ObjectAnnotation("a", f, kind="single_point")) == 1
    assert clicks_of(ObjectAnnotation("a", kind="box", marks={"lo": f, "hi": f + 5})) == 2
    assert clicks_of(ObjectAnnotation("a", kind="dense")) == 0


def test_object_constructor_refuses_points_not_of_the_kind():
    p = np.zeros(3)
    with pytest.raises(AnnotationError, match="object 'a' .*missing S"):
        ObjectAnnotation("a", kind="extreme_points", marks={s: p for s in SIDES[:-1]})
    with pytest.raises(AnnotationError, match="object 'a' .*unexpected F"):
        ObjectAnnotation("a", kind="extreme_points", marks={**{s: p for s in SIDES}, "F": p})
    with pytest.raises(AnnotationError, match="object 'a'.*foreground/background"):
        ObjectAnnotation("a", p, kind="box", marks={"lo": p, "hi": p})
    with pytest.raises(AnnotationError, match="object 'a' \\(single point\\): the point F .*missing"):
        ObjectAnnotation("a", kind="single_point")
    with pytest.raises(AnnotationError, match="at most one background point B"):
        ObjectAnnotation("a", p, {"R": p}, kind="single_point")
    with pytest.raises(AnnotationError, match="only a dense object names a label file"):
        ObjectAnnotation("a", kind="extreme_points", marks={s: p for s in SIDES}, label_file="x.nii.gz")
    with pytest.raises(AnnotationError, match="unknown annotation kind 'circle'"):
        ObjectAnnotation("a", kind="circle")


# ------------------------------------------------------------------------------------------- 1. markups I/O
VARIANTS = ["seven_points", "extreme_points", "single_point+B", "single_point", "box", "dense", "dense+file"]


def _variant_case(variant: str, geometry: ImageGeometry) -> CaseAnnotation:
    """One object of ``variant`` simulated on the ellipsoid (off-grid shifts: positions need not be voxel
    centres to survive the round trip)."""
    mask = _mask(geometry)
    kind = variant.split("+")[0]
    case = _sim(mask, geometry, kind, seed=4, single_point_background=variant == "single_point+B",
                background_distance_mm=(2.0, 6.0))
    (obj,) = case.objects
    shift = np.array([0.123, -0.217, 0.05])
    obj.name = f"lesion {variant}"
    if obj.foreground is not None:
        obj.foreground = obj.foreground + shift
    obj.background = {k: v + shift for k, v in obj.background.items()}
    obj.marks = {k: v + shift for k, v in obj.marks.items()}
    if variant == "dense+file":
        obj.label_file = "labels/lesion.nii.gz"
    return case


def _assert_same_case(got: CaseAnnotation, want: CaseAnnotation) -> None:
    assert [(o.name, o.kind, o.label_file) for o in got.objects] == [
        (o.name, o.kind, o.label_file) for o in want.objects]
    for g, w in zip(got.objects, want.objects):
        assert sorted(g.points()) == sorted(w.points())
        for label, point in w.points().items():
            np.testing.assert_allclose(g.points()[label], point, atol=1e-6, err_msg=f"{g.name} point {label}")
        assert sorted(g.background) == sorted(w.background) and sorted(g.marks) == sorted(w.marks)


@pytest.mark.parametrize("cs", ["LPS", "RAS"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_kind_round_trips_through_a_markups_file(variant, cs, geometry, tmp_path):
    case = _variant_case(variant, geometry)
    validate_case(case, geometry)
    path = write_markups(tmp_path / "c.mrk.json", case, coordinate_system=cs)
    doc = json.loads(path.read_text())
    (markup,) = doc["markups"]
    assert markup["coordinateSystem"] == cs
    kind = case.objects[0].kind
    if kind == "seven_points":
        assert "pasegKind" not in markup  # old readers see a plain seven-point file
    else:
        assert markup["pasegKind"] == kind
    if kind == "dense":
        assert markup["controlPoints"] == []
        assert markup.get("pasegLabel") == case.objects[0].label_file
    elif kind != "box":
        labels = [cp["label"] for cp in markup["controlPoints"]]
        assert sorted(labels) == sorted(case.objects[0].points())
        first = markup["controlPoints"][0]
        want = case.objects[0].points()[first["label"]]
        np.testing.assert_allclose(first["position"], want if cs == "LPS" else lps_to_ras(want), atol=1e-9)
    back = read_markups(path, geometry)
    _assert_same_case(back, case)
    validate_case(back, geometry)
    _assert_same_case(case_from_markups_dict(case_to_markups_dict(case, coordinate_system=cs), geometry), case)


@pytest.mark.parametrize("cs", ["LPS", "RAS"])
def test_a_box_is_written_as_a_slicer_roi(cs, tmp_path):
    lo, hi = np.array([-12.0, 4.0, 20.0]), np.array([3.0, 25.0, 31.0])
    case = CaseAnnotation([ObjectAnnotation("box 1", kind="box", marks={"lo": lo, "hi": hi})])
    doc = json.loads(write_markups(tmp_path / "b.mrk.json", case, coordinate_system=cs).read_text())
    (roi,) = doc["markups"]
    assert roi["type"] == "ROI" and roi["pasegKind"] == "box" and roi["coordinateSystem"] == cs
    center = (lo + hi) / 2 if cs == "LPS" else lps_to_ras((lo + hi) / 2)
    np.testing.assert_allclose(roi["center"], center)
    np.testing.assert_allclose(roi["size"], [15.0, 21.0, 11.0])
    np.testing.assert_allclose(np.reshape(roi["orientation"], (3, 3)), np.eye(3))
    back = read_markups(tmp_path / "b.mrk.json", IDENTITY).objects[0]
    assert back.kind == "box"
    np.testing.assert_allclose(back.marks["lo"], lo)
    np.testing.assert_allclose(back.marks["hi"], hi)


def _hand_roi(center, size, orientation, cs, **extra):
    return {"markups": [{"type": "ROI", "name": "hand box", "coordinateSystem": cs, "center": list(center),
                         "size": list(size), "orientation": list(np.asarray(orientation, float).ravel()),
                         **extra}]}


@pytest.mark.parametrize("with_kind", [True, False])
def test_a_rotated_ras_roi_reads_as_the_lps_box_of_its_corners(with_kind):
    # 90° about z: the ROI's x side (4 mm) lies along y, its y side (10 mm) along x. In RAS the box spans
    # x 5..15, y -22..-18, z 2..8; in LPS x -15..-5, y 18..22, z 2..8.
    extra = {"pasegKind": "box"} if with_kind else {}
    doc = _hand_roi((10.0, -20.0, 5.0), (4.0, 10.0, 6.0), rotation("z", 90), "RAS", **extra)
    (obj,) = case_from_markups_dict(doc, IDENTITY).objects
    assert obj.kind == "box" and obj.name == "hand box"
    np.testing.assert_allclose(obj.marks["lo"], [-15.0, 18.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(obj.marks["hi"], [-5.0, 22.0, 8.0], atol=1e-9)
    (draft,) = drafts_from_markups_dict(doc)  # a draft reads the same corners
    assert draft.kind == "box"
    np.testing.assert_allclose(draft.points["lo"], [-15.0, 18.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(draft.points["hi"], [-5.0, 22.0, 8.0], atol=1e-9)


def test_an_oblique_roi_keeps_its_orientation_and_its_8_corners():
    # (before the oriented boxes of issue 22 D6 it read as the LPS box enclosing its corners: 1.6x its volume here)
    size = np.array([6.0, 2.0, 4.0])
    r = rotation("z", 30)
    doc = _hand_roi((1.0, 2.0, 3.0), size, r, "LPS", coordinateUnits="um")  # micrometres: ×1e-3
    (obj,) = case_from_markups_dict(doc, IDENTITY).objects
    np.testing.assert_allclose(obj.axes, r, atol=1e-12)
    center = np.array([1.0, 2.0, 3.0]) * 1e-3
    np.testing.assert_allclose(obj.marks["lo"], center - r @ (size / 2) * 1e-3, atol=1e-12)
    np.testing.assert_allclose(obj.marks["hi"], center + r @ (size / 2) * 1e-3, atol=1e-12)
    half = np.abs(r) @ (size / 2)  # its 8 corners still span the enclosing box of the rotated box
    corners = box_corners(obj.marks["lo"], obj.marks["hi"], obj.axes)
    np.testing.assert_allclose(corners.min(axis=0), center - half * 1e-3, atol=1e-12)
    np.testing.assert_allclose(corners.max(axis=0), center + half * 1e-3, atol=1e-12)


def test_old_files_without_a_kind_read_as_seven_points(tmp_path):
    case = _variant_case("seven_points", IDENTITY)
    doc = case_to_markups_dict(case)
    markup = doc["markups"][0]
    for key in ("pasegKind", "type", "coordinateSystem", "coordinateUnits"):  # a minimal older file
        markup.pop(key, None)
    (tmp_path / "old.mrk.json").write_text(json.dumps(doc))
    back = read_markups(tmp_path / "old.mrk.json", IDENTITY)
    assert back.objects[0].kind == "seven_points"
    _assert_same_case(back, case)


@pytest.mark.parametrize("cs", ["LPS", "RAS"])
def test_drafts_keep_the_kind_and_unplaced_points(cs):
    p = IDENTITY.index_to_world(np.array([10.0, 11.0, 12.0]))
    drafts = [
        DraftObject("seven", {"F": p, "R": p + 1, "L": None}),
        DraftObject("extreme", {"R": p, "L": p + 2, "A": None, "P": p + 3, "I": None, "S": None},
                    kind="extreme_points"),
        DraftObject("single", {"F": p, "B": None}, kind="single_point"),
        DraftObject("single B", {"F": None, "B": p - 4}, kind="single_point"),
        DraftObject("box", {"lo": p, "hi": p + np.array([5.0, 6.0, 7.0])}, kind="box"),
        DraftObject("box half", {"lo": p, "hi": None}, kind="box"),
    ]
    doc = json.loads(json.dumps(drafts_to_markups_dict(drafts, coordinate_system=cs)))
    by_name = {m["name"]: m for m in doc["markups"]}
    assert "pasegKind" not in by_name["seven"] and by_name["extreme"]["pasegKind"] == "extreme_points"
    status = {cp["label"]: cp["positionStatus"] for cp in by_name["extreme"]["controlPoints"]}
    assert status == {"R": "defined", "L": "defined", "A": "undefined", "P": "defined", "I": "undefined",
                      "S": "undefined"}
    assert [cp["label"] for cp in by_name["box"]["controlPoints"]] == ["lo", "hi"]
    back = drafts_from_markups_dict(doc)
    assert [(d.name, d.kind) for d in back] == [(d.name, d.kind) for d in drafts]
    for got, want in zip(back, drafts):
        spec = get_kind(want.kind)
        full = ("F",) + SIDES if want.kind == "seven_points" else spec.labels + spec.optional
        assert sorted(got.points) == sorted(full), got.name  # every label of the kind, placed or not
        for label in full:
            w = want.points.get(label)
            if w is None:
                assert got.points[label] is None, (got.name, label)
            else:
                np.testing.assert_allclose(got.points[label], w, atol=1e-9, err_msg=f"{got.name} {label}")
    assert back[4].placed == 2 and back[5].placed == 1
    # a complete fiducial box draft is a valid annotation: training reads it as the same box
    (box,) = case_from_markups_dict({"markups": [by_name["box"]]}, IDENTITY).objects
    assert box.kind == "box"
    np.testing.assert_allclose(box.marks["hi"], p + np.array([5.0, 6.0, 7.0]))


def test_an_incomplete_draft_is_refused_for_training():
    p = IDENTITY.index_to_world(np.array([10.0, 11.0, 12.0]))
    doc = drafts_to_markups_dict([DraftObject("half", {"R": p, "L": p + 2}, kind="extreme_points")])
    with pytest.raises(AnnotationError, match="draft.mrk.json: markup 'half' .*incomplete.*A, P, I, S"):
        case_from_markups_dict(doc, IDENTITY, source="draft.mrk.json")


# ------------------------------------------------------------------------------------------- 2. validation
@pytest.fixture(scope="module")
def one_case(tmp_path_factory) -> Path:
    """A dataset folder with one image ``c_image.mha`` on :data:`IDENTITY` (markups written per test)."""
    root = tmp_path_factory.mktemp("one")
    rng = np.random.default_rng(0)
    image = (100.0 * _mask(IDENTITY) + rng.normal(0, 5, IDENTITY.shape)).astype(np.float32)
    write_image(root / "c_image.mha", image, IDENTITY)
    return root


def _extreme_doc():
    return case_to_markups_dict(_sim(_mask(IDENTITY), IDENTITY, "extreme_points", extreme_jitter_mm=0.0))


def _set(doc, label, index):
    for cp in doc["markups"][0]["controlPoints"]:
        if cp["label"] == label:
            cp["position"] = list(IDENTITY.index_to_world(np.asarray(index, float)))
    return doc


def _swap(doc, a, b):
    cps = {cp["label"]: cp for cp in doc["markups"][0]["controlPoints"]}
    cps[a]["position"], cps[b]["position"] = cps[b]["position"], cps[a]["position"]
    return doc


def _box_doc(lo_index, hi_index):
    lo, hi = IDENTITY.index_to_world(np.asarray(lo_index, float)), IDENTITY.index_to_world(np.asarray(hi_index, float))
    return case_to_markups_dict(CaseAnnotation([ObjectAnnotation("box 1", kind="box", marks={"lo": lo, "hi": hi})]))


def _single_doc(f_index, b_index):
    f, b = (IDENTITY.index_to_world(np.asarray(x, float)) for x in (f_index, b_index))
    return case_to_markups_dict(CaseAnnotation([ObjectAnnotation("dot 1", f, {"B": b}, kind="single_point")]))


def _with(doc, **changes):
    doc["markups"][0].update(changes)
    return doc


def _extra_point(doc, label):
    cps = doc["markups"][0]["controlPoints"]
    cps.append(dict(cps[0], label=label, id="99"))
    return doc


def _dense_plus_other():
    other = _sim(_mask(IDENTITY), IDENTITY, "single_point").objects[0]
    return case_to_markups_dict(CaseAnnotation([ObjectAnnotation("whole", kind="dense"), other]))


BAD = {  # name: (document factory, object named, what the message says)
    "unknown kind": (lambda: _with(_extreme_doc(), pasegKind="circle"), "tumor 1",
                     "unknown pasegKind 'circle'; kinds are .*seven_points"),
    "label not of the kind": (lambda: _extra_point(_extreme_doc(), "F"), "tumor 1",
                              "control point label 'F' is not one of R, L, A, P, I, S"),
    "missing point": (lambda: _with(_extreme_doc(), controlPoints=_extreme_doc()["markups"][0]["controlPoints"][:5]),
                      "tumor 1", "incomplete: point\\(s\\) S not placed"),
    "point twice": (lambda: _extra_point(_extreme_doc(), "R"), "tumor 1", "point R is given twice"),
    "roi size 0": (lambda: _with(_box_doc((5, 5, 5), (20, 20, 20)), size=[10.0, 0.0, 4.0]), "box 1",
                   "size \\[10.0, 0.0, 4.0\\]; every side must be > 0"),
    "roi size < 0": (lambda: _with(_box_doc((5, 5, 5), (20, 20, 20)), size=[10.0, 3.0, -4.0]), "box 1",
                     "every side must be > 0"),
    "roi center of 2": (lambda: _with(_box_doc((5, 5, 5), (20, 20, 20)), center=[1.0, 2.0]), "box 1",
                        "malformed center"),
    "roi center text": (lambda: _with(_box_doc((5, 5, 5), (20, 20, 20)), center="middle"), "box 1",
                        "needs numeric 'center'"),
    "roi of another kind": (lambda: _with(_box_doc((5, 5, 5), (20, 20, 20)), pasegKind="extreme_points"), "box 1",
                            "a ROI markup cannot hold kind 'extreme_points'"),
    "dense with another object": (_dense_plus_other, "whole", "dense label.*only object.*'tumor 1'"),
    "extreme R and L swapped": (lambda: _swap(_extreme_doc(), "R", "L"), "tumor 1",
                                "extreme point R .*not on the object's right side"),
    "extreme I and S swapped": (lambda: _swap(_extreme_doc(), "I", "S"), "tumor 1",
                                "extreme point I .*not on the object's inferior side"),
    "box 2 voxels thin": (lambda: _box_doc((5, 5, 5), (20, 6, 20)), "box 1",
                          "less than 3 voxels wide along index axis j"),
    "box outside": (lambda: _box_doc((50, 50, 40), (60, 70, 45)), "box 1", "the box lies outside the image"),
    "F and B in one voxel": (lambda: _single_doc((20, 20, 15), (20.3, 19.8, 14.7)), "dot 1",
                             "points F and B are in the same voxel \\[20, 20, 15\\]"),
    "point outside": (lambda: _set(_extreme_doc(), "S", (19, 21, 30)), "tumor 1",
                      "point S at LPS .* is outside the image"),
    "single point outside": (lambda: _single_doc((20, 20, 15), (20, -2, 15)), "dot 1", "point B .*outside the image"),
}


@pytest.mark.parametrize("bad", list(BAD))
def test_validation_errors_name_the_file_and_the_object(bad, one_case, tmp_path):
    make, named, what = BAD[bad]
    data = tmp_path / "data"
    shutil.copytree(one_case, data)
    path = data / "c.mrk.json"
    path.write_text(json.dumps(make()))
    with pytest.raises(DatasetError) as info:
        load_case(list_cases(data)[0], load_label=False)
    message = str(info.value)
    assert str(path) in message and f"'{named}'" in message, message
    assert re.search(what, message), message


def test_boundary_cases_that_are_valid(one_case):
    """The limits of the checks: a box of exactly 3 voxels, F and B in neighbouring voxels, a box that sticks out
    of the image, a point on the last voxel."""
    valid = [
        _box_doc((5, 5, 5), (20, 7, 20)),
        _box_doc((-10, -10, -10), (20, 20, 20)),
        _single_doc((20, 20, 15), (21, 20, 15)),
        _set(_extreme_doc(), "S", (19, 21, 29)),
    ]
    for doc in valid:
        validate_case(case_from_markups_dict(doc, IDENTITY), IDENTITY)


@pytest.mark.parametrize("pair", [("R", "L"), ("A", "P"), ("I", "S")])
def test_swapped_extreme_points_are_named_on_any_geometry(pair, geometry):
    case = _sim(_mask(geometry), geometry, "extreme_points", extreme_jitter_mm=0.0)
    obj = case.objects[0]
    a, b = pair
    obj.marks[a], obj.marks[b] = obj.marks[b], obj.marks[a]
    with pytest.raises(AnnotationError, match=f"object 'tumor 1': the extreme point {a} "):
        validate_case(case, geometry)


def test_a_dense_object_alone_is_valid_and_not_with_another():
    dense = ObjectAnnotation("whole", kind="dense")
    assert validate_case(CaseAnnotation([dense]), IDENTITY) == []
    other = _sim(_mask(IDENTITY), IDENTITY, "box").objects[0]
    with pytest.raises(AnnotationError, match="'whole' is a dense label.*'tumor 1'"):
        validate_case(CaseAnnotation([other, dense]), IDENTITY)


def test_an_oblique_box_that_overlaps_the_image_is_not_outside(oblique_geometry):
    g = oblique_geometry
    lo, hi = np.array([-35.0, 55.0, 25.0]), np.array([-5.0, 85.0, 55.0])  # a 30 mm cube, LPS
    centres = g.index_to_world(np.indices(g.shape).reshape(3, -1).T.astype(float))
    inside = np.all((centres >= lo) & (centres <= hi), axis=1)
    assert inside.sum() > 900  # the box holds many voxel centres of the image
    obj = ObjectAnnotation("box 1", kind="box", marks={"lo": lo, "hi": hi})
    b_lo, b_hi = object_box(obj, g)
    assert np.all(b_hi - b_lo >= 8)  # and its index box is wide on every axis (j 26..35)
    validate_case(CaseAnnotation([obj]), g)  # raises "the box lies outside the image"


# ------------------------------------------------------------------------------------------- 3. simulation
def test_extreme_points_without_jitter_lie_at_the_extent_on_the_boundary(geometry):
    mask = _mask(geometry)
    boundary = _boundary(mask)
    voxels = np.argwhere(mask)
    table = side_axis(geometry)
    for seed in range(3):
        (obj,) = _sim(mask, geometry, "extreme_points", seed=seed, extreme_jitter_mm=0.0).objects
        assert sorted(obj.marks) == sorted(SIDES) and obj.foreground is None and not obj.background
        for side, point in obj.marks.items():
            idx = geometry.world_to_voxel(point)
            np.testing.assert_allclose(geometry.index_to_world(idx.astype(float)), point, atol=1e-6)
            assert boundary[tuple(idx)], (side, idx)
            axis, sign = table[side]
            extent = voxels[:, axis].max() if sign > 0 else voxels[:, axis].min()
            assert idx[axis] == extent, (seed, side, idx, extent)
        lo, hi = object_box(obj, geometry)  # the box of the extreme points is the object's exact box
        np.testing.assert_array_equal(lo, voxels.min(axis=0))
        np.testing.assert_array_equal(hi, voxels.max(axis=0))


def test_extreme_points_with_jitter_lie_on_the_boundary_within_the_jitter(geometry):
    jitter = 2.5
    mask = _mask(geometry)
    boundary = _boundary(mask)
    voxels = np.argwhere(mask)
    table = side_axis(geometry)
    spacing = np.asarray(geometry.spacing)
    depths = []
    for seed in range(6):
        (obj,) = _sim(mask, geometry, "extreme_points", seed=seed, extreme_jitter_mm=jitter).objects
        for side, point in obj.marks.items():
            idx = geometry.world_to_voxel(point)
            assert boundary[tuple(idx)], (side, idx)
            axis, sign = table[side]
            extent = voxels[:, axis].max() if sign > 0 else voxels[:, axis].min()
            depth = sign * (extent - idx[axis])
            assert 0 <= depth * spacing[axis] <= jitter + 1e-9, (seed, side, depth)
            depths.append(depth)
    assert max(depths) >= 1  # the jitter moves some clicks inside the extent


def test_boxes_hold_the_object_with_a_margin_in_range(geometry):
    margin_mm = (3.0, 6.0)
    mask = _mask(geometry)
    voxels = np.argwhere(mask)
    centres = geometry.index_to_world(voxels.astype(float))
    spacing = np.asarray(geometry.spacing)
    margins = []
    for seed in range(5):
        (obj,) = _sim(mask, geometry, "box", seed=seed, box_margin_mm=margin_mm).objects
        frame = np.eye(3) if obj.axes is None else obj.axes  # an oblique image's box runs along its index axes
        a, b = frame.T @ obj.marks["lo"], frame.T @ obj.marks["hi"]
        inside = centres @ frame  # every object voxel, in the box's own frame
        assert np.all(inside >= np.minimum(a, b) - 1e-6) and np.all(inside <= np.maximum(a, b) + 1e-6)
        lo, hi = object_box(obj, geometry)
        assert np.all(lo <= voxels.min(axis=0)) and np.all(hi >= voxels.max(axis=0))
        # index margins per side: margin_mm / spacing, ±1 voxel of rounding (oblique too: the box is tight)
        for side in (voxels.min(axis=0) - lo, hi - voxels.max(axis=0)):
            assert np.all(side >= np.floor(margin_mm[0] / spacing - 1)), (seed, side)
            assert np.all(side <= np.ceil(margin_mm[1] / spacing + 1)), (seed, side)
            assert np.all(side >= 1)
            margins.append(tuple(side))
    assert len(set(margins)) > 1  # drawn per box, not a constant


def test_single_points_are_drawn_inside_and_b_at_a_distance(geometry):
    distance = (3.0, 8.0)
    mask = _mask(geometry)
    to_object = ndimage.distance_transform_edt(~mask, sampling=geometry.spacing)
    fg_voxels = set()
    for seed in range(8):
        (obj,) = _sim(mask, geometry, "single_point", seed=seed, background_distance_mm=distance).objects
        assert obj.kind == "single_point" and sorted(obj.background) == ["B"] and not obj.marks
        f = geometry.world_to_voxel(obj.foreground)
        b = geometry.world_to_voxel(obj.background["B"])
        assert mask[tuple(f)]
        assert geometry.contains_index(b) and not mask[tuple(b)]
        assert distance[0] - 1e-6 <= to_object[tuple(b)] <= distance[1] + 1e-6, to_object[tuple(b)]
        fg_voxels.add(tuple(f))
    assert len(fg_voxels) >= 4  # anywhere inside, not always the centre
    (obj,) = _sim(mask, geometry, "single_point", single_point_background=False).objects
    assert obj.background == {} and clicks_of(obj) == 1


def test_dense_is_one_object_whatever_the_components():
    mask = _mask(IDENTITY) | ellipsoid(IDENTITY.shape, (34, 5, 26), (3, 3, 2))
    case = _sim(mask, IDENTITY, "dense")
    assert [(o.kind, o.points()) for o in case.objects] == [("dense", {})]
    assert len(_sim(mask, IDENTITY, "extreme_points").objects) == 2  # the other kinds: one object per component
    assert len(_sim(mask, IDENTITY, "box").objects) == 2


def test_extreme_points_leave_out_specks_thinner_than_two_voxels():
    plate = np.zeros(IDENTITY.shape, dtype=bool)
    plate[2:10, 2:10, 25] = True  # 64 voxels, one slice thick
    (obj,) = _sim(_mask(IDENTITY) | plate, IDENTITY, "extreme_points").objects
    assert not any(geo[2] == 25 for geo in (IDENTITY.world_to_voxel(p) for p in obj.marks.values()))
    assert len(_sim(_mask(IDENTITY) | plate, IDENTITY, "box").objects) == 2  # other kinds keep it
    with pytest.raises(ValueError, match="2 voxels thick"):
        _sim(plate, IDENTITY, "extreme_points")


@pytest.mark.parametrize("kind", kind_names())
def test_simulation_is_reproducible_and_valid(kind, geometry):
    mask = _mask(geometry)
    settings = {"background_distance_mm": (2.0, 6.0)}
    first = _sim(mask, geometry, kind, seed=7, **settings)
    _assert_same_case(_sim(mask, geometry, kind, seed=7, **settings), first)
    assert {o.kind for o in first.objects} == {kind}
    for seed in range(4):
        validate_case(_sim(mask, geometry, kind, seed=seed, **settings), geometry)
    if kind in ("extreme_points", "single_point"):
        others = [_sim(mask, geometry, kind, seed=s, **settings).objects[0].points() for s in range(8, 12)]
        assert any(not all(np.allclose(o[k], first.objects[0].points()[k]) for k in o) for o in others)


# ------------------------------------------------------------------------------------------- 4. pseudo labels
@pytest.fixture(scope="module")
def sphere_volume():
    """A bright noisy sphere (100 inside, 0 outside, noise σ 10), 40³ at 1 mm."""
    g = ImageGeometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    sphere = ellipsoid(g.shape, (20, 19, 21), (10, 10, 10))
    rng = np.random.default_rng(5)
    image = (100.0 * sphere + rng.normal(0, 10, g.shape)).astype(np.float32)
    return Volume(image, g), sphere


def _dice(a, b):
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def test_seven_points_only_equal_expand_seeds(blob_case):
    from PASegLib.seeds.expansion import ExpansionConfig

    image, label = blob_case
    case = _sim(label, image.geometry, "seven_points", seed=2)
    plain = ExpansionConfig(fill="none")  # the default fills the box (tested in seeds/test_seed_fill.py)
    np.testing.assert_array_equal(pseudo_label_map(image, case, expansion=plain), expand_seeds(image, case))


@pytest.mark.parametrize("kind", ["extreme_points", "box"])
def test_extreme_points_and_boxes_label_the_sphere(kind, sphere_volume):
    image, sphere = sphere_volume
    case = _sim(sphere, image.geometry, kind, seed=1, extreme_jitter_mm=0.0)
    label = pseudo_label_map(image, case)
    assert label.dtype == np.uint8 and label.shape == sphere.shape and set(np.unique(label)) <= {0, 1, 2}
    assert _dice(label == 1, sphere) > 0.8
    lo, hi = object_box(case.objects[0], image.geometry)
    inside = np.zeros(sphere.shape, dtype=bool)
    inside[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    assert set(np.unique(label[inside])) <= {0, 1}  # every voxel of the box is labelled
    # extreme points: a shell of extreme_tolerance_mm (2 mm = 2 voxels here) beyond the box is unlabeled
    grow = 2 if kind == "extreme_points" else 0
    shell = np.zeros(sphere.shape, dtype=bool)
    shell[max(lo[0] - grow, 0):hi[0] + grow + 1, max(lo[1] - grow, 0):hi[1] + grow + 1,
          max(lo[2] - grow, 0):hi[2] + grow + 1] = True
    assert np.all(label[shell & ~inside] == 2) and np.all(label[~shell] == 0) and (~shell).sum() > 0


@pytest.mark.parametrize("working_spacing_mm", [2.0, None])
def test_extreme_points_label_an_oblique_anisotropic_blob(working_spacing_mm, blob_case):
    image, truth = blob_case
    case = _sim(truth, image.geometry, "extreme_points", seed=0)
    label = pseudo_label_map(image, case, random_walker={"working_spacing_mm": working_spacing_mm})
    assert _dice(label == 1, truth > 0) > 0.75
    lo, hi = object_box(case.objects[0], image.geometry)
    inside = np.zeros(truth.shape, dtype=bool)
    inside[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    assert np.all(label[~inside] != 1)  # beyond the box: background, or the unlabeled tolerance shell


def test_foreground_wins_where_the_f_and_b_balls_overlap(oblique_geometry):
    g = oblique_geometry
    image = Volume(np.random.default_rng(1).normal(0, 1, g.shape).astype(np.float32), g)
    f, b = np.array([20, 18, 10]), np.array([23, 18, 10])  # 2.4 mm apart along i (0.8 mm), balls of 2 mm
    obj = ObjectAnnotation("dot", g.index_to_world(f), {"B": g.index_to_world(b)}, kind="single_point")
    label = pseudo_label_map(image, CaseAnnotation([obj]), point_radius_mm=2.0)
    assert label[18:26, 18, 10].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]  # i = 21, 22 in both balls: foreground
    assert label[17, 18, 10] == 2 and label[26, 18, 10] == 2


def test_single_point_labels_balls_around_the_clicks(oblique_geometry):
    g = oblique_geometry
    rng = np.random.default_rng(1)
    image = Volume(rng.normal(0, 1, g.shape).astype(np.float32), g)
    f_idx, b_idx = np.array([12, 10, 8]), np.array([30, 25, 12])
    obj = ObjectAnnotation("dot", g.index_to_world(f_idx + 0.2), {"B": g.index_to_world(b_idx - 0.3)},
                           kind="single_point")
    radius = 2.6
    label = pseudo_label_map(image, CaseAnnotation([obj]), point_radius_mm=radius)
    grid = np.indices(g.shape).reshape(3, -1).T

    def ball(center):
        d = np.sqrt((((grid - center) * np.asarray(g.spacing)) ** 2).sum(axis=1))
        return (d <= radius).reshape(g.shape)

    f_ball, b_ball = ball(f_idx), ball(b_idx)
    assert f_ball.sum() > 10 and b_ball.sum() > 10  # a ball, not a voxel
    expected = np.full(g.shape, 2, dtype=np.uint8)
    expected[b_ball] = 0
    expected[f_ball] = 1
    np.testing.assert_array_equal(label, expected)
    no_b = pseudo_label_map(image, CaseAnnotation([ObjectAnnotation("dot", obj.foreground, kind="single_point")]),
                            point_radius_mm=0)
    assert (no_b == 1).sum() == 1 and no_b[tuple(f_idx)] == 1 and (no_b == 0).sum() == 0


def test_dense_passes_through_and_needs_its_label(sphere_volume):
    image, sphere = sphere_volume
    dense = sphere.astype(np.uint8) * 3
    dense[0, 0, 0] = 1
    case = CaseAnnotation([ObjectAnnotation("whole", kind="dense")])
    label = pseudo_label_map(image, case, dense_label=dense)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, (dense > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="dense label"):
        pseudo_label_map(image, case)
    with pytest.raises(ValueError, match="dense label shape"):
        pseudo_label_map(image, case, dense_label=dense[:-1])


def test_a_mix_of_seven_and_extreme_points_is_background_outside_both_boxes():
    g = ImageGeometry((56, 36, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    a = ellipsoid(g.shape, (13, 18, 15), (6, 6, 6))
    b = ellipsoid(g.shape, (42, 18, 15), (6, 6, 6))
    rng = np.random.default_rng(2)
    image = Volume((100.0 * (a | b) + rng.normal(0, 5, g.shape)).astype(np.float32), g)
    config = ClickSimulationConfig(margin_mm=(2.0, 4.0), fg_jitter=0.0, bg_jitter=0.0)
    seven = simulate_clicks(a, g, seed=0, config=config).objects[0]
    extreme = _sim(b, g, "extreme_points", extreme_jitter_mm=0.0).objects[0]
    seven.name, extreme.name = "seven", "extreme"
    case = CaseAnnotation([seven, extreme])
    assert validate_case(case, g) == []
    label = pseudo_label_map(image, case)
    outside = np.ones(g.shape, dtype=bool)
    for obj, mask in ((seven, a), (extreme, b)):
        lo, hi = object_box(obj, g)
        box = tuple(slice(x, y + 1) for x, y in zip(lo, hi))
        grow = 2 if obj.kind == "extreme_points" else 0  # the extreme points' 2 mm tolerance shell is unlabeled
        outside[tuple(slice(max(x - grow, 0), y + grow + 1) for x, y in zip(lo, hi))] = False
        fg = label[box] == 1
        assert fg.sum() > 50 and mask[box][fg].mean() > 0.8, (obj.name, fg.sum(), mask[box][fg].mean())
    assert outside.sum() > 1000 and np.all(label[outside] == 0)
    lo, hi = object_box(extreme, g)
    in_b = np.zeros(g.shape, dtype=bool)
    in_b[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    assert _dice((label == 1) & in_b, b) > 0.8  # the extreme-point object is labelled as on its own


# ------------------------------------------------------------------------------------------- 5. the CLI
def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


def test_simulate_extreme_points_then_expand(tiny_dataset, tmp_path, capsys):
    from PASegLib.cli.main import main

    clicks, out = tmp_path / "clicks", tmp_path / "expanded"
    ids = [c.case_id for c in list_cases(tiny_dataset)]
    assert len(ids) == 4
    assert main(["simulate-clicks", str(tiny_dataset), "--kind", "extreme_points", "--out", str(clicks),
                 "--extreme-jitter-mm", "0", "--quiet", "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert [(c["case"], c["kind"]) for c in summary["cases"]] == [(i, "extreme_points") for i in ids]
    assert sorted(p.name for p in clicks.iterdir()) == sorted(f"{i}.mrk.json" for i in ids)
    for cid in ids:
        doc = json.loads((clicks / f"{cid}.mrk.json").read_text())
        assert {m["pasegKind"] for m in doc["markups"]} == {"extreme_points"}
    assert main(["expand", str(tiny_dataset), "--annotations", str(clicks), "--out", str(out), "--json",
                 "--quiet"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert [r["case"] for r in summary["cases"]] == ids
    assert all(r["kinds"] == ["extreme_points"] and r["fg_voxels"] > 0 for r in summary["cases"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{i}_partial.{ext}" for i in ids for ext in ("nii.gz", "png"))
    for cid in ids:
        partial = read_image(out / f"{cid}_partial.nii.gz", role="label").array
        truth = read_image(tiny_dataset / f"{cid}_label.nii.gz", role="label").array > 0
        assert set(np.unique(partial)) <= {0, 1, 2}  # 2: the tolerance shell around the extreme points
        assert _dice(partial == 1, truth) > 0.6, cid


def test_dense_cases_make_the_first_cases_dense(tiny_dataset, tmp_path, capsys):
    from PASegLib.cli.main import main

    clicks = tmp_path / "clicks"
    ids = sorted(c.case_id for c in list_cases(tiny_dataset))
    assert main(["simulate-clicks", str(tiny_dataset), "--kind", "box", "--dense-cases", "2", "--out", str(clicks),
                 "--quiet", "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert {c["case"]: c["kind"] for c in summary["cases"]} == {
        ids[0]: "dense", ids[1]: "dense", ids[2]: "box", ids[3]: "box"}
    for n, cid in enumerate(ids):
        doc = json.loads((clicks / f"{cid}.mrk.json").read_text())
        kinds = [m["pasegKind"] for m in doc["markups"]]
        assert kinds == (["dense"] if n < 2 else ["box"] * len(kinds)), (cid, kinds)
        if n >= 2:
            assert {m["type"] for m in doc["markups"]} == {"ROI"}
    out = tmp_path / "expanded"
    assert main(["expand", str(tiny_dataset), "--annotations", str(clicks), "--out", str(out), "--quiet",
                 "--no-preview"]) == 0
    for cid in ids[:2]:  # a dense case's partial label is its label
        partial = read_image(out / f"{cid}_partial.nii.gz", role="label").array
        truth = read_image(tiny_dataset / f"{cid}_label.nii.gz", role="label").array
        np.testing.assert_array_equal(partial, (truth > 0).astype(partial.dtype))


def test_an_unknown_kind_is_a_usage_error(tiny_dataset, tmp_path, capsys):
    from PASegLib.cli.main import main

    out = tmp_path / "clicks"
    with pytest.raises(SystemExit) as info:
        main(["simulate-clicks", str(tiny_dataset), "--kind", "nonsense", "--out", str(out), "--quiet"])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "nonsense" in err and all(k in err for k in kind_names()), err
    assert not out.exists()


@pytest.mark.parametrize("value", ["99", "5", "-1"])
def test_dense_cases_beyond_the_cohort_are_refused(value, tiny_dataset, tmp_path, capsys):
    from PASegLib.cli.main import main

    out = tmp_path / "clicks"
    code = main(["simulate-clicks", str(tiny_dataset), "--dense-cases", value, "--out", str(out), "--quiet"])
    message = cli_error(capsys.readouterr(), "simulate-clicks")
    assert code == 1
    assert "--dense-cases" in message and f"got {value}" in message and "4 case(s)" in message, message
    assert not out.exists()


def test_expand_refuses_an_unknown_random_walker_setting(tiny_dataset, tmp_path, capsys):
    from PASegLib.cli.main import main

    out = tmp_path / "expanded"
    code = main(["expand", str(tiny_dataset), "--out", str(out), "--random-walker", '{"betta": 1}', "--quiet"])
    message = cli_error(capsys.readouterr(), "expand")
    assert code == 1
    assert "--random-walker" in message and "betta" in message, message
    assert not out.exists()
    code = main(["expand", str(tiny_dataset), "--out", str(out), "--random-walker", "[1, 2]", "--quiet"])
    message = cli_error(capsys.readouterr(), "expand")
    assert code == 1 and "JSON object" in message and not out.exists()


def test_simulate_clicks_options_of_the_kinds(tiny_dataset, tmp_path, capsys):
    """--no-background: single points without B; --box-margin-mm: a tighter box for a smaller margin;
    --extreme-jitter-mm 0: every extreme point on the label's boundary."""
    from PASegLib.cli.main import main

    ids = [c.case_id for c in list_cases(tiny_dataset)]

    def simulate(name, *options):
        out = tmp_path / name
        assert main(["simulate-clicks", str(tiny_dataset), "--out", str(out), "--quiet", *options]) == 0
        return {cid: json.loads((out / f"{cid}.mrk.json").read_text())["markups"] for cid in ids}

    for markups in simulate("single", "--kind", "single_point", "--no-background").values():
        assert all(m["pasegKind"] == "single_point" and [c["label"] for c in m["controlPoints"]] == ["F"]
                   for m in markups)
    for markups in simulate("single_b", "--kind", "single_point").values():
        assert all([c["label"] for c in m["controlPoints"]] == ["F", "B"] for m in markups)
    tight, loose = simulate("tight", "--kind", "box", "--box-margin-mm", "0", "0"), simulate(
        "loose", "--kind", "box", "--box-margin-mm", "6", "6")
    for cid in ids:
        for t, lo in zip(tight[cid], loose[cid]):
            assert np.all(np.asarray(lo["size"]) > np.asarray(t["size"]) + 5), (cid, t["size"], lo["size"])
    files = {c.case_id: c for c in list_cases(tiny_dataset)}
    for cid, markups in simulate("extreme", "--kind", "extreme_points", "--extreme-jitter-mm", "0").items():
        label = read_image(files[cid].label, role="label")
        boundary = _boundary(label.array > 0)
        for m in markups:
            for cp in m["controlPoints"]:
                assert boundary[tuple(label.geometry.world_to_voxel(cp["position"]))], (cid, cp["label"])
    capsys.readouterr()


@pytest.mark.parametrize("option, named", [(["--box-margin-mm", "5", "2"], "box_margin_mm"),
                                           (["--extreme-jitter-mm", "-1"], "extreme_jitter_mm")])
def test_simulate_clicks_refuses_bad_kind_settings(option, named, tiny_dataset, tmp_path, capsys):
    from PASegLib.cli.main import main

    out = tmp_path / "clicks"
    code = main(["simulate-clicks", str(tiny_dataset), "--out", str(out), "--quiet", *option])
    message = cli_error(capsys.readouterr(), "simulate-clicks")
    assert code == 1 and named in message and not out.exists(), message
