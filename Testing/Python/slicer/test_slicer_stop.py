"""Stop acts within seconds in every phase, with real ``python -m PASegLib train|predict`` children run by the
job runner (no Slicer needed): during data preparation, during validation, during prediction; a second stop
kills at once; a stop that the child removed as stale at its start is written again.

The children run the real CLI on the tiny synthetic dataset through a small launcher that slows one phase
down (a sleep before each case is prepared / validated / predicted), so that the stop lands inside that
phase deterministically; the stop checks themselves are the production ones.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from PASegSlicer.jobs import commands
from PASegSlicer.jobs.runner import JobRunner, JobStep, SubprocessBackend, threadingSchedule

#: seconds of sleep before each case of the slowed phase: the stop must act long before the phase ends
DELAY_S = 1.0
#: a stop must end the child within this many seconds (the kill timeout is far away)
STOP_WITHIN_S = 8.0

LAUNCHER = r"""
import os, sys, time
args = sys.argv[1:]
if args[:2] == ["-m", "PASegLib"]:
    args = args[2:]
delay, slow = float(os.environ.get("PASEG_TEST_DELAY", "0")), os.environ.get("PASEG_TEST_SLOW", "")

def slowed(owner, name):
    original = getattr(owner, name)
    def wrapper(*a, **k):
        time.sleep(delay)
        return original(*a, **k)
    setattr(owner, name, wrapper)

if slow == "prepare":
    import PASegLib.data.prepared as data
    slowed(data, "prepare_case")
elif slow == "validate":
    from PASegLib.training.engine import Trainer
    slowed(Trainer, "predict_probability")
elif slow == "predict":
    from PASegLib.inference.predictor import Predictor
    slowed(Predictor, "probability_on_training_grid")
from PASegLib.cli.main import main
sys.exit(main(args))
"""

TINY = {"patch_size": [32, 32, 16], "crf_downsample_to": None, "validate_every": 1, "checkpoint_every": 1,
        "deterministic": True, "num_threads": 1, "network": "unet3d", "iterations_per_epoch": 2}


@pytest.fixture
def launcher(tmp_path) -> str:
    path = tmp_path / "slow_paseg.py"
    path.write_text(LAUNCHER, encoding="utf-8")
    return str(path)


def _slowed(step: JobStep, launcher: str, slow: str) -> JobStep:
    """The step run by this Python through the launcher (same ``-m PASegLib …`` arguments), one phase slowed."""
    step.program, step.arguments = sys.executable, [launcher] + step.arguments
    step.environment = {**step.environment, "PASEG_TEST_SLOW": slow, "PASEG_TEST_DELAY": str(DELAY_S)}
    return step


def _stop_when(step: JobStep, tmp_path: Path, trigger) -> tuple:
    """Run ``step``; call ``stop()`` when ``trigger(event)`` first holds; returns (runner, events, seconds
    from ``stop()`` to the job's end)."""
    seen, events = threading.Event(), []

    def on_event(event):
        events.append(event)
        if trigger(event):
            seen.set()

    runner = JobRunner(SubprocessBackend(), threadingSchedule, logPath=tmp_path / "log.txt", onEvent=on_event,
                       stopTimeoutSeconds=30)
    runner.start([step])
    deadline = time.monotonic() + 120
    while not seen.wait(0.05) and not runner.state.finished and time.monotonic() < deadline:
        pass
    assert seen.is_set(), (runner.state.status, runner.state.message, list(runner.logLines)[-5:])
    started = time.monotonic()
    runner.stop()
    assert runner.wait(60)
    return runner, events, time.monotonic() - started


def _config(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **extra}), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.serial  # a latency: measured alone (make test)
def test_stop_during_preparation_exits_quickly_and_the_same_command_starts_later(tiny_dataset, tmp_path, launcher,
                                                                                 capsys):
    from PASegLib.cli.main import main

    job = commands.newJobFolder(tmp_path, "job")
    step = commands.trainingSteps(job, tiny_dataset, mode="stage 1", networks=["unet3d"], epochs=1, device="cpu",
                                  configFile=str(_config(tmp_path)), python=sys.executable)[0]
    command = list(step.arguments[2:])
    runner, events, seconds = _stop_when(_slowed(step, launcher, "prepare"), tmp_path,
                                         lambda e: e["event"] == "prepare" and e["index"] == 1)
    state, run = runner.state, Path(step.runDir)
    print(f"stop latency during preparation: {seconds:.2f} s")
    assert state.status == "stopped" and state.exitCode == 3 and not state.killed, state.message
    assert seconds < STOP_WITHIN_S
    assert state.phase == "preparing" and "nothing to save" in state.message
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped and stopped[0]["phase"] == "preparing" and stopped[0]["checkpoint"] is None
    prepared = [e for e in events if e["event"] == "prepare"]
    assert 1 <= len(prepared) < 4 and not (run / "checkpoints").exists() and not (run / "STOP").exists()
    cache = sorted((run / "cache").iterdir())
    assert len(cache) == len(prepared) and all(p.suffix == ".npz" and not p.name.startswith(".") for p in cache)
    # the same command (no --resume) starts the run; the cases prepared before the stop come from the cache
    capsys.readouterr()
    assert main(command) == 0
    out = capsys.readouterr().out
    again = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("PASEG ")]
    assert [e["cached"] for e in again if e["event"] == "prepare"][: len(prepared)] == [True] * len(prepared)
    assert (run / "model.json").is_file()


