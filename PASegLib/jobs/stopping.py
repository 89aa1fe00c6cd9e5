"""The stop file of every ``paseg`` command (a polite, file-based "please stop" from the GUI) and every exit code.

Protocol (the Slicer module's job runner and a terminal user speak it alike):

* Every command watches ``STOP`` in the folder it writes into: ``paseg train`` ``RUN_DIR/STOP``, ``paseg predict``
  ``OUT/STOP``, ``paseg run`` ``DIR/STOP`` (in every step; a training step also honours its own
  ``DIR/<run>/STOP``).
* A stop file older than the command's process is stale (left by a killed session): it is removed before the
  command's first progress event. Any stop file written after the process started is honoured, also one written
  before the command looked (a Stop pressed right after Start, while Python still imports torch), within seconds
  in every phase: between data-preparation cases and between the stages of one case, before every training
  iteration, inside validation and prediction (before every sliding window).
* The command saves what it can, removes the stop file, prints a ``PASEG {"event": "stopped", ...}`` line
  and exits with :data:`EXIT_STOPPED`.

"Older" compares the file's modification time with the start of the process (:func:`command_started_at`: the
operating system's record on Linux and Windows, else the moment this module was imported; the start of the
launcher for the processes that ``paseg train --nproc-per-node`` starts), less :data:`STALE_MARGIN_S` for file
systems that keep coarse times (FAT: 2 s). A stop file on a network share whose clock is off by more than that
can be misjudged; the job runner writes the stop file again at every progress event while it stops a command,
so a stop is never lost there.

stdlib only (training wraps its networks with :func:`PASegLib.training.runtime.stop_checking`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PASegLib.utils.atomic import PathLike

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "LAUNCHER_PID_ENV",
           "STALE_MARGIN_S", "STOP_FILE", "StopFile", "StopRequested", "command_started_at", "process_started_at"]

# The exit codes of every ``paseg`` command (the Slicer module's job runner reads them from here too).
#: Success.
EXIT_OK = 0
#: Bad input (one ``paseg X: error: …`` line naming the input, then a ``PASEG {"event": "error"}`` line), or a bug.
EXIT_ERROR = 1
#: Usage error (argparse).
EXIT_USAGE = 2
#: Exit code of a command that stopped because its stop file appeared.
EXIT_STOPPED = 3
#: Interrupted (Ctrl-C / SIGINT).
EXIT_INTERRUPTED = 130
#: Name of the stop file inside the run folder (training) or the output folder (prediction).
STOP_FILE = "STOP"
#: Seconds by which a stop file must predate the command's start to be stale (coarse file-system times: FAT 2 s).
STALE_MARGIN_S = 2.0
#: Environment variable holding the process id of the ``paseg train --nproc-per-node`` launcher in the processes
#: it starts (their command started when the launcher did).
LAUNCHER_PID_ENV = "PASEG_LAUNCHER_PID"
#: When this module was first imported: the start of the process where the system does not say.
_IMPORTED_AT = time.time()
#: This process's start (pid → seconds; a forked child computes its own).
_STARTED: Dict[int, float] = {}


def process_started_at(pid: Optional[int] = None) -> Optional[float]:
    """When process ``pid`` (default: this one) started, in ``time.time()`` seconds; ``None`` when the system
    does not say (Linux: ``/proc``, 10 ms resolution; Windows: ``GetProcessTimes``; elsewhere ``None``)."""
    pid = os.getpid() if pid is None else int(pid)
    try:
        if sys.platform.startswith("linux"):
            stat = Path(f"/proc/{pid}/stat").read_text()
            ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22 of proc(5): start, in ticks after boot
            uptime = float(Path("/proc/uptime").read_text().split()[0])
            return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
        if os.name == "nt":
            return _windows_process_started_at(pid)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return None


def _windows_process_started_at(pid: int) -> Optional[float]:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]  # (a private copy)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    kernel32.GetProcessTimes.argtypes = [wintypes.HANDLE] + [ctypes.POINTER(wintypes.FILETIME)] * 4
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return None
    try:
        times = [wintypes.FILETIME() for _ in range(4)]  # creation, exit, kernel, user
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        created = (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime  # 100 ns since 1601-01-01
        return created / 1e7 - 11644473600.0
    finally:
        kernel32.CloseHandle(handle)


def command_started_at() -> float:
    """When the running command started (``time.time()`` seconds): this process's start, or its launcher's
    (:data:`LAUNCHER_PID_ENV`) when that is earlier; the import of this module where the system does not say."""
    if os.getpid() not in _STARTED:  # computed once per process (the system's record is read at 10 ms steps)
        _STARTED[os.getpid()] = process_started_at() or _IMPORTED_AT
    started = [_STARTED[os.getpid()], _IMPORTED_AT]
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if launcher.isdigit():
        found = process_started_at(int(launcher))
        if found is not None:
            started.append(found)
    return min(started)


class StopRequested(Exception):
    """Raised from inside a long computation when the stop file appeared; callers save what they can.

    Attributes:
        rows: what a batch command finished before the stop (e.g. :func:`~PASegLib.inference.predictor.predict_files`'
            per-case rows); empty when nothing was finished.
    """

    def __init__(self, message: str = "stop requested", *, rows: Optional[List[Any]] = None) -> None:
        super().__init__(message)
        self.rows: List[Any] = list(rows or [])


class StopFile:
    """One stop file: ``clear_stale()`` at start, ``requested()`` / ``check()`` while working, ``consume()``.

    Args:
        path: the stop file (its folder need not exist).
        also: further stop files honoured alike but never removed as stale (an enclosing command's, e.g. the
            pipeline's ``DIR/STOP`` inside one of its training steps); ``consume()`` removes them too.
    """

    def __init__(self, path: PathLike, *, also: Sequence[PathLike] = ()) -> None:
        self.path = Path(path)
        self.also: Tuple[Path, ...] = tuple(Path(p) for p in also)

    def __repr__(self) -> str:
        extra = f", also={[str(p) for p in self.also]!r}" if self.also else ""
        return f"StopFile({str(self.path)!r}{extra})"

    def _found(self) -> Optional[Path]:
        for path in (self.path, *self.also):
            if path.exists():
                return path
        return None

    def clear_stale(self, *, started_at: Optional[float] = None) -> bool:
        """Remove the stop file when an earlier session left it: when it was last written more than
        :data:`STALE_MARGIN_S` before the command started (``started_at``, default :func:`command_started_at`).
        A stop file written since is kept and honoured. ``True`` when a stale file was removed."""
        started = command_started_at() if started_at is None else float(started_at)
        try:
            if self.path.stat().st_mtime >= started - STALE_MARGIN_S:
                return False  # written by someone who wants this command to stop
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError:  # e.g. a read-only folder: the file stays and is honoured
            return False

    def requested(self) -> bool:
        """Whether a stop file exists now (one ``stat`` each; cheap enough for every sliding window)."""
        return self._found() is not None

    def check(self) -> None:
        """Raise :class:`StopRequested` when a stop file exists."""
        found = self._found()
        if found is not None:
            raise StopRequested(f"stop requested ({found} appeared)")

    def consume(self) -> None:
        """Remove the stop file(s) after a stop was honoured (missing files are fine)."""
        for path in (self.path, *self.also):
            try:
                path.unlink()
            except OSError:
                pass


