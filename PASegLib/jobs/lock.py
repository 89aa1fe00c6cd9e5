"""One writer per folder: the lock of a run folder (``paseg train``), a pipeline folder (``paseg run``) and a
prediction folder (``paseg predict``).

The lock is the file ``FOLDER/.paseg-lock``, locked with the operating system's file lock
(``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), and holding who took it: process id, the process's
start time (Linux: boot id and start tick, so a reused pid is told apart), host, command line, date and a random
token. Why an OS lock rather than a pid file alone: the kernel releases it when the holding process ends in any
way (kill -9, crash, the Slicer job runner killing its child), so a stale lock can never be mistaken for a live
one, whatever pid was reused since, and no timeout has to be guessed; the holder's record is only used to name
it in the refusal ("in use by process 4242 …") and in the note when a stale lock (a record without an OS lock:
its process died without releasing it) is taken over. The lock belongs to the open file of the process that
took it (Python's files are not inherited by child processes), so every ``python -m PASegLib …`` child of the
Slicer job runner takes and releases its own; a second ``open`` of the file in the same process does not get it
either (``flock``, unlike ``fcntl``/``lockf`` record locks, is per open file), so in-process callers are
serialised too.

Fallback, for file systems without working OS locks (``flock`` failing with ``ENOLCK``/``EOPNOTSUPP``, e.g.
some network shares): the file is created exclusively; a recorded holder on this host whose process is gone,
or whose pid now belongs to a process started at another time, is stale and taken over; a holder on another host
cannot be checked and is refused with the file to delete when it is known to be gone.

stdlib only.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from PASegLib.jobs.stopping import STOP_FILE
from PASegLib.utils.atomic import PathLike, process_alive

__all__ = ["LOCK_FILE", "FolderLock", "FolderLockedError", "process_start_time"]

#: Name of the lock file inside a locked folder.
LOCK_FILE = ".paseg-lock"
#: Windows locks a byte range; the byte locked lies past the record so that others can still read the record.
_WINDOWS_LOCK_OFFSET = 1 << 30
_OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.ENOSYS}


class FolderLockedError(ValueError):
    """The folder is in use by another live process (the message names the folder and that process)."""


def process_start_time(pid: int) -> Optional[str]:
    """An identifier of when process ``pid`` started (Linux: ``<boot id>:<start tick>``), ``None`` elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat[stat.rindex(")") + 2:].split()[19]  # field 22 of proc(5), counted after "pid (comm)"
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{ticks}"
    except (OSError, ValueError, IndexError):
        return None


def _os_lock(fd: int) -> None:
    """Take the OS lock on ``fd`` without waiting (``BlockingIOError``/``PermissionError`` when it is held)."""
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _held(exc: OSError) -> bool:
    return isinstance(exc, BlockingIOError) or exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES,
                                                             getattr(errno, "EDEADLOCK", errno.EDEADLK))


