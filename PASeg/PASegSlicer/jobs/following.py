"""Following a job that runs DETACHED from Slicer (:mod:`PASegLib.jobs.supervisor`) through its job folder.

The supervisor appends every line of the job's steps to ``JOB/log.txt`` and records its pid and the job's end
in ``JOB/status.json``; it holds the job folder's lock while it runs. :class:`DetachedJobs` (the detached half of
:class:`~PASegSlicer.jobs.runner.JobRunner`) starts it (:meth:`~DetachedJobs.startJob`) or re-attaches to it
(:meth:`~DetachedJobs.attach`): the log is replayed from its start into the :class:`JobState` (progress, loss
history), then read from a timer (``schedule``: ``qt.QTimer`` in Slicer) — no pipe, so closing Slicer does not
end the job and any later session can follow it. Stop writes ``JOB/STOP`` (the supervisor passes it on to the
running step's stop file) and the step's stop file; Kill kills the supervisor's process tree. The supervisor runs
while its pid is alive and the folder's lock is held (:func:`jobRunning`), so a reused pid is not mistaken for it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.stopping import STOP_FILE
from PASegLib.jobs.supervisor import (
    LOG_FILE,
    STATUS_FILE,
    SUPERVISOR_OUTPUT,
    detached_options,
    job_alive,
    lock_held,
    read_status,
)  # fmt: skip
from PASegLib.utils.atomic import atomic_write_json

from .processes import childOutputEnvironment, killProcessTree
from .state import JobState

__all__ = ["FINAL_STATUSES", "DetachedJobs", "jobRunning"]

#: a job folder whose supervisor has not written ``status.json`` yet counts as starting for this long, s
STARTING_GRACE_S = 30.0
FINAL_STATUSES = ("done", "failed", "stopped")
_STALE = object()  # a look of a following that ended (another job followed since, or the job finished)


def notify(callback, value) -> None:
    """``callback(value)`` (an ``onEvent`` / ``onLog`` of the GUI); an exception in it is logged, never passed on:
    it must not end the following of the job (the next look would never be planned)."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        logging.getLogger(__name__).exception("PASeg: a job callback failed on %r", value)


def jobRunning(jobFolder) -> bool:
    """Whether the supervisor of the job folder runs (its pid alive and the folder's lock held), or is starting
    (``status.json`` not written yet, the folder's lock held or ``job.json`` younger than
    :data:`STARTING_GRACE_S`)."""
    folder = Path(jobFolder)
    status = read_status(folder)
    if status is None or status.get("status") == "starting":
        if lock_held(folder):
            return True
        try:
            age = time.time() - (folder / "job.json").stat().st_mtime
        except OSError:
            return False
        return status is not None and age < STARTING_GRACE_S
    return job_alive(folder)


