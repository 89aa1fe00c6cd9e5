"""The Slicer process backend of :class:`~PASegSlicer.jobs.runner.JobRunner`: ``qt.QProcess`` and ``qt.QTimer``.

Everything is signal driven on the GUI thread: no polling, no ``processEvents`` loop, no sleep. Imported only
inside Slicer (it imports ``qt`` when a backend is created).
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Optional

from .processes import childOutputEnvironment, killProcessTree
from .runner import JobRunner


def qtSchedule(delaySeconds: float, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once on the GUI thread after ``delaySeconds``."""
    import qt

    qt.QTimer.singleShot(int(max(0.0, float(delaySeconds)) * 1000), callback)


def qtJobRunner(**options) -> JobRunner:
    """A :class:`~PASegSlicer.jobs.runner.JobRunner` on :class:`QProcessBackend` and :func:`qtSchedule` (``options``:
    its keyword arguments, e.g. ``onEvent``, ``onLog``): the runner factory of the module's job panel."""
    return JobRunner(QProcessBackend(), qtSchedule, **options)


class QProcessBackend:
    """Process backend on ``qt.QProcess`` (see :mod:`PASegSlicer.jobs.runner` for the interface)."""

    def __init__(self) -> None:
        self._process = None
        self._onFinished: Optional[Callable] = None
        self._finishedReported = False

    def start(self, program, arguments, workingDirectory, environment, onOutput, onFinished) -> None:
        """Start ``program arguments…``; raises ``OSError`` when the program does not exist."""
        import qt

        if not (os.path.isfile(str(program)) or shutil.which(str(program))):
            raise OSError(f"program not found: {program}")
        process = qt.QProcess()
        if workingDirectory:
            process.setWorkingDirectory(str(workingDirectory))
        env = qt.QProcessEnvironment.systemEnvironment()
        # unbuffered UTF-8 output (the runner decodes UTF-8), unless the step's environment says otherwise
        for key, value in {**childOutputEnvironment(), **(environment or {})}.items():
            env.insert(str(key), str(value))
        process.setProcessEnvironment(env)
        self._process, self._onFinished, self._finishedReported = process, onFinished, False
        process.readyReadStandardOutput.connect(lambda: onOutput("stdout", _bytes(process.readAllStandardOutput())))
        process.readyReadStandardError.connect(lambda: onOutput("stderr", _bytes(process.readAllStandardError())))
        # finished(int, QProcess::ExitStatus); the exit status is read back when an overload passes only the code
        process.finished.connect(lambda exitCode, exitStatus=None: self._finished(exitCode, process.exitStatus()))
        process.errorOccurred.connect(self._error)
        process.start(str(program), [str(a) for a in arguments])

    def _finished(self, exitCode, exitStatus) -> None:
        import qt

        if self._finishedReported:
            return
        self._finishedReported = True
        self._onFinished(int(exitCode) if exitStatus == qt.QProcess.NormalExit else None)

    def _error(self, error) -> None:
        import qt

        if error == qt.QProcess.FailedToStart and not self._finishedReported:
            self._finishedReported = True
            self._onFinished(None)

    def isRunning(self) -> bool:
        import qt

        return self._process is not None and self._process.state() != qt.QProcess.NotRunning

    def processId(self) -> Optional[int]:
        return None if self._process is None else int(self._process.processId())

    def kill(self) -> None:
        """Kill the child and its descendants (the launcher's real Python process included)."""
        if self.isRunning():
            pid = self.processId()
            if pid:
                killProcessTree(pid)
            self._process.kill()


def _bytes(qbytearray) -> bytes:
    """PythonQt's ``QByteArray`` as ``bytes``."""
    data = qbytearray.data() if hasattr(qbytearray, "data") else qbytearray
    return data if isinstance(data, bytes) else bytes(data)