class FolderLock:
    """The lock of ``folder`` (created when missing). Use as a context manager or ``acquire()``/``release()``.

    Args:
        folder: the folder to own.
        purpose: what holds it, for the messages (e.g. ``"paseg train"``); the command line is recorded too.
    """

    def __init__(self, folder: PathLike, *, purpose: str = "paseg") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = purpose
        self.token = secrets.token_hex(8)
        self._fd: Optional[int] = None
        self._fallback = False
        #: the note of :meth:`acquire` when it took over a stale lock (``None`` otherwise)
        self.note: Optional[str] = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def record(self) -> Dict[str, Any]:
        """What the lock file says about this process."""
        return {"pid": os.getpid(), "started": process_start_time(os.getpid()), "host": socket.gethostname(),
                "command": self.command, "argv": " ".join(sys.argv)[:300],
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": self.token}

    def acquire(self, *, quiet: bool = False) -> Optional[str]:
        """Take the lock; returns (and, unless ``quiet``, prints on stderr) a note when a stale lock was taken over.

        Raises:
            FolderLockedError: another live process holds it.
            OSError: the folder or the lock file cannot be created (the message names it).
        """
        if self._fd is not None:
            return self.note
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # a holder releasing (and removing the file) meanwhile: try the new file
            fd = os.open(self.path, _OPEN, 0o666)
            try:
                _os_lock(fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _UNSUPPORTED:
                    return self._acquire_fallback(quiet=quiet)
                if _held(exc):
                    raise FolderLockedError(self._refusal(self._read())) from None
                raise
            if os.name != "nt" and not self._same_file(fd):
                os.close(fd)
                continue
            previous = self._read()
            self._fd = fd
            self._write(fd)
            return self._taken_over(previous, quiet=quiet)
        raise FolderLockedError(f"{self.folder}: could not take the lock {self.path} (it keeps changing)")

    def release(self) -> None:
        """Release the lock and remove the lock file (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._fallback:
            os.close(fd)
            if (self._read() or {}).get("token") == self.token:
                self._unlink()
            return
        if os.name == "nt":
            import msvcrt

            try:
                os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            finally:
                os.close(fd)
            self._unlink()  # fails harmlessly when another process opened it meanwhile
        else:
            self._unlink()  # while locked: a process that opened the old file sees it is gone and retries
            os.close(fd)

    # -- helpers ------------------------------------------------------------------------------------------
    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except OSError:
            return False

    def _read(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                text = handle.read(8192).decode("utf-8", "replace").strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return {"unreadable": text[:80]}
        return data if isinstance(data, dict) else {"unreadable": text[:80]}

    def _write(self, fd: int) -> None:
        data = (json.dumps(self.record()) + "\n").encode("utf-8")
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:  # e.g. no space left: name the file, give the lock back
            self.release()
            raise type(exc)(exc.errno, exc.strerror, str(self.path)) from None

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _taken_over(self, previous: Optional[Dict[str, Any]], *, quiet: bool) -> Optional[str]:
        if previous is None:
            return None
        self.note = (f"{self.folder} was locked by {_describe(previous)}, which ended without releasing it "
                     f"(killed or crashed); taking the lock over")
        if not quiet:
            print(f"note: {self.note}", file=sys.stderr)
        return self.note

    def _refusal(self, holder: Optional[Dict[str, Any]]) -> str:
        who = _describe(holder) if holder else "another process (starting up)"
        return (f"{self.folder} is in use by {who}; two PASeg commands must not write into one folder: wait until "
                f"it finishes, stop it (create {self.folder / STOP_FILE}), or choose another folder")

    def _acquire_fallback(self, *, quiet: bool) -> Optional[str]:
        """Exclusive creation of the lock file, for file systems without OS locks (see the module docstring)."""
        self._fallback = True
        previous = None
        for _ in range(10):
            try:
                fd = os.open(self.path, _OPEN | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._read()
                if not _stale_here(holder):
                    message = self._refusal(holder)
                    if holder and holder.get("host") != socket.gethostname():
                        message += (f" (this file system has no working file locks and the holder runs on another "
                                    f"host; delete {self.path} if you know that it is gone)")
                    raise FolderLockedError(message) from None
                previous = holder
                self._unlink()
                continue
            self._fd = fd
            self._write(fd)
            if (self._read() or {}).get("token") != self.token:  # another process took it over at the same time
                os.close(fd)
                self._fd = None
                raise FolderLockedError(self._refusal(self._read()))
            return self._taken_over(previous, quiet=quiet)
        raise FolderLockedError(f"{self.folder}: could not take the lock {self.path} (it keeps changing)")


def _stale_here(holder: Optional[Dict[str, Any]]) -> bool:
    """A fallback-lock record whose process is known to be gone: this host, and the pid is not running or belongs
    to a process started at another time. An empty or unreadable record is stale too."""
    if not holder or "unreadable" in holder or not isinstance(holder.get("pid"), int):
        return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder["pid"]
    if not process_alive(pid):
        return True
    started = holder.get("started")
    return started is not None and process_start_time(pid) not in (None, started)


def _describe(holder: Dict[str, Any]) -> str:
    if "unreadable" in holder:
        return "an unknown process"
    parts = [f"process {holder.get('pid')}"]
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts.append(f"on host {holder['host']}")
    details = ", ".join(str(holder[k]) if k != "since" else f"since {holder[k]}"
                        for k in ("command", "since") if holder.get(k))
    return " ".join(parts) + (f" ({details})" if details else "")
