"""The one-line message of a failure the user can cause, or ``None`` for a bug in PASeg.

A ``ValueError`` (bad input, named by the code that raised it), an ``OSError`` (``FILE: what went wrong``), an
out-of-memory error, or a SimpleITK read/write failure is the user's; anything else is an internal error. Messages
are shortened in their middle to :data:`MAX_MESSAGE` characters, so a huge input is not repeated in full.

Out of GPU memory (``torch.cuda.OutOfMemoryError``, or the CUDA, cuBLAS, cuDNN and MPS allocation failures that
arrive as a plain ``RuntimeError``) names the setting to lower for where it happened, read from the traceback:
a training step (patch size, batch size), validation inside training (patch size) or sliding-window
prediction (the sliding-window batch), with torch's "tried to allocate …" figures.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import List, Optional

__all__ = ["MAX_MESSAGE", "gpu_memory_message", "os_error_message", "shorten", "user_error_message"]


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
    if isinstance(exc, RuntimeError):
        message = gpu_memory_message(exc)
        if message is not None:
            return message
    if isinstance(exc, RuntimeError) and "SimpleITK" in str(exc).split("\n", 1)[0]:
        from PASegLib.image.io import describe_itk_error

        return f"cannot read or write an image: {describe_itk_error(exc)}"
    return None


#: First-line markers of running out of GPU memory (torch raises some as a plain ``RuntimeError``).
_GPU_MEMORY_MARKERS = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                       "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "MPS backend out of memory")
_OTHER_PROGRAMS = "close other programs that use the GPU, or use --device cpu"
#: What to lower, by where the memory ran out.
_GPU_MEMORY_ADVICE = {
    "training": ("out of GPU memory while training: lower the patch size (--patch-size; with paseg run --set "
                 "patch_size=[I,J,K]) or the batch size (--batch-size; --set batch_size=N), "
                 f"{_OTHER_PROGRAMS}"),
    "validation": ("out of GPU memory while validating (sliding-window prediction of the held-out cases): lower "
                   f"the patch size (--patch-size), which is also the window, {_OTHER_PROGRAMS}"),
    "prediction": ("out of GPU memory during sliding-window prediction: lower the sliding-window batch "
                   "(sw_batch_size, windows per forward pass; paseg predict uses 1), predict with a model trained "
                   f"with a smaller --patch-size (the window), {_OTHER_PROGRAMS}"),
    None: ("out of GPU memory: lower the patch size (--patch-size), the batch size (--batch-size) or the "
           f"sliding-window batch (sw_batch_size), {_OTHER_PROGRAMS}"),
}


def gpu_memory_message(exc: BaseException) -> Optional[str]:
    """The message of running out of GPU memory (see the module docstring), or ``None`` for another error."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    if type(exc).__name__ != "OutOfMemoryError" and not any(m in first for m in _GPU_MEMORY_MARKERS):
        return None
    figures = [m.group(0) for m in (re.search(r"[Tt]ried to allocate [\d.]+ ?[KMGT]?i?B", first),
                                    re.search(r"GPU \d+ has a total capacity of [\d.]+ ?[KMGT]?i?B of which "
                                              r"[\d.]+ ?[KMGT]?i?B is free", first)) if m]
    detail = "; ".join(figures) if figures else shorten(first or type(exc).__name__, 200)
    return f"{_GPU_MEMORY_ADVICE[_where(exc)]} ({detail})"


def _where(exc: BaseException) -> Optional[str]:
    """``"training"``, ``"validation"``, ``"prediction"`` or ``None``: where the traceback ran out of memory."""
    frames: List[tuple] = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((str(tb.tb_frame.f_globals.get("__name__", "")), tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    modules = [module for module, _ in frames]
    if any(name == "sliding_window_probability" for _, name in frames) or \
            any(m.startswith("PASegLib.inference") for m in modules):
        return "validation" if any(m == "PASegLib.training.validation" for m in modules) else "prediction"
    if any(m.startswith("PASegLib.training") for m in modules):
        return "training"
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