@pytest.mark.slow
@pytest.mark.serial  # a latency: measured alone (make test)
def test_stop_during_validation_saves_and_resume_finishes(tiny_dataset, tmp_path, launcher, capsys):
    from PASegLib.cli.main import main
    from PASegLib.training.checkpoint import load_checkpoint

    job = commands.newJobFolder(tmp_path, "job")
    step = commands.trainingSteps(job, tiny_dataset, mode="stage 1", networks=["unet3d"], epochs=2, device="cpu",
                                  configFile=str(_config(tmp_path, validation_fraction=0.5)), python=sys.executable)[0]
    command = list(step.arguments[2:])
    runner, events, seconds = _stop_when(_slowed(step, launcher, "validate"), tmp_path,
                                         lambda e: e["event"] == "phase" and e["phase"] == "validating")
    state, run = runner.state, Path(step.runDir)
    print(f"stop latency during validation: {seconds:.2f} s")
    assert state.status == "stopped" and state.exitCode == 3 and not state.killed, state.message
    assert seconds < STOP_WITHIN_S
    assert state.phase == "validating" and state.summary()["phase"].startswith("validating epoch 1")
    assert [e["event"] for e in events if e["event"] in ("validation", "stopped")] == ["stopped"]
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]
    assert (saved["epoch"], saved["position"], saved["epoch_end_pending"]) == (1, 0, True)
    assert not (run / "STOP").exists()
    capsys.readouterr()
    assert main(command + ["--resume"]) == 0
    out = capsys.readouterr().out
    again = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("PASEG ")]
    assert [e["epoch"] for e in again if e["event"] == "validation"] == [1, 2]  # epoch 1's round is redone
    assert (run / "model.json").is_file()


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory) -> Path:
    from PASegLib.training.config import TrainConfig
    from PASegLib.training.launch import train_from_dataset

    run = tmp_path_factory.mktemp("stoprun") / "run"
    config = TrainConfig.from_dict({**TINY, "epochs": 1, "iterations_per_epoch": 1, "validation_fraction": 0.0})
    assert train_from_dataset(tiny_dataset, run, config, stream=io.StringIO()) == 0
    return run


