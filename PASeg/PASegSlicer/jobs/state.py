"""What a job's progress lines say, for the GUI: :class:`JobState`, updated by :meth:`JobState.apply` from each
``PASEG {json}`` event of the running step (see :mod:`PASegSlicer.jobs.runner` for the events and the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["JobState", "formatDuration"]


@dataclass
class JobState:
    """What the GUI shows; updated from the progress lines (read it on the main thread)."""

    status: str = "idle"  # idle, running, stopping, done, failed, stopped
    stepIndex: int = 0
    stepCount: int = 0
    stepName: str = ""
    stepFraction: float = 0.0
    etaSeconds: Optional[float] = None
    epoch: Optional[int] = None
    losses: Dict[str, float] = field(default_factory=dict)
    lastScore: Optional[float] = None
    lossHistory: List[Dict[str, Any]] = field(default_factory=list)
    validationHistory: List[Dict[str, Any]] = field(default_factory=list)
    doneEvents: List[Dict[str, Any]] = field(default_factory=list)
    caseEvents: List[Dict[str, Any]] = field(default_factory=list)
    exitCode: Optional[int] = None
    message: str = ""
    killed: bool = False
    phase: str = ""  # "", "preparing", "training", "validating", "predicting"
    phaseDone: int = 0  # prepared / validated / predicted cases of the phase (iterations while training)
    phaseTotal: int = 0
    phaseEpoch: Optional[int] = None  # the epoch whose validation round runs
    iteration: Optional[int] = None  # of the running training step
    totalIterations: Optional[int] = None
    stoppedEvent: Optional[Dict[str, Any]] = None  # the last ``stopped`` event (epoch, iteration, checkpoint)
    # the steps inside a job step that runs a pipeline (``paseg run``'s ``step`` events: clicks, stage one, …)
    subStepName: str = ""
    subStepIndex: int = 0  # 0-based
    subStepCount: int = 0  # 0: the job step has no steps of its own

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] over all steps."""
        if self.stepCount <= 0:
            return 0.0
        if self.status == "done":
            return 1.0
        inner = max(0.0, min(1.0, self.stepFraction))
        if self.subStepCount > 0:  # a pipeline step: its own steps share the step's part of the bar
            inner = (self.subStepIndex + inner) / self.subStepCount  # the index stays below the count
        return min(1.0, (self.stepIndex + inner) / self.stepCount)

    @property
    def phaseFraction(self) -> float:
        """Progress in [0, 1] inside the current phase (cases prepared / validated / predicted, iterations)."""
        if self.phaseTotal <= 0:
            return 0.0
        return min(1.0, max(0.0, self.phaseDone / self.phaseTotal))

    @property
    def showsPreparation(self) -> bool:
        """Whether the progress bar shows the data preparation's own progress (:attr:`phaseFraction`: minutes on a
        large cohort) rather than :attr:`fraction`: while preparing, except inside a pipeline step, whose bar
        keeps the pipeline's progress (the step label says how far the preparation is)."""
        return self.phase == "preparing" and self.subStepCount == 0

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "stopped")

    def phaseText(self) -> str:
        """``"preparing data: 3/20 cases"``, ``"validating epoch 4: 1/5 cases"``, ``"training: 7/300 iterations"``…"""
        epoch = "" if self.phaseEpoch is None else f" epoch {self.phaseEpoch}"
        label, unit = {"preparing": ("preparing data", "cases"), "training": ("training", "iterations"),
                       "validating": ("validating" + epoch, "cases"),
                       "predicting": ("predicting", "cases")}.get(self.phase, (self.phase, ""))
        return f"{label}: {self.phaseDone}/{self.phaseTotal} {unit}" if label and self.phaseTotal > 0 else label

    def summary(self) -> Dict[str, str]:
        """Texts for the progress widgets: ``step``, ``phase``, ``eta``, ``losses``, ``score``, ``status``."""
        eta = "" if self.etaSeconds is None else formatDuration(self.etaSeconds)
        losses = ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items() if isinstance(v, (int, float)))
        score = "" if self.lastScore is None else f"{self.lastScore:.4f}"
        step = f"{self.stepName} ({self.stepIndex + 1}/{self.stepCount})" if self.stepCount else ""
        if self.subStepCount > 0 and self.subStepName:
            step += f" › {self.subStepName} ({self.subStepIndex + 1}/{self.subStepCount})"
        return {"step": step, "phase": self.phaseText(), "eta": eta, "losses": losses, "score": score,
                "status": self.status}

    def beginStep(self, index: int, name: str) -> None:
        """A job step starts: its progress starts over, without steps of its own until its pipeline says so
        (``step`` events, :meth:`apply`)."""
        self.stepIndex, self.stepName = index, name
        self.subStepName, self.subStepIndex, self.subStepCount = "", 0, 0
        self._resetProgress()

    def _resetProgress(self) -> None:
        self.stepFraction, self.etaSeconds = 0.0, None
        self.phase, self.phaseDone, self.phaseTotal, self.phaseEpoch = "", 0, 0, None
        self.iteration = self.totalIterations = None

    def apply(self, event: Dict[str, Any]) -> None:
        """Update the state from one progress event (the ``PASEG {json}`` line of the running step)."""
        s, kind = self, event["event"]
        if kind == "iteration":
            total = float(event.get("total_iterations") or 0)
            s.stepFraction = float(event.get("iteration", 0)) / total if total > 0 else s.stepFraction
            s.etaSeconds = _number(event.get("eta_s"))
            s.epoch = event.get("epoch", s.epoch)
            s.losses = {str(k): float(v) for k, v in (event.get("losses") or {}).items() if _number(v) is not None}
            s.lossHistory.append({"step": s.stepIndex, "iteration": event.get("iteration"), **s.losses})
            s.iteration, s.totalIterations = event.get("iteration"), event.get("total_iterations")
            s._setPhase("training", s.iteration, s.totalIterations)
        elif kind == "validation":
            s.lastScore = _number(event.get("score"))
            s.validationHistory.append(
                {"step": s.stepIndex, "epoch": event.get("epoch"), "score": s.lastScore, "x": len(s.lossHistory)}
            )
            s._setPhase("training", s.iteration, s.totalIterations)  # the round is over
        elif kind == "case":
            total = float(event.get("total") or 0)
            s.stepFraction = float(event.get("index", 0)) / total if total > 0 else s.stepFraction
            s.caseEvents.append(event)
            s._setPhase("predicting", event.get("index"), event.get("total"))
        elif kind == "phase":
            s.phaseEpoch = event.get("epoch")
            s._setPhase(str(event.get("phase", "")), 0, event.get("total"))
        elif kind == "prepare":
            s._setPhase("preparing", event.get("index"), event.get("total"))
        elif kind == "validation_case":
            s.phaseEpoch = event.get("epoch", s.phaseEpoch)
            s._setPhase("validating", event.get("index"), event.get("total"))
        elif kind == "start":
            if _number(event.get("total_iterations")):  # training (a resumed run starts at its saved iteration)
                s.iteration, s.totalIterations = event.get("iteration") or 0, event["total_iterations"]
                s.stepFraction = float(s.iteration) / float(s.totalIterations)
                s._setPhase("training", s.iteration, s.totalIterations)
            elif event.get("total") is not None:  # prediction
                s._setPhase("predicting", 0, event.get("total"))
        elif kind == "step":  # a pipeline's step (index 1-based, of total)
            total = int(_number(event.get("total")) or 0)
            if total > 0:
                s.subStepName, s.subStepCount = str(event.get("step", "")), total
                s.subStepIndex = min(max(int(_number(event.get("index")) or 1) - 1, 0), s.subStepCount - 1)
                s._resetProgress()
        elif kind == "done":
            s.doneEvents.append(event)
        elif kind in ("error", "stopped"):
            s.message = str(event.get("message", "")) or s.message
            if kind == "stopped":
                s.stoppedEvent = event

    def _setPhase(self, phase: str, done: Any, total: Any) -> None:
        s = self
        if phase != s.phase:
            s.phase, s.phaseDone, s.phaseTotal = phase, 0, 0
        if _number(done) is not None:
            s.phaseDone = int(_number(done))
        if _number(total) is not None:
            s.phaseTotal = int(_number(total))


def formatDuration(seconds: float) -> str:
    """``3725`` → ``"1 h 02 min"``; ``75`` → ``"1 min 15 s"``."""
    s = max(0, int(round(float(seconds))))
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _number(value: Any) -> Optional[float]:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and abs(result) != float("inf") else None
