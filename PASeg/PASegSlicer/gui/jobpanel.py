"""The training and inference panels of the PASeg widget: start jobs, follow them, take in their results.

All decisions are made by :mod:`PASegSlicer.jobs.control`, :mod:`PASegSlicer.jobs.commands` and
:mod:`PASegSlicer.jobs.runner`; the panel takes its collaborators (the widgets, the logic, the Slicer application's
services, parameter getters, a job-runner factory, a dependency checker), so it runs headless in the tests. Nothing
here blocks: the runner calls :meth:`JobPanel.onJobEvent` from Qt signals (in Slicer: its runners come from
:func:`~PASegSlicer.jobs.qtprocess.qtJobRunner`). A job finishes from what it recorded when it started
(:class:`~PASegSlicer.jobs.control.Job`), not from the widget's parameter node, which is released whenever the user
switches module (``exit()``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import time
from typing import Any, Callable, Optional

from ..annotation.cases import pathText
from ..annotation.logic import PASegCoreLogic
from ..jobs import background, commands, control, devices
from ..jobs.dependencies import DependencyChecker, DependencyError
from ..jobs.models import ModelRegistry
from ..jobs.runner import JobRunner
from .app import App, ParameterGetter, ShownParameterGetter
from .backgroundjobs import BackgroundJobs
from .lossplot import LossCurvePlot


def _(text: str) -> str:
    """Slicer's ``tr`` (this file is its translation context); the text itself without Slicer's i18n (headless)."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


#: how often the panel looks whether a model package's import (a worker thread) has finished, ms
IMPORT_POLL_MS = 200


