"""The one-line message of a failure the user can cause, or ``None`` for a bug in PASeg.

A ``ValueError`` (bad input, named by the code that raised it), an ``OSError`` (``FILE: what went wrong``), an
out-of-memory error, or a SimpleITK read/write failure is the user's; anything else is an internal error. Messages
are shortened in their middle to :data:`MAX_MESSAGE` characters, so a huge input is not repeated in full.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

__all__ = ["MAX_MESSAGE", "os_error_message", "shorten", "user_error_message"]


#: Longest message printed or put in the error event (characters); longer ones keep their start and end.
MAX_MESSAGE = 2000


def user_error_message(exc: BaseException) -> Optional[str]:
    """The message of a failure the user can cause (see the module docstring), or ``None`` for a bug."""
    if isinstance(exc, (ValueError, FloatingPointError)):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_message(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; use smaller images, a coarser --target-spacing or a smaller --patch-size"
    if isinstance(exc, RuntimeError) and type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return ("out of GPU memory; use a smaller --patch-size, close other GPU programs, "
                f"or --device cpu ({str(exc).splitlines()[0] if str(exc) else 'CUDA'})")
    if isinstance(exc, RuntimeError) and "SimpleITK" in str(exc).split("\n", 1)[0]:
        from PASegLib.image.io import describe_itk_error

        return f"cannot read or write an image: {describe_itk_error(exc)}"
    return None


def os_error_message(exc: OSError) -> str:
    """``FILE: what went wrong`` for an ``OSError`` of the system (``[Errno 17] File exists: 'x'`` becomes
    ``x: exists and is not a folder``); our own ``OSError`` messages are kept."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    name = str(exc.filename)
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    if exc.errno == errno.EEXIST and Path(name).exists() and not Path(name).is_dir():
        return f"{name}: exists and is not a folder (a folder of that name is needed)"
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while writing {name}{target}; free some space and run the command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{name}{target}: permission denied ({exc.strerror})"
    return f"{name}{target}: {exc.strerror}"


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut in its middle to ``limit`` characters (the start names the input, the end says why)."""
    if len(message) <= limit:
        return message
    keep = (limit - 40) // 2
    return f"{message[:keep]} … [{len(message) - 2 * keep} characters left out] … {message[-keep:]}"
