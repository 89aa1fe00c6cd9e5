"""Training that outlives closing Slicer (issue 22, D9), headless with real child processes and real MRML.

A job runs detached (the job supervisor, :mod:`PASegLib.jobs.supervisor`): closing Slicer asks whether to keep it
running; a new panel on the same work folder re-attaches to it (progress, loss curve, Stop) and takes in its
result once; a stopped training job resumes from the GUI, and its last weights become a model through
``stopped.json``, never ``model.json``. The children are a fake ``python -m PASegLib train|predict`` that waits at
iteration 2 for a ``GO`` file (or its ``STOP``), so that a test decides when it ends.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import process_alive, require_slicer_core
from headlessgui import FAKE_CLI_START, UI_FILE, HeadlessApp, Parameters, fakePython, jobPanel, widgetsOf
from PASegSlicer.jobs import background, control
from PASegSlicer.jobs.models import ModelRegistry
from PASegSlicer.jobs.runner import JobRunner, SubprocessBackend, jobRunning, threadingSchedule
from PASegSlicer.mrml.volumes import createVolumeNode

from PASegLib.image.io import read_image, write_image
from PASegLib.jobs.lock import FolderLock, process_start_time
from PASegLib.jobs.supervisor import read_status

slicer = require_slicer_core()

GATED_PASEG = FAKE_CLI_START + r"""
mode = os.environ.get("FAKE_MODE", "gate")
out.mkdir(parents=True, exist_ok=True)
(out / "args.txt").write_text(" ".join(args))
if command == "train":
    network = args[args.index("--network") + 1] if "--network" in args else "unet2d5"
    (out / "config.json").write_text(json.dumps({"network": network, "stage": 1}))
    resume = "--resume" in args
    first = 2 if resume else 0
    emit(event="start", total_iterations=4, epochs=2, run_dir=str(out), iteration=first)
    for it in range(first + 1, 5):
        emit(event="iteration", epoch=(it + 1) // 2, iteration=it, total_iterations=4, losses={"ce": 1.0 / it},
             lr=0.01, eta_s=10 * (4 - it))
        if it == 2 and not resume:
            (out / "checkpoints").mkdir(exist_ok=True)
            (out / "checkpoints" / "last.pt").write_text("weights of iteration 2")
            (out / "pid").write_text(str(os.getpid()))
            deadline = time.time() + 60
            while not (out / "GO").exists() and time.time() < deadline:
                if (out / "STOP").exists() and mode != "hang":
                    (out / "STOP").unlink()
                    emit(event="stopped", phase="training", epoch=1, iteration=2,
                         checkpoint=str(out / "checkpoints" / "last.pt"), message="stopped at iteration 2/4")
                    sys.exit(3)
                time.sleep(0.02)
    (out / "checkpoints" / "best.pt").write_text("best weights")
    (out / "model.json").write_text(json.dumps({"network": network, "stage": 1, "best_score": 0.9,
        "best_epoch": 2, "created": "2026-01-02T03:04:05", "checkpoint": "checkpoints/best.pt"}))
    emit(event="done", best_score=0.9, best_epoch=2, run_dir=str(out))
elif command == "predict":
    emit(event="start", total=1)
    emit(event="case", index=1, total=1, case="none", pred=str(out / "none_pred.nii.gz"))
"""


@pytest.fixture
def fake_python(tmp_path):
    return fakePython(tmp_path, GATED_PASEG, "gated_paseg.py")


@pytest.fixture
def work(tmp_path, blob_case):
    """(dataset folder with one annotated case, work folder)."""
    image, _ = blob_case
    write_image(tmp_path / "data" / "c1_image.nrrd", image.array, image.geometry)
    (tmp_path / "data" / "c1.mrk.json").write_text("{}")
    return tmp_path / "data", tmp_path / "work"


class Session:
    """One Slicer session's job panel on the same work folder (what the module builds at startup)."""

    def __init__(self, app, logic, fake_python, work) -> None:
        self.headless, self.ui = HeadlessApp(app), widgetsOf()
        self.parameters = Parameters()
        self.parameters.datasetFolder, self.parameters.workFolder = work
        self.parameters.trainMode, self.parameters.epochs, self.parameters.deviceMode = "stage 1", 2, "CPU (force)"
        self.panel, self.runners = jobPanel(logic, self.headless, self.ui, self.parameters, python=fake_python)

    @property
    def runner(self) -> JobRunner:
        return self.runners[0]

    def open(self) -> None:
        """The module gets its work folder (``onFoldersChanged`` → ``refreshModels``)."""
        self.panel.refreshModels()


