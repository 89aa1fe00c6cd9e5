"""DICOM in (``PASegLib.image.dicom``), DICOM SEG out (``PASegLib.interop.dicom_seg``) and ``paseg predict`` on a
DICOM series folder with ``--dicom-seg``.

The DICOM series are written by SimpleITK/GDCM from the oblique synthetic case (MR Image Storage, one file per
slice, file names in the reverse of the slice order so that nothing passes by sorting names); the SEGs are read
back with highdicom and checked against the written prediction instance by instance and frame by frame.
"""

from __future__ import annotations

import json
import locale
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import box_object

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.model import CaseAnnotation
from PASegLib.cli.main import main
from PASegLib.image.dicom import list_dicom_series, read_dicom_series, select_dicom_series
from PASegLib.image.integrity import ImageReadError
from PASegLib.image.io import Volume, read_image, write_image
from PASegLib.interop.dicom_seg import (
    DEFAULT_CATEGORY,
    DEFAULT_TYPE,
    CodedTerm,
    require_highdicom,
    segment_labels,
    write_dicom_seg,
)
from PASegLib.networks import build_network
from PASegLib.training.checkpoint import save_checkpoint
from PASegLib.training.config import TrainConfig

hd = pytest.importorskip("highdicom", reason="highdicom is not installed (pip install 'PASegLib[dicom]')")
pydicom = pytest.importorskip("pydicom")

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


# -- helpers ---------------------------------------------------------------------------------------------------
def write_series(folder, volume: Volume, *, description: str, reverse_names: bool = True) -> dict:
    """Write ``volume`` (integer-valued) as a DICOM series of 2D slices; returns its UIDs and files by slice.

    SimpleITK's DICOM writer (GDCM) sets the process's locale to "C" and leaves it so; the locale is restored
    here, or every later ``Path.read_text()`` of the test session would decode ASCII only."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_series(folder, volume, description=description, reverse_names=reverse_names)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series(folder, volume: Volume, *, description: str, reverse_names: bool) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.astype(np.int16).transpose(2, 1, 0)))
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    d = volume.geometry.direction
    uids = {"study": pydicom.uid.generate_uid(), "series": pydicom.uid.generate_uid(),
            "frame": pydicom.uid.generate_uid(), "instances": [], "files": []}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    depth = image.GetDepth()
    for k in range(depth):
        sop = pydicom.uid.generate_uid()
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0016": MR_IMAGE_STORAGE, "0008|0018": sop, "0008|0060": "MR", "0008|103e": description,
                "0010|0010": "Synthetic^Case", "0010|0020": "PASEG-TEST", "0020|000d": uids["study"],
                "0020|000e": uids["series"], "0020|0052": uids["frame"], "0020|0013": str(k + 1),
                "0020|0011": "7", "0018|0050": f"{volume.geometry.spacing[2]:.6f}",
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))}
        plane = image[:, :, k]
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        path = folder / f"IM{(depth - 1 - k) if reverse_names else k:04d}_{uids['series'][-6:]}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(plane)
        uids["instances"].append(sop)
        uids["files"].append(path)
    return uids


@pytest.fixture
def source(blob_case):
    """The oblique synthetic case with integer intensities, as a Volume."""
    image, label = blob_case
    return Volume(np.rint(image.array).astype(np.int16), image.geometry), label


def make_run(root, *, foreground: float):
    """A run folder with a 2.5D U-Net whose output is a constant: foreground probability ``sigmoid(2·foreground)``."""
    torch.manual_seed(0)
    config = TrainConfig(patch_size=(48, 48, 24))  # one window over the 40×36×20 test grid
    root.mkdir(parents=True)
    config.save(root / "config.json")
    kwargs = {"filters": [4, 8, 16]}  # a small network: the test is about the files, not the model
    net = build_network("unet2d5", in_channels=1, out_channels=2, **kwargs)
    state = net.state_dict()
    last = [k for k, v in state.items() if k.endswith(".bias") and tuple(v.shape) == (2,)][-1]
    state[last[: -len("bias")] + "weight"].zero_()
    state[last].copy_(torch.tensor([-foreground, foreground]))
    entry = {"name": "unet2d5", "state_dict": state, "kwargs": kwargs}
    save_checkpoint(root / "checkpoints" / "last.pt",
                    {"kind": "stage1", "config": config.to_dict(), "networks": {"primary": entry}})
    return root



def predict(capsys, *argv):
    code = main(["predict", *map(str, argv), "--quiet", "--device", "cpu", "--precision", "float32"])
    out, err = capsys.readouterr()
    return code, out, err


def seg_labels(seg, instances, shape):
    """The SEG as a label map ``[i, j, k]`` on the source grid (slice ``k`` = source instance ``instances[k]``)."""
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=instances, combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    assert frames.shape == (shape[2], shape[1], shape[0])
    return frames.transpose(2, 1, 0)


def frame_positions(seg):
    """Each frame's (source instance UID, Image Position (Patient), segment number)."""
    rows = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        rows.append((source, position, int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)))
    return rows


