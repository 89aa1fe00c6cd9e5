"""Background jobs: run ``python -m PASegLib …`` steps in a child process and follow its progress lines.

The job runner never blocks: a *process backend* starts the child and calls back with its output and its
exit; a *scheduler* calls back once after a delay (the stop timeout). Two backends exist:

* :class:`~PASegSlicer.qtprocess.QProcessBackend` in Slicer (``qt.QProcess`` signals, ``qt.QTimer``),
* :class:`SubprocessBackend` here (``subprocess`` + reader threads), used by the tests and scripts.

A backend has ``start(program, arguments, workingDirectory, environment, onOutput, onFinished)``,
``isRunning()``, ``processId()`` and ``kill()`` (kills the whole process tree). ``onOutput(stream, data)``
receives raw ``bytes`` of ``"stdout"``/``"stderr"``; ``onFinished(exitCode)`` receives ``None`` when the
process crashed or was killed.

Progress lines are ``PASEG {json}`` on stdout (events ``start``, ``iteration``, ``validation``,
``checkpoint``, ``done``, ``stopped``, ``error``, ``case``); every other line is a log line. Exit codes:
0 done, 1 error, 2 usage, 3 stopped through the stop file ``RUN_DIR/STOP``, 130 interrupted.
"""

from __future__ import annotations

import codecs
import collections
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional

from PASegLib.progress_events import parse_progress_line

from .processes import SubprocessBackend, killProcessTree, threadingSchedule

__all__ = [
    "JobRunner", "JobState", "JobStep", "SubprocessBackend", "killProcessTree", "parseProgressLine",
    "threadingSchedule", "STOP_FILE_NAME",
]  # fmt: skip


STOP_FILE_NAME = "STOP"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def parseProgressLine(line: str) -> Optional[Dict[str, Any]]:
    """The event dictionary of a ``PASEG {json}`` line, or ``None`` for a log line or a damaged one."""
    return parse_progress_line(line)  # the one parser, shared with the CLI progress bar


@dataclass
class JobStep:
    """One child process of a job: ``program arguments…``; ``runDir`` is where its stop file goes."""

    name: str
    program: str
    arguments: List[str]
    runDir: Optional[str] = None
    workingDirectory: Optional[str] = None
    environment: Dict[str, str] = field(default_factory=dict)


@dataclass
class JobState:
    """What the GUI shows; updated from the progress lines (read it on the main thread)."""

    status: str = "idle"  # idle, running, stopping, done, failed, stopped
    stepIndex: int = 0
    stepCount: int = 0
    stepName: str = ""
    stepFraction: float = 0.0
    etaSeconds: Optional[float] = None
    epoch: Optional[int] = None
    losses: Dict[str, float] = field(default_factory=dict)
    lastScore: Optional[float] = None
    lossHistory: List[Dict[str, Any]] = field(default_factory=list)
    validationHistory: List[Dict[str, Any]] = field(default_factory=list)
    doneEvents: List[Dict[str, Any]] = field(default_factory=list)
    caseEvents: List[Dict[str, Any]] = field(default_factory=list)
    exitCode: Optional[int] = None
    message: str = ""
    killed: bool = False

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] over all steps."""
        if self.stepCount <= 0:
            return 0.0
        if self.status == "done":
            return 1.0
        return min(1.0, (self.stepIndex + min(1.0, self.stepFraction)) / self.stepCount)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "stopped")

    def summary(self) -> Dict[str, str]:
        """Texts for the progress widgets: ``step``, ``eta``, ``losses``, ``score``."""
        eta = "" if self.etaSeconds is None else formatDuration(self.etaSeconds)
        losses = ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items() if isinstance(v, (int, float)))
        score = "" if self.lastScore is None else f"{self.lastScore:.4f}"
        step = f"{self.stepName} ({self.stepIndex + 1}/{self.stepCount})" if self.stepCount else ""
        return {"step": step, "eta": eta, "losses": losses, "score": score, "status": self.status}


def formatDuration(seconds: float) -> str:
    """``3725`` → ``"1 h 02 min"``; ``75`` → ``"1 min 15 s"``."""
    s = max(0, int(round(float(seconds))))
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class _LineSplitter:
    """Incremental UTF-8 decoding and splitting into lines (``\\n``, ``\\r\\n`` and progress-bar ``\\r``)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> List[str]:
        text = self._pending + self._decoder.decode(data)
        parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = parts.pop()
        return parts

    def flush(self) -> List[str]:
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [rest] if rest else []


