"""Stage two (SCM) and the end-to-end pipeline: refresh schedule, smoke runs, resume, report, faults."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import cli_error, progress_events

from PASegLib.cli.main import main
from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.stopping import EXIT_STOPPED, STOP_FILE, command_started_at
from PASegLib.pipeline.presets import is_anisotropic, preset_configs
from PASegLib.pipeline.run import PipelineOptions, run_pipeline
from PASegLib.training.checkpoint import load_checkpoint
from PASegLib.training.config import TrainConfig
from PASegLib.training.launch import train_from_dataset

TINY = dict(patch_size=(32, 32, 16), crf_downsample_to=None, validate_every=1, checkpoint_every=1,
            deterministic=True, num_threads=1, iterations_per_epoch=2)


@pytest.fixture(scope="module")
def stage1_runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    runs = []
    for net in ("unet3d", "attention_unet"):
        config = TrainConfig(epochs=1, network=net, **TINY)
        assert train_from_dataset(tiny_dataset, root / net, config, stream=io.StringIO()) == 0
        runs.append(root / net)
    return runs


def _events(text: str):
    return progress_events(text)


@pytest.mark.slow
def test_scm_refresh_schedule_and_smoke(tiny_dataset, stage1_runs, tmp_path):
    config = TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", epochs=4, refresh_every=2,
                         lr=1e-3, selection="click_score", **TINY)
    out = io.StringIO()
    assert train_from_dataset(tiny_dataset, tmp_path / "scm", config, init_runs=stage1_runs, stream=out) == 0
    events = _events(out.getvalue())
    assert [e["epoch"] for e in events if e["event"] == "refresh"] == [2, 4]
    assert all(e["source"] == "best" for e in events if e["event"] == "refresh")  # validated every epoch
    iterations = [e for e in events if e["event"] == "iteration"]
    assert len(iterations) == 8
    assert {"a_loss", "a_self", "a_kd", "b_loss", "b_self", "b_kd", "loss"} <= set(iterations[0]["losses"])
    validations = [e for e in events if e["event"] == "validation"]
    assert [e["epoch"] for e in validations] == [1, 2, 3, 4]  # the stage-one weights do not compete
    assert all(0.0 <= e["agreement"] <= 1.0 and 0.0 <= e["score"] <= 1.0 for e in validations)
    last = load_checkpoint(tmp_path / "scm" / "checkpoints" / "last.pt", expected_networks={
        "primary": "unet3d", "auxiliary": "attention_unet"})
    assert last["kind"] == "scm"
    # the frozen copies hold the best weights of the last refresh (epoch 4) and differ from stage one
    extra = last["trainer"]["extra"]
    best = extra["best_weights"]["primary"]
    for key, value in extra["frozen"]["primary"].items():
        assert torch.equal(value, best[key]), key
    start = load_checkpoint(stage1_runs[0] / "checkpoints" / "best.pt")["networks"]["primary"]["state_dict"]
    assert any(not torch.equal(start[k], v) for k, v in last["networks"]["primary"]["state_dict"].items())


@pytest.mark.slow
def test_scm_selection_last_refreshes_from_current_weights(tiny_dataset, stage1_runs, tmp_path):
    config = TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", epochs=2, refresh_every=1,
                         lr=1e-2, **TINY)
    assert config.selection == "last"
    out = io.StringIO()
    assert train_from_dataset(tiny_dataset, tmp_path / "scm", config, init_runs=stage1_runs, stream=out) == 0
    events = _events(out.getvalue())
    assert [e["epoch"] for e in events if e["event"] == "validation"] == [1, 2]  # no epoch 0 without a criterion
    assert [e["source"] for e in events if e["event"] == "refresh"] == ["current", "current"]
    model = json.loads((tmp_path / "scm" / "model.json").read_text())
    assert model["best_epoch"] == 2 and model["best_score"] is None
    best = load_checkpoint(tmp_path / "scm" / "checkpoints" / "best.pt")["networks"]["primary"]["state_dict"]
    last = load_checkpoint(tmp_path / "scm" / "checkpoints" / "last.pt")["networks"]["primary"]["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in last.items())


def test_scm_init_errors(tiny_dataset, stage1_runs, tmp_path, capsys):
    # two runs of the same network, or a run that is not a stage-1 run, are refused with a clear message
    code = main(["train", str(tiny_dataset), "--out", str(tmp_path / "s"), "--init", str(stage1_runs[0]),
                 str(stage1_runs[0]), "--quiet"])
    assert code == 1 and "two different networks" in capsys.readouterr().err
    code = main(["train", str(tiny_dataset), "--out", str(tmp_path / "s"), "--init", str(stage1_runs[0]),
                 str(tmp_path / "nothing"), "--quiet"])
    assert code == 1 and "not a training run folder" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_presets():
    assert is_anisotropic((0.8, 0.8, 2.5)) and not is_anisotropic((0.625, 0.625, 0.625))
    a, b, s = preset_configs("cpu", (0.625, 0.625, 0.625))
    assert (a.network, b.network, s.network, s.aux_network) == ("unet3d", "attention_unet", "unet3d", "attention_unet")
    assert a.target_spacing_mm == (2.0, 2.0, 2.0) and s.stage == 2 and s.lr == 1e-3  # measured on la_heart
    a, b, s = preset_configs("paper", (0.4, 0.4, 1.5))
    assert a.network == "unet2d5" and a.patch_size == (128, 128, 48) and a.epochs == 300 and s.epochs == 100
    assert a.target_spacing_mm is None and a.crf_downsample_to == (64, 64, 48) and s.refresh_every == 20
    with pytest.raises(ValueError, match="preset"):
        preset_configs("fast", (1, 1, 1))


class _Interrupt(io.StringIO):
    """A progress stream that raises KeyboardInterrupt at the first iteration after the first checkpoint
    of the second stage-1 run (an interrupted step that must resume from its checkpoint)."""

    def __init__(self):
        super().__init__()
        self.step, self.armed = None, False

    def write(self, text):
        event = parse_progress_line(text)
        if event is not None:
            if event["event"] == "step":
                self.step = event["step"]
            if self.step == "stage1_auxiliary" and event["event"] == "checkpoint":
                self.armed = True
            if self.armed and event["event"] == "iteration":
                raise KeyboardInterrupt
        return super().write(text)


@pytest.mark.slow
def test_pipeline_resume_and_report(tiny_dataset, tmp_path):
    options = PipelineOptions(seed=0, device="cpu", overrides={k: v for k, v in TINY.items()},
                              stage1_overrides={"epochs": 2}, scm_overrides={"epochs": 1}, max_figures=2,
                              second_stage="scm")  # the paper's second stage (the default is the refinement)
    out = tmp_path / "pipe"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tiny_dataset, out, options, stream=_Interrupt())
    state = json.loads((out / "pipeline.json").read_text())
    assert state["done"] == ["clicks", "stage1_primary"]
    primary_model = (out / "stage1_unet2d5" / "model.json").read_text()
    assert (out / "stage1_attention_unet" / "checkpoints" / "last.pt").is_file()

    with pytest.raises(ValueError, match="other options"):
        run_pipeline(tiny_dataset, out, PipelineOptions(seed=1, device="cpu", second_stage="scm"),
                     stream=io.StringIO())
    second = io.StringIO()
    assert run_pipeline(tiny_dataset, out, options, stream=second) == 0
    events = _events(second.getvalue())
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == ["stage1_auxiliary", "scm", "predict", "evaluate", "report"]
    assert next(e for e in events if e["event"] == "start")["resumed"] is True  # from the checkpoint
    assert (out / "stage1_unet2d5" / "model.json").read_text() == primary_model  # not retrained

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stages"]) == {"stage 1 (unet2d5)", "stage 1 (attention_unet)", "SCM", "SCM-E"}
    assert len(metrics["stages"]["SCM"]) == 4 and len(metrics["seeds"]) == 4
    html = (out / "report.html").read_text()
    dice = metrics["stages"]["SCM"]["synth_000"]["dice"]
    assert f"{dice:.3f}" in html and "SCM-E" in html
    assert len(list((out / "figures").glob("*.png"))) == 2
    for model in ("stage_1_unet2d5", "SCM", "SCM-E"):
        assert len(list((out / "predictions" / model).glob("*_pred.nii.gz"))) == 4
    # rerunning a finished pipeline does nothing and succeeds
    third = io.StringIO()
    assert run_pipeline(tiny_dataset, out, options, stream=third) == 0
    assert [e["event"] for e in _events(third.getvalue())] == ["done"]


@pytest.mark.slow
def test_scm_seed_anchor_keeps_the_seeds_in_the_pseudo_label(tiny_dataset, stage1_runs, tmp_path, monkeypatch):
    from PASegLib.losses.distillation import SelfCrossMonitoringLoss

    seen = []
    original = SelfCrossMonitoringLoss.terms

    def spy(self, student, self_teacher, cross_teacher, *, pseudo_label=None):
        seen.append((pseudo_label, self_teacher.argmax(dim=1, keepdim=True)))
        return original(self, student, self_teacher, cross_teacher, pseudo_label=pseudo_label)

    monkeypatch.setattr(SelfCrossMonitoringLoss, "terms", spy)
    batches = []
    from PASegLib.training import engine

    original_batch = engine.Trainer._batch

    def keep_batch(self):
        batch = original_batch(self)
        batches.append(batch["partial"].clone())
        return batch

    monkeypatch.setattr(engine.Trainer, "_batch", keep_batch)
    config = TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", epochs=1, refresh_every=1,
                         scm_seed_anchor=True, **TINY)
    assert train_from_dataset(tiny_dataset, tmp_path / "scm", config, init_runs=stage1_runs, stream=io.StringIO()) == 0
    assert len(seen) == 2 * len(batches) == 4  # two networks per iteration, two iterations
    for n, partial in enumerate(batches):
        for pseudo, argmax in seen[2 * n: 2 * n + 2]:
            labeled = partial != 2
            assert labeled.any() and (~labeled).any()
            assert torch.equal(pseudo[labeled], partial[labeled])  # the seeds win where they exist
            assert torch.equal(pseudo[~labeled], argmax[~labeled])  # the frozen copy decides elsewhere


# -- pipeline faults: a failed start, a damaged pipeline.json, a second pipeline, STOP in its steps ----
LOCK_FILE = ".paseg-lock"  # PASegLib.jobs.lock.LOCK_FILE


def _error(captured, command: str) -> str:
    return cli_error(captured, command)


class _StopOn(io.StringIO):
    """A progress stream that creates ``path`` at the first event ``kind`` matching ``match``."""

    def __init__(self, path: Path, kind: str, **match):
        super().__init__()
        self.path, self.kind, self.match = path, kind, match

    def write(self, text):
        event = parse_progress_line(text)
        if event is not None and event["event"] == self.kind and all(event.get(k) == v for k, v in self.match.items()):
            self.path.touch()
        return super().write(text)


def _run_argv(dataset: Path, out: Path, *sets: str):
    argv = ["run", str(dataset), "--out", str(out), "--quiet", "--device", "cpu"]
    for value in sets:
        argv += ["--set", value]
    return argv


def test_run_failed_start_leaves_nothing_and_damaged_state_is_named(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "pipe"
    assert main(_run_argv(tiny_dataset, out, "epochs=0")) == 1
    assert "epochs must be" in _error(capsys.readouterr(), "run")
    assert not out.exists()
    mine = tmp_path / "mine"  # an existing folder keeps what it held
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(_run_argv(tiny_dataset, mine, "no_such_setting=1")) == 1
    assert "no_such_setting" in _error(capsys.readouterr(), "run")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    for text, what in (("{bad", "not valid JSON"), ('{"options": {}, "done": ["x"], "durations_s": {}}',
                                                     "unknown finished step"), ("[]", "a JSON object is expected")):
        (mine / "pipeline.json").write_text(text)
        assert main(_run_argv(tiny_dataset, mine)) == 1
        message = _error(capsys.readouterr(), "run")
        assert f"{mine / 'pipeline.json'}: damaged pipeline state" in message and what in message, message
        assert (mine / "pipeline.json").read_text() == text
    from PASegLib.jobs.lock import FolderLock, FolderLockedError

    with FolderLock(out, purpose="paseg run"):
        with pytest.raises(FolderLockedError, match=f"{out} is in use by process {os.getpid()}"):
            run_pipeline(tiny_dataset, out, PipelineOptions(device="cpu"), stream=io.StringIO())


@pytest.mark.slow
def test_run_stop_in_preparation_and_prediction_then_the_same_command_finishes(tiny_dataset, tmp_path):
    options = PipelineOptions(seed=0, device="cpu", overrides={**TINY, "epochs": 1, "iterations_per_epoch": 1},
                              max_figures=1)
    out = tmp_path / "pipe"
    out.mkdir()
    (out / STOP_FILE).touch()  # stale: older than this process
    os.utime(out / STOP_FILE, (command_started_at() - 60,) * 2)
    first = _StopOn(out / STOP_FILE, "prepare")  # the pipeline's STOP, in the first training step's preparation
    assert run_pipeline(tiny_dataset, out, options, stream=first) == EXIT_STOPPED
    stopped = _events(first.getvalue())[-1]
    assert stopped["event"] == "stopped" and stopped["phase"] == "preparing"
    assert "run the same `paseg run` command" in stopped["message"] and "--resume" not in stopped["message"]
    assert json.loads((out / "pipeline.json").read_text())["done"] == ["clicks"]
    assert not (out / STOP_FILE).exists() and not (out / LOCK_FILE).exists()
    second = _StopOn(out / STOP_FILE, "step", step="predict")
    assert run_pipeline(tiny_dataset, out, options, stream=second) == EXIT_STOPPED
    events = _events(second.getvalue())
    assert events[-1]["event"] == "stopped" and events[-1]["step"] == "predict"
    assert "run the same `paseg run` command" in events[-1]["message"]
    assert not any(e["event"] == "case" for e in events) and not (out / "predictions").exists()
    # the default second stage: a refinement round (random-walker refined labels, the primary retrained)
    assert json.loads((out / "pipeline.json").read_text())["done"] == ["clicks", "stage1_primary", "refine_1",
                                                                      "stage1_primary_r1"]
    assert not (out / "stage1_attention_unet").exists() and not (out / "scm").exists()
    third = io.StringIO()
    assert run_pipeline(tiny_dataset, out, options, stream=third) == 0
    assert [e["step"] for e in _events(third.getvalue()) if e["event"] == "step"] == ["predict", "evaluate", "report"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stages"]) == {"stage 1 (unet2d5)", "refined (unet2d5)"}
    assert "refined (unet2d5)" in (out / "report.html").read_text()