def _until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def _startGatedTraining(session):
    session.ui.trainButton.click()
    job = session.panel.job
    run = job.folder / "stage1-unet2d5"
    assert _until(lambda: (run / "pid").is_file() and len(session.runner.state.lossHistory) >= 2)
    return job, run


def test_a_job_outlives_its_panel_and_a_new_panel_reattaches_and_takes_in_its_result(app, logic, fake_python, work):
    first = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(first)
    first.headless.answers = [True]  # "keep it running in the background?"
    first.panel.cleanup()  # Slicer closes
    assert "Keep it running in the background?" in first.headless.shown["question"][0]
    child = int((run / "pid").read_text())
    time.sleep(0.3)
    assert process_alive(child) and jobRunning(job.folder) and not (run / "STOP").exists()  # runs on, unasked to stop
    assert not first.runner.isRunning()  # the old panel follows it no more
    second = Session(app, logic, fake_python, work)  # Slicer starts again on the same work folder
    second.open()
    runner = second.runner
    assert runner.isRunning() and runner.jobFolder == job.folder and second.panel.job.folder == job.folder
    assert [row["iteration"] for row in runner.state.lossHistory] == [1, 2]  # replayed: the loss curve is back
    assert second.ui.progressBar.value == 50 and second.ui.stopButton.enabled and not second.ui.trainButton.enabled
    assert "stage 1 (unet2d5)" in second.ui.stepLabel.text and second.ui.etaLabel.text == "20 s"
    assert "Following the running train job" in second.headless.shown["status"][-1]
    (run / "GO").write_text("")
    assert runner.wait(20) and runner.state.status == "done", runner.state.message
    assert [row["iteration"] for row in runner.state.lossHistory] == [1, 2, 3, 4]
    assert second.ui.progressBar.value == 100 and "unet2d5 · stage 1" in second.ui.modelComboBox.items[0]
    doc = json.loads((job.folder / "job.json").read_text())
    assert doc["status"] == "done" and doc["taken_in"] is True
    third = Session(app, logic, fake_python, work)  # taken in exactly once
    third.open()
    assert not third.runner.isRunning() and third.headless.shown["status"] == []
    assert len(ModelRegistry(work[1] / "models.json").models()) == 1


def test_a_job_that_ended_while_slicer_was_closed_is_taken_in_once(app, logic, fake_python, work):
    first = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(first)
    first.panel.cleanup()  # HeadlessApp answers "yes" (keep running)
    (run / "GO").write_text("")
    assert _until(lambda: (read_status(job.folder) or {}).get("status") == "done")
    assert json.loads((job.folder / "job.json").read_text())["status"] == "running"  # nobody took it in yet
    second = Session(app, logic, fake_python, work)
    second.open()
    assert not second.runner.isRunning() and "ended while Slicer was closed (done: finished)" in \
        second.headless.shown["status"][0]
    assert second.parameters.modelRunDir == run.resolve() and len(second.ui.modelComboBox.items) == 1
    assert second.ui.jobsComboBox.items == [f"{job.folder.name} · done · " + second.panel.jobRecords[0].created[:16]
                                            .replace("T", " ")]  # fmt: skip
    assert json.loads((job.folder / "job.json").read_text())["taken_in"] is True
    third = Session(app, logic, fake_python, work)
    third.open()
    assert third.headless.shown["status"] == []


def test_closing_asks_and_no_stops_the_job(app, logic, fake_python, work):
    first = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(first)
    first.headless.answers = [False]  # "no": stop it now
    first.panel.cleanup()
    assert first.headless.shown["question"] and first.runner.wait(15)
    assert first.runner.state.status == "stopped" and first.runner.state.message == "stopped at iteration 2/4"
    assert read_status(job.folder)["status"] == "stopped" and not jobRunning(job.folder)
    assert not (run / "model.json").exists() and not (run / "STOP").exists() and not (job.folder / "STOP").exists()