class JobPanel(BackgroundJobs):
    """The training and inference panels; owns the job runner and the GPU probe's runner.

    Args:
        ui: the module's widgets (``slicer.util.childWidgetVariables`` of ``PASeg.ui``).
        app: the Slicer application's services (:class:`~PASegSlicer.gui.app.SlicerApp` in Slicer).
        core: the logic on the scene (predictions are imported into its volumes; the loss curve is plotted there).
        parameters: the module's parameter node, also while the module is hidden.
        shownParameters: the parameter node while the module is shown, else ``None``.
        refreshCases: re-reads the case list (after a job, while the module is shown).
        runnerFactory: ``runnerFactory(onEvent=…, onLog=…)`` → a :class:`~PASegSlicer.jobs.runner.JobRunner`
            (:func:`~PASegSlicer.jobs.qtprocess.qtJobRunner` in Slicer).
        dependencyChecker: ``dependencyChecker()`` → the :class:`~PASegSlicer.jobs.dependencies.DependencyChecker`
            that installs what the jobs need.
        python: the interpreter of the jobs' children (``None``: ``PythonSlicer`` in Slicer).
    """

    def __init__(self, ui: Any, app: App, core: PASegCoreLogic, parameters: ParameterGetter,
                 shownParameters: ShownParameterGetter, refreshCases: Callable[[], None],
                 runnerFactory: Callable[..., JobRunner], dependencyChecker: Callable[[], DependencyChecker],
                 python: Optional[str] = None) -> None:  # fmt: skip
        self.ui, self.app, self.core = ui, app, core
        self.parameters, self.shownParameters, self.refreshCases = parameters, shownParameters, refreshCases
        self.dependencyChecker, self.python = dependencyChecker, python
        self.plot = LossCurvePlot(core.scene)
        self.runner = runnerFactory(onEvent=self.onJobEvent, onLog=self.ui.logText.appendPlainText)
        self.probe = runnerFactory(onEvent=self.onProbeEvent)
        self.job, self.models, self.lastPlot = None, [], 0.0
        self.jobRecords: list = []  # the work folder's jobs (background.JobRecord), as jobsComboBox lists them
        self.scannedWork: Optional[pathlib.Path] = None  # the work folder whose jobs were re-attached / taken in
        # a model package's import (hashing, copying, the child-process check) runs in a worker thread, so the GUI
        # never waits for it; the timer takes the result in on the GUI thread
        self.importer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="paseg-import")
        self.importing: Optional[concurrent.futures.Future] = None
        self.importTimer = app.timer(IMPORT_POLL_MS, self.pollImport)
        u = self.ui
        for button, slot in ((u.detectGpuButton, self.onDetectGpu), (u.trainButton, self.onTrain),
                             (u.stopButton, self.onStop), (u.showCurveButton, self.onShowCurve),
                             (u.predictButton, lambda: self.onPredict(True)),
                             (u.predictAllButton, lambda: self.onPredict(False)),
                             (u.importModelButton, self.onImportModel),
                             (u.acceptPredictionButton, self.onAcceptPrediction)):  # fmt: skip
            button.clicked.connect(slot)
        u.modelComboBox.activated.connect(self.onModelChosen)
        u.rankCasesButton.clicked.connect(self.onRankCases)
        u.resumeButton.clicked.connect(self.onResume)  # jobs that outlive the session
        u.useWeightsButton.clicked.connect(self.onUseLastWeights)
        u.jobsComboBox.activated.connect(lambda index: self.updateButtons())

    @property
    def p(self):
        """The parameter node while the module is shown, else ``None``."""
        return self.shownParameters()

    def registry(self) -> ModelRegistry:
        return ModelRegistry(pathlib.Path(pathText(self.p.workFolder)) / "models.json")

    def device(self) -> str:
        return commands.deviceArgument(self.p.deviceMode, self.p.gpuIndex)

    def onDetectGpu(self) -> None:
        if not self.probe.isRunning():
            self.ui.gpuLabel.setText(_("detecting…"))
            self.probe.start([devices.deviceProbeStep(self.python)])

    def onProbeEvent(self, event) -> None:
        if event["event"] == "devices":
            self.ui.gpuLabel.setText(devices.describeDevices(event))
        elif event["event"] == "finished" and event["status"] != "done":
            self.ui.gpuLabel.setText(_("GPU detection failed: {message}").format(message=event["message"]))

    def ensureDependencies(self) -> bool:
        """torch through the PyTorch extension, then monai & co. with confirmation; False when missing."""
        checker = self.dependencyChecker()
        try:
            checker.ensureForJobs()
        except DependencyError as exc:
            self.app.errorDisplay(str(exc))
            return False
        except Exception as exc:  # anything else from pip or the PyTorch extension: shown, never silent
            self.app.errorDisplay(_("Installing the Python packages failed: {error}").format(error=exc))
            return False
        if checker.restartHint:
            self.app.infoDisplay(checker.restartHint)
        return True

    def _started(self, job: control.Job) -> None:
        self.job, self.lastPlot = job, 0.0
        self.ui.jobFolderLabel.setText(_("Job folder: {folder}").format(folder=job.folder))
        self.updateButtons()

    def onTrain(self) -> None:
        p = self.p
        if not self.ensureDependencies():
            return
        with self.app.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            job = control.startTrainingJob(
                self.runner,
                pathText(p.workFolder),
                pathText(p.datasetFolder),
                mode=p.trainMode,
                networks=[p.networkA, p.networkB],
                epochs=p.epochs,
                device=self.device(),
                configFile=pathText(p.trainConfig) or None,
                initRuns=[pathText(p.scmRunA), pathText(p.scmRunB)],
                python=self.python,
            )
            self._started(job)

    def onPredict(self, current: bool) -> None:
        p = self.p
        if not self.ensureDependencies():
            return
        with self.app.tryWithErrorDisplay(_("Prediction could not start."), waitCursor=True):
            volume = p.inputVolume if current else None
            if current and volume is None:
                raise ValueError(_("select a volume to predict"))
            job = control.startPredictionJob(
                self.runner,
                pathText(p.workFolder),
                pathText(p.modelRunDir),
                scene=self.core.scene,
                volumeNode=volume,
                caseId=self.core.caseIdOf(volume) if volume else "",
                datasetFolder=pathText(p.datasetFolder),
                restrictToBox=p.restrictToBox,
                largestComponent=p.largestComponent,
                device=self.device(),
                python=self.python,
            )
            self._started(job)
            self.tellNotes(job)

    def onRankCases(self) -> None:
        """Rank every case of the dataset by how unsure the chosen model is (``paseg review-queue`` in a child); when
        it finishes the case list shows the queue (:meth:`AnnotationPanel.onReviewNext` opens the worst case)."""
        p = self.p
        if not self.ensureDependencies():
            return
        with self.app.tryWithErrorDisplay(_("Ranking the cases could not start."), waitCursor=True):
            job = control.startReviewJob(self.runner, pathText(p.workFolder), pathText(p.modelRunDir),
                                         pathText(p.datasetFolder), device=self.device(), python=self.python)
            self._started(job)

    def onStop(self) -> None:
        """First press: ask the job to stop (it saves and exits); while stopping, a second press kills it."""
        self.runner.stop()
        self.updateButtons()

    def onJobEvent(self, event) -> None:
        state, u = self.runner.state, self.ui
        preparing = state.showsPreparation
        u.progressBar.setValue(int(round(100 * (state.phaseFraction if preparing else state.fraction))))
        u.progressBar.setFormat(_("preparing data %p%") if preparing else "%p%")
        texts = state.summary()
        u.stepLabel.setText(" · ".join(t for t in (texts["step"], texts.get("phase", ""), texts["status"]) if t))
        u.etaLabel.setText(texts["eta"])
        u.lossesLabel.setText(texts["losses"])
        u.scoreLabel.setText(texts["score"])
        now = time.monotonic()  # the curve is appended to (not rebuilt), and at most once a second
        if self.job is not None and self.job.kind == "train" and (
            event["event"] in ("validation", "finished", "attached") or now - self.lastPlot >= 1.0
        ):
            self.lastPlot = now
            self.plot.update(state.lossHistory, state.validationHistory)
        if event["event"] == "finished":
            self.onJobFinished(state)
        elif event["event"] == "stopped" or state.status == "stopping":
            self.updateButtons()

    def onJobFinished(self, state) -> None:
        """Take in the results from what the job recorded (works with the module hidden); the buttons are
        re-enabled and the user told, whatever happens while taking them in."""
        job, problems, outcome = self.job, [], None
        try:
            outcome = self.finishClaimed(job, state)  # once, also when another Slicer followed it too
            background.markTakenIn(job.folder)  # a later scan of the work folder leaves it alone
            problems = outcome.problems
            if outcome.registered:  # the newest model becomes the one to predict with
                self.parameters().modelRunDir = pathlib.Path(outcome.registered[-1].runDir)
            if self.p is not None:  # the module is shown; otherwise enter() refreshes the lists
                self.refreshModels()
                self.refreshCases()
        except Exception as exc:
            problems = problems + [_("Taking in the job's results failed: {error}").format(error=exc)]
            logging.exception("PASeg: taking in the results of %s failed", job.folder if job else None)
        finally:
            self.updateButtons()
        folder = job.folder if job else ""
        if state.status == "failed":
            problems.insert(0, _("The job failed: {message}").format(message=state.message))
        if problems:
            problems += outcome.notes if outcome else []
            text = "\n\n".join(problems) + "\n\n" + _("The full log is in {folder}").format(folder=folder)
            self.app.errorDisplay(text)
        else:
            done = _("PASeg {kind} job {status}: {message}").format(kind=job.kind if job else "", status=state.status,
                                                                    message=state.message)  # fmt: skip
            notes = "".join(" · " + note for note in (outcome.notes if outcome else []))  # e.g. a corrected node kept
            self.app.showStatusMessage(done + self.keptPredictionsText(job, outcome) + notes, 10000)
        self.scanAgain()  # the runner is free: follow the work folder's next running job, if any

    def onShowCurve(self) -> None:
        self.plot.update(self.runner.state.lossHistory, self.runner.state.validationHistory)
        self.app.showChart(self.plot.chart)

    def refreshModels(self) -> None:
        self.attachIfNewWork()  # may register the models of a job that ended while Slicer was closed
        self.ui.modelComboBox.clear()
        try:
            self.models = self.registry().models() if self.p is not None and pathText(self.p.workFolder) else []
        except ValueError as exc:
            self.models = []
            self.app.showStatusMessage(str(exc), 5000)
        self.ui.modelComboBox.addItems([m.label for m in self.models])
        self.listJobs()

    def onImportModel(self) -> None:
        """Import a model package (``paseg export model``): copied into the work folder's models, checked in a child
        process, listed with its card and chosen for prediction
        (:meth:`~PASegSlicer.jobs.models.ModelRegistry.importPackage`). The import runs in a worker thread;
        :meth:`pollImport` takes its result in."""
        if self.importing is not None:
            return
        path = self.app.openFileName(_("Import a PASeg model package"), _("PASeg model packages (*.zip)"))
        if not path:
            return
        with self.app.tryWithErrorDisplay(_("The model package could not be imported.")):
            if not pathText(self.p.workFolder):
                raise ValueError(_("choose a work folder first: imported models are kept there"))
            self.importing = self.importer.submit(self.registry().importPackage, path, python=self.python)
            self.ui.importModelButton.enabled = False
            self.app.showStatusMessage(_("Checking the model package {path}…").format(path=path), 0)
            self.importTimer.start()

    def pollImport(self) -> None:
        """Take in a finished package import (list and choose it, or show why it was refused); look again later
        while it runs."""
        future = self.importing
        if future is None:
            return
        if not future.done():
            self.importTimer.start()
            return
        self.importing = None
        self.ui.importModelButton.enabled = True
        try:
            entry = future.result()
        except (ValueError, OSError) as exc:
            self.app.errorDisplay(_("The model package could not be imported.") + "\n\n" + str(exc))
            return
        if self.p is not None:
            self.p.modelRunDir = pathlib.Path(entry.runDir)
            self.refreshModels()
            self.ui.modelComboBox.currentIndex = next(i for i, m in enumerate(self.models) if m.runDir == entry.runDir)
        self.app.showStatusMessage(_("Imported the model package {label}").format(label=entry.label), 10000)

    def onModelChosen(self, index: int) -> None:
        if 0 <= index < len(self.models):
            self.p.modelRunDir = pathlib.Path(self.models[index].runDir)

    def updateButtons(self) -> None:
        running = self.runner.isRunning()
        for button in (self.ui.trainButton, self.ui.predictButton, self.ui.predictAllButton, self.ui.rankCasesButton):
            button.enabled = not running
        stopping = self.runner.state.status == "stopping"
        self.ui.stopButton.enabled = running  # while stopping it kills at once (JobRunner.canKill)
        self.ui.stopButton.text = _("Kill") if stopping else _("Stop")
        tip = _("The job was asked to stop; press to end it at once (no checkpoint).") if stopping else None
        self.ui.stopButton.toolTip = tip or _("Stop the job; training saves a checkpoint first.")
        self.ui.gpuIndexSpinBox.enabled = self.p is not None and self.p.deviceMode == "GPU"
        if self.p is not None:  # only the settings the chosen training mode reads are editable
            used = commands.TRAIN_MODE_PARAMETERS.get(self.p.trainMode, ())
            for name, widget in (("networkA", self.ui.networkAComboBox), ("networkB", self.ui.networkBComboBox),
                                 ("scmRunA", self.ui.scmRunA), ("scmRunB", self.ui.scmRunB),
                                 ("epochs", self.ui.epochsSpinBox)):
                widget.enabled = name in used
        self.updateJobListButtons()

    def cleanup(self) -> None:
        """The module is torn down (Slicer closes): a running job may keep running in the background (it runs
        detached; the next session re-attaches to it) or is asked to stop (a training job saves first); the GPU
        probe is stopped."""
        self.leaveRunningJob()
        self.probe.stop()
        self.importTimer.stop()
        self.importer.shutdown(wait=False)  # an import under way finishes in its thread; nothing waits for it

    # -- predictions of every case, notes, and accepting a prediction as the dense label ------------------------------
    def tellNotes(self, job: control.Job) -> None:
        """Say how a job runs where the user looks (log and status bar): e.g. cases predicted on the whole image."""
        for note in job.notes:
            self.ui.logText.appendPlainText("[PASeg] " + note)
        if job.notes:
            self.app.showStatusMessage(" · ".join(job.notes), 15000)

    @staticmethod
    def keptPredictionsText(job: Optional[control.Job], outcome: Optional[control.JobOutcome]) -> str:
        """After "Predict all cases": where the predictions are kept and that opening a case shows its own."""
        if job is None or outcome is None or job.kind != "predict" or job.volumeNodeId or not outcome.predictions:
            return ""
        folder = pathlib.Path(job.workFolder) / "predictions"
        return " · " + _("{n} prediction(s) kept in {folder}; open a case to see its prediction").format(
            n=len(outcome.predictions), folder=folder)

    def onAcceptPrediction(self) -> None:
        """The current volume's (corrected) prediction becomes its dense label, a copy of it
        (:meth:`~PASegSlicer.annotation.logic.PASegCoreLogic.acceptPredictionAsDense`), saved into the dataset like
        any dense case so that retraining learns from it; its clicked tumors are replaced once the user agrees."""
        p = self.p
        volume = p.inputVolume if p is not None else None
        if volume is None:
            return self.app.showStatusMessage(_("Select a predicted volume first."), 5000)
        with self.app.tryWithErrorDisplay(_("The prediction could not be accepted as the dense label."),
                                          waitCursor=True):  # fmt: skip
            others = [n.GetName() for n in self.core.objectNodes(volume)]
            if others and not self.app.confirmYesNoDisplay(
                _("The accepted prediction becomes the only tumor of {name}: its tumors {tumors} are replaced. "
                  "Continue?").format(name=volume.GetName(), tumors=", ".join(others))):  # fmt: skip
                return
            self.core.acceptPredictionAsDense(volume, replace=bool(others))
            if not pathText(p.datasetFolder):
                self.app.showStatusMessage(_("Prediction accepted as the dense label; choose a dataset folder and "
                                             "press Save to add it to the dataset."), 10000)  # fmt: skip
                return
            written = self.core.saveAnnotations(volume, p.datasetFolder, pathText(p.workFolder) or None)
            self.app.showStatusMessage(_("Prediction accepted as the dense label and saved: {files}").format(
                files=", ".join(str(v) for v in written.values())), 10000)  # fmt: skip
            self.refreshCases()
