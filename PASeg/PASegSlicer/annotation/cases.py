"""The case list of a dataset folder with each case's status, and next / previous navigation.

Status of a case: ``draft`` (the work folder holds a draft of its clicks, complete or not, newer than what
the dataset holds: training does not see it until it is saved), else, most advanced first: ``predicted`` (a
prediction was imported into the work folder), ``expanded`` (its seed expansion was saved and is newer than its
clicks), ``annotated`` (``<case>.mrk.json`` or ``<case>_7points`` exists), ``not annotated``.

Which case a volume node shows: :func:`datasetCaseId` (loaded by PASeg, or a dataset image opened in Slicer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from PASegLib.data.dataset import CaseFiles, DatasetError, list_cases
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import strip_image_suffix

CASE_ATTRIBUTE = "PASeg.CaseId"
IMAGE_ROLE = "_image"
NOT_ANNOTATED, ANNOTATED, EXPANDED, PREDICTED = "not annotated", "annotated", "expanded", "predicted"
DRAFT = "draft"


def safeCaseId(name: str) -> str:
    """A file-name-safe case id from a node name (``"MR head 1"`` → ``"MR_head_1"``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return cleaned or "case"


def datasetCaseId(volumeNode) -> Optional[str]:
    """The dataset case a volume shows, or ``None``: loaded by PASeg (:data:`CASE_ATTRIBUTE`), or a dataset image
    opened in Slicer (drag and drop): its file is ``<case>_image.<ext>``, or its node is named ``<case>_image``."""
    caseId = volumeNode.GetAttribute(CASE_ATTRIBUTE)
    if caseId:
        return caseId
    storage = volumeNode.GetStorageNode()
    fileName = storage.GetFileName() if storage is not None else None
    for stem in ([strip_image_suffix(fileName)] if fileName else []) + [volumeNode.GetName() or ""]:
        if stem.endswith(IMAGE_ROLE) and len(stem) > len(IMAGE_ROLE) and not re.search(r"[/\\]", stem):
            return stem[: -len(IMAGE_ROLE)]
    return None


def headerGeometry(path) -> ImageGeometry:
    """Geometry of an image file from its header only (the voxels are not read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size, direction, dims = reader.GetSize(), reader.GetDirection(), reader.GetDimension()  # 4D: its first 3 axes
    return ImageGeometry(tuple(size[:3]), reader.GetSpacing()[:3], reader.GetOrigin()[:3],
                         tuple(direction[r * dims + c] for r in range(3) for c in range(3)))  # fmt: skip


def pathText(path) -> str:
    """A path parameter as text; empty when unset (``pathlib.Path("")`` is ``"."``)."""
    return "" if path is None or str(path) in ("", ".") else str(path)


def expandedPath(workFolder, caseId: str) -> Path:
    """Where the GUI saves a case's partial label map (0 bg, 1 fg, 2 unlabeled)."""
    return Path(workFolder) / "expanded" / f"{caseId}_partial.nii.gz"


def predictionPath(workFolder, caseId: str) -> Path:
    """Where the GUI keeps the latest imported prediction of a case."""
    return Path(workFolder) / "predictions" / f"{caseId}_pred.nii.gz"


def draftPath(workFolder, caseId: str) -> Path:
    """Where the GUI keeps the clicks of a case as they are, complete or not (see :mod:`.drafts`)."""
    return Path(workFolder) / "drafts" / f"{caseId}.mrk.json"


def newerDraft(workFolder, caseId: str, files: Optional[CaseFiles] = None) -> Optional[Path]:
    """The case's draft when it exists and is newer than its saved annotation (``files``), else ``None``."""
    if workFolder is None or str(workFolder) in ("", "."):
        return None
    draft = draftPath(workFolder, caseId)
    try:
        drafted = draft.stat().st_mtime_ns
    except OSError:
        return None
    saved = [p for p in ((files.markups, files.seven_points) if files is not None else ()) if p is not None]
    return None if any(p.stat().st_mtime_ns >= drafted for p in saved if p.is_file()) else draft


def caseStatus(files: CaseFiles, workFolder=None) -> str:
    """Status of one case (see module docstring)."""
    if workFolder is not None:
        if newerDraft(workFolder, files.case_id, files) is not None:
            return DRAFT
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