class JobRunner:
    """Runs the steps of a job one after the other in child processes and keeps a :class:`JobState`.

    Args:
        backend: a process backend (see module docstring).
        schedule: ``schedule(delaySeconds, callback)`` calls ``callback()`` once later (``qt.QTimer.singleShot``
            in Slicer, :func:`threadingSchedule` in tests).
        logPath: the full log file (every line, appended); ``None`` for no file.
        maxLogLines: lines kept in memory for the log pane (older lines are dropped).
        stopTimeoutSeconds: after :meth:`stop` wrote the stop file, the process tree is killed if it is still
            running after this delay.
        onEvent: ``onEvent(event dict)`` for every progress event, and ``{"event": "finished"}`` at the end.
        onLog: ``onLog(line)`` for every log line (stderr lines are prefixed with ``"! "``).
    """

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
        self._splitters: Dict[str, _LineSplitter] = {}
        self._lock = threading.RLock()
        self._stopRequested = False
        self._generation = 0  # identifies the running step for the delayed kill
        self._finishedEvent = threading.Event()
        self._lastStderr: Deque[str] = collections.deque(maxlen=5)

    # -- control -------------------------------------------------------------------------------------------
    def start(self, steps: List[JobStep]) -> None:
        """Start the first step; the next one starts when a step exits with 0."""
        if not steps:
            raise ValueError("a job needs at least one step")
        if self.isRunning():
            raise RuntimeError("a job is already running; stop it first")
        self._steps = list(steps)
        self.state = JobState(status="running", stepCount=len(steps))
        self._stopRequested = False
        self._finishedEvent.clear()
        self._startStep(0)

    def isRunning(self) -> bool:
        return self.state.status in ("running", "stopping")

    def stop(self) -> None:
        """Ask the running step to stop (stop file), cancel the next steps, kill the tree after the timeout."""
        with self._lock:
            if not self.isRunning() or self._stopRequested:
                return
            self._stopRequested = True
            self.state.status = "stopping"
            step = self._steps[self.state.stepIndex]
            if step.runDir:
                stopFile = Path(step.runDir) / STOP_FILE_NAME
                stopFile.parent.mkdir(parents=True, exist_ok=True)
                stopFile.write_text("stop requested by the PASeg module\n", encoding="utf-8")
            self._log(f"[PASeg] stop requested; the process is killed if it runs {self.stopTimeoutSeconds:g} s more")
            generation = self._generation
        self.schedule(self.stopTimeoutSeconds, lambda: self._killIfStillRunning(generation))

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job finished (for scripts and tests only; the GUI uses ``onEvent``)."""
        return self._finishedEvent.wait(timeout)

    # -- internals -----------------------------------------------------------------------------------------
    def _startStep(self, index: int) -> None:
        step = self._steps[index]
        with self._lock:
            self._generation += 1
            self.state.stepIndex, self.state.stepName = index, step.name
            self.state.stepFraction, self.state.etaSeconds = 0.0, None
            self._splitters = {"stdout": _LineSplitter(), "stderr": _LineSplitter()}
            command = " ".join([step.program] + step.arguments)
            self._log(f"[PASeg] step {index + 1}/{len(self._steps)}: {step.name}: {command}")
        try:
            self.backend.start(
                step.program, step.arguments, step.workingDirectory, dict(step.environment),
                self._onOutput, self._onFinished,
            )  # fmt: skip
        except Exception as exc:  # the program is missing, not executable…
            self._finish("failed", None, f"could not start {step.program}: {exc}")

    def _killIfStillRunning(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self.backend.isRunning():
                return
            self.state.killed = True
            self._log(f"[PASeg] no stop within {self.stopTimeoutSeconds:g} s; killing the process tree")
        self.backend.kill()

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
        self._applyEvent(event)
        if self.onEvent is not None:
            self.onEvent(event)

    def _applyEvent(self, event: Dict[str, Any]) -> None:
        s, kind = self.state, event["event"]
        if kind == "iteration":
            total = float(event.get("total_iterations") or 0)
            s.stepFraction = float(event.get("iteration", 0)) / total if total > 0 else s.stepFraction
            s.etaSeconds = _number(event.get("eta_s"))
            s.epoch = event.get("epoch", s.epoch)
            s.losses = {str(k): float(v) for k, v in (event.get("losses") or {}).items() if _number(v) is not None}
            s.lossHistory.append({"step": s.stepIndex, "iteration": event.get("iteration"), **s.losses})
        elif kind == "validation":
            s.lastScore = _number(event.get("score"))
            s.validationHistory.append(
                {"step": s.stepIndex, "epoch": event.get("epoch"), "score": s.lastScore, "x": len(s.lossHistory)}
            )
        elif kind == "case":
            total = float(event.get("total") or 0)
            s.stepFraction = float(event.get("index", 0)) / total if total > 0 else s.stepFraction
            s.caseEvents.append(event)
        elif kind == "done":
            s.doneEvents.append(event)
        elif kind == "error":
            s.message = str(event.get("message", ""))

    def _onFinished(self, exitCode: Optional[int]) -> None:
        with self._lock:
            for stream, splitter in self._splitters.items():
                for line in splitter.flush():
                    self._handleLine(stream, line)
            self.state.exitCode = exitCode
            if self._stopRequested or exitCode in (EXIT_STOPPED, EXIT_INTERRUPTED):
                how = "killed after the stop timeout" if self.state.killed else "stopped"
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

    def _finish(self, status: str, exitCode: Optional[int], message: str) -> None:
        with self._lock:
            self.state.status, self.state.exitCode, self.state.message = status, exitCode, message
            self._log(f"[PASeg] job {status}: {message}")
        if self.onEvent is not None:
            self.onEvent({"event": "finished", "status": status, "message": message})
        self._finishedEvent.set()

    def _log(self, line: str) -> None:
        self.logLines.append(line)
        self._writeLogFile(line)
        if self.onLog is not None:
            self.onLog(line)

    def _writeLogFile(self, line: str) -> None:
        if self.logPath is None:
            return
        self.logPath.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logPath, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _number(value: Any) -> Optional[float]:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and abs(result) != float("inf") else None
