"""The case list of a dataset folder with each case's status, and next / previous navigation.

Status of a case (most advanced first): ``predicted`` (a prediction was imported into the work folder),
``expanded`` (its seed expansion was saved and is newer than its clicks), ``annotated`` (``<case>.mrk.json``
or ``<case>_7points`` exists), ``not annotated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from PASegLib.dataset import CaseFiles, DatasetError, list_cases

NOT_ANNOTATED, ANNOTATED, EXPANDED, PREDICTED = "not annotated", "annotated", "expanded", "predicted"


def expandedPath(workFolder, caseId: str) -> Path:
    """Where the GUI saves a case's partial label map (0 bg, 1 fg, 2 unlabeled)."""
    return Path(workFolder) / "expanded" / f"{caseId}_partial.nii.gz"


def predictionPath(workFolder, caseId: str) -> Path:
    """Where the GUI keeps the latest imported prediction of a case."""
    return Path(workFolder) / "predictions" / f"{caseId}_pred.nii.gz"


def caseStatus(files: CaseFiles, workFolder=None) -> str:
    """Status of one case (see module docstring)."""
    if workFolder is not None:
        if predictionPath(workFolder, files.case_id).is_file():
            return PREDICTED
        expanded = expandedPath(workFolder, files.case_id)
        clicks = files.markups or files.seven_points
        if expanded.is_file() and clicks is not None and expanded.stat().st_mtime >= clicks.stat().st_mtime:
            return EXPANDED
    return ANNOTATED if files.has_annotation else NOT_ANNOTATED


@dataclass
class CaseEntry:
    files: CaseFiles
    status: str

    @property
    def caseId(self) -> str:
        return self.files.case_id

    @property
    def label(self) -> str:
        return f"{self.caseId} ({self.status})"


class CaseList:
    """Cases of ``datasetFolder`` with statuses; ``currentIndex`` moves with :meth:`next` / :meth:`previous`."""

    def __init__(self, datasetFolder, workFolder=None) -> None:
        self.datasetFolder = Path(datasetFolder)
        self.workFolder = None if workFolder is None else Path(workFolder)
        self.entries: List[CaseEntry] = []
        self.currentIndex = -1
        self.message = ""

    def refresh(self) -> List[CaseEntry]:
        """Re-read the folder; keeps the current case when it still exists. Problems go to ``message``."""
        current = self.current.caseId if self.current is not None else None
        try:
            files = list_cases(self.datasetFolder)
            self.message = ""
        except DatasetError as exc:
            files, self.message = [], str(exc)
        self.entries = [CaseEntry(f, caseStatus(f, self.workFolder)) for f in files]
        ids = [e.caseId for e in self.entries]
        self.currentIndex = ids.index(current) if current in ids else (0 if ids else -1)
        return self.entries

    @property
    def current(self) -> Optional[CaseEntry]:
        return self.entries[self.currentIndex] if 0 <= self.currentIndex < len(self.entries) else None

    def select(self, caseId: str) -> CaseEntry:
        for index, entry in enumerate(self.entries):
            if entry.caseId == caseId:
                self.currentIndex = index
                return entry
        raise KeyError(f"no case {caseId!r} in {self.datasetFolder}")

    def next(self) -> Optional[CaseEntry]:
        """Move to the next case (stays on the last one); returns the new current case."""
        if self.entries:
            self.currentIndex = min(len(self.entries) - 1, self.currentIndex + 1)
        return self.current

    def previous(self) -> Optional[CaseEntry]:
        if self.entries:
            self.currentIndex = max(0, self.currentIndex - 1)
        return self.current

    def nextWithStatus(self, status: str) -> Optional[CaseEntry]:
        """Move to the next case (after the current one, wrapping) whose status is ``status``."""
        n = len(self.entries)
        for offset in range(1, n + 1):
            index = (self.currentIndex + offset) % n
            if self.entries[index].status == status:
                self.currentIndex = index
                return self.entries[index]
        return None
