"""The job supervisor: runs the steps of a job folder one after the other, detached from whoever started it.

``python -m PASegLib.jobs.supervisor JOB_DIR`` reads ``JOB_DIR/job.json`` (``steps``: ``name``, ``command``,
``cwd``, ``env``, ``stop_file``, optional ``skip``) and runs each step as a child process. The Slicer module starts
it in its own session / process group with no terminal and no pipe to Slicer (:func:`detached_options`), so the
job outlives Slicer; the module follows it by reading the files below, and so can any later session.

Files of the job folder:

* ``log.txt`` — every output line of every step, appended as it comes: the ``PASEG {json}`` progress lines and
  the log lines (stderr lines start with ``"! "``), plus the supervisor's own ``[PASeg] …`` lines and its events
  ``job_start`` (``steps``, ``pid``), ``job_step`` (``index`` 0-based, ``count``, ``name``) and ``job_end``
  (``status``, ``exit_code``, ``message``). Replaying it from the start rebuilds the progress.
* ``status.json`` — written atomically: ``{"status": "running", "pid", "started", "since"}`` when the supervisor
  starts, then ``{"status": "done" | "failed" | "stopped", "exit_code", "message", "finished", "pid"}``.
* ``.paseg-lock`` — the job folder's :class:`~PASegLib.jobs.lock.FolderLock`, held while the supervisor runs: the
  supervisor is alive when its pid runs *and* the lock is held (:func:`job_alive`), so a reused pid is never
  mistaken for it.
* ``STOP`` — the supervisor's stop file (:mod:`PASegLib.jobs.stopping`: a ``STOP`` older than the supervisor is
  stale): when it appears, the running step's own stop file is written (again whenever the step removed it, at
  each of its progress events), the next steps are cancelled and the job ends ``stopped``. A step without a stop
  file is killed.

Exit codes as the steps': the job's status is ``done`` (every step exited with 0), ``stopped`` (a stop was asked,
or a step exited with :data:`~PASegLib.jobs.stopping.EXIT_STOPPED` / ``EXIT_INTERRUPTED``) or ``failed``.

stdlib only.
"""

from __future__ import annotations

import codecs
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

from PASegLib.jobs.events import format_progress_line, parse_progress_line
from PASegLib.jobs.lock import LOCK_FILE, FolderLock, FolderLockedError, process_start_time
from PASegLib.jobs.stopping import EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED, STOP_FILE, StopFile
from PASegLib.utils.atomic import PathLike, atomic_write_json, process_alive

__all__ = ["JOB_FILE", "LOG_FILE", "STATUS_FILE", "detached_options", "job_alive", "lock_held", "main",
           "read_status", "run_job"]

JOB_FILE = "job.json"
LOG_FILE = "log.txt"
STATUS_FILE = "status.json"
#: where the supervisor's own stdout/stderr go (a crash before the log is open)
SUPERVISOR_OUTPUT = "supervisor.txt"
#: seconds between two looks at the step and the stop file
POLL_S = 0.1


