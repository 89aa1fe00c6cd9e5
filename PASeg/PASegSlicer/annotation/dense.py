"""Dense cases: a case labelled densely (a segment, or an imported label map) instead of clicks.

A dense object node (:mod:`.kinds`) refers to a segmentation node; saving the case writes its label on the
volume's grid as ``<dataset>/<case>_dense.nii.gz`` (:func:`denseLabelPath`) and ``<dataset>/<case>.mrk.json``
holding one ``dense`` object whose ``label_file`` names it (relative to the markups file). The case's
``<case>_label.<ext>`` is never written: it is the case's ground truth, which evaluation reads, and
``<case>_dense`` is no role of the dataset listing (:func:`PASegLib.data.dataset.list_cases` ignores it). Loading such a
case reads the label file back into a segmentation node ("<volume> dense label", one segment per label value) that
the object refers to; cases saved before named ``<case>_label.<ext>`` in ``label_file`` (or named nothing: then
the library reads ``<case>_label``), and they are read the same way.

A draft (:mod:`.drafts`) keeps a dense object's voxels as ``<work>/drafts/<case>_dense.nii.gz``
(:func:`draftLabelPath`), named by its markup's ``pasegLabel``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from PASegLib.annotation.markups import read_markups, write_markups
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import IMAGE_SUFFIXES, read_image, write_image

from ..mrml.segments import setLabelsToSegmentation
from ..mrml.volumes import geometryFromVolumeNode
from . import kinds, objects

LABEL_ROLE = "_label"
DENSE_SUFFIX = "_dense.nii.gz"  # <case>_dense.nii.gz: no role of PASegLib.data.dataset (_image, _label, _7points)
_COLORS = [(0.85, 0.25, 0.25), (0.25, 0.55, 0.90), (0.95, 0.65, 0.15), (0.55, 0.35, 0.80)]


def labelValues(labels: np.ndarray) -> List[int]:
    """The non-zero values of an integer label map (``bincount``: no sort of the whole volume)."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iub" or (arr.size and arr.min() < 0):
        raise ValueError("a dense label needs non-negative integer values")
    return [int(v) for v in np.flatnonzero(np.bincount(arr.ravel().astype(np.int64, copy=False))) if v > 0]


def labelSegmentationNode(scene, volumeNode, labels: np.ndarray, geometry: ImageGeometry, name: Optional[str] = None):
    """A new segmentation node holding ``labels`` (``[i, j, k]`` on ``geometry``): one segment per value ``k``,
    "label k"."""
    values = labelValues(labels)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{volumeNode.GetName()} dense label")
    node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    segments = [(v, f"label {v}", _COLORS[n % len(_COLORS)]) for n, v in enumerate(values)]
    if segments:
        setLabelsToSegmentation(node, np.asarray(labels), geometry, segments, volumeNode)
    return node


def importDenseLabel(scene, volumeNode, objectNode, path):
    """Read a label map file (same grid as the volume) into a new segmentation node and make it the dense label of
    ``objectNode`` (all its segments). Returns the segmentation node."""
    label = read_image(path, role="label")
    geometry = geometryFromVolumeNode(volumeNode)
    mismatch = geometry.mismatch(label.geometry)
    if mismatch:
        raise ValueError(f"{path}: its grid differs from volume {volumeNode.GetName()!r} ({mismatch})")
    node = labelSegmentationNode(scene, volumeNode, label.array, geometry)
    kinds.setDenseSource(objectNode, node)
    return node


def caseLabelFile(folder, caseId: str) -> Optional[Path]:
    """``<folder>/<case>_label.<ext>`` when it exists (any image suffix), else ``None``."""
    for suffix in IMAGE_SUFFIXES:
        path = Path(folder) / f"{caseId}{LABEL_ROLE}{suffix}"
        if path.is_file():
            return path
    return None


