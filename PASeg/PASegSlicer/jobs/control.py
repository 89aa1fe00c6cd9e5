"""Starting training / prediction jobs on a :class:`~PASegSlicer.jobs.runner.JobRunner`, and taking in their results.

Start: check the inputs, create the job folder, write ``job.json`` and the inputs, point the runner's log at
``log.txt``, start the steps, and return a :class:`Job` that holds everything the job needs to finish (work
folder, volume node, case): a training run lasts hours, and when it ends the module may be hidden (its
parameter node released), never shown again, or showing another volume. Finish (:func:`finishJob`):
record the status in ``job.json``; a training job registers each finished run (its ``model.json``) in the
model list of *its* work folder; a prediction job keeps the prediction files there and imports the current
volume's prediction into the volume node it was started for.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from PASegLib.data.dataset import list_cases
from PASegLib.utils.atomic import atomic_path

from ..annotation import objects
from ..annotation.cases import predictionPath, reviewQueuePath
from ..mrml.volumes import volumeFromNode
from .commands import (
    PIPELINE_MODES,
    boxedKinds,
    caseKinds,
    childEnvironment,
    newJobFolder,
    predictionFiles,
    predictionSteps,
    pythonExecutable,
    reviewQueueSteps,
    splitForRestriction,
    stepRuns,
    subsetDataset,
    trainingSteps,
    updateJobFile,
    wholeImageReason,
    writeJobFile,
    writePredictionInputs,
)  # fmt: skip
from .models import ModelEntry, ModelRegistry, isModelPackage, readModelInfo
from .runner import JobRunner, JobState


@dataclass
class Job:
    """A started job and what it needs to finish, fixed when it starts.

    Attributes:
        kind: ``"train"``, ``"predict"`` or ``"review"`` (rank the cases for review: :func:`startReviewJob`).
        folder: the job folder (``job.json``, ``log.txt``, the runs or ``output/``).
        workFolder: the work folder whose ``models.json`` / ``predictions/`` receive the results.
        volumeNodeId: for a prediction of the current volume, the node it was started for (else ``""``).
        caseId: the case id of that volume (checked again at import: node IDs are reused after a scene clear).
        volumeName: the node's name, for messages.
        notes: what the user should know about how it runs (e.g. cases predicted on the whole image).
    """

    kind: str
    folder: Path
    workFolder: Path
    volumeNodeId: str = ""
    caseId: str = ""
    volumeName: str = ""
    notes: List[str] = field(default_factory=list)


@dataclass
class JobOutcome:
    """What :func:`finishJob` did: registered models, prediction files, the imported segmentation node,
    ``problems`` (texts for the user: a result that could not be taken in, with where it is kept) and ``notes``
    (texts for the status bar: a prediction that went into a new node beside one the user corrected)."""

    status: str
    message: str
    registered: List[ModelEntry] = field(default_factory=list)
    predictions: Dict[str, Path] = field(default_factory=dict)
    importedNode: Any = None
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _folder(value, what: str) -> Path:
    if value is None or str(value) in ("", "."):
        raise ValueError(f"choose a {what} first")
    return Path(value)


def startTrainingJob(
    runner: JobRunner, workFolder, datasetFolder, *, mode: str, networks: Sequence[str], epochs: int, device: str,
    configFile: Optional[str] = None, initRuns: Sequence[str] = (), python: Optional[str] = None,
) -> Job:  # fmt: skip
    """Start training on the annotated cases of ``datasetFolder``; returns the :class:`Job`."""
    dataset, work = _folder(datasetFolder, "dataset folder"), _folder(workFolder, "work folder")
    annotated = [c.case_id for c in list_cases(dataset) if c.has_annotation]
    if not annotated:
        raise ValueError(f"{dataset}: no annotated case yet; annotate at least one case (each tumor: seven "
                         "points, extreme points, a single point, a box or a dense label)")
    runs = [str(r) for r in initRuns if r and str(r) != "."]
    if mode == "SCM" and len(runs) != 2:
        raise ValueError("SCM starts from two finished stage-1 runs: choose 'SCM run A' and 'SCM run B'")
    for run in runs if mode == "SCM" else ():
        info = readModelInfo(run)
        if int(info["stage"]) != 1:
            raise ValueError(f"{run} is a stage-{info['stage']} run; SCM starts from two stage-1 runs")
    job = newJobFolder(work, "train")
    source = dataset
    if mode in PIPELINE_MODES:  # a pipeline would simulate clicks for labelled cases nobody annotated: not those
        source = subsetDataset(job / "inputs" / "dataset", [c for c in list_cases(dataset) if c.has_annotation])
    try:
        steps = trainingSteps(job, source, mode=mode, networks=networks, epochs=epochs, device=device,
                              configFile=configFile, initRuns=runs, python=python)  # fmt: skip
    except ValueError:
        shutil.rmtree(job, ignore_errors=True)  # a refused request leaves no job behind
        raise
    parameters = {"mode": mode, "networks": list(networks), "epochs": int(epochs), "device": device,
                  "config": configFile or None, "init_runs": runs}  # fmt: skip
    writeJobFile(job, "train", steps, parameters, dataset=str(dataset), cases=annotated)
    startDetached(runner, job)
    return Job("train", job, work)


def startPredictionJob(
    runner: JobRunner, workFolder, runDir, *, scene=None, volumeNode=None, caseId: str = "", datasetFolder=None,
    restrictToBox: bool = False, largestComponent: bool = False, device: str = "auto", python: Optional[str] = None,
) -> Job:  # fmt: skip
    """Predict the current volume (``scene`` + ``volumeNode``) or every case of ``datasetFolder``; returns the
    :class:`Job`, which records the volume node and case it was started for."""
    work, run = _folder(workFolder, "work folder"), _folder(runDir, "model (a finished run folder)")
    if isModelPackage(run):  # checked whole when it was imported and again by the prediction child, not here:
        if not zipfile.is_zipfile(run):  # the GUI thread only makes sure it is still a zip file
            raise ValueError(f"model package {run} is missing or not a zip file; import it again")
    else:
        readModelInfo(run)
    job = newJobFolder(work, "predict")
    extra: Dict[str, Any] = {"model": str(run)}
    if volumeNode is not None:
        plan, notes = _volumePlan(job, scene, volumeNode, caseId, restrictToBox)
        extra.update(case=caseId, volume_node=volumeNode.GetID(), inputs=plan.pop("inputs"))
    else:
        dataset = _folder(datasetFolder, "dataset folder")
        cases = list_cases(dataset)
        plan, notes = _datasetPlan(job, dataset, cases, restrictToBox)
        extra.update(dataset=str(dataset), cases=[c.case_id for c in cases])
    steps = predictionSteps(job, run, largestComponent=largestComponent, device=device, python=python, **plan)
    parameters = {"restrict_to_box": bool(restrictToBox), "largest_component": bool(largestComponent), "device": device}
    writeJobFile(job, "predict", steps, parameters, notes=notes, **extra)
    startDetached(runner, job)
    if volumeNode is None:
        return Job("predict", job, work, notes=notes)
    return Job("predict", job, work, volumeNode.GetID(), caseId, volumeNode.GetName(), notes=notes)


def _volumePlan(job: Path, scene, volumeNode, caseId: str, restrictToBox: bool):
    """(the :func:`predictionSteps` inputs, notes for the user) of predicting the current volume: restricted to its
    tumours' boxes only when each has one (:func:`~PASegSlicer.jobs.commands.boxedKinds`), else the whole image,
    said in the notes. Incomplete or invalid clicks raise here, before any child starts."""
    nodes = objects.objectNodes(scene, volumeNode)
    case = objects.caseFromNodes(scene, volumeNode, validate=True) if nodes else None
    kinds = [obj.kind for obj in case.objects] if case is not None else []
    restrict = bool(restrictToBox) and boxedKinds(kinds)
    notes = [] if restrict or not restrictToBox else [
        f"{caseId}: predicted on the whole image ({wholeImageReason(kinds)}); only tumors with a box (seven points, "
        "extreme points, a box) restrict the prediction"]  # fmt: skip
    inputs = writePredictionInputs(job, caseId, volumeFromNode(volumeNode), case)
    plan = {"inputPath": inputs["image"], "annotations": inputs["annotations"] or None, "restrictToBox": restrict}
    return {**plan, "inputs": inputs}, notes


def _datasetPlan(job: Path, dataset: Path, cases: Sequence[Any], restrictToBox: bool):
    """(the :func:`predictionSteps` inputs, notes) of predicting every case of ``dataset``: with ``restrictToBox``
    the cases whose clicks all have boxes are restricted to them and the others (no clicks, a single point, a dense
    label) are predicted on the whole image: two steps over two linked subsets of the dataset when it holds both
    (``paseg predict --restrict-to-box`` needs boxed clicks for every case it reads)."""
    annotations = str(dataset) if any(c.has_annotation for c in cases) else None
    plan: Dict[str, Any] = {"inputPath": str(dataset), "annotations": annotations, "restrictToBox": False}
    if not restrictToBox:
        return plan, []
    split = splitForRestriction(cases)
    if not split["whole"]:
        return {**plan, "restrictToBox": True}, []
    shown = ", ".join(f"{c.case_id} ({wholeImageReason(caseKinds(c))})" for c in split["whole"][:10])
    more = f" and {len(split['whole']) - 10} more" if len(split["whole"]) > 10 else ""
    notes = [f"{len(split['whole'])} of {len(cases)} case(s) predicted on the whole image, without a box to restrict "
             f"them to: {shown}{more}"]  # fmt: skip
    if not split["boxed"]:
        return plan, notes
    boxed = subsetDataset(job / "inputs" / "boxed", split["boxed"])
    whole = subsetDataset(job / "inputs" / "whole", split["whole"])
    hasClicks = any(c.has_annotation for c in split["whole"])
    return {"inputPath": str(boxed), "annotations": str(boxed), "restrictToBox": True, "wholeImageInput": str(whole),
            "wholeImageAnnotations": str(whole) if hasClicks else None}, notes  # fmt: skip


def startDetached(runner: JobRunner, jobFolder) -> None:
    """Run the steps of ``jobFolder/job.json`` detached from Slicer (the job supervisor, in PythonSlicer) and follow
    them through the job folder (:meth:`~PASegSlicer.jobs.runner.JobRunner.startJob`)."""
    runner.startJob(jobFolder, python=pythonExecutable(), environment=childEnvironment())


def isTeacherRun(runDir) -> bool:
    """A teacher–student pipeline's teacher (``<pipeline>/teacher``, beside the pipeline's ``pipeline.json``)."""
    run = Path(runDir)
    return run.name == "teacher" and (run.parent / "pipeline.json").is_file()


def finishTrainingJob(jobFolder, state: JobState, registry: ModelRegistry) -> List[ModelEntry]:
    """Record the outcome and register every run of the job that finished (also after a stop)."""
    registered: List[ModelEntry] = []
    runDirs = [str(e.get("run_dir")) for e in state.doneEvents if e.get("run_dir")]
    steps = json.loads((Path(jobFolder) / "job.json").read_text(encoding="utf-8")).get("steps", [])
    runDirs += stepRuns(steps)
    for runDir in dict.fromkeys(runDirs):
        if isTeacherRun(runDir):  # a pipeline's teacher reads boxes: not a model to predict new cases with
            continue
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


def _recordedVolume(scene, job: Job, core):
    """The volume node the prediction was started for, or ``None`` when it is gone (removed, scene cleared and
    its ID reused by another volume)."""
    node = scene.GetNodeByID(job.volumeNodeId) if scene is not None and job.volumeNodeId else None
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or core.caseIdOf(node) != job.caseId:
        return None
    return node


def finishJob(job: Job, state: JobState, scene=None, core=None) -> JobOutcome:
    """Take in a finished job's results, using only what the job recorded when it started.

    Training: ``job.json`` gets the status; finished runs go into ``<job.workFolder>/models.json``.
    Prediction: ``job.json`` gets the status, predictions are kept in ``<job.workFolder>/predictions/``, and
    the prediction of the volume the job was started for is imported into *that* node (``core`` is the
    :class:`~PASegSlicer.annotation.logic.PASegCoreLogic` of ``scene``), whatever volume is selected now. A result that
    cannot be taken in does not raise: it is named in :attr:`JobOutcome.problems` with where it is kept.
    """
    outcome = JobOutcome(state.status, state.message)
    if job.kind == "review":
        finishReviewJob(job.folder, state)
        return outcome
    if job.kind == "train":
        outcome.registered = finishTrainingJob(job.folder, state, ModelRegistry(Path(job.workFolder) / "models.json"))
        return outcome
    if job.kind != "predict":
        raise ValueError(f"job kind must be 'train', 'predict' or 'review', got {job.kind!r}")
    outcome.predictions = finishPredictionJob(job.folder, state, job.workFolder)
    if not job.volumeNodeId:  # "Predict all cases": kept in <work>/predictions; the cases open now show theirs
        _showOpenCases(outcome, core, job.workFolder)
        return outcome
    if job.caseId not in outcome.predictions:
        return outcome
    kept = predictionPath(job.workFolder, job.caseId)
    node = _recordedVolume(scene, job, core)
    if node is None:
        outcome.problems.append(f"volume {job.volumeName!r} (case {job.caseId}), which this prediction was started "
                                f"for, is no longer in the scene; the prediction is kept in {kept}")  # fmt: skip
        return outcome
    try:
        outcome.importedNode = core.importPrediction(node, outcome.predictions[job.caseId])
    except Exception as exc:  # shown to the user with where the file is; the job itself succeeded
        outcome.problems.append(f"the prediction could not be imported into {job.volumeName!r} ({exc}); "
                                f"it is kept in {kept}")  # fmt: skip
    else:
        _notePrediction(outcome, core)
    return outcome


# -- the review queue ------------------------------------------------------------------------------------------
def startReviewJob(runner: JobRunner, workFolder, runDir, datasetFolder, *, device: str = "auto",
                   python: Optional[str] = None) -> Job:  # fmt: skip
    """Rank every case of ``datasetFolder`` by how unsure the model ``runDir`` (a finished run folder) is about it:
    ``paseg review-queue`` writes ``<work>/review_queue.json``, which the case list shows; returns the :class:`Job`
    (kind ``"review"``)."""
    work, run = _folder(workFolder, "work folder"), _folder(runDir, "model (a finished run folder)")
    dataset = _folder(datasetFolder, "dataset folder")
    if isModelPackage(run):
        raise ValueError(f"{run} is a model package; ranking cases for review needs a run folder trained here")
    readModelInfo(run)
    cases = list_cases(dataset)
    job = newJobFolder(work, "review")
    steps = reviewQueueSteps(job, run, dataset, reviewQueuePath(work), device=device, python=python)
    writeJobFile(job, "review", steps, {"device": device}, model=str(run), dataset=str(dataset),
                 cases=[c.case_id for c in cases], queue=str(reviewQueuePath(work)))  # fmt: skip
    startDetached(runner, job)
    return Job("review", job, work)


def finishReviewJob(jobFolder, state: JobState) -> None:
    """Record the outcome in ``job.json`` (the queue file is written by the child itself, atomically)."""
    updateJobFile(jobFolder, status=state.status, exit_code=state.exitCode, message=state.message)


def _showOpenCases(outcome: JobOutcome, core, workFolder) -> None:
    """Import each new prediction into its case's volume when the case is open (the others appear when their case
    is opened: :meth:`~PASegSlicer.annotation.logic.PASegCoreLogic.showKeptPrediction`)."""
    for case, path in outcome.predictions.items() if core is not None else ():
        node = core.findCaseVolume(case)
        if node is None:
            continue
        try:
            core.importPrediction(node, path)
        except Exception as exc:  # shown with where the file is; the job itself succeeded
            outcome.problems.append(f"the prediction of case {case} could not be shown in {node.GetName()!r} ({exc}); "
                                    f"it is kept in {predictionPath(workFolder, case)}")  # fmt: skip
        else:
            _notePrediction(outcome, core)


def _notePrediction(outcome: JobOutcome, core) -> None:
    """Say where a prediction went when a corrected prediction of its volume was kept (the logic's
    ``predictionNote``) in :attr:`JobOutcome.notes`."""
    if getattr(core, "predictionNote", ""):
        outcome.notes.append(core.predictionNote)