class DetachedJobs:
    """The detached-job half of :class:`~PASegSlicer.jobs.runner.JobRunner` (its attributes: ``state``,
    ``schedule``, ``onEvent``, ``onLog``, ``logLines``, ``_lock``, ``_generation``…; ``stepType``: its
    :class:`~PASegSlicer.jobs.runner.JobStep`)."""

    def _initDetached(self) -> None:
        self.jobFolder: Optional[Path] = None
        self.pollSeconds = 0.2
        self._detached = False
        self._supervisor: Optional[subprocess.Popen] = None
        self._offset, self._pending = 0, b""
        self._jobEnd: Optional[Dict[str, Any]] = None

    def startJob(self, jobFolder, *, python: Optional[str] = None,
                 environment: Optional[Dict[str, str]] = None) -> None:
        """Run the steps recorded in ``JOB/job.json`` DETACHED: ``python -m PASegLib.jobs.supervisor JOB`` in its
        own session (:func:`~PASegLib.jobs.supervisor.detached_options`), not tied to this process, then follow it
        by reading ``JOB/log.txt`` (:meth:`attach`). The job outlives this process; :meth:`stop` writes the stop
        files, :meth:`kill` kills the supervisor's process tree.

        Args:
            jobFolder: the job folder (its ``job.json`` names the steps; a ``log.txt`` from an earlier run of
                the job, e.g. before a resume, is replayed first and appended to).
            python: the supervisor's interpreter (default: this one); ``environment``: variables it gets on top
                of this process's (e.g. ``PYTHONPATH`` to PASegLib).
        """
        if self.isRunning():
            raise RuntimeError("a job is already running; stop it first")
        folder = Path(jobFolder)
        self._supervisor = None
        self._follow(folder, replayOnly=True)  # what an earlier run of this job logged (a resumed job)
        with self._lock:
            self.state.status, self.state.exitCode, self.state.message, self.state.killed = "running", None, "", False
            self._jobEnd = None
            self._finishedEvent.clear()
            atomic_write_json(folder / STATUS_FILE, {"status": "starting"})  # an earlier run's outcome is void
            command = [python or sys.executable, "-m", "PASegLib.jobs.supervisor", str(folder)]
            env = {**os.environ, **childOutputEnvironment(), **(environment or {})}
            try:
                with open(folder / SUPERVISOR_OUTPUT, "ab") as output:
                    self._supervisor = subprocess.Popen(command, cwd=str(folder), env=env, stdin=subprocess.DEVNULL,
                                                        stdout=output, stderr=subprocess.STDOUT, **detached_options())
            except OSError as exc:  # reported later, like every other end (see start())
                message = f"could not start {command[0]}: {exc}"
                atomic_write_json(folder / STATUS_FILE, {"status": "failed", "exit_code": None, "message": message})
                self._generation += 1
                self.schedule(0.0, lambda: self._finish("failed", None, message))
                return
            self._generation += 1
            generation = self._generation
        self.schedule(self.pollSeconds, lambda: self._poll(generation))

    def attach(self, jobFolder) -> None:
        """Follow a job started earlier (by this or an earlier session): replay its ``log.txt`` from the start
        (progress, loss history, the last log lines for the log pane), then read what it appends. A job that
        ended meanwhile is finished at the next look (``onEvent({"event": "finished"})``)."""
        if self.isRunning():
            raise RuntimeError("a job is already followed; stop or detach it first")
        self._supervisor = None
        self._follow(Path(jobFolder), replayOnly=True)
        with self._lock:
            self._finishedEvent.clear()
            if self.state.finished:  # ended while nobody followed it: finished by the first look
                self.state.status = "running"
            if (self.jobFolder / STOP_FILE).exists():
                self._stopRequested, self.state.status = True, "stopping"
            self._generation += 1
            generation = self._generation
        notify(self.onEvent, {"event": "attached", "folder": str(self.jobFolder)})
        if self.onLog is not None:
            for line in list(self.logLines):
                notify(self.onLog, line)
        self.schedule(0.0, lambda: self._poll(generation))

    def detach(self) -> None:
        """Stop following the job; it runs on (closing Slicer with "keep it running"). The runner is idle then."""
        with self._lock:
            self._generation += 1
            self._supervisor = None
            self.state = JobState()
            self.jobFolder, self._detached = None, False

    @property
    def detached(self) -> bool:
        """Whether the job runs detached (:meth:`startJob`, :meth:`attach`)."""
        return self._detached

    def _follow(self, folder: Path, *, replayOnly: bool) -> None:
        """Read the job folder's ``log.txt`` from its start into a fresh state (no callbacks)."""
        doc = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        with self._lock:
            self._steps = [self.stepType.fromRecord(step) for step in doc.get("steps") or []]
            self.jobFolder, self.logPath, self._detached = folder, folder / LOG_FILE, True
            self.state = JobState(status="running", stepCount=len(self._steps))
            self._stopRequested, self._stopFile, self._killReason = False, None, ""
            self._offset, self._pending, self._jobEnd = 0, b"", None
            self.logLines.clear()
            self._readNew(callbacks=False)
            final = self._finalOutcome()
            if replayOnly and final is not None:
                recorded = (read_status(folder) or {}).get("status")
                if self._jobEnd is not None and recorded in ("starting", "running") and self._supervisorAlive():
                    # the end of the run before a resume: this run's supervisor has not logged its job_start yet
                    self._jobEnd = None
                elif not self._supervisorAlive():
                    self.state.status, self.state.exitCode, self.state.message = final

    def _readNew(self, *, callbacks: bool) -> None:
        try:
            with open(self.logPath, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._pending = (self._pending + data).split(b"\n")
        for raw in lines:
            self._handleJobLine(raw.decode("utf-8", errors="replace").rstrip("\r"), callbacks)

    def _handleJobLine(self, line: str, callbacks: bool) -> None:
        event = parse_progress_line(line)
        if event is not None:
            try:
                self._applyJobEvent(event)
            except (ValueError, TypeError, KeyError, AttributeError, IndexError):  # a damaged progress line
                event = None
        if event is None:
            if line.strip():
                self.logLines.append(line)
                if callbacks:
                    notify(self.onLog, line)
            return
        if callbacks:
            notify(self.onEvent, event)

    def _applyJobEvent(self, event: Dict[str, Any]) -> None:
        kind, s = event["event"], self.state
        if kind == "job_start":
            self._jobEnd = None
            s.stepCount = int(event.get("steps") or s.stepCount)
        elif kind == "job_step":
            index = int(event.get("index", 0))
            if self._steps and not 0 <= index < len(self._steps):
                raise ValueError(f"job_step index {index} out of range")
            s.beginStep(index, str(event.get("name", "")))
        elif kind == "job_end":
            self._jobEnd = event
        else:
            s.apply(event)

    def _finalOutcome(self):
        """``(status, exitCode, message)`` once the job ended (its ``job_end`` line, else ``status.json``)."""
        if self._jobEnd is not None:
            end = self._jobEnd
            return str(end.get("status", "failed")), end.get("exit_code"), str(end.get("message", ""))
        status = read_status(self.jobFolder) or {}
        if status.get("status") in FINAL_STATUSES:
            return status["status"], status.get("exit_code"), str(status.get("message", ""))
        return None

    def _supervisorAlive(self) -> bool:
        if self._supervisor is not None:
            return self._supervisor.poll() is None
        return jobRunning(self.jobFolder)

    def _poll(self, generation: int) -> None:
        """One look at the job folder: new lines, then whether the job ended; looks again later while it runs (also
        after a look that failed: one damaged line or failing callback must not end the following)."""
        try:
            outcome = self._look(generation)
        except Exception:
            logging.getLogger(__name__).exception("PASeg: a look at the job folder %s failed", self.jobFolder)
            outcome = None
        if outcome is _STALE:
            return
        if outcome is None:
            self.schedule(self.pollSeconds, lambda: self._poll(generation))
            return
        status, exitCode, message, logged = outcome
        if self.state.killed and status == "stopped":
            message = message or "killed"
        self._finish(status, exitCode, message, logged=logged)

    def _look(self, generation: int):
        """``(status, exitCode, message, logged)`` once the job ended, ``None`` while it runs, ``_STALE``."""
        with self._lock:
            if generation != self._generation or self.state.finished:
                return _STALE
            self._readNew(callbacks=True)
            final = self._finalOutcome()
            if final is not None and self._jobEnd is None:  # seen in status.json: the lines the job wrote before it
                self._readNew(callbacks=True)
                final = self._finalOutcome() or final
            if final is None and not self._supervisorAlive():
                self._readNew(callbacks=True)  # what it wrote before it ended
                final = self._finalOutcome()
                if final is None:  # killed (Kill, the stop timeout) or crashed: nothing recorded the end
                    if self._stopRequested or self.state.killed:
                        final = ("stopped", None, f"{self.state.stepName or 'job'}: {self._killReason or 'killed'}")
                    else:
                        final = ("failed", None, "the job's supervisor ended without recording how the job ended "
                                 f"(killed or crashed); see {self.jobFolder / SUPERVISOR_OUTPUT}")
                    record = {"status": final[0], "exit_code": None, "message": final[2],
                              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
                    try:
                        atomic_write_json(self.jobFolder / STATUS_FILE, record)
                    except OSError:
                        pass
                    logged = False
                else:
                    logged = True
            else:
                logged = True
            if final is not None and self._stopRequested:
                for path in (self.jobFolder / STOP_FILE, self._steps[self.state.stepIndex].stopPath()
                             if self._steps else None):
                    if path is not None:
                        path.unlink(missing_ok=True)  # a killed job leaves its stop files behind
        return None if final is None else (*final, logged)

    def _killDetached(self) -> None:
        """Kill the supervisor's process tree (its step and the step's children with it)."""
        pids = [(read_status(self.jobFolder) or {}).get("pid"), self._supervisor.pid if self._supervisor else None]
        for pid in dict.fromkeys(p for p in pids if isinstance(p, int)):
            killProcessTree(pid)
        if self._supervisor is not None:
            self._supervisor.poll()  # reap it: the next look sees it gone
