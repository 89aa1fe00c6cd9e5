"""The bad-input matrix: every ``paseg`` command on a catalog of broken inputs.

Each case breaks one file of a tiny valid dataset (12×12×8 voxels, one labeled case with simulated clicks):
truncated, header-only, NaN/inf and garbage images (NIfTI and MHA), 2D/4D images, broken labels and
predictions (−1, 0.5, NaN, another shape), malformed markups (``controlPoints`` null / a number / holding
non-objects, JSON nested 100,000 levels deep, not JSON) and broken training configurations. Every command
that reads the broken file must: exit 1, print one ``paseg COMMAND: error:`` line that names the file and
says what is wrong, print no traceback, end stdout with a ``PASEG {"event": "error"}`` line, leave nothing in
its output folder, and change no input (hashes before/after). The commands run in-process through
:func:`PASegLib.cli.main.main`; a few cases also run as real processes. ``train`` and ``run`` fail before any
training starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.simulation import simulate_clicks
from PASegLib.cli.errors import MAX_MESSAGE
from PASegLib.cli.main import main
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import write_image
from PASegLib.jobs.events import parse_progress_line

GEOMETRY = ImageGeometry((12, 12, 8), (1.0, 1.0, 2.0), (-3.0, 4.0, 1.5))
ROOT = Path(__file__).resolve().parents[3]


def _label() -> np.ndarray:
    grid = np.indices(GEOMETRY.shape, dtype=float)
    return ((((grid[0] - 6) / 3) ** 2 + ((grid[1] - 6) / 3) ** 2 + ((grid[2] - 4) / 1.6) ** 2) <= 1).astype(np.uint8)


@pytest.fixture(autouse=True)
def _logs_in_tmp_path(tmp_path, monkeypatch):
    """Traceback files of internal errors (if any) go to the test's folder, not the system's temporary one."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))


def make_base(root: Path) -> Path:
    """A valid dataset ``root/data``: ``a_image.nii.gz``, ``a_label.nii.gz``, ``a.mrk.json``; and a prediction
    ``root/preds/a_pred.nii.gz`` (the label itself)."""
    label = _label()
    image = (50 + 100 * label + np.random.default_rng(0).normal(0, 5, GEOMETRY.shape)).astype(np.float32)
    write_image(root / "data" / "a_image.nii.gz", image, GEOMETRY)
    write_image(root / "data" / "a_label.nii.gz", label, GEOMETRY)
    write_markups(root / "data" / "a.mrk.json", simulate_clicks(label, GEOMETRY, seed=0))
    write_image(root / "preds" / "a_pred.nii.gz", label, GEOMETRY)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def run_dir(base) -> Path:
    """A run folder as ``paseg train`` writes it (random weights), for ``paseg predict``."""
    import torch

    from PASegLib.networks import build_network
    from PASegLib.training.checkpoint import save_checkpoint
    from PASegLib.training.config import TrainConfig

    torch.manual_seed(0)
    run = base / "run"
    run.mkdir()
    config = TrainConfig(patch_size=(16, 16, 8), network="unet2d5")
    config.save(run / "config.json")
    net = build_network("unet2d5", in_channels=1, out_channels=2)
    state = {"kind": "stage1", "networks": {"primary": {"name": "unet2d5", "state_dict": net.state_dict()}},
             "config": config.to_dict()}
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    return run


# -- breaking files --------------------------------------------------------------------------------------------
def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _uncompressed(path: Path) -> Path:
    """Rewrite ``<x>.nii.gz`` as ``<x>.nii`` (same voxels); returns the new path."""
    from PASegLib.image.io import read_image

    volume = read_image(path)
    target = path.with_name(path.name[: -len(".gz")])
    write_image(target, volume.array, volume.geometry, compress=False)
    path.unlink()
    return target


def _with_values(path: Path, values: Dict[Tuple[int, int, int], float], dtype=np.float32) -> None:
    from PASegLib.image.io import read_image

    volume = read_image(path)
    array = volume.array.astype(dtype)
    for index, value in values.items():
        array[index] = value
    write_image(path, array, volume.geometry)


def _other_shape(path: Path, shape: Tuple[int, int, int]) -> None:
    write_image(path, np.zeros(shape, np.uint8), GEOMETRY.with_shape(shape))


def _sitk_image(path: Path, size: Tuple[int, ...]) -> None:
    import SimpleITK as sitk

    array = np.random.default_rng(1).normal(size=size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array, isVector=False)
    path.unlink()
    sitk.WriteImage(image, str(path))


