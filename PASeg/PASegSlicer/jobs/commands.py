"""Job folders and the commands of training / prediction jobs (``python -m PASegLib train|predict``).

A job folder ``<work>/jobs/<date>-<kind>/`` holds ``job.json`` (what was asked, the commands, the status),
``log.txt`` (the full log), ``inputs/`` (files written for the job, e.g. the current volume) and the run or
output folders of its steps. Training "stage 1 + SCM" is three steps: stage 1 for network A, stage 1 for
network B, then SCM initialised from both runs. "stage 1 + refinement" (the pipeline's default second stage, chosen on
tuning cases: Going to Extremes' refinement round) and "teacher–student" (paper 003, for a cohort of dense and boxed
cases) are one step each: ``python -m PASegLib run`` (:mod:`PASegLib.pipeline.run`) into ``<job>/pipeline``, which
trains every run of that pipeline with the CPU or paper preset's networks, predicts the cases and writes its report;
each run it finishes is registered, the final model last (a teacher is not: it reads boxes). Such a job trains on
the annotated cases only (a linked subset of the dataset, ``<job>/inputs/dataset``). A step's stop file
(:meth:`JobStep.stopPath`) is ``<run>/STOP`` for training, ``<job>/pipeline/STOP`` for a pipeline and
``<job>/output/STOP`` for prediction.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import PASegLib
from PASegLib.annotation.kinds import BOXED_KINDS, get_kind, kind_names
from PASegLib.annotation.markups import read_draft_markups, write_markups
from PASegLib.annotation.model import CaseAnnotation
from PASegLib.image.io import Volume, write_image
from PASegLib.jobs.stopping import STOP_FILE
from PASegLib.utils.atomic import atomic_write_json

from .runner import JobStep

TRAIN_MODES = ("stage 1 + refinement", "stage 1", "SCM", "stage 1 + SCM", "teacher–student")
#: the training modes run as one ``paseg run`` pipeline, with their options
PIPELINE_MODES = {"stage 1 + refinement": ["--second-stage", "refine"],
                  "teacher–student": ["--mixed", "teacher_student", "--second-stage", "scm"]}
#: the parameters (and so the widgets) each training mode reads; the GUI disables the others (a pipeline mode takes
#: the preset's networks and budgets)
TRAIN_MODE_PARAMETERS = {"stage 1 + refinement": (), "stage 1": ("networkA", "epochs"),
                         "SCM": ("scmRunA", "scmRunB", "epochs"), "stage 1 + SCM": ("networkA", "networkB", "epochs"),
                         "teacher–student": ()}
#: training settings a pipeline mode chooses itself for each of its runs (refused in its settings file)
PIPELINE_OWNED = ("stage", "network", "aux_network", "device", "seed", "pseudo_labels", "supervision")
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
    if mode in PIPELINE_MODES:
        return [pipelineStep(jobFolder, dataset, mode=mode, device=device, configFile=configFile, python=python)]
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


def pipelineStep(jobFolder, dataset, *, mode: str, device: str, configFile: Optional[str] = None,
                 python: Optional[str] = None) -> JobStep:
    """The one step of a :data:`PIPELINE_MODES` training: ``python -m PASegLib run DATASET --out <job>/pipeline
    --preset auto`` (the paper preset when the device is a GPU, the CPU preset otherwise: their networks and
    budgets) with the mode's options and every setting of ``configFile`` (a JSON object of training settings, e.g.
    ``{"epochs": 50}``) as ``--set KEY=VALUE``, which applies to every run of the pipeline; its stop file is
    ``<job>/pipeline/STOP``. The GUI's epochs and networks are those of the stage 1 / SCM modes.

    Raises:
        ValueError: "all GPUs" (a pipeline trains in one process); an unreadable settings file, or one that sets
            what the pipeline chooses itself (:data:`PIPELINE_OWNED`), naming the file and the keys.
    """
    if device == ALL_GPUS:
        raise ValueError(f"training mode {mode!r} runs its pipeline on one device; choose auto, GPU or CPU "
                         "(\"all GPUs\" trains the stage 1 / SCM modes)")
    out = Path(jobFolder) / "pipeline"
    settings: Dict[str, Any] = {}
    if configFile:
        try:
            settings = json.loads(Path(configFile).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"training settings file {configFile}: cannot read it as JSON ({exc})") from None
        if not isinstance(settings, dict):
            raise ValueError(f"training settings file {configFile}: expected a JSON object of settings")
        owned = sorted(set(settings) & set(PIPELINE_OWNED))
        if owned:
            raise ValueError(f"training settings file {configFile} sets {', '.join(owned)}: the {mode!r} pipeline "
                             f"chooses these itself (for every run); remove them, or train with the stage 1 / SCM "
                             f"modes")
    args = ["run", str(dataset), "--out", str(out), "--preset", "auto"] + PIPELINE_MODES[mode] + \
        ["--device", device, "--quiet"]
    for key, value in settings.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return _step(f"pipeline ({mode})", args, None, Path(jobFolder), python or pythonExecutable(),
                 stopFile=out / STOP_FILE)


def pipelineFolder(step: Dict[str, Any]) -> Optional[Path]:
    """The output folder of a job step that runs a pipeline (a ``job.json`` step whose command is ``-m PASegLib
    run … --out DIR``), else ``None``."""
    command = [str(c) for c in step.get("command") or []]
    if command[1:4] != ["-m", "PASegLib", "run"] or "--out" not in command[:-1]:
        return None
    return Path(command[command.index("--out") + 1])


def pipelineRuns(folder) -> List[str]:
    """The training run folders a pipeline folder holds so far (those with a ``config.json``), in the order they
    started."""
    configs = [p for p in Path(folder).glob("*/config.json") if p.is_file()]
    return [str(p.parent) for p in sorted(configs, key=lambda p: (p.stat().st_mtime, p.parent.name))]


def pipelineFinished(folder) -> bool:
    """Whether the pipeline in ``folder`` wrote its report (its last step)."""
    try:
        state = json.loads((Path(folder) / "pipeline.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "report" in (state.get("done") or [])


def stepRuns(steps: Sequence[Dict[str, Any]]) -> List[str]:
    """Every training run folder of a job's ``job.json`` steps: a training step's ``run_dir``, a pipeline step's
    runs (:func:`pipelineRuns`)."""
    runs: List[str] = []
    for step in steps:
        if not isinstance(step, dict):
            continue
        if step.get("run_dir"):
            runs.append(str(step["run_dir"]))
        folder = pipelineFolder(step)
        if folder is not None:
            runs += pipelineRuns(folder)
    return runs


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
    wholeImageInput: Optional[str] = None, wholeImageAnnotations: Optional[str] = None,
) -> List[JobStep]:  # fmt: skip
    """The steps of a prediction job; outputs go to ``<job>/output``, the stop file is ``output/STOP``.

    One step predicts ``inputPath`` (restricted to the boxes with ``restrictToBox``: ``paseg predict
    --restrict-to-box`` needs boxed clicks for every case it reads, :func:`boxedKinds`); with ``wholeImageInput``
    (a mixed dataset, :func:`splitForRestriction`) a second step predicts those cases on the whole image into the
    same output folder.
    """
    if restrictToBox and not annotations:
        raise ValueError("restricting to the annotated boxes needs the tumors' boxes: annotate them first (seven "
                         "points, extreme points or a box)")
    jobFolder, python = Path(jobFolder), python or pythonExecutable()
    output = jobFolder / "output"
    parts = [(inputPath, annotations, restrictToBox)]
    parts += [(wholeImageInput, wholeImageAnnotations, False)] if wholeImageInput else []
    steps = []
    for source, clicks, restrict in parts:
        args = ["predict", str(runDir), str(source), "--out", str(output)] + deviceOptions(device, training=False)
        args.append("--quiet")
        if clicks:
            args += ["--annotations", str(clicks)]
        if restrict:
            args.append("--restrict-to-box")
        if largestComponent:
            args.append("--largest-component")
        name = "predict" if len(parts) == 1 else ("predict (boxed cases)" if restrict else "predict (whole image)")
        steps.append(_step(name, args, None, jobFolder, python, stopFile=output / STOP_FILE))
    return steps


def caseKinds(files) -> Optional[List[str]]:
    """The annotation kinds of a dataset case's objects (:class:`~PASegLib.data.dataset.CaseFiles`): ``[]`` without
    annotation, ``["seven_points"]`` for a ``<case>_7points`` image; ``None`` when its ``.mrk.json`` cannot be read."""
    if files.markups is not None:
        try:
            return [obj.kind for obj in read_draft_markups(files.markups)]
        except (ValueError, OSError):  # AnnotationError is a ValueError; the child names the problem
            return None
    return ["seven_points"] if files.seven_points is not None else []


def boxedKinds(kinds: Optional[Sequence[str]]) -> bool:
    """Whether clicks of these kinds can restrict a prediction to their boxes: at least one object, each of a kind
    with a box (:data:`PASegLib.annotation.kinds.BOXED_KINDS`: seven points, extreme points, box)."""
    return bool(kinds) and all(kind in BOXED_KINDS for kind in kinds)


def wholeImageReason(kinds: Optional[Sequence[str]]) -> str:
    """Why clicks of these kinds do not restrict a prediction (``""`` when they do: :func:`boxedKinds`)."""
    if kinds is None:
        return "its annotation cannot be read"
    if not kinds:
        return "no annotation"
    unboxed = sorted({get_kind(k).title if k in kind_names() else k for k in kinds if k not in BOXED_KINDS})
    return f"{' and '.join(unboxed)}: no box" if unboxed else ""


def _linkOrCopy(source: Path, target: Path) -> None:
    """``target`` becomes a hard link to ``source`` (a copy across file systems, or where links are refused)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _headerDataFiles(image: Path) -> List[Path]:
    """The data file a ``.mhd`` / ``.nhdr`` header names beside it (a single file; ``[]`` otherwise)."""
    separator = {".mhd": ("elementdatafile", "="), ".nhdr": ("data file", ":")}.get(image.suffix.lower())
    if separator is None:
        return []
    for line in image.read_text(encoding="utf-8", errors="replace").splitlines():
        name, _, value = line.partition(separator[1])
        if name.strip().lower() == separator[0] and value.strip() and (image.parent / value.strip()).is_file():
            return [image.parent / value.strip()]
    return []


