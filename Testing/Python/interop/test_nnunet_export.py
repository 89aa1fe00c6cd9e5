"""``paseg export nnunet``: an nnU-Net v2 raw dataset of the pseudo labels that nnU-Net's own
``verify_dataset_integrity`` accepts; bad input leaves nothing behind."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_error

from PASegLib.cli.main import main
from PASegLib.image.io import read_image, write_image
from PASegLib.interop.nnunet import export_nnunet_dataset, parse_dataset_name


def _verify_with_nnunet(folder: Path, tmp_path: Path, monkeypatch, capfd) -> str:
    """Run nnU-Net's own dataset check on ``folder`` (its environment variables pointing to temporary folders);
    returns what it printed, after checking that it reported nothing wrong."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir(exist_ok=True)
        monkeypatch.setenv(name, str(tmp_path / name))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    capfd.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)  # raises (AssertionError/RuntimeError) on an error
    printed = "".join(capfd.readouterr())
    assert "verify_dataset_integrity Done" in printed
    for word in ("Error", "Warning", "mismatch", "NaN"):  # its geometry checks only print warnings
        assert word not in printed, printed
    return printed


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory) -> Path:
    """Four synthetic oblique cases: a dense one, extreme points, seven points (stored as NRRD) and one without
    annotation."""
    root = tmp_path_factory.mktemp("nnunet")
    ds = root / "ds"
    assert main(["synth", str(ds), "--cases", "4", "--shape", "48", "48", "16"]) == 0
    assert main(["simulate-clicks", str(ds), "--out", str(root / "a"), "--kind", "extreme_points",
                 "--dense-cases", "1", "--quiet"]) == 0
    assert main(["simulate-clicks", str(ds), "--out", str(root / "b"), "--quiet"]) == 0
    shutil.copy(root / "a" / "synth_000.mrk.json", ds)  # dense
    shutil.copy(root / "a" / "synth_001.mrk.json", ds)  # extreme points
    shutil.copy(root / "b" / "synth_002.mrk.json", ds)  # seven points
    for role in ("image", "label"):  # another image format: the export writes NIfTI with the same geometry
        src = ds / f"synth_002_{role}.nii.gz"
        volume = read_image(src)
        write_image(ds / f"synth_002_{role}.nrrd", volume.array, volume.geometry)
        src.unlink()
    return ds


def test_export_is_a_valid_nnunet_dataset_of_the_pseudo_labels(mixed_dataset, tmp_path, monkeypatch, capfd):
    out = tmp_path / "raw" / "Dataset501_PasegTest"
    out.mkdir(parents=True)  # an existing empty folder is fine
    assert main(["export", "nnunet", str(mixed_dataset), "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert summary["dataset_id"] == 501 and summary["test"] == ["synth_003"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["dataset.json", "imagesTr/synth_000_0000.nii.gz", "imagesTr/synth_001_0000.nii.gz",
                     "imagesTr/synth_002_0000.nii.gz", "imagesTs/synth_003_0000.nii.gz", "labelsTr/synth_000.nii.gz",
                     "labelsTr/synth_001.nii.gz", "labelsTr/synth_002.nii.gz"]
    assert not list(out.parent.glob(".paseg-staging-*"))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "foreground": 1, "ignore": 2}
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert meta["paseg"]["labels"] == "seeds"

    # the labels are exactly what `paseg expand` writes; the dense case keeps its label
    assert main(["expand", str(mixed_dataset), "--out", str(tmp_path / "expanded"), "--no-preview", "--quiet"]) == 0
    for case in ("synth_000", "synth_001", "synth_002"):
        source = read_image(next(mixed_dataset.glob(f"{case}_image.*")))
        image = read_image(out / "imagesTr" / f"{case}_0000.nii.gz")
        labels = read_image(out / "labelsTr" / f"{case}.nii.gz")
        assert image.geometry.mismatch(source.geometry) == "" and labels.geometry.mismatch(source.geometry) == ""
        np.testing.assert_array_equal(image.array, source.array)
        assert labels.array.dtype == np.uint8
        if case == "synth_000":
            truth = read_image(mixed_dataset / "synth_000_label.nii.gz").array
            np.testing.assert_array_equal(labels.array, (truth > 0).astype(np.uint8))
        else:
            expected = read_image(tmp_path / "expanded" / f"{case}_partial.nii.gz").array
            np.testing.assert_array_equal(labels.array, expected)
            assert set(np.unique(labels.array)) == {0, 1, 2}
    test_image = read_image(out / "imagesTs" / "synth_003_0000.nii.gz")
    np.testing.assert_array_equal(test_image.array, read_image(mixed_dataset / "synth_003_image.nii.gz").array)

    _verify_with_nnunet(out, tmp_path, monkeypatch, capfd)