def test_kill_ends_the_detached_job_tree(app, logic, fake_python, work, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")  # the child ignores its stop file
    session = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(session)
    child, supervisor = int((run / "pid").read_text()), read_status(job.folder)["pid"]
    session.ui.stopButton.click()
    assert session.runner.state.status == "stopping" and session.ui.stopButton.text == "Kill"
    assert (run / "STOP").exists() and (job.folder / "STOP").exists()
    session.ui.stopButton.click()  # Kill
    assert session.runner.wait(10) and session.runner.state.status == "stopped" and session.runner.state.killed
    assert _until(lambda: not process_alive(child) and not process_alive(supervisor), 5)
    assert read_status(job.folder)["status"] == "stopped"  # recorded for the next session's job list
    assert not (run / "STOP").exists() and not (job.folder / "STOP").exists()
    assert session.ui.trainButton.enabled and session.ui.stopButton.text == "Stop"


def test_a_reused_pid_is_not_taken_for_a_running_job(app, logic, fake_python, work, tmp_path):
    job = tmp_path / "work" / "jobs" / "20260101-000000-train"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"kind": "train", "status": "running", "created": "2026-01-01T00:00:00",
                                              "steps": [{"name": "s", "command": ["x"], "run_dir": None}]}))
    (job / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))  # a live pid, reused
    os.utime(job / "job.json", (time.time() - 3600,) * 2)
    assert not jobRunning(job)  # nobody holds the job folder's lock
    session = Session(app, logic, fake_python, work)
    session.open()
    assert not session.runner.isRunning() and session.panel.jobRecords[0].status == "failed"
    assert "ended while Slicer was closed" in session.headless.shown["status"][0]
    assert json.loads((job / "job.json").read_text())["taken_in"] is True


def _stoppedJob(app, logic, fake_python, work):
    session = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(session)
    session.ui.stopButton.click()
    assert session.runner.wait(15) and session.runner.state.status == "stopped"
    session.panel.listJobs()
    return session, job, run


def test_a_stopped_run_is_used_with_its_last_weights_through_stopped_json(app, logic, fake_python, work):
    session, job, run = _stoppedJob(app, logic, fake_python, work)
    ui = session.ui
    assert ui.jobsComboBox.currentIndex == 0 and session.panel.selectedJob().status == "stopped"
    assert ui.useWeightsButton.enabled and ui.resumeButton.enabled
    ui.useWeightsButton.click()
    assert not (run / "model.json").exists()  # "finished" to paseg run, the model list and outside scripts
    stopped = json.loads((run / "stopped.json").read_text())
    assert stopped["checkpoint"] == "checkpoints/stopped-epoch1.pt" and stopped["epoch"] == 1
    assert stopped["iteration"] == 2 and (run / stopped["checkpoint"]).read_text() == "weights of iteration 2"
    assert session.parameters.modelRunDir == run.resolve()
    assert "stopped at epoch 1" in ui.modelComboBox.items[0] and session.headless.shown["error"] == []
    # prediction accepts it: the command names the run, whose stopped.json paseg predict reads
    volumeJob = control.startPredictionJob(JobRunner(SubprocessBackend(), threadingSchedule), work[1], run,
                                           datasetFolder=work[0], device="cpu", python=session.panel.python)
    assert json.loads((volumeJob.folder / "job.json").read_text())["model"] == str(run.resolve())


def test_resume_continues_the_stopped_run_from_its_checkpoint(app, logic, fake_python, work):
    session, job, run = _stoppedJob(app, logic, fake_python, work)
    session.ui.resumeButton.click()
    runner = session.runner
    assert runner.isRunning() and session.panel.job.folder == job.folder and not session.ui.resumeButton.enabled
    assert runner.wait(20) and runner.state.status == "done", runner.state.message
    assert "--resume" in (run / "args.txt").read_text()  # continued from checkpoints/last.pt
    assert [row["iteration"] for row in runner.state.lossHistory] == [1, 2, 3, 4]  # one curve across the stop
    assert (run / "model.json").is_file() and "unet2d5 · stage 1" in session.ui.modelComboBox.items[0]
    doc = json.loads((job.folder / "job.json").read_text())
    assert doc["status"] == "done" and doc["taken_in"] is True and len(doc["resumed"]) == 1
    assert session.panel.jobRecords[0].status == "done" and not session.ui.resumeButton.enabled


def test_only_a_stopped_training_job_resumes(app, logic, fake_python, work):
    session = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(session)
    with pytest.raises(ValueError, match="only a stopped training job"):
        background.prepareResume(job.folder)  # it runs
    (run / "GO").write_text("")
    assert session.runner.wait(20)
    with pytest.raises(ValueError, match="that is done"):
        background.prepareResume(job.folder)
    with pytest.raises(ValueError, match="no run of this job stopped"):
        background.useLastWeights(job.folder, ModelRegistry(work[1] / "models.json"))


