"""Jobs that outlive the Slicer session that started them: the job folders of a work folder, resuming a stopped
training job, and using a stopped run's last weights.

A job runs detached (:mod:`PASegLib.jobs.supervisor`), so when Slicer starts again (or the module gets a work
folder) :func:`scanJobs` lists ``<work>/jobs/*/job.json``: a running one is re-attached
(:meth:`~PASegSlicer.jobs.runner.JobRunner.attach`), one that ended while nobody followed it is taken in once
(``taken_in`` in ``job.json``; :func:`markTakenIn`), and the others are listed with their status. Two Slicer
instances on one work folder take a job in once: the one that creates ``JOB/taken_in`` first
(:func:`claimTakeIn`, an exclusive create) does.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from PASegLib.jobs.supervisor import read_status
from PASegLib.utils.atomic import atomic_write_json

from .commands import pipelineFinished, pipelineFolder, stepRuns
from .control import Job
from .models import ModelEntry, ModelRegistry, useStoppedRun
from .runner import FINAL_STATUSES, jobRunning, replayJob

__all__ = ["TAKEN_IN_MARKER", "JobRecord", "claimTakeIn", "jobFromFolder", "markTakenIn", "prepareResume",
           "releaseTakeIn", "scanJobs", "stoppedRuns", "useLastWeights"]


#: created (exclusively) in the job folder by the session that takes the job's results in
TAKEN_IN_MARKER = "taken_in"


def claimTakeIn(folder) -> bool:
    """Claim the taking in of the job ``folder``'s results for this session: ``True`` when this call created
    ``JOB/taken_in`` (an exclusive create, atomic across processes), ``False`` when another session (or an earlier
    call) claimed it. ``OSError`` when the folder cannot be written."""
    try:
        fd = os.open(Path(folder) / TAKEN_IN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def releaseTakeIn(folder) -> None:
    """Give a claim back (:func:`claimTakeIn`): taking in failed, a later scan tries again; a resumed job."""
    (Path(folder) / TAKEN_IN_MARKER).unlink(missing_ok=True)


@dataclass
class JobRecord:
    """One job folder of a work folder as the job list shows it.

    Attributes:
        status: ``running`` (its supervisor runs), ``done``, ``failed`` or ``stopped``.
        takenIn: its results were taken in (``taken_in`` in ``job.json``); a job that ended while no Slicer
            followed it is not, until :func:`markTakenIn`.
        runs: a training job's run folders (also those inside its pipeline folders); ``stoppedRuns`` those that
            stopped with a checkpoint (resumable, usable with their last weights).
        pipelines: the output folders of its pipeline steps (``paseg run``), resumable until they wrote their
            report.
    """

    folder: Path
    kind: str
    status: str
    created: str
    message: str = ""
    takenIn: bool = False
    runs: List[str] = field(default_factory=list)
    stoppedRuns: List[str] = field(default_factory=list)
    pipelines: List[str] = field(default_factory=list)

    @property
    def resumable(self) -> bool:
        """A training job that stopped (or failed) before all its runs (and pipelines) finished."""
        finished = all((Path(r) / "model.json").is_file() for r in self.runs) and \
            all(pipelineFinished(p) for p in self.pipelines)
        return self.kind == "train" and self.status in ("stopped", "failed") and not finished

    @property
    def label(self) -> str:
        created = self.created[:16].replace("T", " ")
        return f"{self.folder.name} · {self.status}" + (f" · {created}" if created else "")


def _jobDoc(folder: Path) -> Dict[str, Any]:
    try:
        doc = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / 'job.json'}: cannot be read ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{folder / 'job.json'}: not a job record")
    return doc


def _pipelines(steps) -> List[str]:
    return [str(p) for p in (pipelineFolder(s) for s in steps if isinstance(s, dict)) if p is not None]


def stoppedRuns(runs: List[str]) -> List[str]:
    """The run folders that stopped with a checkpoint and never finished (no ``model.json``)."""
    return [r for r in runs
            if (Path(r) / "checkpoints" / "last.pt").is_file() and not (Path(r) / "model.json").is_file()]


def jobStatus(folder: Path, doc: Optional[Dict[str, Any]] = None) -> str:
    """``running`` while the supervisor runs, else the recorded end (``status.json``, then ``job.json``); a job
    whose supervisor ended without recording it (killed with Slicer's machine, crashed) is ``failed``."""
    if jobRunning(folder):
        return "running"
    status = (read_status(folder) or {}).get("status")
    if status in FINAL_STATUSES:
        return status
    doc = _jobDoc(folder) if doc is None else doc
    return doc["status"] if doc.get("status") in FINAL_STATUSES else "failed"


def scanJobs(workFolder) -> List[JobRecord]:
    """The jobs of ``<work>/jobs/*/job.json``, newest first (a folder whose ``job.json`` cannot be read is left
    out)."""
    root = Path(workFolder) / "jobs"
    records: List[JobRecord] = []
    for path in sorted(root.glob("*/job.json"), reverse=True) if root.is_dir() else ():
        folder = path.parent
        try:
            doc = _jobDoc(folder)
            status = jobStatus(folder, doc)
        except ValueError:
            continue
        steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
        runs = stepRuns(steps)
        message = str((read_status(folder) or {}).get("message") or doc.get("message") or "")
        takenIn = bool(doc.get("taken_in")) or doc.get("status") in FINAL_STATUSES \
            or (folder / TAKEN_IN_MARKER).exists()  # finishJob recorded its end, or another session takes it in
        records.append(JobRecord(folder, str(doc.get("kind", "")), status, str(doc.get("created", "")), message,
                                 takenIn, runs, stoppedRuns(runs), _pipelines(steps)))
    return records


def jobFromFolder(folder) -> Job:
    """The :class:`~PASegSlicer.jobs.control.Job` that ``job.json`` recorded when the job started (the volume node
    and case of a prediction of the current volume: checked again when its result is imported)."""
    folder = Path(folder)
    doc = _jobDoc(folder)
    kind = str(doc.get("kind", ""))
    if kind not in ("train", "predict", "review"):
        raise ValueError(f"{folder / 'job.json'}: kind must be 'train', 'predict' or 'review', got {kind!r}")
    return Job(kind, folder, folder.parent.parent, str(doc.get("volume_node") or ""), str(doc.get("case") or ""),
               str(doc.get("case") or ""))


def markTakenIn(folder) -> None:
    """Record in ``job.json`` that the job's results were taken in (``taken_in``: a later scan leaves it alone)."""
    path = Path(folder) / "job.json"
    doc = _jobDoc(Path(folder))
    doc["taken_in"] = True
    atomic_write_json(path, doc)


def prepareResume(folder) -> JobRecord:
    """Make a stopped training job runnable again in the same folder: its finished runs are skipped, the stopped
    run continues from its checkpoint (``--resume`` where the run has ``config.json``), the steps after it run as
    before; ``job.json`` says ``running`` and not taken in. Returns the job's record; ``ValueError`` when the job
    is not a stopped training job or still runs."""
    folder = Path(folder)
    doc = _jobDoc(folder)
    status = jobStatus(folder, doc)
    if doc.get("kind") != "train" or status not in ("stopped", "failed"):
        raise ValueError(f"{folder.name} is a {doc.get('kind')} job that is {status}: only a stopped training job "
                         f"can be resumed")
    for step in doc.get("steps") or []:
        run = Path(step["run_dir"]) if step.get("run_dir") else None
        pipeline = pipelineFolder(step)  # the same `paseg run` command continues its pipeline
        step["skip"] = bool(run is not None and (run / "model.json").is_file()) or \
            bool(pipeline is not None and pipelineFinished(pipeline))
        command = step["command"]
        if run is not None and not step["skip"] and (run / "config.json").is_file() and "--resume" not in command:
            command.append("--resume")
    doc.update(status="running", taken_in=False,
               resumed=list(doc.get("resumed") or []) + [datetime.datetime.now().isoformat(timespec="seconds")])
    doc.pop("finished", None)
    atomic_write_json(folder / "job.json", doc)
    releaseTakeIn(folder)  # its new end is taken in again
    runs = stepRuns(doc["steps"])
    return JobRecord(folder, "train", "running", str(doc.get("created", "")), "", False, runs, stoppedRuns(runs),
                     _pipelines(doc["steps"]))


def useLastWeights(folder, registry: ModelRegistry) -> ModelEntry:
    """Register the stopped run of the training job ``folder`` as a model with its last weights: the run gets a
    ``stopped.json`` (naming the epoch and a snapshot of ``checkpoints/last.pt``), never a ``model.json``, and is listed
    "stopped at epoch N". ``ValueError`` when no run of the job stopped with a checkpoint."""
    folder = Path(folder)
    doc = _jobDoc(folder)
    runs = stoppedRuns(stepRuns(doc.get("steps") or []))
    if doc.get("kind") != "train" or not runs:
        raise ValueError(f"{folder.name}: no run of this job stopped with a checkpoint (nothing trained yet?)")
    state = replayJob(folder)
    event = state.stoppedEvent
    if (not event or event.get("epoch") is None) and state.epoch is not None:
        event = {"epoch": state.epoch, "iteration": state.iteration}  # one record, one snapshot of its weights
    useStoppedRun(runs[-1], event)
    return registry.register(runs[-1])