def _markups(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _control_points(value) -> Callable[[dict], None]:
    return lambda doc: doc["markups"][0].__setitem__("controlPoints", value)


def _as_mha(data: Path, *, compress: bool) -> Path:
    from PASegLib.image.io import read_image

    volume = read_image(data / "a_image.nii.gz")
    (data / "a_image.nii.gz").unlink()
    write_image(data / "a_image.mha", volume.array, volume.geometry, compress=compress)
    return data / "a_image.mha"


IMAGE_COMMANDS = ("expand", "simulate-clicks", "convert-clicks", "train", "predict", "run")
LABEL_COMMANDS = ("expand", "simulate-clicks", "convert-clicks", "evaluate", "train", "run")
MARKUPS_COMMANDS = ("expand", "convert-clicks", "train", "predict", "run")


@dataclass(frozen=True)
class Bad:
    """A broken input: ``apply(root)`` breaks the copy of the base folders under ``root`` (``data/``, ``preds/``);
    the message must contain ``named`` (the broken file's name) and match ``what`` (what is wrong)."""

    name: str
    commands: Tuple[str, ...]
    named: str
    what: str
    apply: Callable[[Path], None]


CATALOG: List[Bad] = [
    # images
    Bad("nii.gz cut in half", IMAGE_COMMANDS, "a_image.nii.gz", "truncated",
        lambda r: _cut(r / "data/a_image.nii.gz", 0.5)),
    Bad("nii voxel data cut short", IMAGE_COMMANDS, "a_image.nii", r"truncated: it holds \d+ of",
        lambda r: _cut(_uncompressed(r / "data/a_image.nii.gz"), 0.6)),
    Bad("header-only nii", IMAGE_COMMANDS, "a_image.nii", "truncated: it holds only its header",
        lambda r: _cut(_uncompressed(r / "data/a_image.nii.gz"), 352 / 5000)),
    Bad("NaN voxel in nii.gz", IMAGE_COMMANDS, "a_image.nii.gz", r"holds 2 NaN/inf voxels",
        lambda r: _with_values(r / "data/a_image.nii.gz", {(1, 2, 3): np.nan, (0, 0, 0): np.inf})),
    Bad("truncated mha", IMAGE_COMMANDS, "a_image.mha", "truncated: it holds",
        lambda r: _cut(_as_mha(r / "data", compress=False), 0.5)),
    Bad("truncated compressed mha", ("expand", "train"), "a_image.mha", "truncated: it holds",
        lambda r: _cut(_as_mha(r / "data", compress=True), 0.5)),
    Bad("garbage image", IMAGE_COMMANDS, "a_image.nii.gz", "not an image",
        lambda r: (r / "data/a_image.nii.gz").write_bytes(b"\x00garbage" * 64)),
    Bad("2D image", IMAGE_COMMANDS, "a_image.nii.gz", "is 2D",
        lambda r: _sitk_image(r / "data/a_image.nii.gz", (12, 12))),
    Bad("4D image", IMAGE_COMMANDS, "a_image.nii.gz", "is 4D",
        lambda r: _sitk_image(r / "data/a_image.nii.gz", (12, 12, 8, 2))),
    # labels
    Bad("label -1", LABEL_COMMANDS, "a_label.nii.gz", r"non-negative integers.*holds -1",
        lambda r: _with_values(r / "data/a_label.nii.gz", {(0, 0, 0): -1}, np.int16)),
    Bad("label 0.5", LABEL_COMMANDS, "a_label.nii.gz", r"non-negative integers.*holds 0\.5",
        lambda r: _with_values(r / "data/a_label.nii.gz", {(0, 0, 0): 0.5})),
    Bad("label NaN", LABEL_COMMANDS, "a_label.nii.gz", r"non-negative integers.*holds nan",
        lambda r: _with_values(r / "data/a_label.nii.gz", {(0, 0, 0): np.nan})),
    Bad("label of another shape", LABEL_COMMANDS, "a_label.nii.gz", "geometry differs",
        lambda r: _other_shape(r / "data/a_label.nii.gz", (12, 12, 6))),
    Bad("truncated label", LABEL_COMMANDS, "a_label.nii.gz", "truncated",
        lambda r: _cut(r / "data/a_label.nii.gz", 0.7)),
    # predictions
    Bad("prediction -1", ("evaluate",), "a_pred.nii.gz", r"prediction map must hold non-negative integers",
        lambda r: _with_values(r / "preds/a_pred.nii.gz", {(0, 0, 0): -1}, np.int16)),
    Bad("prediction 0.5", ("evaluate",), "a_pred.nii.gz", r"prediction map must hold non-negative integers",
        lambda r: _with_values(r / "preds/a_pred.nii.gz", {(0, 0, 0): 0.5})),
    Bad("prediction NaN", ("evaluate",), "a_pred.nii.gz", r"prediction map must hold non-negative integers",
        lambda r: _with_values(r / "preds/a_pred.nii.gz", {(0, 0, 0): np.nan})),
    Bad("prediction of another shape", ("evaluate",), "a_pred.nii.gz", "geometry differs",
        lambda r: _other_shape(r / "preds/a_pred.nii.gz", (10, 12, 8))),
    Bad("truncated prediction", ("evaluate",), "a_pred.nii.gz", "truncated",
        lambda r: _cut(r / "preds/a_pred.nii.gz", 0.5)),
    # markups
    Bad("controlPoints null", MARKUPS_COMMANDS, "a.mrk.json", "controlPoints is null",
        lambda r: _markups(r / "data/a.mrk.json", _control_points(None))),
    Bad("controlPoints a number", MARKUPS_COMMANDS, "a.mrk.json", r"controlPoints is a number \(5\)",
        lambda r: _markups(r / "data/a.mrk.json", _control_points(5))),
    Bad("controlPoints of non-objects", MARKUPS_COMMANDS, "a.mrk.json", "control point #1 is a string",
        lambda r: _markups(r / "data/a.mrk.json", _control_points(["x", 1]))),
    Bad("markup not an object", ("expand", "train"), "a.mrk.json", r"markup #1 is .*not .*object",
        lambda r: _markups(r / "data/a.mrk.json", lambda doc: doc.__setitem__("markups", [3]))),
    Bad("markups nested 100000 deep", MARKUPS_COMMANDS, "a.mrk.json", "nested too deeply",
        lambda r: (r / "data/a.mrk.json").write_text("[" * 100_000 + "]" * 100_000)),
    Bad("markups not JSON", ("expand", "predict"), "a.mrk.json", "not valid JSON",
        lambda r: (r / "data/a.mrk.json").write_text('{"markups": [')),
]

def _matrix():
    for bad in CATALOG:
        for command in bad.commands:
            yield pytest.param(bad, command, id=f"{command}-{bad.name.replace(' ', '_')}")


def _argv(command: str, root: Path, out: Path, run_dir: Path) -> List[str]:
    data = str(root / "data")
    return {
        "expand": ["expand", data, "--out", str(out), "--quiet", "--no-preview"],
        "simulate-clicks": ["simulate-clicks", data, "--out", str(out), "--quiet"],
        "convert-clicks": ["convert-clicks", data, "--to", "7points", "--out", str(out), "--quiet"],
        "evaluate": ["evaluate", str(root / "preds"), data, "--quiet"],
        "train": ["train", data, "--out", str(out), "--quiet", "--device", "cpu", "--epochs", "1",
                  "--patch-size", "16", "16", "8"],
        "predict": ["predict", str(run_dir), data, "--out", str(out), "--quiet", "--device", "cpu"],
        "run": ["run", data, "--out", str(out), "--quiet", "--device", "cpu", "--set", "epochs=1",
                "--set", "iterations_per_epoch=1", "--set", "patch_size=[16, 16, 16]"],  # a regression stays short
    }[command]


def hashes(*folders: Path) -> Dict[str, str]:
    """``relative path → sha256`` of every file under ``folders`` (new, changed and removed files all show)."""
    return {f"{folder.name}/{p.relative_to(folder)}": hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def check_failure(code: int, out: str, err: str, command: str, named: str, what: str) -> str:
    """Exit 1, one error line naming ``named`` and matching ``what``, no traceback, a final error event."""
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"paseg {command}: error: ")]
    assert len(lines) == 1, err
    message = lines[0][len(f"paseg {command}: error: "):]
    assert named in message, message
    assert re.search(what, message, re.IGNORECASE), message
    event = parse_progress_line(out.strip().splitlines()[-1])
    assert event is not None and event["event"] == "error" and event["message"] == message
    assert event["command"] == command and event["internal"] is False
    return message