# -- DICOM in ----------------------------------------------------------------------------------------------------
def test_a_dicom_series_reads_back_with_the_source_geometry_and_voxels(tmp_path, source):
    volume, _ = source
    uids = write_series(tmp_path / "dicom", volume, description="T1 post/contrast")
    (series,) = list_dicom_series(tmp_path / "dicom")
    assert series.uid == uids["series"] and series.description == "T1 post/contrast"
    assert series.case_id == "T1_post_contrast" and len(series.files) == volume.geometry.shape[2]
    assert list(series.files) == uids["files"]  # slice order from the positions, not the (reversed) names
    back = read_dicom_series(tmp_path / "dicom")
    assert back.geometry.mismatch(volume.geometry, atol_mm=1e-5, atol_direction=1e-6) == ""
    np.testing.assert_array_equal(back.array, volume.array)


def test_several_series_need_series_uid_and_the_error_lists_them(tmp_path, source):
    volume, _ = source
    first = write_series(tmp_path / "dicom", volume, description="axial T1")
    cropped = Volume(volume.array[:, :, :12].copy(), volume.geometry.with_shape(volume.geometry.shape[:2] + (12,)))
    second = write_series(tmp_path / "dicom", cropped, description="")
    with pytest.raises(ImageReadError) as error:
        read_dicom_series(tmp_path / "dicom")
    message = str(error.value)
    assert str(tmp_path / "dicom") in message and "--series UID" in message and "2 DICOM series" in message
    assert f"{first['series']} (axial T1, 20 file(s))" in message
    assert f"{second['series']} (no description, 12 file(s))" in message
    chosen = select_dicom_series(tmp_path / "dicom", second["series"])
    assert chosen.case_id == second["series"] and read_dicom_series(chosen).geometry.shape == (40, 36, 12)
    with pytest.raises(ImageReadError, match="no DICOM series with UID '1.2.3'"):
        select_dicom_series(tmp_path / "dicom", "1.2.3")


