"""PASeg's logic on a given MRML scene: cases, annotated objects of every kind, pseudo-label preview, saving,
predictions.

Everything here takes the scene as an argument and uses only MRML and PASegLib, so it runs unchanged in
Slicer (``slicer.mrmlScene``) and in pytest on the ``slicer-core`` wheel. Jobs (training, prediction in a
child process) are in :mod:`PASegSlicer.jobs.control`.

No click is lost: :meth:`PASegCoreLogic.hasUnsavedChanges` compares a volume's objects with the state last
loaded, saved or drafted; :meth:`~PASegCoreLogic.autosaveDraft` keeps them, complete or not, in the work folder
(:mod:`.drafts`); :meth:`~PASegCoreLogic.unloadCase` refuses while something is unsaved. The logic observes the
scene itself: what it keeps per volume (preview labels, saved state; by node ID, never a node reference) is
dropped when the volume is removed or the scene is cleared. Call :meth:`~PASegCoreLogic.cleanup` when done.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.model import AnnotationError
from PASegLib.annotation.sevenpoints import read_seven_points
from PASegLib.annotation.validation import validate_case
from PASegLib.data.dataset import CaseFiles
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import IMAGE_SUFFIXES, read_image, write_image
from PASegLib.seeds.expansion import ExpansionConfig

from ..mrml.segments import PARTIAL_SEGMENTS, setLabelsToSegmentation
from ..mrml.volumes import createVolumeNode, geometryFromVolumeNode, volumeFromNode
from . import casefile, dense, drafts, kinds, objects, predictions
from .cases import (
    CASE_ATTRIBUTE,
    IMAGE_ROLE,
    datasetCaseId,
    draftPath,
    expandedPath,
    headerGeometry,
    newerDraft,
    safeCaseId,
)
from .predictions import PREDICTION_ROLE

#: Node reference roles from a preview / prediction segmentation node to its volume (scene import remaps
#: references on ID clashes; it does not remap attributes, which older scenes used: read and converted).
PREVIEW_ROLE = kinds.PREVIEW_ROLE
_LEGACY_ATTRIBUTES = {PREVIEW_ROLE: kinds.PREVIEW_ATTRIBUTE, PREDICTION_ROLE: "PASeg.PredictionOf"}


def slicerNodes(scene, className: str) -> List:
    """The scene's nodes of class ``className`` (subclasses included)."""
    return [scene.GetNthNodeByClass(n, className) for n in range(scene.GetNumberOfNodesByClass(className))]


def _clicks(scene, volumeNode, case) -> tuple:
    """(object names, kinds and dense labels' stamps; all points as one array): what a preview was computed from
    (:func:`.kinds.denseStamp`: a paint stroke on a dense label makes its preview stale)."""
    points = [p for obj in case.objects for p in obj.points().values()]
    sources = [kinds.denseStamp(n) for n in objects.objectNodes(scene, volumeNode)]
    return [(obj.name, obj.kind) for obj in case.objects] + sources, np.array(points).reshape(-1, 3)


