"""Job folders and the commands of training / prediction jobs (``python -m PASegLib train|predict``).

A job folder ``<work>/jobs/<date>-<kind>/`` holds ``job.json`` (what was asked, the commands, the status),
``log.txt`` (the full log), ``inputs/`` (files written for the job, e.g. the current volume) and the run or
output folders of its steps. Training "stage 1 + SCM" is three steps: stage 1 for network A, stage 1 for
network B, then SCM initialised from both runs. A step's stop file (:meth:`JobStep.stopPath`) is
``<run>/STOP`` for training and ``<job>/output/STOP`` for prediction.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import PASegLib
from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.model import CaseAnnotation
from PASegLib.image.io import Volume, write_image
from PASegLib.jobs.stopping import STOP_FILE
from PASegLib.utils.atomic import atomic_write_json

from .runner import JobStep

TRAIN_MODES = ("stage 1", "SCM", "stage 1 + SCM")
DEVICE_MODES = ("auto", "GPU", "all GPUs", "CPU (force)")
#: the device value of "all GPUs": training runs one process per visible GPU (``--nproc-per-node gpu``, the GPU
#: count is taken when the job starts), each with ``batch_size`` patches (``--scale-batch``); prediction uses GPU 0
ALL_GPUS = "all-gpus"


def pythonExecutable() -> str:
    """``PythonSlicer`` inside Slicer (a plain Python with Slicer's packages), else this Python."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(candidate) if candidate.is_file() else sys.executable


def childEnvironment() -> Dict[str, str]:
    """Environment additions so the child imports this PASegLib (installed extension or source tree) and
    writes unbuffered UTF-8 (``PYTHONIOENCODING``, ``PYTHONUTF8``: case names and paths with accents on
    Windows, whose default console code page is not UTF-8; the runner decodes UTF-8)."""
    libParent = str(Path(PASegLib.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": libParent + (os.pathsep + existing if existing else ""), "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}


def deviceArgument(mode: str, gpuIndex: int = 0) -> str:
    """``--device`` value for the GUI's device choice (:data:`ALL_GPUS` for "all GPUs": see
    :func:`deviceOptions`)."""
    if mode == "GPU":
        return f"cuda:{int(gpuIndex)}"
    if mode == "all GPUs":
        return ALL_GPUS
    if mode == "CPU (force)":
        return "cpu"
    if mode == "auto":
        return "auto"
    raise ValueError(f"device mode must be one of {', '.join(DEVICE_MODES)}, got {mode!r}")


def deviceOptions(device: str, *, training: bool) -> List[str]:
    """The command-line options of a :func:`deviceArgument` value: ``--device VALUE``; for :data:`ALL_GPUS`
    training gets ``--device cuda --nproc-per-node gpu --scale-batch`` (one process per GPU, the run's batch per
    GPU) and prediction ``--device cuda``."""
    if device != ALL_GPUS:
        return ["--device", device]
    return ["--device", "cuda"] + (["--nproc-per-node", "gpu", "--scale-batch"] if training else [])


def newJobFolder(workFolder, kind: str) -> Path:
    """Create ``<work>/jobs/<YYYYmmdd-HHMMSS>-<kind>[-n]/``."""
    root = Path(workFolder) / "jobs"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = root / (f"{stamp}-{kind}" + (f"-{n}" if n else ""))
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise OSError(f"cannot create a job folder in {root}")


def _step(name: str, arguments: List[str], runDir: Optional[Path], jobFolder: Path, python: str,
          stopFile: Optional[Path] = None) -> JobStep:
    return JobStep(name, python, ["-m", "PASegLib"] + arguments, None if runDir is None else str(runDir),
                   str(jobFolder), childEnvironment(), None if stopFile is None else str(stopFile))  # fmt: skip


def trainingSteps(
    jobFolder, dataset, *, mode: str, networks: Sequence[str], epochs: int, device: str,
    configFile: Optional[str] = None, initRuns: Sequence[str] = (), python: Optional[str] = None,
) -> List[JobStep]:  # fmt: skip
    """The steps of a training job (see module docstring); ``initRuns`` = the two stage-1 runs for ``SCM``."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"training mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    python, jobFolder = python or pythonExecutable(), Path(jobFolder)
    # --quiet: no terminal progress bar in the log pane; the GUI reads the PASEG progress lines instead
    common = ["--epochs", str(int(epochs))] + deviceOptions(device, training=True) + ["--quiet"]
    common += ["--config", str(configFile)] if configFile else []
    steps: List[JobStep] = []
    runs = list(initRuns)
    if mode in ("stage 1", "stage 1 + SCM"):
        wanted = list(dict.fromkeys(networks[:2] if mode == "stage 1 + SCM" else networks[:1]))
        if mode == "stage 1 + SCM" and len(wanted) != 2:
            raise ValueError("stage 1 + SCM needs two different networks (network A and network B)")
        runs = []
        for network in wanted:
            runDir = jobFolder / f"stage1-{network}"
            args = ["train", str(dataset), "--out", str(runDir), "--stage", "1", "--network", network] + common
            steps.append(_step(f"stage 1 ({network})", args, runDir, jobFolder, python))
            runs.append(str(runDir))
    if mode in ("SCM", "stage 1 + SCM"):
        if len(runs) != 2 or runs[0] == runs[1]:
            raise ValueError("SCM needs two different stage-1 runs to start from")
        runDir = jobFolder / "scm"
        args = ["train", str(dataset), "--out", str(runDir), "--stage", "2", "--init", runs[0], runs[1]] + common
        steps.append(_step("SCM (stage 2)", args, runDir, jobFolder, python))
    return steps


def writePredictionInputs(
    jobFolder, caseId: str, volume: Volume, case: Optional[CaseAnnotation] = None
) -> Dict[str, str]:
    """Write the current volume (and its clicks) into ``inputs/``; returns ``{"image", "annotations"}`` paths."""
    inputs = Path(jobFolder) / "inputs"
    image = write_image(inputs / f"{caseId}_image.nrrd", volume.array, volume.geometry, compress=False)  # fast
    result = {"image": str(image), "annotations": ""}
    if case is not None and case.objects:
        result["annotations"] = str(write_markups(inputs / f"{caseId}.mrk.json", case))
    return result


def predictionSteps(
    jobFolder, runDir, inputPath, *, annotations: Optional[str] = None, restrictToBox: bool = False,
    largestComponent: bool = False, device: str = "auto", python: Optional[str] = None,
) -> List[JobStep]:  # fmt: skip
    """The single step of a prediction job; outputs go to ``<job>/output``, its stop file is ``output/STOP``."""
    if restrictToBox and not annotations:
        raise ValueError("restricting to the annotated boxes needs annotations (place the seven points first)")
    jobFolder = Path(jobFolder)
    output = jobFolder / "output"
    args = ["predict", str(runDir), str(inputPath), "--out", str(output)] + deviceOptions(device, training=False)
    args.append("--quiet")
    if annotations:
        args += ["--annotations", str(annotations)]
    if restrictToBox:
        args.append("--restrict-to-box")
    if largestComponent:
        args.append("--largest-component")
    return [_step("predict", args, None, jobFolder, python or pythonExecutable(), stopFile=output / STOP_FILE)]


def writeJobFile(jobFolder, kind: str, steps: Sequence[JobStep], parameters: Dict[str, Any], **extra) -> Path:
    """Write ``job.json`` (status ``running``)."""
    doc = {
        "kind": kind,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "paseg_version": PASegLib.__version__,
        "status": "running",
        "parameters": parameters,
        "steps": [{"name": s.name, "command": [s.program] + s.arguments, "run_dir": s.runDir,
                   "stop_file": None if s.stopPath() is None else str(s.stopPath())} for s in steps],
        "log": "log.txt",
        **extra,
    }
    path = Path(jobFolder) / "job.json"
    atomic_write_json(path, doc)
    return path


def updateJobFile(jobFolder, **fields) -> Dict[str, Any]:
    """Merge ``fields`` (e.g. ``status``, ``exit_code``, ``message``) into ``job.json``."""
    import json

    path = Path(jobFolder) / "job.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc.update(fields, finished=datetime.datetime.now().isoformat(timespec="seconds"))
    atomic_write_json(path, doc)
    return doc


def predictionFiles(caseEvents: Sequence[Dict[str, Any]], outputFolder) -> Dict[str, Path]:
    """case → prediction file, from the ``case`` events (fallback: ``*_pred.nii.gz`` in the output folder)."""
    found: Dict[str, Path] = {}
    for event in caseEvents:
        path = Path(str(event.get("pred", "")))
        if event.get("case") and path.is_file():
            found[str(event["case"])] = path
    if not found and Path(outputFolder).is_dir():
        for path in sorted(Path(outputFolder).glob("*_pred.nii.gz")):
            found[path.name[: -len("_pred.nii.gz")]] = path
    return found
