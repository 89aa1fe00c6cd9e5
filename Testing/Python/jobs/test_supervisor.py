"""The job supervisor (``python -m PASegLib.jobs.supervisor JOB_DIR``) and the stopped-run record.

The steps are tiny Python scripts speaking the ``PASEG {json}`` protocol; the supervisor runs them for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.lock import FolderLock
from PASegLib.jobs.stopped_run import (
    STOPPED_RECORD,
    prediction_checkpoint,
    read_stopped_record,
    write_stopped_record,
)
from PASegLib.jobs.supervisor import detached_options, job_alive, lock_held, read_status, run_job

STEP = r"""
import json, sys, time
from pathlib import Path
name, mode = sys.argv[1], sys.argv[2]
stop = Path(sys.argv[3]) if len(sys.argv) > 3 else None
def emit(**e):
    print("PASEG " + json.dumps(e), flush=True)
emit(event="start", total_iterations=2, epochs=1, run_dir=name)
print(f"log of {name}: ü", flush=True)
print(f"warning of {name}", file=sys.stderr, flush=True)
if mode == "fail":
    emit(event="error", message=f"{name}: bad input")
    sys.exit(1)
if mode == "wait":
    deadline = time.time() + 20
    while time.time() < deadline:
        if stop is not None and stop.exists():
            stop.unlink()
            emit(event="stopped", epoch=1, iteration=1, message=f"{name} stopped at iteration 1/2")
            sys.exit(3)
        time.sleep(0.02)
