"""Which devices torch sees, asked of a child process: torch is never imported in the Slicer process.

:func:`deviceProbeStep` is a one-step job for the :class:`~PASegSlicer.jobs.runner.JobRunner` and
:func:`probeDevices` the same question asked synchronously (the dependency check before a job): the job's Python
(``PythonSlicer`` in Slicer, the interpreter that runs training) runs ``paseg devices`` (``-m PASegLib devices``,
:mod:`PASegLib.cli.devices`), which prints one ``PASEG {"event": "devices", ...}`` progress line, ``{"torch":
version or None, "cuda_version", "arch_list": torch's compiled GPU architectures, "cuda": [{"index", "name",
"memory_gb", "capability", "supported"}, ...], "mps": bool}`` (and ``"error"`` when torch failed to load).
``supported`` is false for a GPU that the installed torch has no kernels for (its compute capability is not in
``arch_list``): PASeg then runs on the CPU. :func:`describeDevices` turns the event into the line the GUI shows.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable, Dict, List, Optional

from PASegLib.jobs.events import parse_progress_line

from .commands import childEnvironment, pythonExecutable
from .runner import JobStep

#: Seconds the synchronous probe may take (importing torch the first time after an install can be slow).
PROBE_TIMEOUT_SECONDS = 180.0


def deviceProbeStep(python: Optional[str] = None) -> JobStep:
    """A short child process that reports torch's GPUs as a ``devices`` event (see module docstring)."""
    return JobStep("detect GPUs", python or pythonExecutable(), ["-m", "PASegLib", "devices"], None, None,
                   childEnvironment())


def probeDevices(python: Optional[str] = None, *, timeout: float = PROBE_TIMEOUT_SECONDS,
                 run: Callable[..., Any] = subprocess.run) -> Dict[str, Any]:
    """Run ``paseg devices`` in a child process now (blocking) and return its ``devices`` event.

    A child that fails, times out or prints no ``devices`` event gives ``{"torch": None, "cuda": [], "error": why}``
    (the caller says what it can; nothing is raised).
    """
    command = [python or pythonExecutable(), "-m", "PASegLib", "devices"]
    try:
        done = run(command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
                   env={**os.environ, **childEnvironment()})
    except (OSError, subprocess.SubprocessError) as exc:
        return {"event": "devices", "torch": None, "cuda": [], "error": f"{type(exc).__name__}: {exc}"}
    for line in (done.stdout or "").splitlines():
        event = parse_progress_line(line)
        if event is not None and event.get("event") == "devices":
            return event
    last = (done.stderr or "").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
    return {"event": "devices", "torch": None, "cuda": [], "error": f"the GPU check printed no result ({last[0]})"}


def unusableGpus(event: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The GPUs of a ``devices`` event that the installed torch cannot run on (``supported`` false)."""
    return [g for g in event.get("cuda") or [] if g.get("supported") is False]


def _architectures(event: Dict[str, Any]) -> str:
    archs = [a for a in event.get("arch_list") or [] if str(a).startswith("sm_")]
    return f"{archs[0]}–{archs[-1]}" if len(archs) > 1 else (archs[0] if archs else "no GPU architecture")


def unusableGpuText(event: Dict[str, Any]) -> str:
    """Why the GPUs of :func:`unusableGpus` cannot be used and what to do, or ``""`` when every GPU can."""
    bad = unusableGpus(event)
    if not bad:
        return ""
    names = ", ".join(f"GPU {g['index']} ({g['name']}, compute capability {g.get('capability')})" for g in bad)
    fallback = "on the CPU" if len(bad) == len(event.get("cuda") or []) else "on the other GPUs (or the CPU)"
    return (f"{names}: the installed torch {event.get('torch')} (CUDA {event.get('cuda_version')}) has no kernels "
            f"for {'it' if len(bad) == 1 else 'them'} (built for {_architectures(event)}), so PASeg runs "
            f"{fallback}. To use the GPU, reinstall torch through the PyTorch extension (the PyTorch Utils module, "
            f"which picks the build for the GPU and its driver), or install a newer torch built for this GPU.")


def describeDevices(event: Dict[str, Any]) -> str:
    """One line for the GUI from a ``devices`` event."""
    if not event.get("torch"):
        return "torch is not installed (it is installed through the PyTorch extension on first use)"
    gpus = event.get("cuda") or []
    usable = [g for g in gpus if g.get("supported") is not False]
    if gpus:
        text = "; ".join(f"GPU {g['index']}: {g['name']} ({g['memory_gb']} GB)" for g in usable)
        warning = unusableGpuText(event)
        return f"{text}; {warning}" if text and warning else (text or warning)
    mps = ", Apple MPS available" if event.get("mps") else ""
    return f"no CUDA GPU found (torch {event['torch']}); training runs on the CPU{mps}"
