"""A case's annotation file, ``<case>.mrk.json`` (PASeg or Slicer markups, any kind), ↔ the object nodes of its
volume.

Above :mod:`.objects` (the object nodes) and :mod:`.dense` (a dense case's label file): a dense case is written as
its label, then the markups file naming it; read back as object nodes and the label's segmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from PASegLib.annotation.markups import write_markups

from . import dense
from .objects import caseFromNodes


def saveCaseAnnotation(scene, volumeNode, path) -> Path:
    """Validate the volume's objects and write them to ``<case>.mrk.json`` atomically (LPS). A dense case's label
    is written first, as ``<case>_dense.nii.gz`` beside it (:func:`PASegSlicer.annotation.dense.saveDenseCase`)."""
    case = caseFromNodes(scene, volumeNode, validate=True)
    if any(obj.kind == "dense" for obj in case.objects):  # validate_case: then it is the case's only object
        return dense.saveDenseCase(scene, volumeNode, path, case)["annotations"]
    return write_markups(path, case)


def loadCaseAnnotation(scene, volumeNode, path) -> List:
    """Read ``<case>.mrk.json`` (PASeg or Slicer markups, any kind) into object nodes of ``volumeNode``; a dense
    object's label file is loaded as a segmentation the object refers to."""
    return dense.loadCaseMarkups(scene, volumeNode, path)