def test_dataset_names_follow_nnunet(tmp_path):
    name = parse_dataset_name("Dataset042_Left-atrium_2")
    assert (name.dataset_id, name.name, name.folder) == (42, "Left-atrium_2", "Dataset042_Left-atrium_2")
    for bad in ("Dataset42_X", "Dataset0042_X", "Dataset000_X", "Task501_X", "Dataset501", "Dataset501_",
                "Dataset501_a b", "dataset501_X"):
        with pytest.raises(ValueError, match="DatasetNNN_Name"):
            parse_dataset_name(bad)


def _left_nothing(parent: Path, before: set) -> None:
    now = set(parent.rglob("*")) if parent.exists() else set()
    assert now == before, sorted(str(p) for p in now ^ before)


def test_bad_inputs_leave_no_output(mixed_dataset, tmp_path, capsys):
    raw = tmp_path / "raw"

    def fails(args, *message):
        code = main(["export", "nnunet", *map(str, args), "--quiet"])
        err = cli_error(capsys.readouterr(), "export")
        assert code == 1, err
        for text in message:
            assert text in err, err
        return err

    fails([tmp_path / "missing", "--out", raw / "Dataset501_X"], "dataset folder not found", "missing")
    assert not raw.exists()
    for bad in ("Dataset1_X", "Task501_X", "Dataset501"):
        fails([mixed_dataset, "--out", raw / bad], "DatasetNNN_Name", bad)
        assert not raw.exists()

    taken = raw / "Dataset502_Taken"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine")
    fails([mixed_dataset, "--out", taken], "not empty", str(taken))
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"

    fails([mixed_dataset, "--out", raw / "Dataset503_X", "--labels", "refined"], "--run")
    fails([mixed_dataset, "--out", raw / "Dataset503_X", "--run", mixed_dataset], "no pipeline.json")
    fails([mixed_dataset, "--out", raw / "Dataset503_X", "--random-walker", "[1]"], "--random-walker")
    fails([mixed_dataset, "--out", raw / "Dataset503_X", "--label-name", "ignore"], "label_name")
    before = set(raw.rglob("*"))

    # a damaged image found after other cases were written: nothing appears, the created parents neither
    broken = tmp_path / "broken"
    shutil.copytree(mixed_dataset, broken)
    data = (broken / "synth_003_image.nii.gz").read_bytes()
    (broken / "synth_003_image.nii.gz").write_bytes(data[: len(data) // 2])
    deep = tmp_path / "new" / "nested"
    fails([broken, "--out", deep / "Dataset504_X"], "synth_003_image.nii.gz")
    assert not (tmp_path / "new").exists()
    _left_nothing(raw, before)


def test_a_label_source_check_names_the_run_folder(mixed_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.json").write_text(json.dumps({"options": {"refine_rounds": 0}, "done": ["clicks"],
                                                   "split": {"train": ["synth_001"], "test": [], "predict": []}}))
    with pytest.raises(ValueError, match="without refinement rounds"):
        export_nnunet_dataset(mixed_dataset, tmp_path / "Dataset505_X", labels="refined", run_dir=run)
    with pytest.raises(ValueError, match="not predicted"):
        export_nnunet_dataset(mixed_dataset, tmp_path / "Dataset505_X", labels="predictions", run_dir=run)
    with pytest.raises(ValueError, match="no stage-one run"):
        export_nnunet_dataset(mixed_dataset, tmp_path / "Dataset505_X", labels="seeds", run_dir=run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_export_of_a_run_refined_labels_and_predictions(tmp_path, monkeypatch, capfd):
    """A real (tiny) `paseg run` with a refinement round: its training cases, refined labels and predictions."""
    from PASegLib.pipeline.run import PipelineOptions, run_pipeline

    ds = tmp_path / "ds"
    assert main(["synth", str(ds), "--cases", "4", "--shape", "48", "48", "16"]) == 0
    shutil.copy(ds / "synth_003_image.nii.gz", ds / "unlabelled_image.nii.gz")  # no label, no clicks: imagesTs
    tiny = dict(patch_size=(32, 32, 16), crf_downsample_to=None, validate_every=1, checkpoint_every=1,
                deterministic=True, num_threads=1, iterations_per_epoch=1, epochs=1)
    options = PipelineOptions(seed=0, device="cpu", overrides=tiny, scm_overrides={"epochs": 1}, refine_rounds=1,
                              second_stage="scm",
                              kind="extreme_points", dense_cases=1, max_figures=0)
    run = tmp_path / "run"
    assert run_pipeline(ds, run, options, stream=io.StringIO()) == 0
    cases = ["synth_000", "synth_001", "synth_002", "synth_003"]
    dense = "synth_000"  # the first labelled case without clicks

    outputs = {}
    for labels in ("refined", "predictions", "seeds"):
        out = tmp_path / "raw" / f"Dataset51{len(outputs)}_{labels}"
        assert main(["export", "nnunet", str(ds), "--run", str(run), "--labels", labels, "--out", str(out),
                     "--quiet"]) == 0
        assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
        assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["unlabelled_0000.nii.gz"]
        outputs[labels] = out
    for case in cases:
        truth = (read_image(ds / f"{case}_label.nii.gz").array > 0).astype(np.uint8)
        refined = read_image(outputs["refined"] / "labelsTr" / f"{case}.nii.gz").array
        predicted = read_image(outputs["predictions"] / "labelsTr" / f"{case}.nii.gz").array
        if case == dense:
            np.testing.assert_array_equal(refined, truth)
            np.testing.assert_array_equal(predicted, truth)
            continue
        np.testing.assert_array_equal(refined, read_image(run / "refined_1" / f"{case}_pseudo.nii.gz").array)
        pred = read_image(run / "predictions" / "SCM" / f"{case}_pred.nii.gz").array
        np.testing.assert_array_equal(predicted, (pred > 0).astype(np.uint8))
    for labels in ("refined", "predictions"):  # every voxel labelled: no ignore label
        meta = json.loads((outputs[labels] / "dataset.json").read_text())
        assert meta["labels"] == {"background": 0, "foreground": 1} and meta["numTraining"] == 4
    seeds = json.loads((outputs["seeds"] / "dataset.json").read_text())
    assert seeds["labels"]["ignore"] == 2  # the extreme points' shell is unlabelled
    stage1 = json.loads(next(run.glob("stage1_*/config.json")).read_text())
    assert seeds["paseg"]["expansion"] == stage1["expansion"] and seeds["paseg"]["run"] == "run"
    for out in outputs.values():
        _verify_with_nnunet(out, tmp_path, monkeypatch, capfd)

    assert main(["export", "nnunet", str(ds), "--run", str(run), "--labels", "predictions", "--model", "nope",
                 "--out", str(tmp_path / "raw" / "Dataset519_X"), "--quiet"]) == 1
    assert "SCM-E" in capfd.readouterr().err and not (tmp_path / "raw" / "Dataset519_X").exists()


def test_fill_none_exports_the_plain_seeds_of_paseg_expand(mixed_dataset, tmp_path, capsys):
    out = tmp_path / "raw" / "Dataset505_Plain"
    assert main(["export", "nnunet", str(mixed_dataset), "--out", str(out), "--fill", "none", "--quiet"]) == 0
    assert main(["expand", str(mixed_dataset), "--out", str(tmp_path / "plain"), "--fill", "none", "--no-preview",
                 "--quiet"]) == 0
    assert main(["expand", str(mixed_dataset), "--out", str(tmp_path / "filled"), "--no-preview", "--quiet"]) == 0
    plain = read_image(tmp_path / "plain" / "synth_002_partial.nii.gz").array
    filled = read_image(tmp_path / "filled" / "synth_002_partial.nii.gz").array
    assert np.count_nonzero(filled == 1) > np.count_nonzero(plain == 1)  # the fill labels more of the object
    np.testing.assert_array_equal(read_image(out / "labelsTr" / "synth_002.nii.gz").array, plain)
    assert json.loads((out / "dataset.json").read_text())["paseg"]["expansion"]["fill"] == "none"
    capsys.readouterr()
    for extra in (["--run", str(mixed_dataset)], ["--labels", "predictions"]):
        code = main(["export", "nnunet", str(mixed_dataset), "--out", str(tmp_path / "raw" / "Dataset506_X"),
                     "--fill", "none", "--quiet", *extra])
        assert code == 1 and "--fill" in cli_error(capsys.readouterr(), "export")
