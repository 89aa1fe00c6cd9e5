"""PASeg's logic on a given MRML scene: cases, seven-point objects, expansion preview, saving, predictions.

Everything here takes the scene as an argument and uses only MRML and PASegLib, so it runs unchanged in
Slicer (``slicer.mrmlScene``) and in pytest on the ``slicer-core`` wheel. Jobs (training, prediction in a
child process) are in :mod:`PASegSlicer.jobcontrol`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from PASegLib.annotations import validate_case
from PASegLib.atomic import atomic_path
from PASegLib.dataset import CaseFiles
from PASegLib.image_io import IMAGE_SUFFIXES, read_image, write_image
from PASegLib.seeds.expansion import ExpansionConfig, expand_seeds
from PASegLib.sevenpoints_io import read_seven_points

from . import annotation
from .cases import expandedPath, predictionPath
from .segments import PARTIAL_SEGMENTS, predictionSegments, setLabelsToSegmentation
from .volumes import createVolumeNode, geometryFromVolumeNode, volumeFromNode

CASE_ATTRIBUTE = "PASeg.CaseId"
PREVIEW_ATTRIBUTE = "PASeg.PreviewOf"
PREDICTION_ATTRIBUTE = "PASeg.PredictionOf"


def _clicks(case) -> tuple:
    """(object names, all points as one array): what a preview was computed from."""
    points = [p for obj in case.objects for p in obj.points().values()]
    return [obj.name for obj in case.objects], np.array(points).reshape(-1, 3)


def safeCaseId(name: str) -> str:
    """A file-name-safe case id from a node name (``"MR head 1"`` → ``"MR_head_1"``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return cleaned or "case"


class PASegCoreLogic:
    """The module's logic for one scene (see module docstring)."""

    def __init__(self, scene) -> None:
        self.scene = scene
        self._previews: Dict[str, tuple] = {}  # volume node ID → (node, clicks, partial labels)

    # -- cases ---------------------------------------------------------------------------------------------
    def caseIdOf(self, volumeNode) -> str:
        """The case id of a volume: the dataset case it was loaded from, else its (cleaned) name."""
        return volumeNode.GetAttribute(CASE_ATTRIBUTE) or safeCaseId(volumeNode.GetName())

    def loadCase(self, files: CaseFiles):
        """Load a dataset case's image as a volume node, and its clicks as object nodes."""
        volume = read_image(files.image)
        volumeNode = createVolumeNode(self.scene, volume, files.case_id)
        volumeNode.SetAttribute(CASE_ATTRIBUTE, files.case_id)
        if files.markups is not None:
            annotation.loadCaseAnnotation(self.scene, volumeNode, files.markups)
        elif files.seven_points is not None:
            case = read_seven_points(files.seven_points, volume.geometry)
            annotation.nodesFromCase(self.scene, volumeNode, case)
        return volumeNode

    def findCaseVolume(self, caseId: str):
        """The volume node already loaded for ``caseId`` (or ``None``)."""
        for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = self.scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            if node.GetAttribute(CASE_ATTRIBUTE) == caseId and node.GetClassName() == "vtkMRMLScalarVolumeNode":
                return node
        return None

    # -- objects -------------------------------------------------------------------------------------------
    def addObject(self, volumeNode):
        """A new object node ("tumor N") whose seven points are to be placed."""
        return annotation.addObjectNode(self.scene, volumeNode)

    def objectNodes(self, volumeNode) -> List:
        return annotation.objectNodes(self.scene, volumeNode)

    def objectStatuses(self, volumeNode) -> List[annotation.PlacementStatus]:
        return [annotation.placementStatus(node, volumeNode) for node in self.objectNodes(volumeNode)]

    def caseWarnings(self, volumeNode) -> List[str]:
        """Warnings of a complete, valid case (overlapping boxes); raises ``AnnotationError`` when invalid."""
        case = annotation.caseFromNodes(self.scene, volumeNode, validate=False)
        return validate_case(case, geometryFromVolumeNode(volumeNode))

    # -- expansion preview ---------------------------------------------------------------------------------
    def _findNode(self, attribute: str, volumeNode, name: str):
        for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
            node = self.scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
            if node.GetAttribute(attribute) == volumeNode.GetID():
                return node
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetAttribute(attribute, volumeNode.GetID())
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return node

    def previewSegmentationNode(self, volumeNode):
        return self._findNode(PREVIEW_ATTRIBUTE, volumeNode, f"{volumeNode.GetName()} seeds")

    def expansionPreview(self, volumeNode, epsilon: float, lamb: float, **settings):
        """Expand the volume's clicks and show background / foreground / unlabeled as segments.

        Runs in this process: the geodesic is computed only inside each object's box (tens to hundreds of
        milliseconds), far less than writing the volume for a child process would take. Returns the node.
        """
        case = annotation.caseFromNodes(self.scene, volumeNode, validate=True)
        volume = volumeFromNode(volumeNode)
        config = ExpansionConfig(epsilon=float(epsilon), lamb=float(lamb), **settings)
        partial = expand_seeds(volume, case, config=config)
        segmentationNode = self.previewSegmentationNode(volumeNode)
        setLabelsToSegmentation(segmentationNode, partial, volume.geometry, PARTIAL_SEGMENTS, volumeNode)
        background = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("background")
        segmentationNode.GetDisplayNode().SetSegmentOpacity2DFill(background, 0.15)
        self._previews[volumeNode.GetID()] = (volumeNode, _clicks(case), partial)
        return segmentationNode

    def hasPreview(self, volumeNode) -> bool:
        """Whether ``volumeNode`` was previewed (its clicks may have changed since)."""
        stored = self._previews.get(volumeNode.GetID()) if volumeNode is not None else None
        return stored is not None and stored[0] is volumeNode

    def previewLabels(self, volumeNode) -> Optional[np.ndarray]:
        """The partial label map (0 bg, 1 fg, 2 unlabeled) of the last preview of ``volumeNode``, if it was
        computed from the clicks the volume has now; ``None`` otherwise."""
        if not self.hasPreview(volumeNode):
            return None
        _, clicks, partial = self._previews[volumeNode.GetID()]
        try:
            current = _clicks(annotation.caseFromNodes(self.scene, volumeNode, validate=False))
        except ValueError:
            return None
        same = clicks[0] == current[0] and clicks[1].shape == current[1].shape and np.allclose(clicks[1], current[1])
        return partial if same else None

    # -- saving --------------------------------------------------------------------------------------------
    def saveAnnotations(self, volumeNode, datasetFolder, workFolder=None) -> Dict[str, Path]:
        """Write ``<dataset>/<case>.mrk.json`` atomically (and the image when the dataset lacks it).

        The last preview, if any, is saved as ``<work>/expanded/<case>_partial.nii.gz``.
        """
        dataset = Path(datasetFolder)
        if not str(datasetFolder) or str(datasetFolder) == ".":
            raise ValueError("choose a dataset folder to save annotations into")
        caseId = self.caseIdOf(volumeNode)
        written = {"annotations": annotation.saveCaseAnnotation(self.scene, volumeNode, dataset / f"{caseId}.mrk.json")}
        if not any((dataset / f"{caseId}_image{suffix}").is_file() for suffix in IMAGE_SUFFIXES):
            volume = volumeFromNode(volumeNode)
            written["image"] = write_image(dataset / f"{caseId}_image.nrrd", volume.array, volume.geometry)
        volumeNode.SetAttribute(CASE_ATTRIBUTE, caseId)
        partial = self.previewLabels(volumeNode)
        if workFolder is not None and partial is not None:
            path = expandedPath(workFolder, caseId)
            written["partial"] = write_image(path, partial, geometryFromVolumeNode(volumeNode))
        return written

    # -- predictions ---------------------------------------------------------------------------------------
    def importPrediction(self, volumeNode, predictionFile, objectNames: Optional[Sequence[str]] = None,
                         workFolder=None):  # fmt: skip
        """Load a ``<case>_pred.nii.gz`` as segments "tumor 1", … of a segmentation node aligned with the volume.

        Object ``k`` of the prediction is named after the volume's ``k``-th object node when there is one. The
        file is also kept as ``<work>/predictions/<case>_pred.nii.gz`` (the case's "predicted" status).
        """
        prediction = read_image(predictionFile, role="prediction")
        geometry = geometryFromVolumeNode(volumeNode)
        mismatch = geometry.mismatch(prediction.geometry)
        if mismatch:
            raise ValueError(f"{predictionFile}: its grid differs from volume {volumeNode.GetName()!r} ({mismatch})")
        names = list(objectNames) if objectNames is not None else [n.GetName() for n in self.objectNodes(volumeNode)]
        labels = np.asarray(prediction.array).astype(np.uint8)
        segmentationNode = self._findNode(PREDICTION_ATTRIBUTE, volumeNode, f"{volumeNode.GetName()} prediction")
        segmentationNode.GetSegmentation().RemoveAllSegments()
        setLabelsToSegmentation(segmentationNode, labels, geometry, predictionSegments(labels, names), volumeNode)
        if workFolder is not None:
            with atomic_path(predictionPath(workFolder, self.caseIdOf(volumeNode))) as tmp:
                shutil.copyfile(predictionFile, tmp)
        return segmentationNode
