"""Predictions of a case in the scene: imported as a segmentation of its volume, shown again when the case is
opened, and accepted as the case's dense label (corrections that feed back into training).

:class:`PredictionBookkeeping` is mixed into :class:`~PASegSlicer.annotation.logic.PASegCoreLogic`, which gives
``scene``, ``segmentationsOf``, ``objectNodes``, ``addObject``, ``caseIdOf`` and ``_addNode``. A prediction picked
as a tumour's dense label (and corrected in the Segment Editor) is never overwritten by a later prediction: that
goes into another prediction node. Accepting a prediction copies it: the dense label's segmentation is no
prediction node at all.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any, Optional, Sequence

import numpy as np

from PASegLib.image.io import read_image
from PASegLib.utils.atomic import atomic_path

from ..mrml.segments import predictionSegments, segmentationToLabels, setLabelsToSegmentation, tagPredictedSegments
from ..mrml.volumes import geometryFromVolumeNode
from . import dense, kinds
from .cases import predictionPath

#: Node reference role from a prediction segmentation node to its volume (see ``logic.PREVIEW_ROLE``).
PREDICTION_ROLE = "PASegPredictionOf"


class PredictionBookkeeping:
    """The logic's predictions (see module docstring)."""

    scene: Any
    #: Why the kept prediction of the case opened last could not be shown (``""``: shown, or none kept).
    predictionProblem = ""

    def importPrediction(self, volumeNode, predictionFile, objectNames: Optional[Sequence[str]] = None,
                         workFolder=None):  # fmt: skip
        """Load a ``<case>_pred.nii.gz`` as segments "tumor 1", … of a segmentation node aligned with the volume.

        It goes into the volume's latest prediction segmentation that no tumour takes its dense label from (a
        prediction picked as a dense label and corrected is never overwritten), else into a new one.
        Object ``k`` of the prediction is named after the volume's ``k``-th object node when there is one. The
        segments carry the DICOM terminology of ``paseg predict --dicom-seg`` and reference the volume, so that
        Slicer's DICOM export writes them as a SEG of the volume's series (``tagPredictedSegments``). The
        file is also kept as ``<work>/predictions/<case>_pred.nii.gz`` (the case's "predicted" status).
        """
        prediction = read_image(predictionFile, role="prediction")
        geometry = geometryFromVolumeNode(volumeNode)
        mismatch = geometry.mismatch(prediction.geometry)
        if mismatch:
            raise ValueError(f"{predictionFile}: its grid differs from volume {volumeNode.GetName()!r} ({mismatch})")
        names = list(objectNames) if objectNames is not None else [n.GetName() for n in self.objectNodes(volumeNode)]
        labels = np.asarray(prediction.array).astype(np.uint8)
        segmentationNode = self._predictionTarget(volumeNode)
        segmentationNode.GetSegmentation().RemoveAllSegments()
        ids = setLabelsToSegmentation(segmentationNode, labels, geometry, predictionSegments(labels, names), volumeNode)
        tagPredictedSegments(segmentationNode, list(ids.values()), volumeNode)
        if workFolder is not None:
            with atomic_path(predictionPath(workFolder, self.caseIdOf(volumeNode))) as tmp:
                shutil.copyfile(predictionFile, tmp)
        return segmentationNode

    def _predictionTarget(self, volumeNode):
        """The segmentation node a new prediction of the volume goes into: its latest prediction node that is no
        tumour's dense label source, else a new "<volume> prediction" node."""
        sources = kinds.denseSegmentations(self.objectNodes(volumeNode))
        free = [n for n in self.segmentationsOf(volumeNode, PREDICTION_ROLE) if all(n is not s for s in sources)]
        return free[-1] if free else self._addNode(PREDICTION_ROLE, volumeNode, f"{volumeNode.GetName()} prediction")

    #: Why the kept prediction of the case opened last could not be shown (``""``: shown, or none kept).
    predictionProblem = ""

    def showKeptPrediction(self, volumeNode, workFolder=None):
        """Show the case's kept prediction (``<work>/predictions/<case>_pred.nii.gz``: the last one imported, or the
        one "Predict all cases" made) as the volume's prediction segmentation, unless the volume already has one.
        Returns the segmentation node (``None``: nothing shown). A file that cannot be shown is said in
        :attr:`predictionProblem` (and the log), never raised: the case opens without it."""
        self.predictionProblem = ""
        if workFolder is None or str(workFolder) in ("", ".") or self.segmentationsOf(volumeNode, PREDICTION_ROLE):
            return None
        path = predictionPath(workFolder, self.caseIdOf(volumeNode))
        if not path.is_file():
            return None
        try:
            return self.importPrediction(volumeNode, path)
        except Exception as exc:  # an unreadable or foreign file: the case itself is fine
            self.predictionProblem = f"the prediction kept in {path} could not be shown ({exc})"
            logging.warning("PASeg: %s", self.predictionProblem)
            return None

    def acceptPredictionAsDense(self, volumeNode, predictionNode=None, *, replace: bool = False):
        """Make the volume's (possibly corrected) prediction its dense label: a new dense tumour whose label is a
        COPY of the prediction's segments (segment ``n`` → label ``n + 1``), so a later prediction never touches it.
        Save it like any dense case (:meth:`saveAnnotations`: ``<case>_dense.nii.gz`` + ``<case>.mrk.json``).

        ``predictionNode``: default the volume's latest prediction segmentation. A dense label is the case's only
        object: the volume's other tumours are removed, only with ``replace=True`` (else ``ValueError``). Returns
        the dense object node. Raises ``ValueError`` when there is no prediction or it is empty.
        """
        found = self.segmentationsOf(volumeNode, PREDICTION_ROLE)
        prediction = predictionNode if predictionNode is not None else (found[-1] if found else None)
        if prediction is None:
            raise ValueError(f"volume {volumeNode.GetName()!r} has no prediction to accept: predict it first (or "
                             "open a predicted case)")  # fmt: skip
        segmentation = prediction.GetSegmentation()
        names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
        labels = segmentationToLabels(prediction, volumeNode, names) if names else None
        if labels is None or not labels.any():
            raise ValueError(f"the prediction {prediction.GetName()!r} of {volumeNode.GetName()!r} is empty: paint the "
                             "tumour into it (Segment Editor) or predict again before accepting it")  # fmt: skip
        others = self.objectNodes(volumeNode)
        if others and not replace:
            names = [n.GetName() for n in others]
            raise ValueError(f"volume {volumeNode.GetName()!r} has the tumours {names}; a dense label is the "
                             "case's only object: accepting the prediction replaces them")  # fmt: skip
        for node in others:  # with their display nodes (as unloadCase)
            owned = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
            self.scene.RemoveNode(node)
            for extra in (e for e in owned if e is not None and e.GetScene() is not None):
                self.scene.RemoveNode(extra)
        copy = dense.labelSegmentationNode(self.scene, volumeNode, labels, geometryFromVolumeNode(volumeNode))
        node = self.addObject(volumeNode, "dense")
        kinds.setDenseSource(node, copy)
        return node