def test_a_folder_without_dicom_and_a_series_with_a_missing_slice_are_refused(tmp_path, source):
    volume, _ = source
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no DICOM here")
    with pytest.raises(ImageReadError, match="no DICOM series found") as error:
        read_dicom_series(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(error.value)
    uids = write_series(tmp_path / "gap", volume, description="gap")
    uids["files"][7].unlink()
    with pytest.raises(ImageReadError, match="missing or unevenly spaced slices") as error:
        read_dicom_series(tmp_path / "gap")
    assert uids["series"] in str(error.value)


# -- DICOM SEG out -----------------------------------------------------------------------------------------------
def test_default_codes_are_pydicoms_snomed_codes():
    from pydicom.sr.codedict import codes

    defaults = ((DEFAULT_CATEGORY, codes.SCT.MorphologicallyAbnormalStructure), (DEFAULT_TYPE, codes.SCT.Neoplasm))
    for term, code in defaults:
        assert (term.value, term.scheme, term.meaning) == (code.value, code.scheme_designator, code.meaning)
    assert CodedTerm.parse("4147007:SCT:Mass") == CodedTerm("4147007", "SCT", "Mass")
    assert CodedTerm.parse("1:99LOCAL:a: b").meaning == "a: b"
    for bad in ("Neoplasm", "108369006::Neoplasm", "108 369:SCT:x", "1:sct:x"):
        with pytest.raises(ValueError, match="--seg-type"):
            CodedTerm.parse(bad, option="--seg-type")
    assert segment_labels(3, ["liver lesion", " "]) == ["liver lesion", "tumor 2", "tumor 3"]


def test_seg_frames_reference_their_source_instances_at_their_positions(tmp_path, source):
    volume, label = source
    uids = write_series(tmp_path / "dicom", volume, description="T1")
    series = select_dicom_series(tmp_path / "dicom")
    geometry = read_dicom_series(series).geometry
    labels = label.astype(np.uint8)
    labels[2:6, 3:7, 15:17] = 2
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, geometry, series, segment_names=["left", "right"],
                           segment_type=CodedTerm("4147007", "SCT", "Mass"))
    seg = hd.seg.segread(path)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == uids["study"]
    assert seg.FrameOfReferenceUID == uids["frame"] and seg.SeriesInstanceUID != uids["series"]
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == uids["series"]
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(uids["instances"])
    assert [(d.segment_number, d.segment_label) for d in seg.SegmentSequence] == [(1, "left"), (2, "right")]
    for description in seg.SegmentSequence:
        assert description.segmented_property_category == DEFAULT_CATEGORY.to_code()
        assert description.segmented_property_type.value == "4147007"
        assert description.algorithm_type.value == "AUTOMATIC"
    np.testing.assert_array_equal(seg_labels(seg, uids["instances"], geometry.shape), labels)
    # one frame per (slice with voxels, segment); each at its source instance's position
    frames = frame_positions(seg)
    expected = {(k, n) for n in (1, 2) for k in range(geometry.shape[2]) if (labels[:, :, k] == n).any()}
    assert len(frames) == seg.NumberOfFrames == len(expected)
    slices = {sop: k for k, sop in enumerate(uids["instances"])}
    assert {(slices[sop], n) for sop, _, n in frames} == expected
    for sop, position, _ in frames:
        np.testing.assert_allclose(position, geometry.index_to_world([0, 0, slices[sop]]), atol=1e-4)


def test_an_empty_prediction_writes_a_seg_that_declares_its_segment(tmp_path, source):
    volume, _ = source
    uids = write_series(tmp_path / "dicom", volume, description="T1")
    series = select_dicom_series(tmp_path / "dicom")
    geometry = read_dicom_series(series).geometry
    seg = hd.seg.segread(write_dicom_seg(tmp_path / "seg.dcm", np.zeros(geometry.shape, np.uint8), geometry, series,
                                         segment_names=segment_labels(1)))
    assert [d.segment_label for d in seg.SegmentSequence] == ["tumor 1"]
    assert seg.NumberOfFrames == geometry.shape[2]  # every slice, empty: a SEG needs at least one frame
    assert not seg_labels(seg, uids["instances"], geometry.shape).any()
    with pytest.raises(ValueError, match="segment 2 but only 1 segment name"):
        write_dicom_seg(tmp_path / "bad.dcm", np.full(geometry.shape, 2, np.uint8), geometry, series,
                        segment_names=["tumor 1"])
    assert not (tmp_path / "bad.dcm").exists()


def test_missing_highdicom_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ValueError, match=r'pip install "PASegLib\[dicom\]"'):
        require_highdicom()


