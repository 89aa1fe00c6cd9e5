"""Which devices torch sees, asked of a child process: torch is never imported in the Slicer process.

:func:`deviceProbeStep` is a one-step job for the :class:`~PASegSlicer.jobs.runner.JobRunner`: the job's Python
(``PythonSlicer`` in Slicer, the interpreter that runs training) runs ``paseg devices`` (``-m PASegLib devices``,
:mod:`PASegLib.cli.devices`), which prints one ``PASEG {"event": "devices", ...}`` progress line, ``{"torch":
version or None, "cuda": [{"index", "name", "memory_gb"}, ...], "mps": bool}`` (and ``"error"`` when torch failed
to load); :func:`describeDevices` turns it into the line the GUI shows.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .commands import childEnvironment, pythonExecutable
from .runner import JobStep


def deviceProbeStep(python: Optional[str] = None) -> JobStep:
    """A short child process that reports torch's GPUs as a ``devices`` event (see module docstring)."""
    return JobStep("detect GPUs", python or pythonExecutable(), ["-m", "PASegLib", "devices"], None, None,
                   childEnvironment())


def describeDevices(event: Dict[str, Any]) -> str:
    """One line for the GUI from a ``devices`` event."""
    if not event.get("torch"):
        return "torch is not installed (it is installed through the PyTorch extension on first use)"
    gpus = event.get("cuda") or []
    if gpus:
        return "; ".join(f"GPU {g['index']}: {g['name']} ({g['memory_gb']} GB)" for g in gpus)
    mps = ", Apple MPS available" if event.get("mps") else ""
    return f"no CUDA GPU found (torch {event['torch']}); training runs on the CPU{mps}"