class PASegCoreLogic(drafts.DraftBookkeeping, predictions.PredictionBookkeeping):
    """The module's logic for one scene (see module docstring)."""

    def __init__(self, scene) -> None:
        import vtk

        self.scene = scene
        self._previews: Dict[str, tuple] = {}  # volume node ID → (clicks, partial labels)
        self._saved: Dict[str, list] = {}  # volume node ID → objects state last loaded / saved / drafted
        owner = weakref.ref(self)  # the scene's observers must not keep the logic alive

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def onNodeRemoved(caller, event, node) -> None:
            if owner() is not None and node is not None:
                owner().forgetNode(node.GetID())

        def onSceneClosed(caller, event) -> None:
            if owner() is not None:
                owner().forgetAll()

        self._observations = [scene.AddObserver(scene.NodeRemovedEvent, onNodeRemoved),
                              scene.AddObserver(scene.EndCloseEvent, onSceneClosed)]  # fmt: skip

    def cleanup(self) -> None:
        """Stop observing the scene (the widget's ``cleanup``)."""
        for tag in self._observations:
            self.scene.RemoveObserver(tag)
        self._observations = []

    def forgetNode(self, nodeID: Optional[str]) -> None:
        """Drop what is kept for a node (its preview labels, its saved state): it left the scene."""
        self._previews.pop(nodeID, None)
        self._saved.pop(nodeID, None)

    def forgetAll(self) -> None:
        self._previews.clear()
        self._saved.clear()

    # -- cases ---------------------------------------------------------------------------------------------
    def caseIdOf(self, volumeNode) -> str:
        """The case id of a volume: the dataset case it shows (:func:`datasetCaseId`), else its cleaned name."""
        return datasetCaseId(volumeNode) or safeCaseId(volumeNode.GetName())

    def loadCase(self, files: CaseFiles, workFolder=None):
        """Load a dataset case's image as a volume node, and its clicks as object nodes (its draft when newer)."""
        volume = read_image(files.image)
        volumeNode = createVolumeNode(self.scene, volume, files.case_id)
        volumeNode.SetAttribute(CASE_ATTRIBUTE, files.case_id)
        try:
            self.restoreAnnotations(volumeNode, files, workFolder, geometry=volume.geometry)
        except Exception:  # an unreadable annotation or draft (the error names it): no half-loaded case is left
            self.unloadCase(volumeNode, discard=True)
            raise
        self.showKeptPrediction(volumeNode, workFolder)
        return volumeNode

    def openCase(self, files: CaseFiles, workFolder=None):
        """The case's volume: the one already in the scene (loaded by PASeg, or its image dropped into Slicer:
        see :meth:`adoptVolume`), else a newly loaded one."""
        volumeNode = self.findCaseVolume(files.case_id)
        if volumeNode is None:
            return self.loadCase(files, workFolder)
        self.adoptVolume(volumeNode, files, workFolder)
        self.showKeptPrediction(volumeNode, workFolder)
        return volumeNode

    def adoptVolume(self, volumeNode, files: CaseFiles, workFolder=None) -> Optional[Path]:
        """Tie a volume showing the dataset case ``files`` (e.g. its image dropped into Slicer) to the case, and
        restore the case's saved clicks once: only while the volume has no object and was never loaded, restored
        or saved. Returns the file read, if any."""
        volumeNode.SetAttribute(CASE_ATTRIBUTE, files.case_id)
        if volumeNode.GetID() in self._saved or self.objectNodes(volumeNode):
            return None
        return self.restoreAnnotations(volumeNode, files, workFolder)

    def restoreAnnotations(self, volumeNode, files: Optional[CaseFiles] = None, workFolder=None, *,
                           geometry: Optional[ImageGeometry] = None) -> Optional[Path]:  # fmt: skip
        """Replace the volume's objects with the case's draft when newer than its annotation, else its annotation
        (``<case>.mrk.json`` or ``<case>_7points``; a dense object gets its label file as its segmentation: the
        draft's, else the saved dense case's). Returns the file read (``None``: nothing saved yet)."""
        source = newerDraft(workFolder, self.caseIdOf(volumeNode), files)
        if source is not None:
            drafts.loadDraft(self.scene, volumeNode, source, dense.savedDenseLabel(volumeNode, files))
        elif files is not None and files.markups is not None:
            source = files.markups
            casefile.loadCaseAnnotation(self.scene, volumeNode, source)
        elif files is not None and files.seven_points is not None:
            source = files.seven_points
            case = read_seven_points(source, geometry or geometryFromVolumeNode(volumeNode))
            objects.nodesFromCase(self.scene, volumeNode, case)
        self._saved[volumeNode.GetID()] = drafts.objectsState(self.scene, volumeNode)
        return source

    def findCaseVolume(self, caseId: str):
        """The volume node already in the scene for the dataset case ``caseId`` (or ``None``)."""
        for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = self.scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            if node.GetClassName() == "vtkMRMLScalarVolumeNode" and datasetCaseId(node) == caseId:
                return node
        return None

    def unloadCase(self, volumeNode, *, discard: bool = False) -> bool:
        """Remove the volume, its object nodes and its preview and prediction segmentations from the scene (with
        their display and storage nodes). ``False`` (nothing removed) while it has unsaved changes: autosave first,
        or pass ``discard=True`` once the user has agreed to lose them.
        """
        if volumeNode is None or volumeNode.GetScene() is None:
            return True
        if self.hasUnsavedChanges(volumeNode) and not discard:
            return False
        volumeID = volumeNode.GetID()
        nodes = self.objectNodes(volumeNode) + self.segmentationsOf(volumeNode, PREVIEW_ROLE)
        nodes += self.segmentationsOf(volumeNode, PREDICTION_ROLE)
        nodes += [n for n in self._caseLabelSegmentations(volumeNode) if all(n is not other for other in nodes)]
        for node in nodes + [volumeNode]:
            owned = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
            owned += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
            self.scene.RemoveNode(node)
            for extra in owned:
                if extra is not None and extra.GetScene() is not None:
                    self.scene.RemoveNode(extra)
        self.forgetNode(volumeID)
        return True

    def _caseLabelSegmentations(self, volumeNode) -> List:
        """The segmentations holding the dense labels of the volume's objects that no object of another volume
        uses: they leave with the case (its draft or saved case keeps the voxels; a reopen reads them back)."""
        own = self.objectNodes(volumeNode)
        others = [n for n in slicerNodes(self.scene, "vtkMRMLMarkupsNode") if all(n is not o for o in own)]
        used = kinds.denseSegmentations(others)
        return [n for n in kinds.denseSegmentations(own) if all(n is not u for u in used)]

    def caseProblem(self, volumeNode) -> str:
        """Why the volume's clicks cannot go into the dataset yet (incomplete or invalid); ``""`` when they can."""
        try:
            objects.caseFromNodes(self.scene, volumeNode, validate=True)
        except AnnotationError as exc:
            return str(exc)
        return ""

    # -- objects -------------------------------------------------------------------------------------------
    def addObject(self, volumeNode, kind: str = kinds.DEFAULT_KIND):
        """A new object node ("tumor N") of annotation ``kind``, whose points (box, label) are to be placed."""
        return objects.addObjectNode(self.scene, volumeNode, kind=kind)

    def objectNodes(self, volumeNode) -> List:
        return objects.objectNodes(self.scene, volumeNode)

    def usesRandomWalker(self, volumeNode) -> bool:
        """Whether the volume's preview needs scikit-image's random walker: extreme points, boxes, and seven points
        while ``ExpansionConfig.fill`` (the default) fills their box."""
        walked = ("extreme_points", "box") + (("seven_points",) if ExpansionConfig().fill != "none" else ())
        return any(kinds.kindOf(n) in walked for n in self.objectNodes(volumeNode))

    def objectStatuses(self, volumeNode) -> List[objects.PlacementStatus]:
        """Each object's placement status; a dense object beside others is an error (its label is the case's)."""
        nodes = self.objectNodes(volumeNode)
        statuses = [objects.placementStatus(node, volumeNode) for node in nodes]
        for node, status in zip(nodes, statuses):
            if len(nodes) > 1 and kinds.kindOf(node) == "dense" and not status.error:
                status.error = (f"object {node.GetName()!r} is a dense label, which covers the whole image: it must "
                                "be the case's only object; remove the other tumors or this one")  # fmt: skip
        return statuses

    def caseWarnings(self, volumeNode) -> List[str]:
        """Warnings of a complete, valid case (overlapping boxes); raises ``AnnotationError`` when invalid."""
        case = objects.caseFromNodes(self.scene, volumeNode, validate=False)
        return validate_case(case, geometryFromVolumeNode(volumeNode))

    # -- expansion preview ---------------------------------------------------------------------------------
    def segmentationsOf(self, volumeNode, role: str) -> List:
        """The segmentation nodes referring to ``volumeNode`` with ``role`` (:data:`PREVIEW_ROLE` or
        :data:`PREDICTION_ROLE`); a node of an older scene tied by an attribute gets the reference instead."""
        if role not in _LEGACY_ATTRIBUTES:
            raise ValueError(f"role must be one of {', '.join(_LEGACY_ATTRIBUTES)}, got {role!r}")
        found = []
        for n in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
            node = self.scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
            legacy = node.GetAttribute(_LEGACY_ATTRIBUTES[role])
            if node.GetNodeReference(role) is None and legacy and self.scene.GetNodeByID(legacy) is not None:
                node.SetNodeReferenceID(role, legacy)
                node.RemoveAttribute(_LEGACY_ATTRIBUTES[role])
            if volumeNode is not None and node.GetNodeReference(role) is volumeNode:
                found.append(node)
        return found

    def _findNode(self, role: str, volumeNode, name: str):
        existing = self.segmentationsOf(volumeNode, role)
        if existing:
            return existing[0]
        return self._addNode(role, volumeNode, name)

    def _addNode(self, role: str, volumeNode, name: str):
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetNodeReferenceID(role, volumeNode.GetID())
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return node

    def previewSegmentationNode(self, volumeNode):
        return self._findNode(PREVIEW_ROLE, volumeNode, f"{volumeNode.GetName()} seeds")

    def expansionPreview(self, volumeNode, epsilon: float, lamb: float, **settings):
        """The pseudo label of the volume's objects, any kind, shown as background / foreground / unlabeled segments.

        Runs in this process (:func:`.kinds.pseudoLabelMap`): seven points expand by the geodesic inside each
        object's box, then (``ExpansionConfig.fill``, the default, as training does) the random walker fills the box
        from those seeds, leaving an uncertain band unlabeled; extreme points and boxes by the random walker on a
        crop around them. The widget runs it on the GUI thread by itself only while :meth:`autoPreviewAllowed` (the
        fill's random walker counts in :meth:`previewSeconds`), otherwise on the Preview button; a dense case shows
        its label. The voxels are read in place (no copy of the volume here) and the segments share one label map.
        Returns the node.
        """
        case = objects.caseFromNodes(self.scene, volumeNode, validate=True)
        isDense = case.objects[0].kind == "dense"  # validate_case: then it is the case's only object
        denseLabel = kinds.denseLabels(self.objectNodes(volumeNode)[0], volumeNode) if isDense else None
        volume = volumeFromNode(volumeNode, copy=False)  # the pseudo labels only read it
        config = ExpansionConfig(epsilon=float(epsilon), lamb=float(lamb), **settings)
        partial = kinds.pseudoLabelMap(volume, case, expansion=config, denseLabel=denseLabel)
        segmentationNode = self.previewSegmentationNode(volumeNode)
        setLabelsToSegmentation(segmentationNode, partial, volume.geometry, PARTIAL_SEGMENTS, volumeNode)
        background = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("background")
        segmentationNode.GetDisplayNode().SetSegmentOpacity2DFill(background, 0.15)
        self._previews[volumeNode.GetID()] = (_clicks(self.scene, volumeNode, case), partial)
        return segmentationNode

    def previewBoxVoxels(self, volumeNode) -> int:
        """The work of a preview in geodesic box voxels (:func:`.kinds.previewWork`); raises ``AnnotationError``
        like :meth:`expansionPreview` when a tumour is incomplete."""
        case = objects.caseFromNodes(self.scene, volumeNode, validate=False)
        fill = ExpansionConfig().fill != "none"  # the preview shows the pseudo labels training uses: filled
        return kinds.previewWork(case, geometryFromVolumeNode(volumeNode), fill=fill)

    def previewSeconds(self, volumeNode) -> float:
        """About how long :meth:`expansionPreview` takes on one CPU core (:meth:`previewBoxVoxels` ×
        :data:`.kinds.GEODESIC_SECONDS_PER_VOXEL`); raises ``AnnotationError`` while a tumour is incomplete."""
        return self.previewBoxVoxels(volumeNode) * kinds.GEODESIC_SECONDS_PER_VOXEL

    def autoPreviewAllowed(self, volumeNode) -> bool:
        """Whether a preview is quick enough to run by itself after each edit (:data:`.kinds.AUTO_PREVIEW_MAX_SECONDS`;
        it runs on the GUI thread); otherwise it waits for the Preview button."""
        return self.previewSeconds(volumeNode) <= kinds.AUTO_PREVIEW_MAX_SECONDS

    def hasPreview(self, volumeNode) -> bool:
        """Whether ``volumeNode`` was previewed (its clicks may have changed since)."""
        return volumeNode is not None and volumeNode.GetID() in self._previews

    def previewLabels(self, volumeNode) -> Optional[np.ndarray]:
        """The partial label map (0 bg, 1 fg, 2 unlabeled) of the last preview of ``volumeNode``, if it was
        computed from the clicks the volume has now; ``None`` otherwise."""
        if not self.hasPreview(volumeNode):
            return None
        clicks, partial = self._previews[volumeNode.GetID()]
        try:
            current = _clicks(self.scene, volumeNode, objects.caseFromNodes(self.scene, volumeNode, validate=False))
        except ValueError:
            return None
        same = clicks[0] == current[0] and clicks[1].shape == current[1].shape and np.allclose(clicks[1], current[1])
        return partial if same else None

    # -- saving --------------------------------------------------------------------------------------------
    def saveAnnotations(self, volumeNode, datasetFolder, workFolder=None) -> Dict[str, Path]:
        """Save the volume's clicks; returns what was written, by kind.

        Complete and valid: ``<dataset>/<case>.mrk.json`` (what training reads; a dense case: after its label
        ``<dataset>/<case>_dense.nii.gz``, never the case's ``<case>_label``: :mod:`.dense`), after the image
        ``<dataset>/<case>_image.nrrd`` when the dataset lacks it (never a second copy of one it holds: its grid
        must be the volume's); the case's draft is then removed, and the last preview, if any, is saved as
        ``<work>/expanded/<case>_partial.nii.gz``. Incomplete or invalid: ``{"draft": <work>/drafts/<case>.mrk.json}``
        (:meth:`caseProblem` says why), the dataset is left as it is.
        """
        dataset = Path(datasetFolder)
        if not str(datasetFolder) or str(datasetFolder) == ".":
            raise ValueError("choose a dataset folder to save annotations into")
        work = None if workFolder is None or str(workFolder) in ("", ".") else Path(workFolder)
        caseId = self.caseIdOf(volumeNode)
        try:
            case = objects.caseFromNodes(self.scene, volumeNode, validate=True)
        except AnnotationError as exc:
            if work is None:
                raise AnnotationError(f"{exc} (choose a work folder to keep the clicks as a draft)") from None
            return {"draft": self.saveDraft(volumeNode, work)}
        labels = dense.caseLabels(self.scene, volumeNode, case) if case.objects[0].kind == "dense" else None
        existingImage = self.datasetImage(volumeNode, dataset, caseId)  # refuses another image of the case
        markups = dataset / f"{caseId}.mrk.json"
        labelPath = dense.denseLabelPath(markups)  # never <case>_label: the case's ground truth
        self._refuseOverwrite(volumeNode, markups, "saved clicks")
        if labels is not None:
            self._refuseOverwrite(volumeNode, labelPath, "a dense label")
        state = drafts.objectsState(self.scene, volumeNode)
        written: Dict[str, Path] = {}
        if existingImage is None:  # the image first: no annotation without image
            volume = volumeFromNode(volumeNode)
            written["image"] = write_image(dataset / f"{caseId}{IMAGE_ROLE}.nrrd", volume.array, volume.geometry)
        if labels is not None:  # a dense case: its label file, then the markups naming it
            geometry = geometryFromVolumeNode(volumeNode)
            written.update(dense.writeDenseCase(markups, labelPath, case.objects[0].name, labels, geometry))
        else:
            written["annotations"] = write_markups(markups, case)
        volumeNode.SetAttribute(CASE_ATTRIBUTE, caseId)
        self._saved[volumeNode.GetID()] = state
        if work is not None:
            written.update(self._afterSave(volumeNode, work, caseId))
        return written

    def _afterSave(self, volumeNode, work: Path, caseId: str) -> Dict[str, Path]:
        """Once the case is in the dataset: remove its draft (older than the saved clicks now, so a draft left
        behind is never restored) and keep the last preview as ``<work>/expanded/<case>_partial.nii.gz``. Both
        are best effort: a disk error is logged, never reported as a failed save (the dataset holds the clicks)."""
        written: Dict[str, Path] = {}
        try:
            drafts.removeDraft(draftPath(work, caseId))
            partial = self.previewLabels(volumeNode)
            if partial is not None:
                path = expandedPath(work, caseId)
                written["partial"] = write_image(path, partial, geometryFromVolumeNode(volumeNode))
        except OSError as exc:
            logging.warning("PASeg: case %s saved; its draft or preview in %s could not be updated: %s", caseId, work,
                            exc)  # fmt: skip
        return written

    def datasetImage(self, volumeNode, datasetFolder, caseId: str) -> Optional[Path]:
        """``<dataset>/<case>_image.<ext>`` when the dataset holds it (``None`` otherwise); raises ``ValueError``
        when its grid is not the volume's (clicks of one image must not be saved for another)."""
        for suffix in IMAGE_SUFFIXES:
            path = Path(datasetFolder) / f"{caseId}{IMAGE_ROLE}{suffix}"
            if path.is_file():
                mismatch = geometryFromVolumeNode(volumeNode).mismatch(headerGeometry(path))
                if mismatch:
                    raise ValueError(f"{path} is not the image of volume {volumeNode.GetName()!r} (its grid differs: "
                                     f"{mismatch}); rename the volume to save it as a new case")  # fmt: skip
                return path
        return None
