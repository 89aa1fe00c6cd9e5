"""Child processes without Qt: a ``subprocess`` backend for :class:`~PASegSlicer.jobs.runner.JobRunner`, a
threading scheduler, UTF-8 line splitting of the child's output, and killing a whole process tree
(``PythonSlicer`` is a launcher that starts the real Python as its own child, so killing only the direct
child would leave the trainer running).

On Windows the helper processes (``taskkill``) and the children of :class:`SubprocessBackend` are started
with ``CREATE_NO_WINDOW`` (no console window flashes up over Slicer). Children are asked for UTF-8 output
(``PYTHONIOENCODING``; :func:`childOutputEnvironment`), which :class:`LineSplitter` decodes.
"""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
import sys
import threading
from typing import Callable, Dict, List, Optional

#: ``creationflags`` for helper and child processes: no console window on Windows (0 elsewhere).
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)


def childOutputEnvironment() -> Dict[str, str]:
    """Variables every child gets unless its step sets them: unbuffered UTF-8 output (what the runner reads)."""
    return {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


class LineSplitter:
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


def threadingSchedule(delaySeconds: float, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once after ``delaySeconds`` on a daemon timer thread."""
    timer = threading.Timer(max(0.0, float(delaySeconds)), callback)
    timer.daemon = True
    timer.start()


def _parentMap() -> Dict[int, int]:
    """pid → parent pid of every process we can see (``/proc`` on Linux, ``ps`` elsewhere on POSIX)."""
    parents: Dict[int, int] = {}
    if os.path.isdir("/proc"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as handle:
                    stat = handle.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
            if len(fields) > 1:
                parents[int(name)] = int(fields[1])
        if parents:
            return parents
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, timeout=10,
                             creationflags=NO_WINDOW)
    except (OSError, subprocess.SubprocessError):
        return parents
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            parents[int(parts[0])] = int(parts[1])
    return parents


def descendantProcessIds(pid: int) -> List[int]:
    """Process ids of all descendants of ``pid`` (children first, then their children…)."""
    children: Dict[int, List[int]] = {}
    for child, parent in _parentMap().items():
        children.setdefault(parent, []).append(child)
    result: List[int] = []
    queue = list(children.get(int(pid), []))
    while queue:
        current = queue.pop(0)
        if current in result or current == pid:
            continue
        result.append(current)
        queue.extend(children.get(current, []))
    return result


def killProcessTree(pid: int) -> List[int]:
    """Kill ``pid`` and all its descendants; returns the process ids that were signalled.

    Windows: ``taskkill /F /T``. POSIX: the tree is frozen (SIGSTOP) so that it cannot fork while it is
    listed, listed again, then killed (SIGKILL).
    """
    pid = int(pid)
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False,
                       creationflags=NO_WINDOW)
        return [pid]
    tree = [pid] + descendantProcessIds(pid)
    for p in tree:
        _signal(p, signal.SIGSTOP)
    tree = list(dict.fromkeys(tree + descendantProcessIds(pid)))
    for p in tree:
        _signal(p, signal.SIGKILL)
    return tree


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class SubprocessBackend:
    """Process backend on ``subprocess.Popen``: reader threads deliver output, a waiter thread the exit."""

    def __init__(self) -> None:
        self._process: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()  # callbacks are serialised like Qt's main-thread signals
        self._done = threading.Event()
        self._done.set()

    def start(self, program, arguments, workingDirectory, environment, onOutput, onFinished) -> None:
        """Start ``program arguments…``; raises ``OSError`` when it cannot be started."""
        env = dict(os.environ)
        env.update(childOutputEnvironment())
        env.update(environment or {})
        self._done.clear()
        try:
            self._process = subprocess.Popen(
                [str(program)] + [str(a) for a in arguments],
                cwd=workingDirectory or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                creationflags=NO_WINDOW,
            )
        except BaseException:
            self._done.set()
            raise
        process = self._process

        def read(stream, name):
            for chunk in iter(lambda: stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096), b""):
                with self._lock:
                    onOutput(name, chunk)

        readers = [
            threading.Thread(target=read, args=(process.stdout, "stdout"), daemon=True),
            threading.Thread(target=read, args=(process.stderr, "stderr"), daemon=True),
        ]
        for reader in readers:
            reader.start()

        def waitForExit():
            code = process.wait()
            for reader in readers:  # a grandchild may hold the pipes open: do not wait for it forever
                reader.join(timeout=5.0)
            self._done.set()
            with self._lock:
                onFinished(code if code >= 0 or sys.platform == "win32" else None)

        threading.Thread(target=waitForExit, daemon=True).start()

    def isRunning(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def processId(self) -> Optional[int]:
        return None if self._process is None else self._process.pid

    def kill(self) -> None:
        if self.isRunning():
            killProcessTree(self._process.pid)