def loadCaseMarkups(scene, volumeNode, path) -> List:
    """Read ``<case>.mrk.json`` into object nodes of ``volumeNode`` (replacing its objects); a dense object's label
    file (its ``label_file``, else ``<case>_label.<ext>`` beside the markups file) becomes its segmentation."""
    path = Path(path)
    geometry = geometryFromVolumeNode(volumeNode)
    case = read_markups(path, geometry)
    nodes = objects.nodesFromCase(scene, volumeNode, case)
    for obj, node in zip(case.objects, nodes):
        if obj.kind != "dense":
            continue
        caseId = path.name[: -len(".mrk.json")] if path.name.endswith(".mrk.json") else path.stem
        labelPath = path.parent / obj.label_file if obj.label_file else caseLabelFile(path.parent, caseId)
        if labelPath is None or not labelPath.is_file():
            raise AnnotationError(f"{path}: the dense label of {obj.name!r} is missing "
                                  f"({labelPath or path.parent / (caseId + LABEL_ROLE + '.nii.gz')})")  # fmt: skip
        importDenseLabel(scene, volumeNode, node, labelPath)
    return nodes


def savedDenseLabel(volumeNode, files) -> Optional[Path]:
    """The label file of the saved dense case ``files`` (its object's ``label_file``, else its ``<case>_label``);
    ``None`` when the case is not a saved dense case (or its markups cannot be read)."""
    if files is None or files.markups is None:
        return None
    try:
        case = read_markups(files.markups, geometryFromVolumeNode(volumeNode))
    except (AnnotationError, ValueError, OSError):
        return None
    obj = next((o for o in case.objects if o.kind == "dense"), None)
    if obj is None:
        return None
    path = files.markups.parent / obj.label_file if obj.label_file else files.label
    return path if path is not None and path.is_file() else None


def relinkLabel(scene, volumeNode, nodes: Sequence, labelPaths: Sequence[Optional[Path]], fallback=None) -> None:
    """A draft keeps no segmentation: each dense object of ``nodes`` gets its draft label (``labelPaths``, by
    position), else ``fallback`` (the saved case's dense label, :func:`savedDenseLabel`); else it is left
    without."""
    for node, path in zip(nodes, labelPaths):
        path = path if path is not None and Path(path).is_file() else fallback
        if path is not None and kinds.kindOf(node) == "dense" and kinds.denseSource(node)[0] is None:
            importDenseLabel(scene, volumeNode, node, path)


def caseLabels(scene, volumeNode, case: CaseAnnotation) -> np.ndarray:
    """The label of a dense case (its one object: ``check_case_kinds``) on the volume's grid; raises
    ``AnnotationError`` when it is empty."""
    (obj,) = case.objects
    node = next(n for n in objects.objectNodes(scene, volumeNode) if n.GetName() == obj.name)
    labels = kinds.denseLabels(node, volumeNode)
    if not labels.any():
        raise AnnotationError(f"object {obj.name!r} (dense label): its segments {kinds.denseSegmentNames(node)} are "
                              "empty; paint the label first")  # fmt: skip
    return labels


def denseLabelPath(markupsPath) -> Path:
    """Where the label of the dense case ``<folder>/<case>.mrk.json`` goes: ``<folder>/<case>_dense.nii.gz``."""
    path = Path(markupsPath)
    stem = path.name[: -len(".mrk.json")] if path.name.endswith(".mrk.json") else path.stem
    return path.parent / f"{stem}{DENSE_SUFFIX}"


def draftLabelPath(draftPath, index: int = 0) -> Path:
    """Where a draft keeps the voxels of its ``index``-th dense object: ``<case>_dense.nii.gz`` beside the draft,
    ``<case>_dense_<index+1>.nii.gz`` after the first."""
    first = denseLabelPath(draftPath)
    return first if index == 0 else first.with_name(first.name.replace(DENSE_SUFFIX, f"_dense_{index + 1}.nii.gz"))


def writeDenseCase(markupsPath, labelPath, name: str, labels: np.ndarray, geometry: ImageGeometry) -> dict:
    """Write the label file, then the markups file holding one dense object that names it (relative path)."""
    written = {"label": write_image(labelPath, labels, geometry)}
    obj = ObjectAnnotation(name, kind="dense", label_file=Path(labelPath).name)
    written["annotations"] = write_markups(markupsPath, CaseAnnotation([obj]))
    return written


def saveDenseCase(scene, volumeNode, markupsPath, case: CaseAnnotation) -> dict:
    """Write the dense case ``case`` (validated, of ``volumeNode``): its label as :func:`denseLabelPath`, then
    ``markupsPath`` naming it. Raises ``AnnotationError`` when its label is empty (nothing is written then)."""
    labels = caseLabels(scene, volumeNode, case)
    geometry = geometryFromVolumeNode(volumeNode)
    return writeDenseCase(markupsPath, denseLabelPath(markupsPath), case.objects[0].name, labels, geometry)
