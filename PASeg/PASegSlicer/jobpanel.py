"""The training and inference panels of the PASeg widget: start jobs, follow them, take in their results.

GUI code (Slicer only: dialogs, ``qt.QProcess`` through :mod:`.qtprocess`); all decisions are made by
:mod:`.jobcontrol`, :mod:`.jobs` and :mod:`.runner`, which are tested headless. Nothing here blocks: the
runner calls :meth:`JobPanel.onJobEvent` from Qt signals.
"""

from __future__ import annotations

import pathlib

import slicer
from slicer.i18n import tr as _

from . import jobcontrol, jobs
from .dependencies import DependencyChecker, DependencyError
from .lossplot import LossCurvePlot
from .models import ModelRegistry
from .qtprocess import QProcessBackend, qtSchedule
from .runner import JobRunner


def pathText(path) -> str:
    """A path parameter as text; empty when unset (pathlib turns "" into ".")."""
    return "" if path is None or str(path) in ("", ".") else str(path)


class JobPanel:
    """Owns the job runner; ``widget`` gives ``ui``, ``parameterNode()``, ``logic`` and ``refreshCases()``."""

    def __init__(self, widget) -> None:
        self.widget, self.ui = widget, widget.ui
        self.plot = LossCurvePlot(slicer.mrmlScene)
        self.runner = JobRunner(
            QProcessBackend(), qtSchedule, onEvent=self.onJobEvent, onLog=self.ui.logText.appendPlainText
        )
        self.probe = JobRunner(QProcessBackend(), qtSchedule, onEvent=self.onProbeEvent)
        self.kind, self.jobFolder, self.events, self.models = "", None, 0, []
        u = self.ui
        for button, slot in ((u.detectGpuButton, self.onDetectGpu), (u.trainButton, self.onTrain),
                             (u.stopButton, self.onStop), (u.showCurveButton, self.onShowCurve),
                             (u.predictButton, lambda: self.onPredict(True)),
                             (u.predictAllButton, lambda: self.onPredict(False))):  # fmt: skip
            button.clicked.connect(slot)
        u.modelComboBox.activated.connect(self.onModelChosen)

    @property
    def p(self):
        return self.widget.parameterNode()

    def registry(self) -> ModelRegistry:
        return ModelRegistry(pathlib.Path(pathText(self.p.workFolder)) / "models.json")

    def device(self) -> str:
        return jobs.deviceArgument(self.p.deviceMode, self.p.gpuIndex)

    def onDetectGpu(self) -> None:
        if not self.probe.isRunning():
            self.ui.gpuLabel.setText(_("detecting…"))
            self.probe.start([jobs.deviceProbeStep()])

    def onProbeEvent(self, event) -> None:
        if event["event"] == "devices":
            self.ui.gpuLabel.setText(jobs.describeDevices(event))
        elif event["event"] == "finished" and event["status"] != "done":
            self.ui.gpuLabel.setText(_("GPU detection failed: {message}").format(message=event["message"]))

    def ensureDependencies(self) -> bool:
        """torch through the PyTorch extension, then monai & co. with confirmation; False when missing."""
        checker = DependencyChecker(slicer.util.confirmOkCancelDisplay, slicer.util.pip_install)
        try:
            checker.ensureForJobs()
        except DependencyError as exc:
            slicer.util.errorDisplay(str(exc))
            return False
        if checker.restartHint:
            slicer.util.infoDisplay(checker.restartHint)
        return True

    def _started(self, kind: str, job) -> None:
        self.kind, self.jobFolder, self.events = kind, job, 0
        self.ui.jobFolderLabel.setText(_("Job folder: {folder}").format(folder=job))
        self.updateButtons()

    def onTrain(self) -> None:
        p = self.p
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            job = jobcontrol.startTrainingJob(
                self.runner,
                pathText(p.workFolder),
                pathText(p.datasetFolder),
                mode=p.trainMode,
                networks=[p.networkA, p.networkB],
                epochs=p.epochs,
                device=self.device(),
                configFile=pathText(p.trainConfig) or None,
                initRuns=[pathText(p.scmRunA), pathText(p.scmRunB)],
            )
            self._started("train", job)

    def onPredict(self, current: bool) -> None:
        p = self.p
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Prediction could not start."), waitCursor=True):
            volume = p.inputVolume if current else None
            if current and volume is None:
                raise ValueError(_("select a volume to predict"))
            job = jobcontrol.startPredictionJob(
                self.runner,
                pathText(p.workFolder),
                pathText(p.modelRunDir),
                scene=slicer.mrmlScene,
                volumeNode=volume,
                caseId=self.widget.logic.core.caseIdOf(volume) if volume else "",
                datasetFolder=pathText(p.datasetFolder),
                restrictToBox=p.restrictToBox,
                largestComponent=p.largestComponent,
                device=self.device(),
            )
            self._started("predict", job)

    def onStop(self) -> None:
        self.runner.stop()
        self.updateButtons()

    def onJobEvent(self, event) -> None:
        state, u = self.runner.state, self.ui
        u.progressBar.setValue(int(round(100 * state.fraction)))
        texts = state.summary()
        u.stepLabel.setText(f"{texts['step']} · {texts['status']}")
        u.etaLabel.setText(texts["eta"])
        u.lossesLabel.setText(texts["losses"])
        u.scoreLabel.setText(texts["score"])
        self.events += 1
        if self.kind == "train" and (event["event"] in ("validation", "finished") or self.events % 20 == 0):
            self.plot.update(state.lossHistory, state.validationHistory)
        if event["event"] == "finished":
            self.onJobFinished(state)

    def onJobFinished(self, state) -> None:
        p = self.p
        with slicer.util.tryWithErrorDisplay(_("Taking in the job's results failed.")):
            if self.kind == "train":
                registered = jobcontrol.finishTrainingJob(self.jobFolder, state, self.registry())
                self.refreshModels()
                if registered:
                    p.modelRunDir = pathlib.Path(registered[-1].runDir)
            else:
                files = jobcontrol.finishPredictionJob(self.jobFolder, state, pathText(p.workFolder) or None)
                core = self.widget.logic.core
                case = core.caseIdOf(p.inputVolume) if p.inputVolume else None
                if case in files:
                    core.importPrediction(p.inputVolume, files[case])
                self.widget.refreshCases()
        self.updateButtons()
        if state.status == "failed":
            text = _("The job failed: {message}\nThe full log is in {folder}")
            slicer.util.errorDisplay(text.format(message=state.message, folder=self.jobFolder))

    def onShowCurve(self) -> None:
        self.plot.update(self.runner.state.lossHistory, self.runner.state.validationHistory)
        slicer.modules.plots.logic().ShowChartInLayout(self.plot.chart)

    def refreshModels(self) -> None:
        self.ui.modelComboBox.clear()
        try:
            self.models = self.registry().models() if pathText(self.p.workFolder) else []
        except ValueError as exc:
            self.models = []
            slicer.util.showStatusMessage(str(exc), 5000)
        self.ui.modelComboBox.addItems([m.label for m in self.models])

    def onModelChosen(self, index: int) -> None:
        if 0 <= index < len(self.models):
            self.p.modelRunDir = pathlib.Path(self.models[index].runDir)

    def updateButtons(self) -> None:
        running = self.runner.isRunning()
        for button in (self.ui.trainButton, self.ui.predictButton, self.ui.predictAllButton):
            button.enabled = not running
        self.ui.stopButton.enabled = running and self.runner.state.status == "running"
        self.ui.gpuIndexSpinBox.enabled = self.p is not None and self.p.deviceMode == "GPU"

    def cleanup(self) -> None:
        self.runner.stop()