# -- paseg predict -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_on_a_dicom_series_writes_a_seg_of_the_prediction(tmp_path, source, capsys):
    volume, _ = source
    uids = write_series(tmp_path / "dicom", volume, description="axial T1 (post)")
    geometry = volume.geometry
    annotation = CaseAnnotation([box_object("left lesion", geometry, (4, 4, 3), (14, 12, 8)),
                                 box_object("right lesion", geometry, (22, 20, 10), (34, 30, 16))])
    write_markups(tmp_path / "clicks.mrk.json", annotation)
    run = make_run(tmp_path / "run", foreground=4.0)  # foreground everywhere: the boxes decide the labels
    out = tmp_path / "out"
    code, stdout, err = predict(capsys, run, tmp_path / "dicom", "--out", out, "--annotations",
                                tmp_path / "clicks.mrk.json", "--restrict-to-box", "--dicom-seg", "--json")
    assert code == 0, err
    case = "axial_T1_post"
    assert sorted(p.name for p in out.iterdir()) == [f"{case}_pred.nii.gz", f"{case}_prob.nii.gz", f"{case}_seg.dcm"]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["cases"][0]["seg"] == str(out / f"{case}_seg.dcm") and summary["cases"][0]["objects"] == 2
    pred = read_image(out / f"{case}_pred.nii.gz")
    assert pred.geometry.mismatch(geometry) == "" and set(np.unique(pred.array)) == {0, 1, 2}
    seg = hd.seg.segread(out / f"{case}_seg.dcm")
    assert [d.segment_label for d in seg.SegmentSequence] == ["left lesion", "right lesion"]
    assert all(d.segmented_property_type == DEFAULT_TYPE.to_code() for d in seg.SegmentSequence)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    np.testing.assert_array_equal(seg_labels(seg, uids["instances"], geometry.shape), pred.array)
    # a background-only model: the SEG still declares "tumor 1"; two series in the folder need --series
    cropped = Volume(volume.array[:, :, :12].copy(), geometry.with_shape(geometry.shape[:2] + (12,)))
    other = write_series(tmp_path / "dicom", cropped, description="localizer")
    empty_run = make_run(tmp_path / "empty-run", foreground=-4.0)
    code, _, err = predict(capsys, empty_run, tmp_path / "dicom", "--out", tmp_path / "two", "--dicom-seg")
    assert code == 1 and "--series UID" in err and uids["series"] in err and other["series"] in err
    assert not (tmp_path / "two").exists()
    code, _, err = predict(capsys, empty_run, tmp_path / "dicom", "--out", tmp_path / "empty", "--dicom-seg",
                           "--series", uids["series"], "--seg-type", "4147007:SCT:Mass")
    assert code == 0, err
    seg = hd.seg.segread(tmp_path / "empty" / "axial_T1_post_seg.dcm")
    assert [(d.segment_label, d.segmented_property_type.value) for d in seg.SegmentSequence] == [("tumor 1", "4147007")]
    assert not seg_labels(seg, uids["instances"], geometry.shape).any()


def test_dicom_options_without_a_dicom_series_are_refused_and_write_nothing(tmp_path, source, capsys):
    volume, _ = source
    image = write_image(tmp_path / "a_image.nii.gz", volume.array, volume.geometry)
    run = make_run(tmp_path / "run", foreground=4.0)
    for argv, expected in (
        ([image, "--dicom-seg"], f"--dicom-seg needs INPUT to be a folder holding a DICOM series; {image} is not"),
        ([tmp_path, "--series", "1.2.3"], f"--series needs INPUT to be a folder holding a DICOM series; {tmp_path} is"),
        ([image, "--seg-type", "4147007:SCT:Mass"], "--seg-category and --seg-type apply only with --dicom-seg"),
    ):
        code, _, err = predict(capsys, run, *argv, "--out", tmp_path / "out")
        assert code == 1 and expected in err, err
        assert not (tmp_path / "out").exists() and image.is_file()
    write_series(tmp_path / "dicom", volume, description="T1")
    code, _, err = predict(capsys, run, tmp_path / "dicom", "--out", tmp_path / "out", "--dicom-seg",
                           "--seg-category", "Neoplasm")
    assert code == 1 and "--seg-category expects CODE:SCHEME:MEANING" in err and not (tmp_path / "out").exists()
