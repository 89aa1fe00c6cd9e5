"""Stage-one training: config, data preparation, sampler, selection score, smoke run, resume, checkpoints, CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from PASegLib.cli.main import main
from PASegLib.data.prepared import PreparedCase, split_cases
from PASegLib.data.sampler import PatchSampler
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.resample import normalize_intensities, resample_to_shape, resampled_geometry
from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.stopping import command_started_at
from PASegLib.synthetic.config import SyntheticConfig
from PASegLib.synthetic.generator import write_synthetic_dataset
from PASegLib.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from PASegLib.training.config import NETWORK_NAMES, TrainConfig, load_config
from PASegLib.training.engine import EXIT_STOPPED, STOP_FILE
from PASegLib.training.launch import train_from_dataset
from PASegLib.training.selection import label_free_score

TINY = dict(patch_size=(32, 32, 16), crf_downsample_to=None, validate_every=1, checkpoint_every=1,
            deterministic=True, num_threads=1)


def _events(capture: str):
    return [e for e in (parse_progress_line(line) for line in capture.splitlines()) if e is not None]


# -- configuration -----------------------------------------------------------------------------------------
def test_config_round_trip_and_errors(tmp_path):
    config = TrainConfig(epochs=5, patch_size=(64, 64, 32), target_spacing_mm=(1, 1, 2))
    path = config.save(tmp_path / "config.json")
    assert load_config(path) == config
    assert json.loads(path.read_text())["patch_size"] == [64, 64, 32]
    with pytest.raises(ValueError, match="unknown training setting.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="patch_size"):
        TrainConfig(patch_size=(32, 32))
    with pytest.raises(ValueError, match="network must be one of"):
        TrainConfig(network="resnet")
    with pytest.raises(ValueError, match="two different architectures"):
        TrainConfig(stage=2, network="unet3d", aux_network="unet3d")
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="gpu")
    with pytest.raises(ValueError, match="epsilon"):
        TrainConfig(expansion={"epsilon": 2.0})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_config(tmp_path / "bad.json")


def test_network_names_match_registry():
    from PASegLib.networks import NETWORKS

    assert sorted(NETWORK_NAMES) == sorted(NETWORKS.names())


# -- preprocessing -------------------------------------------------------------------------------------------
def test_resampled_geometry_keeps_the_extent(oblique_geometry):
    grid = resampled_geometry(oblique_geometry, (1.6, 1.8, 2.5))
    assert grid.shape == (20, 18, 20)
    # the voxel-edge corner (-0.5, -0.5, -0.5) maps to the same world point in both grids
    np.testing.assert_allclose(grid.index_to_world([-0.5] * 3), oblique_geometry.index_to_world([-0.5] * 3), atol=1e-9)
    far = np.asarray(grid.shape) - 0.5
    np.testing.assert_allclose(grid.index_to_world(far),
                               oblique_geometry.index_to_world(np.asarray(oblique_geometry.shape) - 0.5), atol=1e-9)
    assert resampled_geometry(oblique_geometry, None) is oblique_geometry


def test_resample_and_normalize():
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 4, 4))
    down = resample_to_shape(ramp, (4, 4, 4), order=1)
    np.testing.assert_allclose(down[:, 0, 0], [0.5, 2.5, 4.5, 6.5], atol=1e-5)  # block centres
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[2:] = 2
    up = resample_to_shape(labels, (8, 8, 8), order=0)
    assert up.dtype == np.uint8 and set(np.unique(up)) == {0, 2} and (up[4:] == 2).all() and (up[:4] == 0).all()
    image = np.array([1.0, 2.0, 3.0, 100.0], np.float32).reshape(4, 1, 1)
    valid = np.array([True, True, True, False]).reshape(4, 1, 1)
    out, mean, std = normalize_intensities(image, valid)
    assert mean == pytest.approx(2.0) and std == pytest.approx(np.sqrt(2 / 3))
    np.testing.assert_allclose(out.ravel(), [-np.sqrt(1.5), 0, np.sqrt(1.5), 0], atol=1e-6)
    with pytest.raises(ValueError, match="constant"):
        normalize_intensities(np.ones((3, 3, 3)))


# -- data ----------------------------------------------------------------------------------------------------
def test_split_is_deterministic():
    ids = [f"c{i}" for i in range(10)]
    a, b = split_cases(ids, validation_fraction=0.2, seed=1), split_cases(ids[::-1], validation_fraction=0.2, seed=1)
    assert a == b and len(a[1]) == 2 and sorted(a[0] + a[1]) == sorted(ids)
    assert split_cases(["x"], validation_fraction=0.5, seed=0) == (["x"], [])
    assert len(split_cases(["x", "y"], validation_fraction=0.01, seed=0)[1]) == 1


def _prepared(shape=(20, 20, 8)) -> PreparedCase:
    geo = ImageGeometry(shape)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    partial = np.full(shape, 2, np.uint8)
    clicks = [np.array([[10, 10, 4]] + [[5, 10, 4]] * 6, float)]
    return PreparedCase("c", image, partial, np.ones(shape, bool), clicks,
                        [(np.array([8, 8, 3]), np.array([12, 12, 5]))], None, geo, geo)


def test_patch_sampler_pads_and_biases_to_objects():
    case = _prepared()
    sampler = PatchSampler([case], TrainConfig(patch_size=(8, 8, 12), foreground_crop_probability=1.0, flip_axes=()))
    rng = np.random.default_rng(0)
    for _ in range(20):
        patch = sampler.sample(0, rng)
        assert patch["image"].shape == (1, 8, 8, 12)
        valid = patch["valid"][0] > 0
        assert valid.sum() == 8 * 8 * 8  # K = 8 < 12: two padded slices on each side are invalid/unlabeled
        assert (patch["partial"][0][~valid] == 2).all()
        # the crop contains a voxel of the object's box: its values come from the box region
        coords = np.unravel_index(patch["image"][0][valid].astype(int), case.image.shape)
        inside = [(lo <= c) & (c <= hi) for c, lo, hi in zip(coords, *case.boxes[0])]
        assert np.any(inside[0] & inside[1] & inside[2])


def test_label_free_score_hand_computed():
    partial = np.full((6, 6, 6), 2, np.uint8)
    partial[0] = 0  # 36 background voxels
    partial[2:4, 2:4, 2:4] = 1  # 8 seed voxels
    pred = np.zeros((6, 6, 6), bool)
    pred[2:4, 2:4, 2] = True  # 4 TP, 4 FN
    pred[0, 0, :2] = True  # 2 FP
    clicks = [np.array([[2, 2, 2], [0, 0, 0], [0, 5, 5], [5, 0, 0], [5, 5, 5], [0, 3, 3], [3, 0, 3]], float)]
    result = label_free_score(pred, partial, clicks)
    assert result["partial_dice"] == pytest.approx(8 / (8 + 2 + 4))
    assert result["foreground_clicks"] == 1.0
    assert result["background_clicks"] == pytest.approx(5 / 6)  # (0, 0, 0) is predicted foreground
    assert result["score"] == pytest.approx((8 / 14 + 1 + 5 / 6) / 3)
    with pytest.raises(ValueError, match="shape"):
        label_free_score(pred[:5], partial, clicks)


# -- checkpoints ---------------------------------------------------------------------------------------------
def test_checkpoint_errors(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", {"kind": "stage1", "networks": {"primary": {"name": "unet3d",
                                                                                       "state_dict": {}}}})
    assert load_checkpoint(path, expected_networks={"primary": "unet3d"})["kind"] == "stage1"
    with pytest.raises(CheckpointError, match="made for network 'unet3d'.*not 'unet2d5'"):
        load_checkpoint(path, expected_networks={"primary": "unet2d5"})
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a PASeg checkpoint"):
        load_checkpoint(foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "paseg-checkpoint", "obj": Path("x")}, unsafe)  # arbitrary objects are refused
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(unsafe)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


# -- training ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_training_reduces_the_loss(tiny_dataset, tmp_path, capsys):
    config = TrainConfig(epochs=6, iterations_per_epoch=6, rampup_epochs=0, foreground_crop_probability=1.0,
                         **TINY)
    assert train_from_dataset(tiny_dataset, tmp_path / "run", config) == 0
    events = _events(capsys.readouterr().out)
    per_epoch = {}
    for e in events:
        if e["event"] == "iteration":
            per_epoch.setdefault(e["epoch"], []).append(e["losses"]["loss"])
    first, last = np.mean(per_epoch[1]), np.mean(per_epoch[6])
    assert last < 0.8 * first, (first, last)
    assert [e["event"] for e in events].count("validation") == 6
    run = tmp_path / "run"
    for name in ("config.json", "split.json", "history.json", "loss_curves.png", "model.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    model = json.loads((run / "model.json").read_text())
    # default selection "last": best.pt holds the last epoch, no score; the label-free criteria are logged (the
    # whole-case held-out loss only when it selects: seconds per case on a CPU)
    assert model["network"] == "unet2d5" and model["best_score"] is None and model["best_epoch"] == 6
    validations = [e for e in events if e["event"] == "validation"]
    for e in validations:
        assert 0 <= e["score"] <= 1 and 0 <= e["flip_agreement"] <= 1 and "heldout_loss" not in e
        assert 0 <= e["partial_dice"] <= 1  # the pseudo_label_dice criterion
        assert 0 <= e["dice"] <= 1 and 0 <= e["precision"] <= 1 and 0 <= e["recall"] <= 1 and e["volume_ratio"] >= 0
        assert not e["best"]
    elapsed = [e["elapsed_s"] for e in events if e["event"] == "validation"]
    assert 0 < elapsed[0] and elapsed == sorted(elapsed) and elapsed[-1] <= model["train_seconds"]
    history = json.loads((run / "history.json").read_text())["events"]
    assert sum(e["event"] == "iteration" for e in history) == 36
    assert load_checkpoint(run / "checkpoints" / "best.pt")["trainer"]["epoch"] == model["best_epoch"]


@pytest.mark.slow
def test_resume_after_stop_equals_uninterrupted(tiny_dataset, tmp_path, capsys):
    config = TrainConfig(epochs=2, iterations_per_epoch=3, network="unet3d", **TINY)
    assert train_from_dataset(tiny_dataset, tmp_path / "full", config) == 0

    def stop_after_four(trainer):
        if trainer.global_step == 4:
            (trainer.run_dir / STOP_FILE).touch()

    assert train_from_dataset(tiny_dataset, tmp_path / "cut", config, on_iteration=stop_after_four) == EXIT_STOPPED
    stopped = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["trainer"]
    assert (stopped["epoch"], stopped["position"], stopped["global_step"]) == (1, 1, 4)
    assert not (tmp_path / "cut" / STOP_FILE).exists()
    started = time.monotonic()
    assert train_from_dataset(tiny_dataset, tmp_path / "cut", None, resume=True) == 0
    resumed_wall = time.monotonic() - started
    # training time adds up over the two sessions: the stopped part plus at most the resumed session's wall time
    total = json.loads((tmp_path / "cut" / "model.json").read_text())["train_seconds"]
    assert 0 < stopped["train_seconds"] < total <= stopped["train_seconds"] + resumed_wall
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    for key, value in a["networks"]["primary"]["state_dict"].items():
        assert torch.equal(value, b["networks"]["primary"]["state_dict"][key]), key
    losses = [[e["losses"] for e in json.loads(x["trainer"]["history"]) if e["event"] == "iteration"] for x in (a, b)]
    assert losses[0] == losses[1]
    # a stop at the epoch boundary: the next epoch's order and first batch were drawn ahead (and are drawn again)

    def stop_after_three(trainer):
        if trainer.global_step == 3:
            (trainer.run_dir / STOP_FILE).touch()

    edge = tmp_path / "edge"
    assert train_from_dataset(tiny_dataset, edge, config, on_iteration=stop_after_three) == EXIT_STOPPED
    stopped = load_checkpoint(edge / "checkpoints" / "last.pt")["trainer"]
    assert (stopped["epoch"], stopped["position"], stopped["global_step"]) == (1, 0, 3)
    assert train_from_dataset(tiny_dataset, edge, None, resume=True) == 0
    c = load_checkpoint(edge / "checkpoints" / "last.pt")
    assert all(torch.equal(v, c["networks"]["primary"]["state_dict"][k])
               for k, v in a["networks"]["primary"]["state_dict"].items())
    assert [e["losses"] for e in json.loads(c["trainer"]["history"]) if e["event"] == "iteration"] == losses[0]
    capsys.readouterr()


def test_heldout_loss_only_when_it_selects_and_on_the_training_device(tiny_dataset, tmp_path):
    from PASegLib.data.dataset import list_cases
    from PASegLib.data.prepare import prepare_cases
    from PASegLib.training.objective import Stage1Objective
    from PASegLib.training.stage1 import Stage1Trainer

    config = TrainConfig(epochs=1, iterations_per_epoch=1, network="unet3d", **TINY)
    cases = prepare_cases(list_cases(tiny_dataset)[:2], config, cache_dir=tmp_path / "cache", workers=1)
    rows = {}
    for selection in ("last", "click_score", "heldout_loss"):
        trainer = Stage1Trainer(config.replace(selection=selection), tmp_path / selection, cases[:1], cases[1:],
                                device=torch.device("cpu"), stream=io.StringIO())
        rows[selection] = trainer.validate()
    asked = Stage1Trainer(config.replace(validation_heldout_loss=True), tmp_path / "asked", cases[:1], cases[1:],
                          device=torch.device("cpu"), stream=io.StringIO()).validate()
    assert "heldout_loss" not in rows["last"] and "heldout_loss" not in rows["click_score"]
    assert asked == rows["heldout_loss"]  # asked for without selecting by it (the selection benchmark)
    assert {k: v for k, v in rows["heldout_loss"].items() if k != "heldout_loss"} == rows["last"]
    # the held-out loss is the objective of the predicted probabilities, on the device of a tensor (or the one
    # asked for) as on the host
    objective = Stage1Objective(config)
    prob = trainer.predict_probability(trainer.selection_networks(), cases[1].image)
    host = objective.of_probability(cases[1], prob)
    assert np.isfinite(host["loss"]) and host["loss"] == rows["heldout_loss"]["heldout_loss"]
    assert objective.of_probability(cases[1], torch.from_numpy(prob)) == host
    assert objective.of_probability(cases[1], prob, device=torch.device("cpu")) == host


def test_train_errors_leave_nothing(tiny_dataset, tmp_path, capsys):
    # no annotated case
    empty = tmp_path / "noclicks"
    write_synthetic_dataset(empty, n_cases=1, config=SyntheticConfig(shape=(64, 64, 24), radius_mm=(6.0, 8.0)), seed=1)
    assert main(["train", str(empty), "--out", str(tmp_path / "r1"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "no case has clicks" in captured.err
    assert "no case has clicks" in _events(captured.out)[-1]["message"]  # the GUI sees it as an error event
    assert not (tmp_path / "r1").exists()
    # resume of nothing, bad config, CUDA without a GPU
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r2"), "--resume", "--quiet"]) == 1
    assert "no run to resume" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 0}))
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r3"), "--config", str(tmp_path / "c.json")]) == 1
    assert "epochs must be an integer >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r4"), "--device", "cuda"]) == 1
        assert "--device cpu" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("r2", "r3", "r4"))


@pytest.mark.slow
def test_cli_stop_file_exit_code_and_resume(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    (tmp_path / "c.json").write_text(json.dumps({**TINY, "epochs": 3, "iterations_per_epoch": 4,
                                                 "network": "unet2d5"}))
    cmd = [sys.executable, "-m", "PASegLib", "train", str(tiny_dataset), "--out", str(run), "--quiet",
           "--config", str(tmp_path / "c.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        event = parse_progress_line(line)
        if event is not None:
            seen.append(event["event"])
            if event["event"] == "iteration" and event["iteration"] == 2:
                (run / STOP_FILE).touch()
    assert proc.wait(timeout=120) == EXIT_STOPPED, proc.stderr.read()
    assert seen[-1] == "stopped" and "done" not in seen
    assert not (run / "model.json").exists()
    # an existing run is never overwritten silently
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "--resume" in done.stderr
    done = subprocess.run(cmd[:-2] + ["--resume", "--epochs", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = _events(done.stdout)
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed"] and start["iteration"] >= 2 and events[-1]["event"] == "done"
    assert all(e["cached"] for e in events if e["event"] == "prepare")  # the prepared data was reused
    assert [e["iteration"] for e in events if e["event"] == "iteration"][0] == start["iteration"] + 1
    assert json.loads((run / "model.json").read_text())["epochs"] == 3


class _StopOn(io.StringIO):
    """A progress stream that creates ``run/STOP`` when it sees the ``n``-th event ``kind`` (deterministic: the
    trainer writes its events synchronously)."""

    def __init__(self, run: Path, kind: str, n: int = 1, **match):
        super().__init__()
        self.run, self.kind, self.n, self.match, self.seen = run, kind, n, match, 0

    def write(self, text):
        event = parse_progress_line(text)
        if event is not None and event["event"] == self.kind and all(event.get(k) == v for k, v in self.match.items()):
            self.seen += 1
            if self.seen == self.n:
                (self.run / STOP_FILE).touch()
        return super().write(text)


@pytest.mark.slow
def test_stop_during_validation_resumes_bit_identical(tiny_dataset, tmp_path):
    config = TrainConfig(epochs=2, iterations_per_epoch=2, network="unet3d", selection="click_score",
                         validation_fraction=0.5, **TINY)
    full = io.StringIO()
    assert train_from_dataset(tiny_dataset, tmp_path / "full", config, stream=full) == 0
    cut = tmp_path / "cut"
    stream = _StopOn(cut, "validation_case", epoch=1)  # after the first of the two validation cases of epoch 1
    assert train_from_dataset(tiny_dataset, cut, config, stream=stream) == EXIT_STOPPED
    events = _events(stream.getvalue())
    stopped = events[-1]
    assert stopped["event"] == "stopped" and stopped["phase"] == "validating" and stopped["epoch"] == 1
    assert not any(e["event"] == "validation" for e in events)  # the round was abandoned
    saved = load_checkpoint(cut / "checkpoints" / "last.pt")["trainer"]
    assert (saved["epoch"], saved["position"], saved["global_step"], saved["epoch_end_pending"]) == (1, 0, 2, True)
    assert not (cut / STOP_FILE).exists()
    resumed = io.StringIO()
    assert train_from_dataset(tiny_dataset, cut, None, resume=True, stream=resumed) == 0
    again = _events(resumed.getvalue())
    assert [e["epoch"] for e in again if e["event"] == "validation"] == [1, 2]  # epoch 1's round is redone
    want = [e for e in _events(full.getvalue()) if e["event"] in ("validation", "iteration")]
    got = [e for e in events + again if e["event"] in ("validation", "iteration")]
    strip = ("elapsed_s", "eta_s", "data_wait")
    assert [{k: v for k, v in e.items() if k not in strip} for e in got] == \
        [{k: v for k, v in e.items() if k not in strip} for e in want]
    for name in ("last", "best"):
        a = load_checkpoint(tmp_path / "full" / "checkpoints" / f"{name}.pt")["networks"]["primary"]["state_dict"]
        b = load_checkpoint(cut / "checkpoints" / f"{name}.pt")["networks"]["primary"]["state_dict"]
        assert all(torch.equal(v, b[k]) for k, v in a.items()), name


@pytest.mark.slow
def test_stop_during_preparation_saves_nothing_and_restarts(tiny_dataset, tmp_path):
    config = TrainConfig(epochs=1, iterations_per_epoch=1, network="unet3d", **TINY)
    run = tmp_path / "run"
    run.mkdir()
    (run / STOP_FILE).touch()  # stale: left by an earlier session (older than this process), removed at start
    os.utime(run / STOP_FILE, (command_started_at() - 60,) * 2)
    stream = _StopOn(run, "prepare", index=2)
    assert train_from_dataset(tiny_dataset, run, config, stream=stream) == EXIT_STOPPED
    events = _events(stream.getvalue())
    assert [e["event"] for e in events] == ["phase", "prepare", "prepare", "stopped"]
    assert events[-1]["phase"] == "preparing" and events[-1]["checkpoint"] is None
    assert "nothing to save" in events[-1]["message"]
    assert not (run / "checkpoints").exists() and not (run / STOP_FILE).exists()
    assert len(list((run / "cache").glob("*.npz"))) == 2 and not list((run / "cache").glob(".*"))  # no partial entry
    # the same command starts the run (the two prepared cases come from the cache) …
    again = io.StringIO()
    assert train_from_dataset(tiny_dataset, run, config, stream=again) == 0
    cached = [e["cached"] for e in _events(again.getvalue()) if e["event"] == "prepare"]
    assert cached == [True, True, False, False]
    # … and so does --resume after a stop before the first checkpoint
    other = tmp_path / "other"
    assert train_from_dataset(tiny_dataset, other, config, stream=_StopOn(other, "prepare")) == EXIT_STOPPED
    assert train_from_dataset(tiny_dataset, other, None, resume=True, stream=io.StringIO()) == 0
    assert (other / "model.json").is_file()


@pytest.mark.slow
def test_scm_stop_during_validation_resumes_bit_identical(tiny_dataset, tmp_path):
    tiny = {**TINY, "iterations_per_epoch": 1}
    runs = []
    for net in ("unet3d", "attention_unet"):
        assert train_from_dataset(tiny_dataset, tmp_path / net, TrainConfig(epochs=1, network=net, **tiny),
                                  stream=io.StringIO()) == 0
        runs.append(tmp_path / net)
    config = TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", epochs=2, refresh_every=1,
                         selection="click_score", lr=1e-3, **tiny)
    full = io.StringIO()
    assert train_from_dataset(tiny_dataset, tmp_path / "full", config, init_runs=runs, stream=full) == 0
    cut = tmp_path / "cut"
    stream = _StopOn(cut, "phase", phase="validating", epoch=1)
    assert train_from_dataset(tiny_dataset, cut, config, init_runs=runs, stream=stream) == EXIT_STOPPED
    assert _events(stream.getvalue())[-1]["phase"] == "validating"
    resumed = io.StringIO()
    assert train_from_dataset(tiny_dataset, cut, None, resume=True, init_runs=runs, stream=resumed) == 0
    keep = ("validation", "iteration", "refresh")
    want = [e for e in _events(full.getvalue()) if e["event"] in keep]
    got = [e for e in _events(stream.getvalue()) + _events(resumed.getvalue()) if e["event"] in keep]
    strip = ("elapsed_s", "eta_s", "data_wait")
    assert [{k: v for k, v in e.items() if k not in strip} for e in got] == \
        [{k: v for k, v in e.items() if k not in strip} for e in want]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(cut / "checkpoints" / "last.pt")
    for role in ("primary", "auxiliary"):
        for key, value in a["networks"][role]["state_dict"].items():
            assert torch.equal(value, b["networks"][role]["state_dict"][key]), (role, key)
        for key, value in a["trainer"]["extra"]["frozen"][role].items():
            assert torch.equal(value, b["trainer"]["extra"]["frozen"][role][key]), (role, key)
