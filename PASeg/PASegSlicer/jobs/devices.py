"""Which devices torch sees, asked of a child process: torch is never imported in the Slicer process.

:func:`deviceProbeStep` is a one-step job for the :class:`~PASegSlicer.jobs.runner.JobRunner`: the job's Python
(``PythonSlicer`` in Slicer, the interpreter that runs training) runs :data:`PROBE_SOURCE` with ``-c`` and prints
one ``PASEG {"event": "devices", ...}`` progress line, ``{"torch": version or None, "cuda": [{"index", "name",
"memory_gb"}, ...], "mps": bool}`` (and ``"error"`` when torch failed to load); :func:`describeDevices` turns it
into the line the GUI shows.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .commands import childEnvironment, pythonExecutable
from .runner import JobStep

#: The child's program (its source text, run by ``python -c``; never executed in this process).
PROBE_SOURCE = """
import json
info = {"event": "devices", "torch": None, "cuda": [], "mps": False}
try:
    import torch
    info["torch"] = torch.__version__
    for n in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(n)
        info["cuda"].append({"index": n, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    info["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
except Exception as exc:
    info["error"] = f"{type(exc).__name__}: {exc}"
print("PASEG " + json.dumps(info), flush=True)
"""


def deviceProbeStep(python: Optional[str] = None) -> JobStep:
    """A short child process that reports torch's GPUs as a ``devices`` event (see module docstring)."""
    return JobStep("detect GPUs", python or pythonExecutable(), ["-c", PROBE_SOURCE], None, None, childEnvironment())


def describeDevices(event: Dict[str, Any]) -> str:
    """One line for the GUI from a ``devices`` event."""
    if not event.get("torch"):
        return "torch is not installed (it is installed through the PyTorch extension on first use)"
    gpus = event.get("cuda") or []
    if gpus:
        return "; ".join(f"GPU {g['index']}: {g['name']} ({g['memory_gb']} GB)" for g in gpus)
    mps = ", Apple MPS available" if event.get("mps") else ""
    return f"no CUDA GPU found (torch {event['torch']}); training runs on the CPU{mps}"