def detached_options() -> Dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that detach a process from its parent's session and console:
    POSIX a new session (no SIGHUP / Ctrl-C of the parent's terminal), Windows ``DETACHED_PROCESS |
    CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW``; no inherited handles either way."""
    if os.name == "nt":
        flags = (getattr(subprocess, "DETACHED_PROCESS", 0x8) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
                 | getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000))
        return {"creationflags": flags, "close_fds": True}
    return {"start_new_session": True, "close_fds": True}


def read_status(job_dir: PathLike) -> Optional[Dict[str, Any]]:
    """``JOB_DIR/status.json`` (``None`` when missing or unreadable: a supervisor that has not started yet). A file
    that another process holds for a moment (Windows: being replaced, an antivirus scan) is read again a few times
    over 0.2 s."""
    for attempt in range(5):
        try:
            data = json.loads((Path(job_dir) / STATUS_FILE).read_text(encoding="utf-8"))
            break
        except PermissionError:
            if attempt == 4:
                return None
            time.sleep(0.05)
        except (OSError, ValueError):
            return None
    return data if isinstance(data, dict) else None


def lock_held(folder: PathLike) -> bool:
    """Whether some process holds ``FOLDER/.paseg-lock`` (:class:`~PASegLib.jobs.lock.FolderLock`) now.

    Probes the OS lock without keeping it (and without creating or removing the file). Where the file system has
    no OS locks, the recorded holder's pid is checked instead."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        if os.name == "nt":
            import msvcrt

            os.lseek(fd, 1 << 30, os.SEEK_SET)  # the byte FolderLock locks
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                return True
            os.lseek(fd, 1 << 30, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            return False
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no OS locks here: FolderLock's fallback records the holder's pid
            try:
                holder = json.loads(Path(path).read_text(encoding="utf-8"))
                return isinstance(holder.get("pid"), int) and process_alive(holder["pid"])
            except (OSError, ValueError, AttributeError):
                return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def job_alive(job_dir: PathLike) -> bool:
    """Whether the supervisor of ``job_dir`` runs: the pid of ``status.json`` is alive, the job folder's lock is
    held, and (where the system says) that pid's process started when the recorded one did."""
    status = read_status(job_dir)
    if status is None or status.get("status") != "running" or not isinstance(status.get("pid"), int):
        return False
    pid = status["pid"]
    if not process_alive(pid) or not lock_held(job_dir):
        return False
    started = status.get("started")
    return started is None or process_start_time(pid) in (None, started)


class _Log:
    """``log.txt``, appended line by line from the reader threads (one writer lock)."""

    def __init__(self, path: Path) -> None:
        self._handle: TextIO = open(path, "a", encoding="utf-8", newline="\n")
        self._lock = threading.Lock()
        try:  # a killed supervisor (or step) left half a line: the new lines start on a line of their own
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        self.line("")
        except OSError:
            pass

    def line(self, text: str) -> None:
        with self._lock:
            self._handle.write(text + "\n")
            self._handle.flush()

    def event(self, event: str, **fields: Any) -> None:
        self.line(format_progress_line(event, **fields))

    def close(self) -> None:
        self._handle.close()


class _Step:
    """One running step: its process, the reader threads and what its lines said."""

    def __init__(self, spec: Dict[str, Any], log: _Log, stopping: threading.Event) -> None:
        self.spec, self.log, self.stopping = spec, log, stopping
        self.name = str(spec.get("name", "step"))
        self.stop_file = Path(spec["stop_file"]) if spec.get("stop_file") else None
        self.message = ""
        self.last_stderr = ""
        self.process: Optional[subprocess.Popen] = None
        self.readers: List[threading.Thread] = []

    def start(self) -> None:
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
        env.update({str(k): str(v) for k, v in (self.spec.get("env") or {}).items()})
        command = [str(c) for c in self.spec["command"]]
        self.process = subprocess.Popen(command, cwd=self.spec.get("cwd") or None, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        **({"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
                                           if os.name == "nt" else {"start_new_session": True}))
        for stream, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            reader = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, stream, name: str) -> None:
        decoder, pending = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
        for chunk in iter(lambda: stream.read1(65536), b""):
            text = pending + decoder.decode(chunk)
            parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            pending = parts.pop()
            for line in parts:
                self._line(name, line)
        rest = pending + decoder.decode(b"", final=True)
        if rest:
            self._line(name, rest)

    def _line(self, stream: str, line: str) -> None:
        event = parse_progress_line(line) if stream == "stdout" else None
        if event is None:
            if not line.strip():
                return
            if stream == "stderr":
                self.last_stderr = line.strip()
            self.log.line(("! " if stream == "stderr" else "") + line)
            return
        self.log.line(line.strip())
        if event["event"] in ("error", "stopped") and event.get("message"):
            self.message = str(event["message"])
        if self.stopping.is_set() and event["event"] != "stopped":
            self.write_stop_file()  # the step removed it as stale when it started: ask again

    def write_stop_file(self) -> bool:
        if self.stop_file is None:
            return False
        try:
            if not self.stop_file.exists():
                self.stop_file.parent.mkdir(parents=True, exist_ok=True)
                self.stop_file.write_text("stop requested by the PASeg job supervisor\n", encoding="utf-8")
            return True
        except OSError as exc:
            self.log.line(f"[PASeg] cannot write the stop file {self.stop_file}: {exc}")
            return False

    def kill(self) -> None:
        """Kill the step and its process group / tree (the step's own children, e.g. the real Python of a launcher)."""
        if self.process is None or self.process.poll() is not None:
            return
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True, check=False,
                           creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own process group (start_new_session)
            except OSError:
                self.process.kill()

    def wait(self) -> Optional[int]:
        assert self.process is not None
        code = self.process.wait()
        for reader in self.readers:  # a grandchild may hold the pipes open: do not wait for it forever
            reader.join(timeout=5.0)
        return code if code >= 0 or os.name == "nt" else None


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def run_job(job_dir: PathLike) -> str:
    """Run the steps of ``JOB_DIR/job.json`` (the caller holds the job folder's lock); returns the final status,
    also written to ``status.json`` and as the ``job_end`` event of ``log.txt``."""
    job = Path(job_dir)
    doc = json.loads((job / JOB_FILE).read_text(encoding="utf-8"))
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{job / JOB_FILE}: no steps to run")
    pid = os.getpid()
    atomic_write_json(job / STATUS_FILE, {"status": "running", "pid": pid, "started": process_start_time(pid),
                                          "since": _now()})
    job_stop = StopFile(job / STOP_FILE)
    job_stop.clear_stale()
    log, stopping = _Log(job / LOG_FILE), threading.Event()
    status, exit_code, message = "done", EXIT_OK, "finished"
    try:
        log.event("job_start", steps=len(steps), pid=pid)
        for index, spec in enumerate(steps):
            name = str(spec.get("name", f"step {index + 1}"))
            if spec.get("skip"):
                log.line(f"[PASeg] step {index + 1}/{len(steps)}: {name}: finished before, skipped")
                continue
            if job_stop.requested():
                status, exit_code, message = "stopped", None, f"{name}: stopped before it started"
                break
            log.event("job_step", index=index, count=len(steps), name=name)
            log.line(f"[PASeg] step {index + 1}/{len(steps)}: {name}: {' '.join(str(c) for c in spec['command'])}")
            step = _Step(spec, log, stopping)
            try:
                step.start()
            except OSError as exc:
                status, exit_code, message = "failed", None, f"could not start {spec['command'][0]}: {exc}"
                break
            while step.process.poll() is None:
                if not stopping.is_set() and job_stop.requested():
                    stopping.set()
                    if step.write_stop_file():
                        log.line("[PASeg] stop requested; the step saves what it can and stops")
                    else:
                        log.line("[PASeg] stop requested; the step has no stop file: killing it")
                        step.kill()
                time.sleep(POLL_S)
            code = step.wait()
            exit_code = code
            if stopping.is_set() or job_stop.requested() or code in (EXIT_STOPPED, EXIT_INTERRUPTED):
                if step.stop_file is not None and stopping.is_set():
                    step.stop_file.unlink(missing_ok=True)  # written for this step; a killed step left it behind
                status, message = "stopped", step.message or f"{name}: stopped"
                break
            if code != EXIT_OK:
                detail = step.message or step.last_stderr
                why = "crashed or was killed" if code is None else f"exited with code {code}"
                status, message = "failed", f"{name} {why}" + (f": {detail}" if detail else "")
                break
        log.line(f"[PASeg] job {status}: {message}")
        log.event("job_end", status=status, exit_code=exit_code, message=message)
    finally:
        log.close()
        job_stop.consume()
        try:
            atomic_write_json(job / STATUS_FILE, {"status": status, "exit_code": exit_code, "message": message,
                                                  "finished": _now(), "pid": pid})
        except OSError as exc:  # the end is in log.txt (job_end), which the module reads first: never relabel it
            print(f"supervisor: error: the job's end ({status}) could not be recorded in {STATUS_FILE}: {exc}",
                  file=sys.stderr)
    return status


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m PASegLib.jobs.supervisor JOB_DIR``: 0 when the job ran (whatever its status), 1 when it could
    not (no such folder, a damaged ``job.json``, the folder held by another supervisor)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m PASegLib.jobs.supervisor JOB_DIR", file=sys.stderr)
        return 2
    job = Path(args[0])
    if not (job / JOB_FILE).is_file():
        print(f"supervisor: error: {job} is not a job folder (no {JOB_FILE})", file=sys.stderr)
        return 1
    lock = FolderLock(job, purpose="paseg job supervisor")
    for attempt in range(20):  # a session probing the lock (lock_held) holds it for a moment
        try:
            lock.acquire(quiet=True)
            break
        except FolderLockedError as exc:
            if attempt == 19:
                print(f"supervisor: error: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.05)
    try:
        run_job(job)
    except (OSError, ValueError, KeyError) as exc:
        print(f"supervisor: error: {job}: {exc}", file=sys.stderr)
        atomic_write_json(job / STATUS_FILE, {"status": "failed", "exit_code": None, "pid": os.getpid(),
                                              "message": f"the job could not run: {exc}", "finished": _now()})
        return 1
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