def subsetDataset(folder, cases: Sequence[Any]) -> Path:
    """A dataset folder holding only ``cases`` (:class:`~PASegLib.data.dataset.CaseFiles`: their image, its header's
    data file, clicks and dense label files, linked) for a prediction step over part of a dataset; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for files in cases:
        sources = [files.image] + _headerDataFiles(files.image)
        sources += [p for p in (files.markups, files.seven_points) if p is not None]
        if files.markups is not None:
            sources += [files.markups.parent / name for name in _labelFiles(files.markups)]
        for source in dict.fromkeys(Path(p) for p in sources):
            if source.is_file():
                _linkOrCopy(source, folder / source.name)
    return folder


def _labelFiles(markups: Path) -> List[str]:
    """The dense label files a ``.mrk.json`` names (its markups' ``pasegLabel``, beside it)."""
    try:
        doc = json.loads(Path(markups).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = doc.get("markups", []) if isinstance(doc, dict) else []
    return [Path(m["pasegLabel"]).name for m in found if isinstance(m, dict) and isinstance(m.get("pasegLabel"), str)
            and m["pasegLabel"].strip()]  # fmt: skip


def splitForRestriction(cases: Sequence[Any]) -> Dict[str, List[Any]]:
    """``{"boxed": cases whose clicks all have boxes, "whole": the others}`` (:func:`boxedKinds`), in order."""
    split: Dict[str, List[Any]] = {"boxed": [], "whole": []}
    for files in cases:
        split["boxed" if boxedKinds(caseKinds(files)) else "whole"].append(files)
    return split


def writeJobFile(jobFolder, kind: str, steps: Sequence[JobStep], parameters: Dict[str, Any], **extra) -> Path:
    """Write ``job.json`` (status ``running``)."""
    doc = {
        "kind": kind,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "paseg_version": PASegLib.__version__,
        "status": "running",
        "parameters": parameters,
        "steps": [{"name": s.name, "command": [s.program] + s.arguments, "run_dir": s.runDir,
                   "stop_file": None if s.stopPath() is None else str(s.stopPath()),
                   "cwd": s.workingDirectory, "env": dict(s.environment)} for s in steps],  # run by the supervisor
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


# -- the review queue ------------------------------------------------------------------------------------------
def reviewQueueSteps(jobFolder, runDir, datasetFolder, queuePath, *, device: str = "auto",
                     python: Optional[str] = None) -> List[JobStep]:  # fmt: skip
    """The single step of a "Rank cases for review" job: ``paseg review-queue`` scores every case of
    ``datasetFolder`` with the model ``runDir`` and writes ``queuePath`` (the work folder's ``review_queue.json``);
    its stop file is ``<job>/output/STOP``."""
    jobFolder = Path(jobFolder)
    stop = jobFolder / "output" / STOP_FILE
    args = ["review-queue", "--model", str(runDir), "--data", str(datasetFolder), "--out", str(queuePath),
            "--stop-file", str(stop)] + deviceOptions(device, training=False)  # fmt: skip
    return [_step("rank cases for review", args, None, jobFolder, python or pythonExecutable(), stopFile=stop)]