def test_the_job_area_is_outside_the_collapsible_sections():
    """Progress, phase, ETA and Stop are where the user looks for any job (prediction too), not in the collapsed
    Training section; the widget names stay (bindings, tests)."""
    root = ET.parse(UI_FILE).getroot()
    parents = {child: parent for parent in root.iter() for child in parent}
    area = next(w for w in root.iter("widget") if w.get("name") == "jobArea")
    inside = {w.get("name") for w in area.iter("widget")}
    assert {"progressBar", "stepLabel", "etaLabel", "stopButton", "resumeButton", "useWeightsButton",
            "jobsComboBox"} <= inside  # fmt: skip
    node = area
    while node in parents:
        node = parents[node]
        assert node.get("class") != "ctkCollapsibleButton"
    assert widgetsOf().progressBar.className == "QProgressBar"


# -- review findings 6, 7, 8, 10, 13: jobs followed through their folder, without children where none is needed ------
def _line(**event) -> str:
    return "PASEG " + json.dumps(event)


def _runningJob(work, name: str, *, log=(), status: str = "running"):
    """A job folder whose supervisor "runs" (``status.json`` names this process, whose start time matches, and the
    test holds the folder's lock: :func:`jobRunning`), with ``log`` in its ``log.txt``; returns (folder, lock)."""
    job = work / "jobs" / name
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"kind": "train", "status": "running", "created": "2026-01-01T00:00:00",
                                              "steps": [{"name": "s", "command": ["x"], "run_dir": None}]}))
    pid = os.getpid()
    record = {"status": "running", "pid": pid, "started": process_start_time(pid)} if status == "running" else \
        {"status": status}
    (job / "status.json").write_text(json.dumps(record))
    (job / "log.txt").write_text("".join(line + "\n" for line in log))
    lock = FolderLock(job, purpose="a test playing the supervisor")
    lock.acquire(quiet=True)
    assert jobRunning(job)
    return job, lock


def _endJob(job, lock, *, lines=(), status: str = "done") -> None:
    """The supervisor logs ``lines`` and the job's end, records it in ``status.json`` and lets the folder go."""
    with open(job / "log.txt", "a") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.write(_line(event="job_end", status=status, exit_code=0, message="finished") + "\n")
    (job / "status.json").write_text(json.dumps({"status": status, "exit_code": 0, "message": "finished",
                                                 "pid": os.getpid()}))
    lock.release()


def test_closing_while_the_job_stops_leaves_it_saving_its_checkpoint(app, logic, fake_python, work, monkeypatch):
    """Finding 6: closing Slicer while a job is "stopping" detaches it; a second stop() would kill it."""
    monkeypatch.setenv("FAKE_MODE", "hang")  # the child takes its time to stop (it ignores its stop file)
    session = Session(app, logic, fake_python, work)
    job, run = _startGatedTraining(session)
    child = int((run / "pid").read_text())
    session.ui.stopButton.click()
    assert session.runner.state.status == "stopping"
    session.panel.cleanup()  # Slicer closes while the job saves its stop checkpoint
    time.sleep(0.3)
    assert process_alive(child) and jobRunning(job.folder) and not session.runner.isRunning()
    assert session.headless.shown["question"] == []  # it was asked to stop already: nothing to ask
    (run / "GO").write_text("")  # it ends on its own, as a stopped job
    assert _until(lambda: (read_status(job.folder) or {}).get("status") == "stopped")


def test_a_failing_callback_or_a_damaged_line_does_not_end_the_following(work):
    """Finding 7: an exception in a callback or in a damaged progress line; the job is still followed to its end."""
    job, lock = _runningJob(work[1], "20260101-000000-train", log=[_line(event="job_start", steps=1, pid=1)])
    seen = []

    def onEvent(event):
        seen.append(event["event"])
        if event["event"] == "iteration":
            raise RuntimeError("a GUI callback failed")

    runner = JobRunner(SubprocessBackend(), threadingSchedule, onEvent=onEvent)
    runner.attach(job)
    with open(job / "log.txt", "a") as handle:
        handle.write(_line(event="job_step", index="first", count=1, name="s") + "\n")  # a damaged index
        handle.write(_line(event="iteration", epoch=1, iteration=1, total_iterations=2, losses={"ce": 1.0}) + "\n")
    assert _until(lambda: "iteration" in seen, 5)
    time.sleep(0.3)
    _endJob(job, lock, lines=[_line(event="iteration", epoch=1, iteration=2, total_iterations=2, losses={"ce": .5})])
    assert runner.wait(5) and runner.state.status == "done", runner.state.status
    assert [row["iteration"] for row in runner.state.lossHistory] == [1, 2] and seen[-1] == "finished"


