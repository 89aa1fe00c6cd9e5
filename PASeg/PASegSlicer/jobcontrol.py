"""Starting training / prediction jobs on a :class:`~PASegSlicer.runner.JobRunner`, and taking in their results.

Start: check the inputs, create the job folder, write ``job.json`` and the inputs, point the runner's log at
``log.txt``, start the steps. Finish: record the status in ``job.json``; a training job registers each
finished run (its ``model.json``) in the model list; a prediction job returns the prediction files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from PASegLib.atomic import atomic_path
from PASegLib.dataset import list_cases

from . import annotation
from .cases import predictionPath
from .jobs import (
    newJobFolder,
    predictionFiles,
    predictionSteps,
    trainingSteps,
    updateJobFile,
    writeJobFile,
    writePredictionInputs,
)  # fmt: skip
from .models import ModelEntry, ModelRegistry, readModelInfo
from .runner import JobRunner, JobState
from .volumes import volumeFromNode


def _folder(value, what: str) -> Path:
    if value is None or str(value) in ("", "."):
        raise ValueError(f"choose a {what} first")
    return Path(value)


def startTrainingJob(
    runner: JobRunner, workFolder, datasetFolder, *, mode: str, networks: Sequence[str], epochs: int, device: str,
    configFile: Optional[str] = None, initRuns: Sequence[str] = (), python: Optional[str] = None,
) -> Path:  # fmt: skip
    """Start training on the annotated cases of ``datasetFolder``; returns the job folder."""
    dataset, work = _folder(datasetFolder, "dataset folder"), _folder(workFolder, "work folder")
    annotated = [c.case_id for c in list_cases(dataset) if c.has_annotation]
    if not annotated:
        raise ValueError(f"{dataset}: no annotated case yet; annotate at least one case (seven points per tumor)")
    runs = [str(r) for r in initRuns if r and str(r) != "."]
    if mode == "SCM" and len(runs) != 2:
        raise ValueError("SCM starts from two finished stage-1 runs: choose 'SCM run A' and 'SCM run B'")
    for run in runs if mode == "SCM" else ():
        info = readModelInfo(run)
        if int(info["stage"]) != 1:
            raise ValueError(f"{run} is a stage-{info['stage']} run; SCM starts from two stage-1 runs")
    job = newJobFolder(work, "train")
    steps = trainingSteps(job, dataset, mode=mode, networks=networks, epochs=epochs, device=device,
                          configFile=configFile, initRuns=runs, python=python)  # fmt: skip
    parameters = {"mode": mode, "networks": list(networks), "epochs": int(epochs), "device": device,
                  "config": configFile or None, "init_runs": runs}  # fmt: skip
    writeJobFile(job, "train", steps, parameters, dataset=str(dataset), cases=annotated)
    runner.logPath = job / "log.txt"
    runner.start(steps)
    return job


def startPredictionJob(
    runner: JobRunner, workFolder, runDir, *, scene=None, volumeNode=None, caseId: str = "", datasetFolder=None,
    restrictToBox: bool = False, largestComponent: bool = False, device: str = "auto", python: Optional[str] = None,
) -> Path:  # fmt: skip
    """Predict the current volume (``scene`` + ``volumeNode``) or every case of ``datasetFolder``."""
    work, run = _folder(workFolder, "work folder"), _folder(runDir, "model (a finished run folder)")
    readModelInfo(run)
    job = newJobFolder(work, "predict")
    extra: Dict[str, Any] = {"model": str(run)}
    if volumeNode is not None:
        objects = annotation.objectNodes(scene, volumeNode)
        case = annotation.caseFromNodes(scene, volumeNode, validate=True) if objects else None
        inputs = writePredictionInputs(job, caseId, volumeFromNode(volumeNode), case)
        inputPath, annotations = inputs["image"], inputs["annotations"] or None
        extra.update(case=caseId, volume_node=volumeNode.GetID(), inputs=inputs)
    else:
        dataset = _folder(datasetFolder, "dataset folder")
        cases = list_cases(dataset)
        inputPath = str(dataset)
        annotations = str(dataset) if any(c.markups is not None for c in cases) else None
        extra.update(dataset=str(dataset), cases=[c.case_id for c in cases])
    steps = predictionSteps(job, run, inputPath, annotations=annotations, restrictToBox=restrictToBox,
                            largestComponent=largestComponent, device=device, python=python)  # fmt: skip
    parameters = {"restrict_to_box": bool(restrictToBox), "largest_component": bool(largestComponent), "device": device}
    writeJobFile(job, "predict", steps, parameters, **extra)
    runner.logPath = job / "log.txt"
    runner.start(steps)
    return job


def finishTrainingJob(jobFolder, state: JobState, registry: ModelRegistry) -> List[ModelEntry]:
    """Record the outcome and register every run of the job that finished (also after a stop)."""
    registered: List[ModelEntry] = []
    runDirs = [str(e.get("run_dir")) for e in state.doneEvents if e.get("run_dir")]
    import json

    steps = json.loads((Path(jobFolder) / "job.json").read_text(encoding="utf-8")).get("steps", [])
    runDirs += [s["run_dir"] for s in steps if s.get("run_dir")]
    for runDir in dict.fromkeys(runDirs):
        if (Path(runDir) / "model.json").is_file():
            registered.append(registry.register(runDir))
    updateJobFile(jobFolder, status=state.status, exit_code=state.exitCode, message=state.message,
                  registered=[e.runDir for e in registered])  # fmt: skip
    return registered


def finishPredictionJob(jobFolder, state: JobState, workFolder=None) -> Dict[str, Path]:
    """Record the outcome; returns case → prediction file (case names without a trailing ``_image``).

    With ``workFolder`` each prediction is also kept as ``<work>/predictions/<case>_pred.nii.gz`` (the
    case list's "predicted" status).
    """
    files = predictionFiles(state.caseEvents, Path(jobFolder) / "output")
    cleaned = {(c[: -len("_image")] if c.endswith("_image") else c): p for c, p in files.items()}
    for case, path in cleaned.items() if workFolder is not None else ():
        with atomic_path(predictionPath(workFolder, case)) as tmp:
            shutil.copyfile(path, tmp)
    updateJobFile(jobFolder, status=state.status, exit_code=state.exitCode, message=state.message,
                  predictions={c: str(p) for c, p in cleaned.items()})  # fmt: skip
    return cleaned
