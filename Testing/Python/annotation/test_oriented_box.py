"""Oriented boxes (issue 22, D6): a box keeps its orientation (``ObjectAnnotation.axes``), so a box drawn along an
oblique image's index axes has a tight voxel box; Slicer's ROI ``orientation`` carries it through the markups file.

Hand geometry: a 20° oblique image (index axes rotated 20° about S), 1 × 1 × 2 mm voxels. A box along the index
axes from voxel (10, 12, 5) to (20, 25, 9) is 10 × 13 × 8 mm. Before the fix the library kept only the LPS box
enclosing its corners: 10 cos20 + 13 sin20 = 13.84 mm by 10 sin20 + 13 cos20 = 15.64 mm, whose own corners span
13.84 cos20 + 15.64 sin20 = 18.36 by 13.84 sin20 + 15.64 cos20 = 19.43 voxels: the index box (6..24, 9..28, 5..9)
instead of (10..20, 12..25, 5..9), 2.5× the voxels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ellipsoid, rotation

from PASegLib.annotation.markups import (
    DraftObject,
    case_from_markups_dict,
    case_to_markups_dict,
    drafts_from_markups_dict,
    drafts_to_markups_dict,
    read_markups,
    write_markups,
)  # fmt: skip
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation, box_corners
from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks
from PASegLib.annotation.validation import kind_box, validate_case
from PASegLib.image.geometry import ImageGeometry

OBLIQUE_20 = ImageGeometry((40, 40, 16), (1.0, 1.0, 2.0), (5.0, -3.0, 1.0), tuple(rotation("z", 20).ravel()))
LO, HI = np.array([10, 12, 5]), np.array([20, 25, 9])


def _ijk_box(geometry: ImageGeometry = OBLIQUE_20, lo=LO, hi=HI) -> ObjectAnnotation:
    """A box along the image's index axes from voxel ``lo`` to voxel ``hi``."""
    corners = geometry.index_to_world(np.stack([lo, hi]).astype(float))
    return ObjectAnnotation("box", kind="box", marks={"lo": corners[0], "hi": corners[1]},
                            axes=geometry.direction_matrix)


def test_a_box_along_the_index_axes_of_a_20_degree_oblique_image_has_a_tight_voxel_box():
    lo, hi = kind_box(_ijk_box(), OBLIQUE_20)
    assert lo.tolist() == LO.tolist() and hi.tolist() == HI.tolist()
    # the same corners without the orientation: the LPS box enclosing them (what the library kept before)
    corners = box_corners(_ijk_box().marks["lo"], _ijk_box().marks["hi"], OBLIQUE_20.direction_matrix)
    flat = ObjectAnnotation("flat", kind="box", marks={"lo": corners.min(axis=0), "hi": corners.max(axis=0)})
    lo_flat, hi_flat = kind_box(flat, OBLIQUE_20)
    assert (hi_flat - lo_flat)[:2].tolist() == [18, 19]  # 18.36 and 19.43 voxels (docstring), rounded per corner
    assert lo_flat.tolist() == [6, 9, 5] and hi_flat.tolist() == [24, 28, 9]
    assert np.prod(hi_flat - lo_flat + 1) / np.prod(HI - LO + 1) > 2.4


def test_write_and_read_markups_keep_the_orientation(tmp_path):
    box = _ijk_box()
    for cs in ("LPS", "RAS"):
        path = write_markups(tmp_path / f"c_{cs}.mrk.json", CaseAnnotation([box]), coordinate_system=cs)
        markup = json.loads(path.read_text())["markups"][0]
        assert markup["type"] == "ROI" and len(markup["orientation"]) == 9
        np.testing.assert_allclose(markup["size"], [10.0, 13.0, 8.0], atol=1e-9)  # mm along the index axes
        (back,) = read_markups(path, OBLIQUE_20).objects
        np.testing.assert_allclose(back.axes, OBLIQUE_20.direction_matrix, atol=1e-12)
        for label in ("lo", "hi"):
            np.testing.assert_allclose(back.marks[label], box.marks[label], atol=1e-9)
        assert [v.tolist() for v in kind_box(back, OBLIQUE_20)] == [LO.tolist(), HI.tolist()]
        assert validate_case(CaseAnnotation([back]), OBLIQUE_20) == []


def test_slicers_orientation_convention_ras_rows_0_and_1_negated_in_lps():
    """Slicer writes ``orientation`` as the ObjectToNode rotation, row-major; an LPS file negates its first 6
    numbers (vtkMRMLMarkupsROIJsonStorageNode). The two files of one box read the same."""
    docs = {cs: case_to_markups_dict(CaseAnnotation([_ijk_box()]), coordinate_system=cs) for cs in ("LPS", "RAS")}
    lps, ras = (np.array(docs[cs]["markups"][0]["orientation"]) for cs in ("LPS", "RAS"))
    np.testing.assert_allclose(lps[:6], -ras[:6], atol=1e-12)
    np.testing.assert_allclose(lps[6:], ras[6:], atol=1e-12)
    np.testing.assert_allclose(lps.reshape(3, 3), OBLIQUE_20.direction_matrix, atol=1e-12)


