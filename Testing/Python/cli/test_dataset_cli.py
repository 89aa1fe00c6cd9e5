"""Dataset folders and the ``paseg`` command line: outputs, JSON, exit codes, no partial output on errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ellipsoid

from PASegLib.cli.main import main
from PASegLib.data.dataset import DatasetError, list_cases, load_case, select_cases
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import read_image, write_image


@pytest.fixture
def dataset(tmp_path, oblique_geometry):
    """Two labelled cases a, b (NIfTI and NRRD) on an oblique geometry."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for n, (case, suffix) in enumerate([("a", ".nii.gz"), ("b", ".nrrd")]):
        label = ellipsoid(oblique_geometry.shape, (18 + 2 * n, 17, 10), (6, 5, 3)).astype(np.uint8)
        image = (40 + 90 * label + rng.normal(0, 5, label.shape)).astype(np.float32)
        write_image(root / f"{case}_image{suffix}", image, oblique_geometry)
        write_image(root / f"{case}_label{suffix}", label, oblique_geometry)
    return root


def listing(path):
    return sorted(p.name for p in path.rglob("*")) if path.exists() else None


def test_list_and_load(dataset, oblique_geometry):
    cases = list_cases(dataset)
    assert [c.case_id for c in cases] == ["a", "b"]
    assert cases[1].label.name == "b_label.nrrd" and not cases[0].has_annotation
    case = load_case(cases[0])
    assert case.label.geometry.mismatch(oblique_geometry) == ""
    assert select_cases(cases, ["b"])[0].case_id == "b"
    with pytest.raises(DatasetError, match="unknown case id"):
        select_cases(cases, ["zzz"])