def test_a_running_job_that_cannot_be_followed_does_not_stop_the_scan(app, logic, fake_python, work):
    """Finding 7: a running job whose job.json names a step without a command is reported; the scan goes on."""
    broken, lock = _runningJob(work[1], "20260102-000000-train")
    doc = json.loads((broken / "job.json").read_text())
    doc["steps"][0]["command"] = []
    (broken / "job.json").write_text(json.dumps(doc))
    ended, endedLock = _runningJob(work[1], "20260101-000000-train")
    _endJob(ended, endedLock)
    session = Session(app, logic, fake_python, work)
    session.open()
    status = session.headless.shown["status"]
    assert not session.runner.isRunning() and any("Could not follow the job 20260102" in s for s in status)
    assert any("20260101-000000-train ended while Slicer was closed" in s for s in status)
    assert json.loads((ended / "job.json").read_text())["taken_in"] is True
    lock.release()


def test_attaching_to_a_resumed_job_before_its_start_ignores_the_previous_end(work):
    """Finding 8: the log of a resumed job ends with the previous run's job_end; status.json says "starting"."""
    previous = [_line(event="job_start", steps=1, pid=1), _line(event="job_step", index=0, count=1, name="s"),
                _line(event="job_end", status="stopped", exit_code=3, message="s: stopped")]
    job, lock = _runningJob(work[1], "20260101-000000-train", log=previous, status="starting")
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    runner.attach(job)
    time.sleep(0.5)
    assert runner.isRunning() and not runner.state.finished  # not finished with the old outcome
    _endJob(job, lock, lines=[_line(event="job_start", steps=1, pid=2)])
    assert runner.wait(5) and runner.state.status == "done" and runner.state.message == "finished"


def test_the_last_lines_are_read_when_the_end_is_seen_in_status_json(work):
    """Finding 10: the supervisor writes its last lines and status.json between two looks of the follower."""
    job, lock = _runningJob(work[1], "20260101-000000-train", log=[_line(event="job_start", steps=1, pid=1)])

    def onEvent(event):  # while the follower handles this line, the job writes its last lines and ends
        if event["event"] == "iteration":
            _endJob(job, lock, lines=["the last words of the job"])

    runner = JobRunner(SubprocessBackend(), threadingSchedule, onEvent=onEvent)
    runner.attach(job)
    with open(job / "log.txt", "a") as handle:
        handle.write(_line(event="iteration", epoch=1, iteration=1, total_iterations=1, losses={"ce": 1.0}) + "\n")
    assert runner.wait(5) and runner.state.status == "done"
    assert "the last words of the job" in runner.logLines


def test_the_next_running_job_is_followed_when_the_first_ends(app, logic, fake_python, work):
    """Finding 13: another Slicer's second running job is followed once the runner is free, and taken in."""
    older, olderLock = _runningJob(work[1], "20260101-000000-train")
    newer, newerLock = _runningJob(work[1], "20260102-000000-train")
    session = Session(app, logic, fake_python, work)
    session.open()
    assert session.runner.jobFolder == newer
    _endJob(newer, newerLock)
    assert _until(lambda: session.runner.jobFolder == older and session.runner.isRunning(), 5)
    _endJob(older, olderLock)
    assert session.runner.wait(5) and session.runner.state.status == "done"
    assert all(json.loads((j / "job.json").read_text())["taken_in"] is True for j in (older, newer))


def test_two_sessions_take_in_an_ended_job_once(app, logic, fake_python, work):
    """Finding 13: two Slicer instances scan the same work folder at once; one of them takes the job in."""
    job, lock = _runningJob(work[1], "20260101-000000-train")
    _endJob(job, lock)
    first, second = Session(app, logic, fake_python, work), Session(app, logic, fake_python, work)
    record = background.scanJobs(work[1])[0]  # both scanned before either took it in
    assert not record.takenIn
    first.panel.takeIn(record)
    second.panel.takeIn(record)
    assert len(first.headless.shown["status"]) == 1 and second.headless.shown["status"] == []
    assert background.scanJobs(work[1])[0].takenIn


