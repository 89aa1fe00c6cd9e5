"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Every writer of annotations, label maps, checkpoints and results in PASegLib goes through here. The data
is written to a temporary file in the destination folder (same file system, same suffix so format-sniffing
writers such as SimpleITK pick the right format), flushed, and moved over the destination with
``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

# Compound suffixes that writers detect as a whole (".nii.gz" must stay ".nii.gz", not ".gz").
_COMPOUND_SUFFIXES = (".nii.gz", ".mrk.json", ".seg.nrrd", ".tar.gz")


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{full_suffix(dest)}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


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