def test_dataset_errors(tmp_path, dataset, oblique_geometry):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        list_cases(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no <case>_image"):
        list_cases(empty)
    write_image(dataset / "c_label.nii.gz", np.zeros(oblique_geometry.shape, np.uint8), oblique_geometry)
    with pytest.raises(DatasetError, match=r"without a matching <case>_image file: c_label.nii.gz \(label\)"):
        list_cases(dataset)
    (dataset / "c_label.nii.gz").unlink()
    (dataset / "z.mrk.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"z.mrk.json \(annotation\)"):
        list_cases(dataset)
    (dataset / "z.mrk.json").unlink()
    write_image(dataset / "a_image.mha", np.zeros(oblique_geometry.shape), oblique_geometry)
    with pytest.raises(DatasetError, match="two image files"):
        list_cases(dataset)


def test_load_errors(tmp_path, oblique_geometry):
    root = tmp_path / "d"
    g2 = ImageGeometry(oblique_geometry.shape, (1, 1, 1))
    write_image(root / "a_image.nii.gz", np.random.default_rng(0).normal(size=g2.shape), oblique_geometry)
    write_image(root / "a_label.nii.gz", np.zeros(g2.shape, np.uint8), g2)
    with pytest.raises(DatasetError, match="label geometry differs from a_image.nii.gz"):
        load_case(list_cases(root)[0])
    write_image(root / "a_image.nii.gz", np.full(g2.shape, 3.0), oblique_geometry)
    with pytest.raises(ValueError, match="a_image.nii.gz: image is constant"):
        load_case(list_cases(root)[0])
    nan = np.zeros(g2.shape, np.float32)
    nan[0, 0, 0] = np.nan
    (root / "a_image.nii.gz").unlink()  # NRRD keeps NaN (ITK's NIfTI reader does not return it)
    write_image(root / "a_image.nrrd", nan, oblique_geometry)
    with pytest.raises(ValueError, match="NaN"):
        load_case(list_cases(root)[0])


def test_cli_pipeline_simulate_expand_evaluate(tmp_path, dataset, capsys):
    clicks = tmp_path / "clicks"
    assert main(["simulate-clicks", str(dataset), "--out", str(clicks), "--seed", "1", "--quiet", "--json"]) == 0
    assert listing(clicks) == ["a.mrk.json", "b.mrk.json"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["objects"] for c in summary["cases"]] == [1, 1]

    out = tmp_path / "expanded"
    assert main(["expand", str(dataset), "--annotations", str(clicks), "--out", str(out), "--json", "--quiet"]) == 0
    assert listing(out) == ["a_partial.nii.gz", "a_partial.png", "b_partial.nii.gz", "b_partial.png"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"fg_precision", "fg_recall", "seconds"} <= set(summary["mean"])
    row = summary["cases"][0]
    partial = read_image(out / "a_partial.nii.gz")
    assert row["fg_voxels"] == int((partial.array == 1).sum())
    assert 0 < row["fg_precision"] <= 1 and 0 < row["fg_recall"] <= 1
    assert summary["mean"]["fg_recall"] == pytest.approx(np.mean([c["fg_recall"] for c in summary["cases"]]))

    # evaluate the labels against themselves: perfect scores, hand-checkable
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in ("a", "b"):
        label = read_image(next(dataset.glob(f"{case}_label.*")))
        write_image(preds / f"{case}_pred.nii.gz", label.array, label.geometry)
    assert main(["evaluate", str(preds), str(dataset), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 2 and result["mean"]["dice"] == 1.0 and result["mean"]["hd95"] == 0.0


def test_cli_errors_leave_no_partial_output(tmp_path, dataset, capsys):
    clicks = tmp_path / "clicks"
    assert main(["simulate-clicks", str(dataset), "--out", str(clicks), "--quiet"]) == 0
    # corrupt case b's clicks: case a would succeed, but nothing may be written
    doc = json.loads((clicks / "b.mrk.json").read_text())
    doc["markups"][0]["controlPoints"] = doc["markups"][0]["controlPoints"][:5]
    (clicks / "b.mrk.json").write_text(json.dumps(doc))
    out = tmp_path / "expanded"
    code = main(["expand", str(dataset), "--annotations", str(clicks), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "b.mrk.json" in err and "expected 6 background points, got 4" in err
    assert listing(out) is None, "a failed command must not leave its output folder behind"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    assert main(["expand", str(dataset), "--annotations", str(clicks), "--out", str(existing), "--quiet"]) == 1
    assert listing(existing) == ["keep.txt"]


def test_cli_usage_and_missing_input(tmp_path, capsys):
    assert main(["expand", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "dataset folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["expand"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    for command in ("synth", "simulate-clicks", "convert-clicks", "expand", "evaluate"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
    assert "usage: paseg evaluate" in capsys.readouterr().out


def test_cli_convert_clicks_round_trip(tmp_path, dataset):
    assert main(["simulate-clicks", str(dataset), "--quiet"]) == 0
    seven = tmp_path / "seven"
    assert main(["convert-clicks", str(dataset), "--to", "7points", "--out", str(seven), "--quiet"]) == 0
    assert listing(seven) == ["a_7points.nii.gz", "b_7points.nii.gz"]
    # a dataset holding only the official format converts back to markups with the same voxels
    official = tmp_path / "official"
    official.mkdir()
    for case in ("a", "b"):
        for src in dataset.glob(f"{case}_image.*"):
            (official / src.name).symlink_to(src)
        (official / f"{case}_7points.nii.gz").symlink_to(seven / f"{case}_7points.nii.gz")
    back = tmp_path / "back"
    assert main(["convert-clicks", str(official), "--to", "markups", "--out", str(back), "--quiet"]) == 0
    a = load_case(list_cases(dataset)[0]).annotation.objects[0]
    b = load_case(list_cases(official, annotations_dir=back)[0]).annotation.objects[0]
    g = read_image(next(dataset.glob("a_image.*"))).geometry
    for label, point in a.points().items():
        np.testing.assert_array_equal(g.world_to_voxel(b.points()[label]), g.world_to_voxel(point))


def test_cli_synth_and_module_entry_point(tmp_path):
    out = tmp_path / "synth"
    done = subprocess.run(
        [sys.executable, "-m", "PASegLib", "synth", str(out), "--cases", "2", "--shape", "48", "48", "16", "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout.strip().splitlines()[-1])["files"]
    assert files == [
        "synth_000_image.nii.gz",
        "synth_000_label.nii.gz",
        "synth_001_image.nii.gz",
        "synth_001_label.nii.gz",
    ]
    assert read_image(out / "synth_000_image.nii.gz").geometry.shape == (48, 48, 16)
    done = subprocess.run([sys.executable, "-m", "PASegLib", "synth", str(tmp_path / "x"), "--cases", "0"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "--cases must be >= 1" in done.stderr