@pytest.mark.parametrize("bad, command", list(_matrix()))
def test_bad_input_matrix(bad, command, base, tmp_path, capsys, request):
    run_dir = request.getfixturevalue("run_dir") if command == "predict" else base / "preds"
    root = tmp_path / "in"
    for folder in ("data", "preds"):
        shutil.copytree(base / folder, root / folder)
    bad.apply(root)
    before = hashes(root / "data", root / "preds", run_dir)
    out = tmp_path / "out"
    code = main(_argv(command, root, out, run_dir))
    captured = capsys.readouterr()
    message = check_failure(code, captured.out, captured.err, command, bad.named, bad.what)
    assert message.count(bad.named) == 1, f"the file is named more than once: {message}"
    assert hashes(root / "data", root / "preds", run_dir) == before, "an input was changed"
    assert not out.exists(), f"partial output left: {sorted(p.name for p in out.rglob('*'))}"


def test_run_leaves_nothing_behind(base, tmp_path, capsys):
    root = tmp_path / "in"
    for folder in ("data", "preds"):
        shutil.copytree(base / folder, root / folder)
    _cut(root / "data/a_image.nii.gz", 0.5)
    out = tmp_path / "out"
    assert main(_argv("run", root, out, base / "preds")) == 1
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


# -- configurations, --out, usage -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, what", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (json.dumps({"flip_axes": "xyz"}), r"flip_axes must be a list of axes among 0, 1, 2.*got 'xyz'"),
    (json.dumps({"flip_axes": 5}), r"flip_axes must be a list of axes"),
    (json.dumps({"network": "x" * 5_000_000}), r"network must be one of .*\(5000000 characters\)"),
    (json.dumps({"x" * 1_000_000: 1}), r"unknown training setting"),
    (json.dumps({"device": 3}), r"device must be"),
    (json.dumps({"amp": "no"}), r"amp must be true or false"),
    (json.dumps({"expansion": {"epsilon": [1]}}), r"expansion: "),
    ('{"epochs": ', "not a readable training configuration"),
], ids=["deep", "flip_axes_string", "flip_axes_number", "huge_value", "huge_key", "device_number", "amp_string",
        "expansion_type", "not_json"])