@pytest.mark.slow
def test_real_training_stops_is_used_with_its_last_weights_predicts_and_resumes(app, logic, tiny_dataset, tmp_path):
    """The one real ``paseg train`` (tiny): Stop → "Use last weights" → prediction with them (``paseg predict``
    reads ``stopped.json``) → Resume from the GUI → finished (``model.json`` written by the trainer itself)."""
    pytest.importorskip("torch")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"patch_size": [32, 32, 16], "crf_downsample_to": None, "deterministic": True,
                                  "num_threads": 1, "network": "unet3d", "iterations_per_epoch": 12,
                                  "validation_fraction": 0.0, "checkpoint_every": 1}))  # fmt: skip
    session = Session(app, logic, sys.executable, (tiny_dataset, tmp_path / "work"))
    session.parameters.networkA, session.parameters.trainConfig, session.parameters.epochs = "unet3d", config, 1
    session.ui.trainButton.click()
    runner = session.runner
    assert _until(lambda: runner.state.lossHistory or runner.state.finished, 120), runner.state.message
    session.ui.stopButton.click()
    assert runner.wait(60) and runner.state.status == "stopped", runner.state.message
    run = session.panel.job.folder / "stage1-unet3d"
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "model.json").exists()
    session.panel.listJobs()
    session.ui.useWeightsButton.click()
    stopped = json.loads((run / "stopped.json").read_text())
    assert stopped["checkpoint"].startswith("checkpoints/stopped-") and stopped["iteration"] >= 1, stopped
    assert session.headless.shown["error"] == [] and "stopped at epoch" in session.ui.modelComboBox.items[0]
    image = read_image(next(tiny_dataset.glob("*_image.*")))
    session.parameters.inputVolume = createVolumeNode(app.scene, image, "case")
    session.parameters.restrictToBox = False
    session.ui.predictButton.click()  # with the stopped run's last weights
    assert runner.wait(120) and runner.state.status == "done", runner.state.message
    assert len(runner.state.caseEvents) == 1 and not (run / "model.json").exists()
    assert logic.segmentationsOf(session.parameters.inputVolume, "PASegPredictionOf")
    session.panel.listJobs()
    session.ui.jobsComboBox.choose(next(i for i, r in enumerate(session.panel.jobRecords) if r.kind == "train"))
    assert session.ui.resumeButton.enabled
    session.ui.resumeButton.click()
    assert runner.wait(180) and runner.state.status == "done", runner.state.message
    assert (run / "model.json").is_file() and "--resume" in " ".join(runner.logLines)


@pytest.mark.slow
def test_real_refinement_pipeline_registers_stage_one_and_the_refined_model_last(app, logic, tiny_dataset, tmp_path):
    """The default training mode, "stage 1 + refinement", for real (tiny): one ``paseg run --second-stage refine``
    step whose two finished runs are registered, the refined one last (the model the module then uses)."""
    pytest.importorskip("torch")
    pytest.importorskip("skimage")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"patch_size": [32, 32, 16], "crf_downsample_to": None, "num_threads": 1,
                                  "iterations_per_epoch": 2, "validate_every": 1, "epochs": 1}))  # fmt: skip
    session = Session(app, logic, sys.executable, (tiny_dataset, tmp_path / "work"))
    assert Parameters().trainMode == "stage 1 + refinement"  # the module's default
    session.parameters.trainMode = "stage 1 + refinement"
    session.parameters.trainConfig = config
    session.ui.trainButton.click()
    runner = session.runner
    assert runner.wait(300) and runner.state.status == "done", runner.state.message
    job = session.panel.job.folder
    command = json.loads((job / "job.json").read_text())["steps"][0]["command"]
    assert command[3] == "run" and command[command.index("--second-stage") + 1] == "refine"
    assert "epochs=1" in command and command[command.index("--preset") + 1] == "auto"
    assert command[command.index("run") + 1] == str(job / "inputs" / "dataset")  # the annotated cases only
    registered = control.finishTrainingJob(job, runner.state, ModelRegistry(tmp_path / "work" / "models.json"))
    names = [pathlib.Path(e.runDir).name for e in registered]
    assert len(names) == 2 and names[-1].endswith("_r1") and names[0] == names[-1][: -len("_r1")], names
    assert (job / "pipeline" / "report.html").is_file()