emit(event="done", best_score=0.5, run_dir=name)
"""


def _job(tmp_path: Path, steps) -> Path:
    """A job folder whose steps run :data:`STEP` (``steps``: (name, mode) pairs)."""
    script = tmp_path / "step.py"
    script.write_text(STEP, encoding="utf-8")
    job = tmp_path / "job"
    job.mkdir()
    records = []
    for name, mode in steps:
        stop = job / name / "STOP"
        records.append({"name": name, "command": [sys.executable, str(script), name, mode, str(stop)],
                        "cwd": str(job), "env": {"STEP_NAME": name}, "stop_file": str(stop), "run_dir": None})
    (job / "job.json").write_text(json.dumps({"kind": "train", "steps": records}), encoding="utf-8")
    return job


def _log(job: Path):
    lines = (job / "log.txt").read_text(encoding="utf-8").splitlines()
    return lines, [e for e in map(parse_progress_line, lines) if e is not None]


def test_steps_run_in_order_into_the_log_and_the_end_is_recorded(tmp_path):
    job = _job(tmp_path, [("a", "ok"), ("b", "ok")])
    assert run_job(job) == "done"
    lines, events = _log(job)
    assert [e["event"] for e in events] == ["job_start", "job_step", "start", "done", "job_step", "start", "done",
                                            "job_end"]  # fmt: skip
    assert [e["name"] for e in events if e["event"] == "job_step"] == ["a", "b"]
    assert "log of a: ü" in lines and "! warning of b" in lines  # stderr lines start with "! "
    status = read_status(job)
    assert status["status"] == "done" and status["exit_code"] == 0 and status["pid"] == os.getpid()
    assert events[-1] == {"event": "job_end", "status": "done", "exit_code": 0, "message": "finished"}


def test_a_failing_step_ends_the_job_with_its_message(tmp_path):
    job = _job(tmp_path, [("a", "fail"), ("b", "ok")])
    assert run_job(job) == "failed"
    _, events = _log(job)
    assert [e.get("name") for e in events if e["event"] == "job_step"] == ["a"]  # b never ran
    assert read_status(job)["message"] == "a exited with code 1: a: bad input"


def test_the_job_stop_file_stops_the_running_step_and_cancels_the_next(tmp_path):
    job = _job(tmp_path, [("a", "wait"), ("b", "ok")])
    (job / "a").mkdir()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "PASegLib.jobs.supervisor", str(job)], **detached_options())
    deadline = time.monotonic() + 20
    while not job_alive(job) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job_alive(job) and lock_held(job)  # pid alive and the job folder's lock held
    if os.name != "nt":
        assert os.getsid(process.pid) != os.getsid(0)  # its own session: not ended with ours
    while "log of a" not in (job / "log.txt").read_text(encoding="utf-8") and time.monotonic() < deadline:
        time.sleep(0.02)
    (job / "STOP").write_text("stop")  # the supervisor passes it on to the step's own stop file
    assert process.wait(20) == 0 and time.monotonic() - started < 15
    status = read_status(job)
    assert status["status"] == "stopped" and status["exit_code"] == 3, status
    assert status["message"] == "a stopped at iteration 1/2"
    _, events = _log(job)
    assert [e.get("name") for e in events if e["event"] == "job_step"] == ["a"]
    assert not (job / "STOP").exists() and not (job / "a" / "STOP").exists()
    assert not job_alive(job) and not lock_held(job)


def test_a_skipped_step_is_not_run(tmp_path):
    job = _job(tmp_path, [("a", "fail"), ("b", "ok")])
    doc = json.loads((job / "job.json").read_text())
    doc["steps"][0]["skip"] = True  # finished before a resume
    (job / "job.json").write_text(json.dumps(doc))
    assert run_job(job) == "done"
    lines, events = _log(job)
    assert [e["name"] for e in events if e["event"] == "job_step"] == ["b"]
    assert any("a: finished before, skipped" in line for line in lines)


def test_a_reused_pid_is_not_a_running_job(tmp_path):
    job = _job(tmp_path, [("a", "ok")])
    (job / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
    assert not lock_held(job) and not job_alive(job)  # our pid runs, but nobody holds the job's lock
    with FolderLock(job, purpose="test"):
        assert lock_held(job) and job_alive(job)
    assert not lock_held(job)


def test_a_job_folder_held_by_another_supervisor_is_refused(tmp_path):
    job = _job(tmp_path, [("a", "ok")])
    with FolderLock(job, purpose="another supervisor"):
        done = subprocess.run([sys.executable, "-m", "PASegLib.jobs.supervisor", str(job)], capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 1 and "in use by" in done.stderr and not (job / "log.txt").exists()


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"network": "unet3d", "stage": 1}))
    (run / "checkpoints" / "last.pt").write_bytes(b"w")
    (run / "checkpoints" / "best.pt").write_bytes(b"b")
    return run


def test_a_stopped_run_is_used_through_stopped_json_never_model_json(tmp_path):
    run = _run(tmp_path)
    assert prediction_checkpoint(run, None) == "best"  # nothing chosen yet: as before
    record = write_stopped_record(run, epoch=3, iteration=120)
    assert record["checkpoint"] == "checkpoints/stopped-epoch3.pt" and record["epoch"] == 3
    assert record["network"] == "unet3d"
    assert read_stopped_record(run)["iteration"] == 120 and not (run / "model.json").exists()
    assert prediction_checkpoint(run, None) == str(run / "checkpoints" / "stopped-epoch3.pt")
    assert prediction_checkpoint(run, "best") == "best"  # an explicit --checkpoint wins
    (run / "model.json").write_text("{}")  # the run was resumed and finished: its model.json wins
    assert prediction_checkpoint(run, None) == "best"
    with pytest.raises(ValueError, match="finished"):
        write_stopped_record(run, epoch=1, iteration=1)


def test_a_stopped_record_is_refused_without_a_checkpoint(tmp_path):
    run = _run(tmp_path)
    (run / "checkpoints" / "last.pt").unlink()
    with pytest.raises(ValueError, match="no checkpoint checkpoints/last.pt"):
        write_stopped_record(run, epoch=1, iteration=1)
    (run / STOPPED_RECORD).write_text(json.dumps({"checkpoint": "checkpoints/last.pt"}))
    with pytest.raises(ValueError, match="does not exist"):
        read_stopped_record(run)
    with pytest.raises(ValueError, match="not a training run folder"):
        write_stopped_record(tmp_path, epoch=1, iteration=1)


def test_a_stopped_record_keeps_the_weights_it_names_when_the_run_is_resumed(tmp_path):
    """Review finding 9: ``last.pt`` changes when the run resumes; the model listed "stopped at epoch 3" keeps
    predicting with the epoch-3 weights (a snapshot beside it, hard-linked or copied)."""
    run = _run(tmp_path)
    record = write_stopped_record(run, epoch=3, iteration=120)
    newer = run / "checkpoints" / ".last.pt.tmp"
    newer.write_bytes(b"weights of epoch 5")  # the resumed run saves last.pt atomically, as the trainer does
    os.replace(newer, run / "checkpoints" / "last.pt")
    assert (run / record["checkpoint"]).read_bytes() == b"w"
    assert read_stopped_record(run)["checkpoint"] == "checkpoints/stopped-epoch3.pt"
    assert write_stopped_record(run, epoch=None, iteration=None)["checkpoint"] == "checkpoints/stopped-last.pt"


def test_the_log_of_a_crashed_supervisor_gets_its_newline_before_new_lines(tmp_path):
    """Review finding 10: a supervisor killed in the middle of a line left no newline; the next one (a resume)
    starts on a new line, so its first event is not glued to the partial one."""
    job = _job(tmp_path, [("a", "ok")])
    (job / "log.txt").write_bytes(b"old line\nhalf a line of the killed run")
    assert run_job(job) == "done"
    lines, events = _log(job)
    assert lines[:2] == ["old line", "half a line of the killed run"] and events[0]["event"] == "job_start"


def test_a_status_file_held_for_a_moment_is_read_again(tmp_path, monkeypatch):
    """Finding 5 (Windows): a reader that meets status.json locked for a moment reads it again."""
    (tmp_path / "status.json").write_text(json.dumps({"status": "done"}))
    real, calls = Path.read_text, []

    def read_text(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) <= 2:
            raise PermissionError(13, "The process cannot access the file", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert read_status(tmp_path) == {"status": "done"} and len(calls) == 3
    monkeypatch.setattr(Path, "read_text", real)
    assert read_status(tmp_path / "missing") is None


def test_a_job_whose_end_cannot_be_written_to_status_json_is_not_relabelled_failed(tmp_path, monkeypatch, capsys):
    """Finding 5: the final status.json write fails (Windows: a reader held it for more than the retry); the job's
    end stays in log.txt, which the module reads first, and main() does not record "the job could not run"."""
    import PASegLib.jobs.supervisor as supervisor

    job = _job(tmp_path, [("a", "ok")])
    real, calls = supervisor.atomic_write_json, []

    def write(path, obj, **kwargs):
        calls.append(obj["status"])
        if obj["status"] != "running":
            raise PermissionError(13, "Access is denied", str(path))
        real(path, obj, **kwargs)

    monkeypatch.setattr(supervisor, "atomic_write_json", write)
    assert supervisor.main([str(job)]) == 0 and calls == ["running", "done"]
    _, events = _log(job)
    assert events[-1]["event"] == "job_end" and events[-1]["status"] == "done"
    assert "could not be recorded" in capsys.readouterr().err
