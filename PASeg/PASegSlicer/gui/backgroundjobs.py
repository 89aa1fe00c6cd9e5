"""The job panel's part for jobs that outlive the Slicer session (:mod:`PASegSlicer.jobs.background`): closing with
a running job asks whether to keep it running, a work folder's running job is re-attached and its ended jobs are
taken in once, and the job list offers Resume and "Use last weights" for a stopped training job.
"""

from __future__ import annotations

import logging
import pathlib

from ..annotation.cases import pathText
from ..jobs import background, control


def _(text: str) -> str:
    """Slicer's ``tr`` (this file is its translation context); the text itself without Slicer's i18n (headless)."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


class BackgroundJobs:
    """Mixed into :class:`~PASegSlicer.gui.jobpanel.JobPanel` (its ``ui``, ``app``, ``core``, ``runner``, ``job``,
    ``p``, ``parameters``, ``registry()``, ``refreshModels()``, ``_started()``)."""

    jobRecords: list  # the work folder's jobs (background.JobRecord), as jobsComboBox lists them
    scannedWork: object  # the work folder whose jobs were re-attached / taken in (set by JobPanel.__init__)

    def leaveRunningJob(self) -> None:
        """The module is torn down: ask whether a running detached job keeps running in the background (the next
        session re-attaches to it); "no" stops it. A detached job that is stopping already is left to save its
        checkpoint and stop on its own (another stop() would kill it)."""
        if self.runner.isRunning() and self.runner.detached and self.runner.state.status == "stopping":
            self.runner.detach()
            return
        if self.runner.isRunning() and self.runner.detached and self.runner.state.status == "running":
            kind = self.job.kind if self.job is not None else ""
            question = _("A PASeg {kind} job is running ({folder}).\n\nKeep it running in the background? PASeg "
                         "follows it again the next time it opens this work folder.\n\nNo: stop it now (training "
                         "saves a checkpoint; it can be resumed).").format(
                kind=kind, folder=self.job.folder if self.job is not None else "")  # fmt: skip
            if self.app.confirmYesNoDisplay(question):
                self.runner.detach()
                return
        self.runner.stop()

    def attachIfNewWork(self) -> None:
        """When the work folder is new to the panel (the module opens, the user chose another), re-attach to its
        running job and take in the jobs that ended while no Slicer followed them (:meth:`attachJobs`)."""
        work = pathText(self.p.workFolder) if self.p is not None else ""
        if work and pathlib.Path(work) != self.scannedWork:
            self.scannedWork = pathlib.Path(work)
            self.attachJobs(work)

    def listJobs(self) -> None:
        """List the work folder's jobs (``jobsComboBox``: folder, status, date) for Resume / Use last weights."""
        work = pathText(self.p.workFolder) if self.p is not None else ""
        chosen = self.selectedJob()
        try:
            self.jobRecords = background.scanJobs(work) if work else []
        except OSError as exc:
            self.jobRecords = []
            self.app.showStatusMessage(str(exc), 5000)
        combo = self.ui.jobsComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItems([r.label for r in self.jobRecords])
        folders = [r.folder for r in self.jobRecords]
        if chosen is not None and chosen.folder in folders:  # the user's choice survives a refresh
            combo.currentIndex = folders.index(chosen.folder)
        combo.blockSignals(wasBlocked)
        self.updateButtons()

    def attachJobs(self, workFolder) -> None:
        """Follow the newest running job of ``workFolder`` (progress, loss curve, Stop) unless a job is followed
        already, and take in, once, each job that ended while no Slicer followed it. A running job that cannot be
        followed (a damaged ``job.json``) is reported; the scan goes on."""
        for record in background.scanJobs(workFolder):
            if record.status == "running":
                if not self.runner.isRunning():
                    self.followRunning(record)
            elif not record.takenIn:
                self.takeIn(record)

    def followRunning(self, record) -> None:
        """Re-attach to the running job ``record`` (its progress, loss curve and Stop appear in the job area)."""
        try:
            job = background.jobFromFolder(record.folder)
            self.runner.attach(record.folder)
        except Exception as exc:  # one damaged job folder must not stop the module from opening the work folder
            logging.exception("PASeg: following %s failed", record.folder)
            self.app.showStatusMessage(_("Could not follow the job {folder}: {error}").format(
                folder=record.folder.name, error=exc), 10000)  # fmt: skip
            return
        self._started(job)
        self.app.showStatusMessage(_("Following the running {kind} job {folder}").format(
            kind=record.kind, folder=record.folder.name), 10000)  # fmt: skip

    def scanAgain(self) -> None:
        """The runner is free again (its job ended and was taken in): follow the work folder's next running job
        (another Slicer's, a second one) and take in the jobs that ended meanwhile."""
        work = pathText(self.p.workFolder) if self.p is not None else ""
        if not work or self.runner.isRunning() or pathlib.Path(work) != self.scannedWork:
            return
        try:
            self.attachJobs(work)
        except OSError as exc:
            self.app.showStatusMessage(str(exc), 5000)

    def takeIn(self, record) -> None:
        """Take in the results of a job that ended while no Slicer followed it (models registered, predictions
        kept and imported where their volume is loaded), and record that it was (``taken_in``). Another session
        that claimed it first (:func:`~PASegSlicer.jobs.background.claimTakeIn`) takes it in instead."""
        try:
            if not background.claimTakeIn(record.folder):
                return
        except OSError as exc:
            self.app.showStatusMessage(_("Could not take in the job {folder}: {error}").format(
                folder=record.folder.name, error=exc), 10000)  # fmt: skip
            return
        try:
            job = background.jobFromFolder(record.folder)
            state = background.replayJob(record.folder)
            if not state.finished:  # its supervisor ended without recording the end
                state.status, state.message = record.status, record.message or _("ended while Slicer was closed")
            outcome = control.finishJob(job, state, self.core.scene, self.core)
            background.markTakenIn(record.folder)
        except Exception as exc:  # one damaged job folder must not stop the module from opening the work folder
            logging.exception("PASeg: taking in %s failed", record.folder)
            background.releaseTakeIn(record.folder)  # the next scan tries again
            self.app.showStatusMessage(_("Could not take in the job {folder}: {error}").format(
                folder=record.folder.name, error=exc), 10000)  # fmt: skip
            return
        if outcome.registered:
            self.parameters().modelRunDir = pathlib.Path(outcome.registered[-1].runDir)
        text = _("The {kind} job {folder} ended while Slicer was closed ({status}: {message}); its results were "
                 "taken in.").format(kind=record.kind, folder=record.folder.name, status=state.status,
                                     message=state.message)  # fmt: skip
        self.app.showStatusMessage(" ".join([text] + outcome.problems + outcome.notes), 10000)

    def finishClaimed(self, job, state):
        """Take in the results of the job this panel followed (:func:`~PASegSlicer.jobs.control.finishJob`) unless
        another Slicer following the same job claimed them first; the :class:`~PASegSlicer.jobs.control.JobOutcome`
        (empty then)."""
        if not background.claimTakeIn(job.folder):
            return control.JobOutcome(state.status, state.message)
        try:
            return control.finishJob(job, state, self.core.scene, self.core)
        except Exception:
            background.releaseTakeIn(job.folder)  # a later scan tries again
            raise

    def selectedJob(self):
        """The job chosen in ``jobsComboBox`` (a :class:`~PASegSlicer.jobs.background.JobRecord`), or ``None``."""
        index = self.ui.jobsComboBox.currentIndex
        return self.jobRecords[index] if 0 <= index < len(self.jobRecords) else None

    def onResume(self) -> None:
        """Resume the chosen stopped training job in its folder: finished runs are kept, the stopped run continues
        from its checkpoint, the remaining steps follow."""
        record = self.selectedJob()
        if record is None or self.runner.isRunning():
            return
        with self.app.tryWithErrorDisplay(_("The job could not be resumed."), waitCursor=True):
            background.prepareResume(record.folder)
            control.startDetached(self.runner, record.folder)
            self._started(background.jobFromFolder(record.folder))
        self.listJobs()

    def onUseLastWeights(self) -> None:
        """Register the chosen stopped training job's run as a model with its last weights (``stopped.json``;
        never ``model.json``) and choose it for prediction."""
        record = self.selectedJob()
        if record is None:
            return
        with self.app.tryWithErrorDisplay(_("The stopped run could not be used.")):
            entry = background.useLastWeights(record.folder, self.registry())
            self.parameters().modelRunDir = pathlib.Path(entry.runDir)
            self.refreshModels()
            self.app.showStatusMessage(_("Registered {label}").format(label=entry.label), 10000)

    def updateJobListButtons(self) -> None:
        record, running = self.selectedJob(), self.runner.isRunning()
        self.ui.resumeButton.enabled = bool(record is not None and record.resumable and not running)
        self.ui.useWeightsButton.enabled = bool(record is not None and record.status != "running"
                                                and record.stoppedRuns)