@pytest.mark.slow
@pytest.mark.serial  # a latency: measured alone (make test)
def test_stop_during_prediction_keeps_finished_cases_only(tiny_dataset, trained_run, tmp_path, launcher):
    job = commands.newJobFolder(tmp_path, "job")
    step = commands.predictionSteps(job, trained_run, tiny_dataset, device="cpu", python=sys.executable)[0]
    assert step.stopPath() == job / "output" / "STOP"
    runner, events, seconds = _stop_when(_slowed(step, launcher, "predict"), tmp_path,
                                         lambda e: e["event"] == "case" and e["index"] == 1)
    state = runner.state
    print(f"stop latency during prediction: {seconds:.2f} s")
    assert state.status == "stopped" and state.exitCode == 3 and not state.killed, state.message
    assert seconds < STOP_WITHIN_S
    assert state.phase == "predicting" and "stopped after 1 of 4 case(s)" in state.message
    assert len(state.caseEvents) == 1
    case = state.caseEvents[0]["case"]
    files = sorted(p.name for p in (job / "output").iterdir())
    assert files == [f"{case}_pred.nii.gz", f"{case}_prob.nii.gz"]  # no partial case, no staging folder, no STOP
    assert list(commands.predictionFiles(state.caseEvents, job / "output")) == [case]


def _script_step(tmp_path: Path, code: str, stopFile=None) -> JobStep:
    script = tmp_path / "child.py"
    script.write_text(code, encoding="utf-8")
    return JobStep("child", sys.executable, [str(script)], None, str(tmp_path), {},
                   None if stopFile is None else str(stopFile))


IGNORING_CHILD = """
import time
print('PASEG {"event": "start", "total": 1}', flush=True)
time.sleep(60)
"""


def test_a_second_stop_kills_at_once(tmp_path):
    stop = tmp_path / "out" / "STOP"
    runner = JobRunner(SubprocessBackend(), threadingSchedule, stopTimeoutSeconds=60)
    runner.start([_script_step(tmp_path, IGNORING_CHILD, stop)])
    deadline = time.monotonic() + 20
    while runner.state.phase != "predicting" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not runner.canKill
    runner.stop()
    assert runner.state.status == "stopping" and runner.canKill and stop.is_file()
    assert not runner.wait(0.5)  # the child ignores the stop file; the kill timeout is 60 s away
    started = time.monotonic()
    runner.stop()  # "Kill"
    assert runner.wait(10) and time.monotonic() - started < 3
    assert runner.state.status == "stopped" and runner.state.killed and not runner.canKill
    assert "killed" in runner.state.message and not stop.exists()  # the runner cleans up its stop file


def test_a_step_without_a_stop_file_is_killed_at_once(tmp_path):
    runner = JobRunner(SubprocessBackend(), threadingSchedule, stopTimeoutSeconds=60)
    runner.start([_script_step(tmp_path, IGNORING_CHILD)])
    deadline = time.monotonic() + 20
    while not runner.state.phase and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    runner.stop()
    assert runner.wait(10) and time.monotonic() - started < 3
    assert runner.state.status == "stopped" and runner.state.killed


STALE_CLEARING_CHILD = """
import sys, time
from pathlib import Path
stop = Path(sys.argv[1])
time.sleep(0.5)  # the GUI's stop arrives while the child starts …
stop.unlink(missing_ok=True)  # … and is removed as stale, before the first progress event
print('PASEG {"event": "phase", "phase": "preparing", "total": 3}', flush=True)
deadline = time.time() + 20
while time.time() < deadline:
    if stop.exists():
        stop.unlink()
        print('PASEG {"event": "stopped", "phase": "preparing", "message": "stopped while preparing"}', flush=True)
        sys.exit(3)
    time.sleep(0.02)
"""


def test_a_stop_removed_as_stale_at_start_is_written_again(tmp_path):
    stop = tmp_path / "STOP"
    step = _script_step(tmp_path, STALE_CLEARING_CHILD, stop)
    step.arguments.append(str(stop))
    runner = JobRunner(SubprocessBackend(), threadingSchedule, stopTimeoutSeconds=60)
    runner.start([step])
    runner.stop()  # before the child's first event
    assert runner.wait(15)
    assert runner.state.status == "stopped" and runner.state.exitCode == 3 and not runner.state.killed
    assert runner.state.message == "stopped while preparing" and not stop.exists()
