"""The case list of a dataset folder with each case's status, and next / previous navigation.

Status of a case: ``draft`` (the work folder holds a draft of its clicks, complete or not, newer than what
the dataset holds: training does not see it until it is saved), else, most advanced first: ``predicted`` (a
prediction was imported into the work folder), ``expanded`` (its seed expansion was saved and is newer than its
clicks), ``annotated`` (``<case>.mrk.json`` or ``<case>_7points`` exists), ``not annotated``.

Which case a volume node shows: :func:`datasetCaseId` (loaded by PASeg, or a dataset image opened in Slicer).

The review queue (``<work>/review_queue.json``, written by ``paseg review-queue``: "Rank cases for review"): each
ranked case's rank (1 = the model's most unsure) and score, and whether it was corrected (its annotation saved)
since; :meth:`CaseList.sortByReview` orders the list worst first, :meth:`CaseList.worstUncorrected` finds the case
to review next.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

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


REVIEW_QUEUE_FILE = "review_queue.json"


def reviewQueuePath(workFolder) -> Path:
    """Where ``paseg review-queue`` (the "Rank cases for review" job) writes the review queue of the work folder."""
    return Path(workFolder) / REVIEW_QUEUE_FILE


@dataclass
class ReviewRank:
    """A case's place in the review queue: ``rank`` 1 = the model's most unsure case, its ``score`` (a label-free
    disagreement in [0, 1]) and ``corrected``: its annotation was saved after the queue was made."""

    rank: int
    score: float
    corrected: bool = False


def readReviewQueue(workFolder) -> Tuple[Dict[str, Tuple[int, float]], float, str]:
    """``({case: (rank, score)}, the queue file's mtime, problem)`` of ``<work>/review_queue.json``: empty (and no
    problem) without a queue; empty with a problem (one sentence naming the file) when it cannot be read."""
    path = reviewQueuePath(workFolder)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}, 0.0, ""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["cases"]
        return {str(r["case"]): (int(r["rank"]), float(r["score"])) for r in rows}, mtime, ""
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {}, mtime, f"the review queue {path} cannot be read ({type(exc).__name__}: {exc}); rank the cases again"


def reviewCorrected(files: CaseFiles, queueTime: float) -> bool:
    """Whether the case's saved annotation was written after the review queue (the user corrected it since)."""
    saved = [p for p in (files.markups, files.seven_points) if p is not None and p.is_file()]
    return any(p.stat().st_mtime > queueTime for p in saved)


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
    review: Optional[ReviewRank] = None  # its place in the review queue (see :meth:`CaseList.readReview`)

    @property
    def caseId(self) -> str:
        return self.files.case_id

    @property
    def label(self) -> str:
        return f"{self.caseId} ({self.status})" + self.reviewText()

    def reviewText(self) -> str:
        """`` · review #3 (0.412)`` (``, corrected`` added once corrected); ``""`` outside the review queue."""
        if self.review is None:
            return ""
        return f" · review #{self.review.rank} ({self.review.score:.3f})" + (", corrected" if self.review.corrected
                                                                            else "")


class CaseList:
    """Cases of ``datasetFolder`` with statuses; ``currentIndex`` moves with :meth:`next` / :meth:`previous`."""

    def __init__(self, datasetFolder, workFolder=None) -> None:
        self.datasetFolder = Path(datasetFolder)
        self.workFolder = None if workFolder is None else Path(workFolder)
        self.entries: List[CaseEntry] = []
        self.currentIndex = -1
        self.message = ""
        self.reviewMessage = ""  # why the review queue could not be read ("" when it could, or there is none)

    def refresh(self) -> List[CaseEntry]:
        """Re-read the folder; keeps the current case when it still exists. Problems go to ``message``."""
        current = self.current.caseId if self.current is not None else None
        try:
            files = list_cases(self.datasetFolder)
            self.message = ""
        except DatasetError as exc:
            files, self.message = [], str(exc)
        self.entries = [CaseEntry(f, caseStatus(f, self.workFolder)) for f in files]
        self.readReview()
        ids = [e.caseId for e in self.entries]
        self.currentIndex = ids.index(current) if current in ids else (0 if ids else -1)
        return self.entries

    # -- the review queue (``paseg review-queue``: the model's most unsure cases first) ---------------------------
    def readReview(self) -> None:
        """Give each entry its place in ``<work>/review_queue.json`` (none without a work folder or queue); a queue
        that cannot be read is said in ``reviewMessage``."""
        self.reviewMessage = ""
        if self.workFolder is None or str(self.workFolder) in ("", "."):
            return
        queue, queueTime, self.reviewMessage = readReviewQueue(self.workFolder)
        for entry in self.entries:
            found = queue.get(entry.caseId)
            entry.review = None if found is None else ReviewRank(found[0], found[1],
                                                                 reviewCorrected(entry.files, queueTime))

    def sortByReview(self) -> None:
        """Order the entries worst first (review rank 1 first), the cases outside the queue after them in id order;
        the current case stays current."""
        current = self.current
        self.entries.sort(key=lambda e: (e.review is None, e.review.rank if e.review else 0, e.caseId))
        self.currentIndex = self.entries.index(current) if current is not None else (0 if self.entries else -1)

    def worstUncorrected(self, exclude: Optional[str] = None) -> Optional[CaseEntry]:
        """Move to the queued case of the best (lowest) rank not corrected yet, other than ``exclude`` (the case
        open now); ``None`` (nothing moves) when every queued case is corrected or there is no queue."""
        left = [e for e in self.entries if e.review is not None and not e.review.corrected and e.caseId != exclude]
        if not left:
            return None
        return self.select(min(left, key=lambda e: e.review.rank).caseId)

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

    def nextWhere(self, predicate: Callable[[CaseEntry], bool], fromStart: bool = False) -> Optional[CaseEntry]:
        """Move to the first case after the current one (wrapping around, the current one excluded; ``fromStart``:
        the first case of the list on) for which ``predicate`` holds; ``None`` (nothing moves) when there is none."""
        n = len(self.entries)
        for index in range(n) if fromStart else ((self.currentIndex + offset) % n for offset in range(1, n)):
            if predicate(self.entries[index]):
                self.currentIndex = index
                return self.entries[index]
        return None

    def nextUnannotated(self, fromStart: bool = False) -> Optional[CaseEntry]:
        """Move to the next case that is not in the dataset yet: no saved annotation, or a newer draft ("Save and
        next"; a case whose status is "predicted" may be either)."""
        return self.nextWhere(lambda entry: entry.status == DRAFT or not entry.files.has_annotation, fromStart)