def test_a_reflected_frame_is_written_as_a_rotation_and_reads_as_the_same_box(tmp_path):
    flipped = OBLIQUE_20.direction_matrix @ np.diag([1.0, 1.0, -1.0])  # index k runs towards the feet
    geometry = ImageGeometry(OBLIQUE_20.shape, OBLIQUE_20.spacing, (5.0, -3.0, 40.0), tuple(flipped.ravel()))
    box = _ijk_box(geometry)
    markup = case_to_markups_dict(CaseAnnotation([box]))["markups"][0]
    assert np.linalg.det(np.reshape(markup["orientation"], (3, 3))) == pytest.approx(1.0)
    (back,) = case_from_markups_dict(json.loads(json.dumps({"markups": [markup]})), geometry).objects
    assert [v.tolist() for v in kind_box(back, geometry)] == [LO.tolist(), HI.tolist()]


def test_an_unoriented_roi_still_reads_as_its_lps_box():
    markup = case_to_markups_dict(CaseAnnotation([_ijk_box()]))["markups"][0]
    markup["center"], markup["size"] = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
    for orientation in (None, [1.0, 0, 0, 0, 1, 0, 0, 0, 1], [-1.0, 0, 0, 0, -1, 0, 0, 0, 1]):
        if orientation is None:
            markup.pop("orientation", None)  # a file written without it
        else:
            markup["orientation"] = orientation
        (obj,) = case_from_markups_dict({"markups": [markup]}, OBLIQUE_20).objects
        assert obj.axes is None
        np.testing.assert_allclose(obj.marks["lo"], [-1.0, -1.0, -1.0])
        np.testing.assert_allclose(obj.marks["hi"], [3.0, 5.0, 7.0])


def test_an_axis_aligned_frame_is_stored_as_none_with_its_smallest_and_largest_corner():
    frame = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about S: still axis-aligned
    obj = ObjectAnnotation("b", kind="box", marks={"lo": [4.0, 0.0, 0.0], "hi": [0.0, 6.0, 2.0]}, axes=frame)
    assert obj.axes is None
    assert obj.marks["lo"].tolist() == [0.0, 0.0, 0.0] and obj.marks["hi"].tolist() == [4.0, 6.0, 2.0]


@pytest.mark.parametrize("axes, match", [
    (np.eye(3) * 2.0, r"orthonormal columns .*\[\[2\.0, 0\.0, 0\.0\]"),
    (np.ones(4), r"3×3 matrix of 9 finite numbers, got array\(\[1\., 1\., 1\., 1\.\]\)"),
    ([[1.0, 0, 0], [0, 1, 0], [0, 0, np.nan]], "9 finite numbers"),
    ("up", "3×3 matrix of numbers, got 'up'"),
])  # fmt: skip
def test_bad_axes_are_refused_early_naming_the_value(axes, match):
    with pytest.raises(AnnotationError, match=r"object 'b' \(box\) axes must .*" + match):
        ObjectAnnotation("b", kind="box", marks={"lo": [0.0, 0, 0], "hi": [4.0, 6, 2]}, axes=axes)


def test_only_a_box_has_axes():
    with pytest.raises(AnnotationError, match=r"object 'p' \(single_point\): only a box has an orientation"):
        ObjectAnnotation("p", [1.0, 2.0, 3.0], kind="single_point", axes=np.eye(3))
    with pytest.raises(ValueError, match="only a box has an orientation"):
        ObjectAnnotation("s", [0.0, 0, 0], {s: [1.0, 1, 1] for s in "RLAPIS"}, axes=np.eye(3))


def test_an_roi_whose_orientation_is_not_a_rotation_is_refused_naming_the_file():
    markup = case_to_markups_dict(CaseAnnotation([_ijk_box()]))["markups"][0]
    markup["orientation"] = [1.0, 0.5, 0, 0, 1, 0, 0, 0, 1]
    with pytest.raises(AnnotationError, match=r"c\.mrk\.json: ROI markup 'box' orientation must have orthonormal"):
        case_from_markups_dict({"markups": [markup]}, OBLIQUE_20, source="c.mrk.json")


def test_a_drawn_box_draft_keeps_its_orientation():
    box = _ijk_box()
    drafts = [DraftObject("box", dict(box.marks), kind="box", axes=box.axes),
              DraftObject("half", {"lo": box.marks["lo"], "hi": None}, kind="box")]
    (back, half) = drafts_from_markups_dict(json.loads(json.dumps(drafts_to_markups_dict(drafts))))
    np.testing.assert_allclose(back.axes, box.axes, atol=1e-12)
    np.testing.assert_allclose(back.points["hi"], box.marks["hi"], atol=1e-9)
    assert half.axes is None and half.points["hi"] is None


def test_a_simulated_box_on_an_oblique_image_runs_along_its_index_axes():
    mask = ellipsoid(OBLIQUE_20.shape, (20, 18, 8), (6, 4, 3))
    config = ClickSimulationConfig(kind="box", box_margin_mm=(2.0, 2.0))
    (obj,) = simulate_clicks(mask, OBLIQUE_20, seed=0, config=config).objects
    np.testing.assert_allclose(obj.axes, OBLIQUE_20.direction_matrix, atol=1e-12)
    voxels = np.argwhere(mask)
    lo, hi = kind_box(obj, OBLIQUE_20)
    assert (voxels.min(axis=0) - lo).tolist() == [2, 2, 1] and (hi - voxels.max(axis=0)).tolist() == [2, 2, 1]
