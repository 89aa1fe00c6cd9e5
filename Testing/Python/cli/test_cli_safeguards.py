"""Safeguards of the ``paseg`` commands that are not refusals of a broken file: existing clicks are
not replaced without ``--overwrite``, clicks that the label contradicts are warned about, a bug says it is an
internal error (traceback kept in a file, printed with ``--debug``), and metrics refuse NaN masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_bad_inputs import GEOMETRY, _label, _markups, check_failure, hashes, make_base

from PASegLib.cli.main import main
from PASegLib.jobs.events import parse_progress_line


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(autouse=True)
def _logs_in_tmp_path(tmp_path, monkeypatch):
    """Traceback files of internal errors go to the test's folder, not the system's temporary one."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))


# -- what is not an error: warnings and existing clicks -----------------------------------------------------------
def test_simulate_clicks_keeps_existing_clicks(base, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    before = hashes(data)
    code = main(["simulate-clicks", str(data), "--quiet", "--seed", "3"])
    captured = capsys.readouterr()
    check_failure(code, captured.out, captured.err, "simulate-clicks", "a.mrk.json", "--overwrite")
    assert hashes(data) == before
    assert main(["simulate-clicks", str(data), "--quiet", "--seed", "3", "--overwrite"]) == 0
    assert hashes(data) != before
    out = tmp_path / "clicks"  # the same rule in another folder
    assert main(["simulate-clicks", str(data), "--out", str(out), "--quiet"]) == 0
    assert main(["simulate-clicks", str(data), "--out", str(out), "--quiet"]) == 1
    # in the dataset, a hand-made <case>_7points file would be overridden by the new markups: refused too
    assert main(["convert-clicks", str(data), "--to", "7points", "--out", str(tmp_path / "seven"), "--quiet"]) == 0
    (data / "a.mrk.json").unlink()
    shutil.copy(tmp_path / "seven" / "a_7points.nii.gz", data)
    capsys.readouterr()
    code = main(["simulate-clicks", str(data), "--quiet"])
    captured = capsys.readouterr()
    check_failure(code, captured.out, captured.err, "simulate-clicks", "a_7points.nii.gz", "--overwrite")
    assert not (data / "a.mrk.json").exists()


def test_clicks_that_contradict_the_label_are_warned_about(base, tmp_path, capsys):
    from PASegLib.data.dataset import list_cases, load_case

    data = tmp_path / "data"
    shutil.copytree(base / "data", data)

    def move(doc):  # F to a background voxel; I onto the object (both still valid clicks geometrically)
        points = {p["label"]: p for p in doc["markups"][0]["controlPoints"]}
        f = GEOMETRY.index_to_world([4, 3, 4])
        i = GEOMETRY.index_to_world([6, 6, 3])
        points["F"]["position"], points["I"]["position"] = list(f), list(i)

    _markups(data / "a.mrk.json", move)
    seen = []
    case = load_case(list_cases(data)[0], warn=lambda case_id, message: seen.append((case_id, message)))
    assert seen == [("a", w) for w in case.warnings] and len(seen) == 2
    assert "object 'tumor 1': the foreground click F at voxel (4, 3, 4) is outside the labeled object" in seen[0][1]
    assert "the background click I at voxel (6, 6, 3) is on the labeled object (label 1 there)" in seen[1][1]
    assert load_case(list_cases(data)[0], load_label=False, warn=None).warnings == []  # no label: nothing to check
    for argv in (["expand", str(data), "--out", str(tmp_path / "e"), "--quiet", "--no-preview"],
                 ["convert-clicks", str(data), "--to", "7points", "--out", str(tmp_path / "c"), "--quiet"]):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert err.count("warning: a: object 'tumor 1': the foreground click F") == 1, err
        assert err.count("warning: a: object 'tumor 1': the background click I") == 1, err


# -- internal errors -------------------------------------------------------------------------------------------
def test_a_bug_says_internal_error_and_keeps_the_traceback(base, tmp_path, capsys, monkeypatch):
    from PASegLib.cli import expand

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(expand, "run", broken)
    monkeypatch.delenv("PASEG_DEBUG", raising=False)
    argv = ["expand", str(base / "data"), "--out", str(tmp_path / "o")]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "paseg expand: error: internal error (a bug in PASeg, not a problem with your input): TypeError: " \
           "unsupported operand" in captured.err
    event = parse_progress_line(captured.out.strip().splitlines()[-1])
    assert event["internal"] is True and Path(event["log"]).parent == tmp_path
    assert "raise TypeError" in Path(event["log"]).read_text()
    monkeypatch.setenv("PASEG_DEBUG", "1")
    assert main(argv) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.delenv("PASEG_DEBUG")
    assert main(["--debug", *argv]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_metrics_refuse_nan_masks():
    """NaN != 0 would count as foreground: a mask holding NaN is refused, not scored."""
    from PASegLib.evaluation.metrics import compute_metrics

    target = _label()
    pred = target.astype(np.float32)
    pred[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"pred holds 1 NaN/inf voxels"):
        compute_metrics(pred, target, spacing=GEOMETRY.spacing)
    assert compute_metrics(target.astype(np.float32), target, spacing=GEOMETRY.spacing)["dice"] == 1.0


def test_paseg_run_preset_auto_follows_the_device(monkeypatch, tmp_path):
    """``--preset auto``: the paper preset where ``--device`` resolves to a GPU, the CPU preset otherwise; stored
    resolved (the pipeline's options)."""
    import torch

    import PASegLib.pipeline.run as pipeline_run

    seen = []
    monkeypatch.setattr(pipeline_run, "run_pipeline", lambda dataset, out, options, stream=None: seen.append(options)
                        or 0)
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out"), "--preset", "auto", "--device", "cpu",
                 "--quiet"]) == 0
    assert seen[-1].preset == "cpu"
    import PASegLib.training.runtime as runtime

    monkeypatch.setattr(runtime, "resolve_device", lambda name="auto": torch.device("cuda"))  # a GPU machine
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out"), "--preset", "auto", "--device", "cuda",
                 "--quiet"]) == 0
    assert seen[-1].preset == "paper"
