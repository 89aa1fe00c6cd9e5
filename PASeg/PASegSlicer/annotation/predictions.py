"""Predictions of a case in the scene: imported as a segmentation of its volume, shown again when the case is
opened, and accepted as the case's dense label (corrections that feed back into training).

:class:`PredictionBookkeeping` is mixed into :class:`~PASegSlicer.annotation.logic.PASegCoreLogic`, which gives
``scene``, ``segmentationsOf``, ``objectNodes``, ``addObject``, ``caseIdOf`` and ``_addNode``. A prediction picked
as a tumour's dense label, or edited in the Segment Editor since it was imported (corrected, not accepted yet), is
never overwritten by a later prediction: that goes into another prediction node (:attr:`predictionNote` says so).
Accepting a prediction copies it: the dense label's segmentation is no prediction node at all.
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
#: Node attribute of a prediction segmentation: its :func:`predictionStamp` right after the import.
IMPORTED_STAMP_ATTRIBUTE = "PASegImportedStamp"


def predictionStamp(segmentationNode) -> str:
    """What a segmentation's segments hold, cheap to read (no voxel is read): the source representation, then per
    segment its ID, name and the modification time (``GetMTime``) of its voxels. A paint or erase stroke, a segment
    added, removed or renamed changes it; showing, reading or exporting the segments does not. The times are of this
    Slicer session: a prediction node of a scene loaded from a file counts as edited (a new prediction goes beside it).
    """
    segmentation = segmentationNode.GetSegmentation()
    source = segmentation.GetSourceRepresentationName()
    parts = [source]
    for segmentId in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segmentId)
        voxels = segment.GetRepresentation(source) if segment is not None else None
        parts.append(f"{segmentId}|{segment.GetName() if segment else ''}|{voxels.GetMTime() if voxels else 0}")
    return ";".join(parts)


def editedSinceImport(segmentationNode) -> bool:
    """Whether a prediction segmentation changed since it was imported (also: its import stamp is unknown)."""
    return segmentationNode.GetAttribute(IMPORTED_STAMP_ATTRIBUTE) != predictionStamp(segmentationNode)


class PredictionBookkeeping:
    """The logic's predictions (see module docstring)."""

    scene: Any
    #: Why the kept prediction of the case opened last could not be shown (``""``: shown, or none kept).
    predictionProblem = ""
    #: What the user should know about the last :meth:`importPrediction` (``""``: nothing): it went into a new node
    #: because the volume's prediction was edited since it was imported.
    predictionNote = ""

    def importPrediction(self, volumeNode, predictionFile, objectNames: Optional[Sequence[str]] = None,
                         workFolder=None):  # fmt: skip
        """Load a ``<case>_pred.nii.gz`` as segments "tumor 1", … of a segmentation node aligned with the volume.

        It goes into the volume's latest prediction segmentation that no tumour takes its dense label from and that
        was not edited since it was imported (a corrected prediction, accepted or not, is never overwritten), else
        into a new one; :attr:`predictionNote` then names the edited node kept and the new one.
        Object ``k`` of the prediction is named after the volume's ``k``-th object node when there is one. The
        segments carry the DICOM terminology of ``paseg predict --dicom-seg`` and reference the volume, so that
        Slicer's DICOM export writes them as a SEG of the volume's series (``tagPredictedSegments``). The
        file is also kept as ``<work>/predictions/<case>_pred.nii.gz`` (the case's "predicted" status).
        """
        self.predictionNote = ""
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
        segmentationNode.SetAttribute(IMPORTED_STAMP_ATTRIBUTE, predictionStamp(segmentationNode))
        if workFolder is not None:
            with atomic_path(predictionPath(workFolder, self.caseIdOf(volumeNode))) as tmp:
                shutil.copyfile(predictionFile, tmp)
        return segmentationNode

    def _predictionTarget(self, volumeNode):
        """The segmentation node a new prediction of the volume goes into: its latest prediction node that is no
        tumour's dense label source and unedited since its import, else a new "<volume> prediction" node (said in
        :attr:`predictionNote` when an edited one is kept)."""
        sources = kinds.denseSegmentations(self.objectNodes(volumeNode))
        free = [n for n in self.segmentationsOf(volumeNode, PREDICTION_ROLE) if all(n is not s for s in sources)]
        edited = [n for n in free if editedSinceImport(n)]
        unedited = [n for n in free if all(n is not e for e in edited)]
        self.predictionNote = ""
        if unedited:
            return unedited[-1]
        name = self.scene.GenerateUniqueName(f"{volumeNode.GetName()} prediction")  # told apart in the note
        node = self._addNode(PREDICTION_ROLE, volumeNode, name)
        if edited:
            kept = ", ".join(repr(n.GetName()) for n in edited)
            self.predictionNote = (f"the new prediction of {volumeNode.GetName()!r} is in {node.GetName()!r}: {kept} "
                                   "was edited since it was imported and is kept as it is")  # fmt: skip
        return node

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