def test_bad_training_configuration(text, what, base, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(text)
    out = tmp_path / "run"
    code = main(["train", str(base / "data"), "--out", str(out), "--config", str(config), "--quiet"])
    captured = capsys.readouterr()
    check_failure(code, captured.out, captured.err, "train", "config.json", what)
    assert len(captured.err) < MAX_MESSAGE + 100 and len(captured.out) < MAX_MESSAGE + 200
    assert not out.exists()


def test_out_is_an_existing_file(base, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("keep")
    for command in ("expand", "train", "run"):
        code = main(_argv(command, base, blocker, base / "run"))
        captured = capsys.readouterr()
        message = check_failure(code, captured.out, captured.err, command, "taken", "exists and is not a folder")
        assert "Errno" not in message
        assert blocker.read_text() == "keep"


def test_run_set_value_nested_too_deeply(base, tmp_path, capsys):
    code = main(["run", str(base / "data"), "--out", str(tmp_path / "o"), "--set", "flip_axes=" + "[" * 100_000])
    captured = capsys.readouterr()
    check_failure(code, captured.out, captured.err, "run", "flip_axes", "nested too deeply")


def test_usage_errors_exit_2(base, capsys):
    for argv in (["expand", str(base / "data")], ["train", str(base / "data"), "--out", "x", "--epochs", "many"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert "usage: paseg" in err and "Traceback" not in err


# -- the process boundary: a few real runs ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["expand", "evaluate", "train"])
def test_real_processes(command, base, tmp_path):
    root = tmp_path / "in"
    for folder in ("data", "preds"):
        shutil.copytree(base / folder, root / folder)
    named, what = {"expand": ("a.mrk.json", "controlPoints is null"),
                   "evaluate": ("a_label.nii.gz", "holds -1"), "train": ("a_image.nii.gz", "truncated")}[command]
    if command == "expand":
        _markups(root / "data/a.mrk.json", _control_points(None))
    elif command == "evaluate":
        _with_values(root / "data/a_label.nii.gz", {(0, 0, 0): -1}, np.int16)
    else:
        _cut(root / "data/a_image.nii.gz", 0.5)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "PASegLib", *_argv(command, root, out, root)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    check_failure(done.returncode, done.stdout, done.stderr, command, named, what)
    assert not out.exists()

