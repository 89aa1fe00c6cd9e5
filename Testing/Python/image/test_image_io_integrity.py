"""Image files checked independently of ITK: truncated or damaged NIfTI / MetaImage / NRRD files are
refused naming the file and what is wrong; NaN/±inf voxels of NIfTI files come back as the file holds them
(ITK's NIfTI reader returns 0); label values and ITK's messages."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.integrity import verify_nifti
from PASegLib.image.io import (
    ImageReadError,
    Volume,
    check_intensities,
    check_label_values,
    describe_itk_error,
    read_geometry,
    read_image,
    write_image,
)

GEOMETRY = ImageGeometry((12, 10, 8), (0.8, 0.9, 2.5), (-3.0, 4.0, 1.5))
#: NIfTI-1 header (348 bytes), field by field, to write files ITK does not (big endian, extensions).
NIFTI1 = [("sizeof_hdr", "i4"), ("data_type", "S10"), ("db_name", "S18"), ("extents", "i4"),
          ("session_error", "i2"), ("regular", "S1"), ("dim_info", "u1"), ("dim", "i2", (8,)),
          ("intent_p", "f4", (3,)), ("intent_code", "i2"), ("datatype", "i2"), ("bitpix", "i2"),
          ("slice_start", "i2"), ("pixdim", "f4", (8,)), ("vox_offset", "f4"), ("scl_slope", "f4"),
          ("scl_inter", "f4"), ("slice_end", "i2"), ("slice_code", "u1"), ("xyzt_units", "u1"), ("cal_max", "f4"),
          ("cal_min", "f4"), ("slice_duration", "f4"), ("toffset", "f4"), ("glmax", "i4"), ("glmin", "i4"),
          ("descrip", "S80"), ("aux_file", "S24"), ("qform_code", "i2"), ("sform_code", "i2"), ("quatern", "f4", (6,)),
          ("srow", "f4", (12,)), ("intent_name", "S16"), ("magic", "S4")]  # fmt: skip


def _array(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, GEOMETRY.shape).astype(dtype)


def _nifti(path, array, *, compress=False):
    write_image(path, array, GEOMETRY, compress=compress)
    return path


def _cut(path, n_bytes):
    path.write_bytes(path.read_bytes()[:n_bytes])
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_intact_nifti_reads_as_before(tmp_path, suffix):
    array = _array()
    path = _nifti(tmp_path / f"a{suffix}", array, compress=suffix == ".nii.gz")
    assert verify_nifti(path, "image") is None
    np.testing.assert_array_equal(read_image(path).array, array)


def test_truncated_uncompressed_nifti(tmp_path):
    path = _nifti(tmp_path / "a.nii", _array())
    size = path.stat().st_size
    assert size == 352 + 12 * 10 * 8 * 4
    with pytest.raises(ImageReadError, match=r"a\.nii is truncated: it holds 100 of the 3840 bytes of voxel data "
                                             r"\(its header announces 960 voxels of 4 bytes\)"):
        read_image(_cut(path, 452))
    with pytest.raises(ImageReadError, match=r"label file .*a\.nii is truncated: it holds only its header"):
        read_image(_cut(path, 352), role="label")
    with pytest.raises(ImageReadError, match=r"is truncated: its NIfTI header is incomplete \(200 of 348 bytes\)"):
        read_image(_cut(path, 200))


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95])
def test_truncated_gzip_nifti(tmp_path, keep):
    path = _nifti(tmp_path / "a.nii.gz", _array(), compress=True)
    _cut(path, int(path.stat().st_size * keep))
    what = "its NIfTI header is incomplete" if keep < 0.1 else r"it holds \d+ of the 3840 bytes.*gzip stream ends early"
    with pytest.raises(ImageReadError, match=rf"a\.nii\.gz is truncated: {what}"):
        read_image(path)


def test_gzip_damage_and_what_is_tolerated(tmp_path):
    data = _nifti(tmp_path / "a.nii.gz", _array(), compress=True).read_bytes()
    (tmp_path / "crc.nii.gz").write_bytes(data[:-8] + b"\0\0\0\0" + data[-4:])  # wrong CRC-32
    with pytest.raises(ImageReadError, match=r"crc\.nii\.gz is damaged: its gzip data is not valid"):
        read_image(tmp_path / "crc.nii.gz")
    (tmp_path / "trailer.nii.gz").write_bytes(data[:-4])  # all voxels, but no end of stream
    with pytest.raises(ImageReadError, match=r"trailer\.nii\.gz is truncated: its gzip stream ends early \(after"):
        read_image(tmp_path / "trailer.nii.gz")
    raw = gzip.decompress(data)  # several gzip members, and junk after the last one: read as ITK reads them
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]) + b"\0\0junk")
    members = read_image(tmp_path / "members.nii.gz").array
    np.testing.assert_array_equal(members, read_image(tmp_path / "a.nii.gz").array)
    (tmp_path / "plain.nii.gz").write_bytes(raw)  # a .nii.gz that is not compressed: read as ITK does
    assert read_image(tmp_path / "plain.nii.gz").array.shape == GEOMETRY.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_nifti_voxels_come_back(tmp_path, dtype):
    array = _array(dtype)
    array[1, 2, 3], array[0, 0, 0], array[11, 9, 7] = np.nan, np.inf, -np.inf
    path = _nifti(tmp_path / "a.nii.gz", array, compress=True)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[3, 2, 1] == 0  # what ITK alone returns
    volume = read_image(path)
    assert volume.array.dtype == dtype
    assert np.isnan(volume.array[1, 2, 3]) and volume.array[0, 0, 0] == np.inf and volume.array[11, 9, 7] == -np.inf
    finite = np.isfinite(array)
    np.testing.assert_array_equal(volume.array[finite], array[finite])
    with pytest.raises(ValueError, match=r"a\.nii\.gz: image holds 3 NaN/inf voxels \(first at index \(0, 0, 0\)\)"):
        check_intensities(volume, source=str(path))


def _header(path):
    """(header record, voxel bytes) of an uncompressed NIfTI-1 file written by ITK."""
    data = path.read_bytes()
    header = np.frombuffer(data[:348], dtype=np.dtype(NIFTI1).newbyteorder("<")).copy()
    return header, data[int(header["vox_offset"][0]):]


def test_big_endian_and_extensions(tmp_path):
    array = _array()
    array[2, 3, 4] = np.nan
    header, voxels = _header(_nifti(tmp_path / "a.nii", array))
    big = header.astype(header.dtype.newbyteorder(">"))
    swapped = np.frombuffer(voxels, dtype="<f4").astype(">f4").tobytes()
    (tmp_path / "big.nii").write_bytes(big.tobytes() + b"\0" * 4 + swapped)
    volume = read_image(tmp_path / "big.nii")
    assert np.isnan(volume.array[2, 3, 4])
    np.testing.assert_array_equal(volume.array[np.isfinite(array)], array[np.isfinite(array)])
    with pytest.raises(ImageReadError, match="big.nii is truncated: it holds 1000 of the 3840 bytes"):
        read_image(_cut(tmp_path / "big.nii", 352 + 1000))
    for size in (32, 416):  # an extension that ends inside / beyond the first 540 bytes
        header["vox_offset"] = 352 + size
        extension = np.array([size, 0], "<i4").tobytes() + b"x" * (size - 8)
        path = tmp_path / f"ext{size}.nii"
        path.write_bytes(header.tobytes() + b"\1\0\0\0" + extension + voxels)
        assert np.isnan(read_image(path).array[2, 3, 4])
        with pytest.raises(ImageReadError, match=rf"ext{size}\.nii is truncated: it holds 8 of the 3840 bytes"):
            read_image(_cut(path, 352 + size + 8))


def test_nifti2_layout(tmp_path):
    """A NIfTI-2 header (540 bytes, 64-bit fields) is located by the same check."""
    head = bytearray(544)
    head[0:4] = np.array(540, "<i4").tobytes()
    head[4:12] = b"n+2\0\r\n\x1a\n"
    head[12:16] = np.array([16, 32], "<i2").tobytes()
    head[16:80] = np.array([3, 4, 3, 2, 1, 1, 1, 1], "<i8").tobytes()
    head[168:176] = np.array(544, "<i8").tobytes()
    head[176:192] = np.array([1.0, 0.0], "<f8").tobytes()
    values = np.arange(24, dtype="<f4")
    values[5] = np.nan
    path = tmp_path / "two.nii"
    path.write_bytes(bytes(head) + values.tobytes())
    index, found, scaling = verify_nifti(path, "image")
    assert index.tolist() == [5] and np.isnan(found).all() and scaling == (1.0, 0.0)
    with pytest.raises(ImageReadError, match=r"two\.nii is truncated: it holds 40 of the 96 bytes"):
        verify_nifti(_cut(path, 544 + 40), "image")


def test_metaimage_truncated_or_missing_data(tmp_path):
    array = _array()
    for compress in (False, True):
        path = tmp_path / f"a{int(compress)}.mha"
        write_image(path, array, GEOMETRY, compress=compress)
        np.testing.assert_array_equal(read_image(path).array, array)
        _cut(path, path.stat().st_size - 700)
        kind = "compressed voxel data" if compress else "voxel data"
        with pytest.raises(ImageReadError, match=rf"a{int(compress)}\.mha is truncated: it holds \d+ of the \d+ "
                                                 rf"bytes of {kind} its header announces"):
            read_image(path)
    mhd = tmp_path / "b.mhd"
    write_image(mhd, array, GEOMETRY, compress=False)
    assert sorted(p.name for p in tmp_path.glob("b.*")) == ["b.mhd", "b.raw"]  # no temporary names left
    np.testing.assert_array_equal(read_image(mhd).array, array)
    raw = tmp_path / "b.raw"
    _cut(raw, 1000)
    with pytest.raises(ImageReadError, match=r"b\.raw is truncated: it holds 1000 of the 3840 bytes"):
        read_image(mhd)
    raw.unlink()
    with pytest.raises(ImageReadError, match=r"b\.mhd: its voxel data file .*b\.raw is missing"):
        read_image(mhd)


def test_nrrd_truncation_is_named(tmp_path):
    for compress in (False, True):
        path = tmp_path / f"a{int(compress)}.nrrd"
        write_image(path, _array(), GEOMETRY, compress=compress)
        _cut(path, path.stat().st_size // 2)
        with pytest.raises(ImageReadError, match=rf"image file .*a{int(compress)}\.nrrd is truncated or damaged: "):
            read_image(path)


def test_read_geometry(tmp_path):
    path = _nifti(tmp_path / "a.nii.gz", _array(), compress=True)
    assert read_geometry(path).mismatch(GEOMETRY) == ""
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image([4, 4], sitk.sitkUInt8), str(flat))
    with pytest.raises(ImageReadError, match=r"image file .*flat\.nrrd is 2D \(size \[4, 4\]\); PASeg needs a 3D"):
        read_geometry(flat)
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match=r"cannot read label file .*junk\.nii\.gz: not an image in a format"):
        read_geometry(tmp_path / "junk.nii.gz", role="label")
    with pytest.raises(ImageReadError, match="not found"):
        read_geometry(tmp_path / "missing.nii.gz")


def test_describe_itk_error():
    exc = RuntimeError('Exception thrown in SimpleITK ImageFileReader_Execute: /x/sitk.cxx:99:\n'
                       'sitk::ERROR: Unable to determine ImageIO reader for "d/a_image.nii.gz"')
    assert describe_itk_error(exc) == ("d/a_image.nii.gz: not an image in a format PASeg reads (.nii.gz, .nii, "
                                       ".nrrd, .nhdr, .mha, .mhd), or damaged")
    exc = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /x/itk.cxx:490:\nITK ERROR: "
                       "MetaImageIO(0x55bc3dfbe5b0): File cannot be read: a.mha for reading.\nReason: No such file")
    assert describe_itk_error(exc) == "File cannot be read: a.mha for reading."


def test_check_label_values():
    def volume(values, dtype):
        array = np.zeros(GEOMETRY.shape, dtype)
        array.flat[: len(values)] = values
        return Volume(array, GEOMETRY)

    assert check_label_values(volume([1, 2], np.uint8), source="a").tolist() == [0, 1, 2]
    assert check_label_values(volume([1.0, 3.0], np.float32), source="a").tolist() == [0, 1, 3]
    for values, dtype, shown in [([-1], np.int16, "-1"), ([0.5], np.float32, "0.5"), ([np.nan], np.float32, "nan"),
                                 ([np.inf, -2, 0.25, 7.5], np.float64, r"-2.0, 0.25, 7.5 …")]:
        with pytest.raises(ValueError, match=rf"p\.nii: a prediction map must hold non-negative integers .*holds "
                                             rf"{shown}"):
            check_label_values(volume(values, dtype), source="p.nii", role="prediction")
    with pytest.raises(ValueError, match=r"a: a label map holds at most 256 distinct values .* holds 960: is it an"):
        check_label_values(Volume(np.arange(960, dtype=np.float32).reshape(GEOMETRY.shape), GEOMETRY), source="a")


def test_real_images_are_not_refused():
    """No false alarm on the real cohort's files (skipped without ../shared/data)."""
    from conftest import LA_HEART, real_la_cases

    for case in real_la_cases(2):
        for role in ("image", "label"):
            path = LA_HEART / f"{case}_{role}.nii.gz"
            assert verify_nifti(path, role) is None
            np.testing.assert_array_equal(read_image(path).array,
                                          sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0))


def test_zlib_error_is_named(tmp_path):
    data = bytearray(_nifti(tmp_path / "a.nii.gz", _array(), compress=True).read_bytes())
    data[40:60] = b"\xff" * 20  # damaged deflate data inside the stream
    (tmp_path / "bad.nii.gz").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"bad\.nii\.gz is (damaged|truncated)"):
        read_image(tmp_path / "bad.nii.gz")
    assert zlib  # (the damage is reported from zlib.error)
