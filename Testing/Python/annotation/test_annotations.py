"""Seven-point annotations: sides, validation errors, Slicer markups JSON and the official label-map format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import rotation

from PASegLib.annotation.kinds import SIDES
from PASegLib.annotation.markups import case_from_markups_dict, case_to_markups_dict, read_markups, write_markups
from PASegLib.annotation.model import (
    AnnotationError,
    CaseAnnotation,
    ObjectAnnotation,
    axis_sides,
    make_object,
    side_axis,
)
from PASegLib.annotation.sevenpoints import (
    case_from_label_map,
    case_to_label_map,
    read_seven_points,
    write_seven_points,
)
from PASegLib.annotation.validation import object_box, validate_case, validate_object
from PASegLib.image.geometry import ImageGeometry

OFFSETS = {"i-": (-6, 0, 0), "i+": (6, 0, 0), "j-": (0, -5, 0), "j+": (0, 5, 0), "k-": (0, 0, -3), "k+": (0, 0, 3)}


def box_object(g: ImageGeometry, center=(20, 17, 10), name="tumor 1", scale=1.0) -> ObjectAnnotation:
    """A valid object: F at ``center``, each side point offset along its index axis (voxels)."""
    c = np.asarray(center, dtype=float)
    background = {}
    for side, (axis, sign) in side_axis(g).items():
        offset = np.zeros(3)
        offset[axis] = sign * abs(sum(OFFSETS[f"{'ijk'[axis]}+"])) * scale
        background[side] = g.index_to_world(c + offset)
    return ObjectAnnotation(name, g.index_to_world(c), background)


def test_axis_sides_identity_lps():
    g = ImageGeometry((4, 4, 4))
    # LPS index axes: i grows to the left, j to posterior, k to superior.
    assert axis_sides(g) == [("R", "L"), ("A", "P"), ("I", "S")]
    assert side_axis(g)["L"] == (0, 1) and side_axis(g)["R"] == (0, -1)


def test_axis_sides_ras_oriented_and_permuted():
    # RAS-oriented image (direction diag(-1, -1, 1)): i grows to the right.
    g = ImageGeometry((4, 4, 4), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert axis_sides(g) == [("L", "R"), ("P", "A"), ("I", "S")]
    # sagittal acquisition: i → P, j → S, k → L
    g = ImageGeometry((4, 4, 4), direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    assert axis_sides(g) == [("A", "P"), ("I", "S"), ("R", "L")]


def test_axis_sides_45_degrees_gives_distinct_axes():
    g = ImageGeometry((4, 4, 4), direction=tuple(rotation("z", 45).ravel()))
    sides = axis_sides(g)
    assert sorted(s for pair in sides for s in pair) == sorted(SIDES)


def test_valid_object_and_box(oblique_geometry):
    obj = box_object(oblique_geometry)
    validate_object(obj, oblique_geometry)
    lo, hi = object_box(obj, oblique_geometry)
    np.testing.assert_array_equal(lo, [14, 12, 7])
    np.testing.assert_array_equal(hi, [26, 22, 13])
    assert validate_case(CaseAnnotation([obj]), oblique_geometry) == []


def test_error_point_outside_image(oblique_geometry):
    obj = box_object(oblique_geometry, center=(20, 17, 10))
    obj.background["S"] = oblique_geometry.index_to_world((20, 17, 25))
    with pytest.raises(AnnotationError, match=r"object 'tumor 1': point S .* is outside the image"):
        validate_object(obj, oblique_geometry)


def test_error_duplicate_points(oblique_geometry):
    obj = box_object(oblique_geometry)
    obj.background["A"] = obj.background["P"].copy()
    with pytest.raises(AnnotationError, match="points A and P are in the same voxel"):
        validate_object(obj, oblique_geometry)


def test_error_side_point_on_wrong_side(oblique_geometry):
    g = oblique_geometry
    obj = box_object(g)
    axis, sign = side_axis(g)["R"]
    moved = np.array([20.0, 17.0, 10.0])
    moved[axis] += -sign * 3  # 3 voxels on the opposite side of F
    obj.background["R"] = g.index_to_world(moved)
    with pytest.raises(AnnotationError, match=r"the R point is not right of the foreground point along index axis"):
        validate_object(obj, g)


def test_error_not_enclosing(oblique_geometry):
    g = oblique_geometry
    # sides labelled automatically, but all background points lie at or beyond F on index axis k
    c = np.array([20.0, 17.0, 10.0])
    bg = [c + d for d in [(-6, 0, 1), (6, 0, 1), (0, -5, 1), (0, 5, 1), (0, 0, 3), (1, 1, 4)]]
    obj = make_object(
        "t", foreground=[g.index_to_world(c)], background=list(g.index_to_world(np.array(bg))), geometry=g
    )
    with pytest.raises(AnnotationError, match=r"(do not enclose|is not .* of the foreground point)"):
        validate_object(obj, g)


@pytest.mark.parametrize(
    "n_fg, n_bg, message",
    [(0, 6, "expected 1 foreground point, got 0"), (2, 6, "expected 1 foreground point, got 2"),
     (1, 5, "expected 6 background points, got 5"), (1, 7, "expected 6 background points, got 7")],
)  # fmt: skip
def test_error_wrong_counts(oblique_geometry, n_fg, n_bg, message):
    pts = list(oblique_geometry.index_to_world(np.random.default_rng(0).uniform(0, 10, (8, 3))))
    with pytest.raises(AnnotationError, match=message):
        make_object("t", foreground=pts[:n_fg], background=pts[:n_bg], geometry=oblique_geometry)


def test_error_missing_and_unknown_sides(oblique_geometry):
    obj = box_object(oblique_geometry)
    with pytest.raises(AnnotationError, match="missing S"):
        ObjectAnnotation("t", obj.foreground, {k: v for k, v in obj.background.items() if k != "S"})
    with pytest.raises(AnnotationError, match="unknown background side"):
        ObjectAnnotation("t", obj.foreground, {**obj.background, "X": obj.foreground})
    with pytest.raises(AnnotationError, match="given to more than one point"):
        make_object("t", foreground=[obj.foreground], background=list(obj.background.values()),
                    geometry=oblique_geometry, sides=["R", "R", None, None, None, None])  # fmt: skip


def test_case_level_errors_and_overlap_warning(oblique_geometry):
    g = oblique_geometry
    with pytest.raises(AnnotationError, match="holds no object"):
        validate_case(CaseAnnotation([]), g)
    a, b = box_object(g, name="a"), box_object(g, center=(24, 19, 11), name="a")
    with pytest.raises(AnnotationError, match="unique"):
        validate_case(CaseAnnotation([a, b]), g)
    b.name = "b"
    warnings = validate_case(CaseAnnotation([a, b]), g)
    assert len(warnings) == 1 and "overlap" in warnings[0]
    far = box_object(g, center=(8, 8, 5), name="c", scale=0.5)
    assert validate_case(CaseAnnotation([a, far]), g) == []


def test_auto_side_assignment_recovers_labels(oblique_geometry):
    obj = box_object(oblique_geometry)
    rng = np.random.default_rng(5)
    order = rng.permutation(6)
    shuffled = [obj.background[SIDES[n]] for n in order]
    rebuilt = make_object("t", foreground=[obj.foreground], background=shuffled, geometry=oblique_geometry)
    for side in SIDES:
        np.testing.assert_allclose(rebuilt.background[side], obj.background[side])
    # partially labelled: given labels are kept, the rest assigned
    sides = [SIDES[order[0]], None, None, SIDES[order[3]], None, None]
    partial = make_object("t", foreground=[obj.foreground], background=shuffled, geometry=oblique_geometry, sides=sides)
    for side in SIDES:
        np.testing.assert_allclose(partial.background[side], obj.background[side])


# -- Slicer markups JSON ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("coordinate_system", ["LPS", "RAS"])
def test_markups_round_trip(tmp_path, oblique_geometry, coordinate_system):
    case = CaseAnnotation([box_object(oblique_geometry), box_object(oblique_geometry, (8, 8, 5), "tumor 2", 0.5)])
    path = write_markups(tmp_path / "case.mrk.json", case, coordinate_system=coordinate_system)
    doc = json.loads(path.read_text())
    assert doc["@schema"].endswith("markups-schema-v1.0.3.json#")
    assert [m["name"] for m in doc["markups"]] == ["tumor 1", "tumor 2"]
    assert [m["type"] for m in doc["markups"]] == ["Fiducial", "Fiducial"]
    assert [cp["label"] for cp in doc["markups"][0]["controlPoints"]] == ["F", *SIDES]
    assert doc["markups"][0]["coordinateSystem"] == coordinate_system
    back = read_markups(path, oblique_geometry)
    assert back.names() == ["tumor 1", "tumor 2"]
    for a, b in zip(case.objects, back.objects):
        for label, point in a.points().items():
            np.testing.assert_allclose(b.points()[label], point, atol=1e-9)


def test_markups_ras_values_and_default_lps(oblique_geometry):
    obj = box_object(oblique_geometry)
    doc = case_to_markups_dict(CaseAnnotation([obj]), coordinate_system="RAS")
    np.testing.assert_allclose(doc["markups"][0]["controlPoints"][0]["position"], obj.foreground * [-1, -1, 1])
    # a hand-written file without coordinateSystem is LPS; unknown labels get sides inferred; um units scale
    doc = {"markups": [{"type": "Fiducial", "coordinateUnits": "um", "controlPoints": [
        {"label": "F", "position": list(obj.foreground * 1000)},
        *[{"label": f"P-{n}", "position": list(obj.background[s] * 1000)} for n, s in enumerate(SIDES)],
    ]}]}  # fmt: skip
    case = case_from_markups_dict(doc, oblique_geometry)
    assert case.names() == ["object 1"]
    for side in SIDES:
        np.testing.assert_allclose(case.objects[0].background[side], obj.background[side], atol=1e-9)


def test_markups_errors(tmp_path, oblique_geometry):
    with pytest.raises(AnnotationError, match="not found"):
        read_markups(tmp_path / "none.mrk.json", oblique_geometry)
    bad = tmp_path / "bad.mrk.json"
    bad.write_text("{")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_markups(bad, oblique_geometry)
    with pytest.raises(AnnotationError, match="no 'markups' list"):
        case_from_markups_dict({"x": 1}, oblique_geometry)
    with pytest.raises(AnnotationError, match="is a 'Line'"):
        case_from_markups_dict({"markups": [{"type": "Line"}]}, oblique_geometry)
    with pytest.raises(AnnotationError, match="coordinateSystem"):
        case_from_markups_dict({"markups": [{"type": "Fiducial", "coordinateSystem": "XYZ"}]}, oblique_geometry)
    doc = {"markups": [{"type": "Fiducial", "controlPoints": [{"label": "F", "position": [0, 0]}]}]}
    with pytest.raises(AnnotationError, match="position"):
        case_from_markups_dict(doc, oblique_geometry)
    doc = {"markups": [{"type": "Fiducial", "controlPoints": [{"label": "F", "position": [0, 0, 0]}]}]}
    with pytest.raises(AnnotationError, match="expected 6 background points, got 0"):
        case_from_markups_dict(doc, oblique_geometry)


# -- official label-map format ---------------------------------------------------------------------------------
def test_seven_points_round_trip(tmp_path, oblique_geometry):
    g = oblique_geometry
    case = CaseAnnotation([box_object(g), box_object(g, (8, 8, 5), "tumor 2", 0.5)])
    labels = case_to_label_map(case, g)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3, 4]
    assert (labels == 2).sum() == 1 and (labels == 1).sum() == 6
    assert (labels == 4).sum() == 1 and (labels == 3).sum() == 6
    path = write_seven_points(tmp_path / "c_7points.nii.gz", case, g)
    back = read_seven_points(path, g)
    assert len(back.objects) == 2
    for a, b in zip(case.objects, back.objects):
        for label, point in a.points().items():  # the label map keeps the voxel of each click
            np.testing.assert_array_equal(g.world_to_voxel(b.points()[label]), g.world_to_voxel(point))
    validate_case(back, g)


def test_seven_points_errors(tmp_path, oblique_geometry):
    g = oblique_geometry
    with pytest.raises(AnnotationError, match="holds no click"):
        case_from_label_map(np.zeros(g.shape), g)
    labels = np.zeros(g.shape, dtype=np.uint8)
    labels[5, 5, 5] = 2
    labels[1, 1, 1] = 1
    with pytest.raises(AnnotationError, match="has 1 foreground and 1 background click voxels"):
        case_from_label_map(labels, g)
    with pytest.raises(AnnotationError, match="does not match the image shape"):
        case_from_label_map(np.zeros((2, 2, 2)), g)
    write_seven_points(tmp_path / "c_7points.nii.gz", CaseAnnotation([box_object(g)]), g)
    other = ImageGeometry(g.shape, (1, 1, 1), g.origin, g.direction)
    with pytest.raises(AnnotationError, match="geometry differs"):
        read_seven_points(tmp_path / "c_7points.nii.gz", other)
