"""Geometry (index ↔ LPS/RAS through spacing, origin, oblique direction) and image I/O round trips."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from PASegLib.image.geometry import ImageGeometry, lps_to_ras
from PASegLib.image.io import ImageReadError, check_intensities, read_image, write_image
from PASegLib.utils.atomic import atomic_write_text, full_suffix


def test_index_to_world_matches_simpleitk(oblique_geometry):
    g = oblique_geometry
    image = sitk.Image(list(g.shape), sitk.sitkUInt8)
    image.SetSpacing(g.spacing)
    image.SetOrigin(g.origin)
    image.SetDirection(g.direction)
    for index in [(0, 0, 0), (3, 7, 11), (39, 35, 19)]:
        expected = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(g.index_to_world(index), expected, atol=1e-9)
        np.testing.assert_allclose(g.world_to_index(expected), index, atol=1e-9)
    cont = (2.3, 4.7, 1.1)
    np.testing.assert_allclose(g.index_to_world(cont), image.TransformContinuousIndexToPhysicalPoint(cont), atol=1e-9)


def test_hand_computed_oblique_mapping():
    # index axis i points to +P (LPS y), j to -L (LPS -x), k to S; spacing 2, 3, 4; origin (10, 20, 30).
    g = ImageGeometry((5, 5, 5), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))
    np.testing.assert_allclose(g.index_to_world((1, 1, 1)), (10 - 3, 20 + 2, 30 + 4))
    np.testing.assert_allclose(g.index_to_world((1, 1, 1), coordinate_system="RAS"), (-7, -22, 34))
    np.testing.assert_allclose(g.world_to_index((-7, -22, 34), coordinate_system="RAS"), (1, 1, 1))
    np.testing.assert_allclose(g.index_to_ras_matrix @ [1, 1, 1, 1], (-7, -22, 34, 1))


def test_lps_ras_is_involution():
    p = np.array([[1.0, -2.0, 3.0]])
    np.testing.assert_allclose(lps_to_ras(lps_to_ras(p)), p)
    np.testing.assert_allclose(lps_to_ras(p), [[-1, 2, 3]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shape=(0, 2, 2)), "shape"),
        (dict(shape=(2, 2, 2), spacing=(1, 0, 1)), "spacing"),
        (dict(shape=(2, 2, 2), origin=(0, np.nan, 0)), "origin"),
        (dict(shape=(2, 2, 2), direction=(1, 0, 0, 0, 1, 0)), "direction"),
        (dict(shape=(2, 2, 2), direction=(1, 1, 0, 0, 1, 0, 0, 0, 1)), "orthonormal"),
    ],
)
def test_geometry_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageGeometry(**kwargs)


def test_mismatch_and_dict_round_trip(oblique_geometry):
    g = oblique_geometry
    assert g.mismatch(ImageGeometry.from_dict(g.to_dict())) == ""
    assert "spacing" in g.mismatch(ImageGeometry(g.shape, (1, 1, 1), g.origin, g.direction))
    assert "shape" in g.mismatch(g.with_shape((1, 2, 3)))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_image_round_trip_preserves_geometry(tmp_path, oblique_geometry, suffix):
    array = np.random.default_rng(0).normal(size=oblique_geometry.shape).astype(np.float32)
    path = write_image(tmp_path / f"a{suffix}", array, oblique_geometry)
    volume = read_image(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.mismatch(oblique_geometry) == ""
    assert [p.name for p in tmp_path.iterdir()] == [f"a{suffix}"]  # no temporary file left


def test_array_order_is_ijk(tmp_path):
    g = ImageGeometry((4, 3, 2))
    array = np.zeros(g.shape, dtype=np.uint8)
    array[3, 1, 0] = 7
    write_image(tmp_path / "x.nrrd", array, g)
    image = sitk.ReadImage(str(tmp_path / "x.nrrd"))
    assert image.GetSize() == (4, 3, 2)
    assert image.GetPixel(3, 1, 0) == 7


def test_read_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="cannot read image file"):
        read_image(bad)
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image([4, 4], sitk.sitkUInt8), str(flat))
    with pytest.raises(ImageReadError, match="2D"):
        read_image(flat, role="label")


def test_write_rejects_wrong_shape_and_suffix(tmp_path, oblique_geometry):
    with pytest.raises(ValueError, match="does not match geometry"):
        write_image(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)), oblique_geometry)
    with pytest.raises(ValueError, match="unsupported image file suffix"):
        write_image(tmp_path / "a.png", np.zeros(oblique_geometry.shape), oblique_geometry)


def test_check_intensities(oblique_geometry):
    from PASegLib.image.io import Volume

    arr = np.random.default_rng(1).normal(size=oblique_geometry.shape).astype(np.float32)
    check_intensities(Volume(arr, oblique_geometry), source="ok")
    arr[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"case\.nii: image holds 1 NaN/inf voxels \(first at index \(1, 2, 3\)\)"):
        check_intensities(Volume(arr, oblique_geometry), source="case.nii")
    with pytest.raises(ValueError, match="constant"):
        check_intensities(Volume(np.full(oblique_geometry.shape, 5.0), oblique_geometry), source="c")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from PASegLib.utils.atomic import atomic_path

    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert full_suffix("x/case_partial.nii.gz") == ".nii.gz"
    assert full_suffix("case.mrk.json") == ".mrk.json"
