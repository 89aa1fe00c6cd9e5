"""Background jobs: run ``python -m PASegLib …`` steps in a child process and follow its progress lines.

Two ways to run steps, one face (``state``, ``stop``, ``kill``, ``isRunning``, ``canKill``, ``onEvent``/``onLog``):

* :meth:`JobRunner.startJob` / :meth:`JobRunner.attach` (training, prediction, review jobs): the steps of a job
  folder run DETACHED under the job supervisor (:mod:`PASegLib.jobs.supervisor`), followed through the folder's
  ``log.txt`` and ``status.json`` from a timer (:mod:`PASegSlicer.jobs.following`); the job outlives Slicer and
  any later session re-attaches to it.
* :meth:`JobRunner.start` (short children: the GPU probe): the steps' output is read from their pipes through a
  process backend, described below; the child ends with Slicer.

The job runner never blocks: a *process backend* starts the child and calls back with its output and its
exit; a *scheduler* calls back once after a delay (the stop timeout, a look at a detached job's folder). Two
backends exist:

* :class:`~PASegSlicer.jobs.qtprocess.QProcessBackend` in Slicer (``qt.QProcess`` signals, ``qt.QTimer``),
* :class:`SubprocessBackend` here (``subprocess`` + reader threads), used by the tests and scripts.

A backend has ``start(program, arguments, workingDirectory, environment, onOutput, onFinished)``,
``isRunning()``, ``processId()`` and ``kill()`` (kills the whole process tree). ``onOutput(stream, data)``
receives raw ``bytes`` of ``"stdout"``/``"stderr"``; ``onFinished(exitCode)`` receives ``None`` when the
process crashed or was killed.

Progress lines are ``PASEG {json}`` on stdout (events ``phase``, ``prepare``, ``start``, ``iteration``,
``validation_case``, ``validation``, ``checkpoint``, ``done``, ``stopped``, ``error``, ``case``); every other
line is a log line. The exit codes are :mod:`PASegLib.jobs.stopping`'s: ``EXIT_OK`` done, ``EXIT_STOPPED``
(the stop file) and ``EXIT_INTERRUPTED`` stopped, any other code failed.

Stopping (protocol: :mod:`PASegLib.jobs.stopping`): :meth:`JobRunner.stop` writes the step's stop file
(``RUN_DIR/STOP`` of a training step, ``OUT/STOP`` of a prediction step, :meth:`JobStep.stopPath`); the child
honours it within seconds in every phase (data preparation, training, validation, prediction), saves what it
can and exits with code 3. The child removes a stop file that exists when it starts (stale), before its first
progress event, so while stopping the runner writes the file again at every progress event until the child
has stopped. If the child still runs ``stopTimeoutSeconds`` later, or at once when the step has no stop file,
the process tree is killed. A second :meth:`JobRunner.stop` while stopping (:attr:`JobRunner.canKill`, the
GUI's "Kill" button) kills the process tree at once.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional

from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.stopping import EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED, STOP_FILE

from .following import FINAL_STATUSES, DetachedJobs, jobRunning, notify
from .processes import LineSplitter, SubprocessBackend, killProcessTree, threadingSchedule
from .state import JobState, formatDuration

__all__ = [
    "FINAL_STATUSES", "JobRunner", "JobState", "JobStep", "SubprocessBackend", "formatDuration", "jobRunning",
    "killProcessTree", "parseProgressLine", "replayJob", "threadingSchedule",
]  # fmt: skip


def parseProgressLine(line: str) -> Optional[Dict[str, Any]]:
    """The event dictionary of a ``PASEG {json}`` line, or ``None`` for a log line or a damaged one."""
    return parse_progress_line(line)  # the one parser, shared with the CLI progress bar


@dataclass
class JobStep:
    """One child process of a job: ``program arguments…``.

    ``runDir``: the training run folder (its ``STOP`` is the stop file; recorded in ``job.json``);
    ``stopFile``: the stop file of a step without a run folder (prediction: ``OUT/STOP``).
    """

    name: str
    program: str
    arguments: List[str]
    runDir: Optional[str] = None
    workingDirectory: Optional[str] = None
    environment: Dict[str, str] = field(default_factory=dict)
    stopFile: Optional[str] = None

    def stopPath(self) -> Optional[Path]:
        """The stop file the child watches: ``stopFile``, else ``runDir/STOP``, else ``None`` (no polite stop)."""
        if self.stopFile:
            return Path(self.stopFile)
        return Path(self.runDir) / STOP_FILE if self.runDir else None

    @classmethod
    def fromRecord(cls, record: Dict[str, Any]) -> JobStep:
        """The step of one ``steps`` entry of ``job.json`` (:func:`~PASegSlicer.jobs.commands.writeJobFile`)."""
        command = [str(c) for c in record.get("command") or []]
        if not command:
            raise ValueError(f"job step {record.get('name')!r} has no command")
        return cls(str(record.get("name", "step")), command[0], command[1:], record.get("run_dir"),
                   record.get("cwd"), dict(record.get("env") or {}), record.get("stop_file"))


class JobRunner(DetachedJobs):
    """Runs the steps of a job one after the other in child processes and keeps a :class:`JobState`.

    Args:
        backend: a process backend (see module docstring).
        schedule: ``schedule(delaySeconds, callback)`` calls ``callback()`` once later (``qt.QTimer.singleShot``
            in Slicer, :func:`threadingSchedule` in tests).
        logPath: the full log file (every line, appended); ``None`` for no file.
        maxLogLines: lines kept in memory for the log pane (older lines are dropped).
        stopTimeoutSeconds: after :meth:`stop` wrote the stop file, the process tree is killed if it is still
            running after this delay (a safety net: the child stops within seconds in every phase).
        onEvent: ``onEvent(event dict)`` for every progress event, and ``{"event": "finished"}`` at the end.
        onLog: ``onLog(line)`` for every log line (stderr lines are prefixed with ``"! "``).
    """

    stepType = JobStep  # the steps of a job folder's job.json (DetachedJobs)

    def __init__(
        self,
        backend,
        schedule: Callable[[float, Callable[[], None]], None],
        *,
        logPath: Optional[os.PathLike] = None,
        maxLogLines: int = 2000,
        stopTimeoutSeconds: float = 30.0,
        onEvent: Optional[Callable[[Dict[str, Any]], None]] = None,
        onLog: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.backend = backend
        self.schedule = schedule
        self.logPath = None if logPath is None else Path(logPath)
        self.logLines: Deque[str] = collections.deque(maxlen=max(1, int(maxLogLines)))
        self.stopTimeoutSeconds = float(stopTimeoutSeconds)
        self.onEvent = onEvent
        self.onLog = onLog
        self.state = JobState()
        self._steps: List[JobStep] = []
        self._splitters: Dict[str, LineSplitter] = {}
        self._lock = threading.RLock()
        self._stopRequested = False
        self._stopFile: Optional[Path] = None  # the stop file written for the running step
        self._killReason = ""
        self._generation = 0  # identifies the running step for the delayed kill
        self._finishedEvent = threading.Event()
        self._lastStderr: Deque[str] = collections.deque(maxlen=5)
        self._initDetached()  # a detached job (startJob / attach): followed by reading its folder's log.txt

    # -- control -------------------------------------------------------------------------------------------
    def start(self, steps: List[JobStep]) -> None:
        """Start the first step; the next one starts when a step exits with 0."""
        if not steps:
            raise ValueError("a job needs at least one step")
        if self.isRunning():
            raise RuntimeError("a job is already running; stop it first")
        self._steps = list(steps)
        self.state = JobState(status="running", stepCount=len(steps))
        self._stopRequested, self._stopFile, self._killReason = False, None, ""
        self._detached, self.jobFolder = False, None
        self._finishedEvent.clear()
        self._startStep(0)

    def isRunning(self) -> bool:
        return self.state.status in ("running", "stopping")

    @property
    def canKill(self) -> bool:
        """``True`` while a stop is under way: another :meth:`stop` (the GUI's "Kill") kills the tree at once."""
        return self.state.status == "stopping"

    def stop(self) -> None:
        """Stop the job; calling it again while stopping kills the process tree at once.

        First call: write the running step's stop file (the child saves what it can and exits with code 3
        within seconds), cancel the next steps, and kill the process tree if it still runs after
        ``stopTimeoutSeconds`` (at once when the step has no stop file). Later calls while the job is
        "stopping" (:attr:`canKill`): :meth:`kill`. Does nothing when no job runs.
        """
        with self._lock:
            if not self.isRunning():
                return
            if self._stopRequested:
                killNow = True
            elif self._detached:
                killNow = False
                self._stopRequested = True
                self.state.status = "stopping"
                self._stopFile = self._steps[self.state.stepIndex].stopPath() if self._steps else None
                written = self._writeStopFile() if self._stopFile is not None else False
                self._stopFile = self.jobFolder / STOP_FILE  # the supervisor passes it on to every step
                if not self._writeStopFile() and not written:
                    self._stopFile = None
            else:
                killNow = False
                self._stopRequested = True
                self.state.status = "stopping"
                self._stopFile = self._steps[self.state.stepIndex].stopPath()
                if self._stopFile is not None and not self._writeStopFile():
                    self._stopFile = None  # nothing will stop the child politely
            if not killNow and self._stopFile is not None:
                self._log(f"[PASeg] stop requested; the process is killed if it runs "
                          f"{self.stopTimeoutSeconds:g} s more (press Kill to kill it now)")
            generation = self._generation
        if killNow:
            self.kill()
        elif self._stopFile is None:
            self._killIfStillRunning(generation, "the step has no stop file; killing the process tree")
        else:
            self.schedule(self.stopTimeoutSeconds, lambda: self._killIfStillRunning(generation))

    def kill(self) -> None:
        """Kill the running step's process tree now and cancel the next steps (nothing is saved)."""
        with self._lock:
            if not self.isRunning():
                return
            self._stopRequested = True
            self.state.status = "stopping"
            generation = self._generation
        self._killIfStillRunning(generation, "kill requested; killing the process tree")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job finished (for scripts and tests only; the GUI uses ``onEvent``); when its "finished"
        callback started following another job (the panel's re-scan), until that one finished too."""
        return self._finishedEvent.wait(timeout)

    # -- internals -----------------------------------------------------------------------------------------
    def _startStep(self, index: int) -> None:
        step = self._steps[index]
        with self._lock:
            self._generation += 1
            self.state.beginStep(index, step.name)
            self._splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
            command = " ".join([step.program] + step.arguments)
            self._log(f"[PASeg] step {index + 1}/{len(self._steps)}: {step.name}: {command}")
        try:
            self.backend.start(
                step.program, step.arguments, step.workingDirectory, dict(step.environment),
                self._onOutput, self._onFinished,
            )  # fmt: skip
        except Exception as exc:  # the program is missing, not executable…
            # reported later, like every other end: the caller of start() has not yet recorded the job it started
            message = f"could not start {step.program}: {exc}"
            self.schedule(0.0, lambda: self._finish("failed", None, message))

    def _killIfStillRunning(self, generation: int, why: str = "") -> None:
        with self._lock:
            running = self._supervisorAlive() if self._detached else self.backend.isRunning()
            if generation != self._generation or self.state.finished or not running:
                return
            self.state.killed = True
            self._killReason = "killed" if why else "killed after the stop timeout"
            self._log("[PASeg] " + (why or f"no stop within {self.stopTimeoutSeconds:g} s; killing the process tree"))
        if self._detached:
            self._killDetached()
        else:
            self.backend.kill()

    def _writeStopFile(self) -> bool:
        try:
            self._stopFile.parent.mkdir(parents=True, exist_ok=True)
            self._stopFile.write_text("stop requested by the PASeg module\n", encoding="utf-8")
            return True
        except OSError as exc:
            self._log(f"[PASeg] cannot write the stop file {self._stopFile}: {exc}")
            return False

    def _removeStopFile(self) -> None:
        if self._stopFile is not None:
            try:
                self._stopFile.unlink()
            except OSError:
                pass

    def _onOutput(self, stream: str, data: bytes) -> None:
        with self._lock:
            for line in self._splitters[stream].feed(data):
                self._handleLine(stream, line)

    def _handleLine(self, stream: str, line: str) -> None:
        event = parseProgressLine(line) if stream == "stdout" else None
        if event is None:
            if line.strip():
                if stream == "stderr":
                    self._lastStderr.append(line.strip())
                self._log(("! " if stream == "stderr" else "") + line)
            return
        self._writeLogFile(line)
        if self.state.status == "stopping" and self._stopFile is not None and event["event"] != "stopped":
            if not self._stopFile.exists():  # the child removed it as stale when it started: ask again
                self._writeStopFile()
        self.state.apply(event)
        if self.onEvent is not None:
            self.onEvent(event)

    def _onFinished(self, exitCode: Optional[int]) -> None:
        with self._lock:
            for stream, splitter in self._splitters.items():
                for line in splitter.flush():
                    self._handleLine(stream, line)
            self.state.exitCode = exitCode
            if self._stopRequested:
                self._removeStopFile()  # written for this step; a child that was killed left it behind
            if self._stopRequested or exitCode in (EXIT_STOPPED, EXIT_INTERRUPTED):
                how = self._killReason if self.state.killed else "stopped"
                self._finish("stopped", exitCode, self.state.message or f"{self.state.stepName}: {how}")
                return
            if exitCode != EXIT_OK:
                detail = self.state.message or (self._lastStderr[-1] if self._lastStderr else "")
                why = "crashed or was killed" if exitCode is None else f"exited with code {exitCode}"
                self._finish("failed", exitCode, f"{self.state.stepName} {why}" + (f": {detail}" if detail else ""))
                return
            nextIndex = self.state.stepIndex + 1
        if nextIndex < len(self._steps):
            self._startStep(nextIndex)
        else:
            self._finish("done", exitCode, "finished")

    def _finish(self, status: str, exitCode: Optional[int], message: str, *, logged: bool = False) -> None:
        with self._lock:
            self.state.status, self.state.exitCode, self.state.message = status, exitCode, message
            if not logged:
                self._log(f"[PASeg] job {status}: {message}")
        generation = self._generation
        notify(self.onEvent, {"event": "finished", "status": status, "message": message})
        if generation == self._generation:  # the callback did not start following another job (a re-scan)
            self._finishedEvent.set()

    def _log(self, line: str) -> None:
        self.logLines.append(line)
        self._writeLogFile(line)
        if self.onLog is not None:
            self.onLog(line)

    def _writeLogFile(self, line: str) -> None:
        if self.logPath is None or self._detached:  # a detached job's supervisor writes its log
            return
        self.logPath.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logPath, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def replayJob(jobFolder) -> JobState:
    """The :class:`JobState` that the job folder's ``log.txt`` tells (progress, loss history, done / case events),
    with the final status of ``status.json`` when the job ended (``"running"`` while it runs)."""
    runner = JobRunner(None, lambda delay, callback: None)
    runner._follow(Path(jobFolder), replayOnly=True)
    return runner.state
