"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Every writer of annotations, label maps, checkpoints and results in PASegLib goes through here. The data
is written to a temporary file in the destination folder (same file system, same suffix so format-sniffing
writers such as SimpleITK pick the right format), flushed, and moved over the destination with
``os.replace``.

Temporary files are named ``.<name>.<pid>-<random>.tmp<suffix>`` (hidden, the writer's process id inside):
one left behind by a writer that was killed (kill -9, power loss) is recognised by
:func:`remove_stale_temp_files`, which the commands call on the folders they own when they start.
A failure to write (disk full, quota, read-only) raises an ``OSError`` naming the destination file.

On Windows ``os.replace`` is refused (``PermissionError``) while another process has the destination open (a
reader of ``status.json``, an antivirus scan): the move is retried for about a second before it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List, Union

PathLike = Union[str, "os.PathLike[str]"]

# Compound suffixes that writers detect as a whole (".nii.gz" must stay ".nii.gz", not ".gz").
_COMPOUND_SUFFIXES = (".nii.gz", ".mrk.json", ".seg.nrrd", ".tar.gz")
#: A temporary file of :func:`atomic_path`: ``.<name>.<pid>-<random>.tmp<suffix>`` (``pid`` absent in files
#: written before PASeg 0.x kept it: ``.<name>.<random>.tmp<suffix>``).
_TEMP_NAME = re.compile(r"^\..+?\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]{8}\.tmp[A-Za-z0-9.]*$")
#: Prefixes of temporary folders (prediction staging, two-file image writes).
_TEMP_FOLDERS = (".paseg-staging-", ".paseg-write-")
#: A temporary file without a writer pid is stale when it is older than this (seconds).
_PIDLESS_STALE_S = 24 * 3600
#: Retry a refused ``os.replace`` (Windows: the destination is open elsewhere for a moment), for this long (s).
_RETRY_REPLACE = os.name == "nt"
_RETRY_REPLACE_S = 1.0


def _replace(tmp: Path, dest: Path) -> None:
    """``os.replace(tmp, dest)``; on Windows a ``PermissionError`` (``dest`` open in another process) is retried
    for :data:`_RETRY_REPLACE_S` seconds."""
    deadline = time.monotonic() + _RETRY_REPLACE_S
    delay = 0.01
    while True:
        try:
            os.replace(tmp, dest)
            return
        except PermissionError:
            if not _RETRY_REPLACE or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def full_suffix(path: PathLike) -> str:
    """Return the file type suffix of ``path``, keeping known compound suffixes (``.nii.gz``)."""
    name = Path(path).name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return Path(path).name[-len(suffix) :]
    return Path(path).suffix


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Example::

        with atomic_path("case_partial.nii.gz") as tmp:
            sitk.WriteImage(image, str(tmp))
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}-", suffix=f".tmp{full_suffix(dest)}",
                                        dir=dest.parent)
    except OSError as exc:
        raise _naming(exc, dest, exc.filename) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        _replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        named = _naming(exc, dest, tmp) if isinstance(exc, OSError) else exc
        if named is exc:
            raise
        raise named from exc


def _naming(exc: OSError, dest: Path, tmp: Any) -> OSError:
    """``exc`` naming ``dest`` (a write error without a file name, or one naming the temporary file, e.g. "No space
    left on device" from a flush) so that the message says which file could not be written."""
    if exc.filename is not None and (tmp is None or str(exc.filename) != str(tmp)):
        return exc
    if exc.errno is None:
        return exc if str(dest) in str(exc) else OSError(f"{dest}: {exc}")
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(dest))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, *, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically (fails before touching ``path``)."""
    text = json.dumps(obj, indent=indent, sort_keys=False) + "\n"
    atomic_write_text(path, text)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (``True`` when that cannot be told, e.g. no permission)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() != 87  # ERROR_INVALID_PARAMETER: no such process
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists (another user's)
        return True
    return True


def remove_stale_temp_files(folder: PathLike, *, owned: bool = False) -> List[Path]:
    """Remove the temporary files (and staging folders) that killed writers left in ``folder`` (not recursive).

    Args:
        folder: a folder (a missing one is fine).
        owned: the caller holds the folder's lock (:mod:`PASegLib.jobs.lock`), so no other process writes
            there: every temporary file is stale. Otherwise (a folder other processes may share, e.g. a prepared
            data cache) only those whose writer process is no longer running on this machine are removed (and
            those of older PASeg versions without a process id when they are a day old).

    Returns:
        The removed paths (their removal never raises: a file in use elsewhere stays).
    """
    root = Path(folder)
    removed: List[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        name = path.name
        if not name.startswith("."):
            continue
        if name.startswith(_TEMP_FOLDERS) and path.is_dir() and not path.is_symlink():
            if owned:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            continue
        match = _TEMP_NAME.match(name)
        if match is None or not path.is_file():
            continue
        if not owned:
            pid = match.group("pid")
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue
            alive = process_alive(int(pid)) if pid is not None else age < _PIDLESS_STALE_S
            if alive:
                continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed
