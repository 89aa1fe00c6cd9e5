"""The scenarios of the module's self-test, on any scene: run by ``PASegTest`` in Slicer and by pytest headless.

:func:`runScenario`: a synthetic volume (a bright ellipsoid on a noisy background, no file, no network, no
torch), one object whose seven points are placed through the logic, the expansion preview, and checks of the
segment volumes; :func:`runKindsScenario` does the same for an extreme-points tumour and a box (the random
walker's pseudo labels, which need scikit-image: Slicer does not ship it, so :func:`kindsScenarioOrSkip` offers to
install it when run interactively and otherwise skips with :data:`RANDOM_WALKER_SKIPPED`). :func:`runFullScenario`
continues the path a user takes: save the case into a dataset folder, train a tiny stage-one model in a child
process (``python -m PASegLib train``, needs torch), predict the volume with it in a second job, and take the
results in (the prediction imported as segments of the volume). Inside Slicer the child is ``PythonSlicer``, so one
run of ``PASegTest`` checks the whole path.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from PASegLib.annotation.model import side_axis
from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume

from .annotation import objects
from .annotation.logic import PASegCoreLogic
from .jobs import control
from .jobs.runner import JobRunner, SubprocessBackend, threadingSchedule
from .mrml.segments import segmentVoxelCounts
from .mrml.volumes import createVolumeNode

#: Voxel index of each click; identity direction, so +i is patient left, +j posterior, +k superior.
CLICKS = {"F": (24, 20, 12), "R": (13, 20, 12), "L": (35, 20, 12), "A": (24, 12, 12),
          "P": (24, 28, 12), "I": (24, 20, 6), "S": (24, 20, 18)}  # fmt: skip
BOX_VOXELS = 23 * 17 * 13  # the inclusive box R..L × A..P × I..S


def syntheticVolume(scene, name: str = "PASegTest volume"):
    """(volume node, tumour mask, geometry): 48×40×24 voxels of 0.8×0.8×1.5 mm, ellipsoid radii 8, 6, 4 voxels."""
    geometry = ImageGeometry((48, 40, 24), (0.8, 0.8, 1.5), (10.0, -20.0, 5.0))
    grid = np.indices(geometry.shape, dtype=np.float64)
    tumor = ((grid[0] - 24) / 8) ** 2 + ((grid[1] - 20) / 6) ** 2 + ((grid[2] - 12) / 4) ** 2 <= 1
    image = (100 + 300 * tumor + np.random.default_rng(0).normal(0, 5, geometry.shape)).astype(np.float32)
    return createVolumeNode(scene, Volume(image, geometry), name), tumor, geometry


def runScenario(scene, epsilon: float = 0.175, lamb: float = 0.5, *, keep: bool = False) -> Dict[str, int]:
    """Place the seven clicks through the logic, preview the expansion, check it; returns the voxel counts.

    The nodes it made are removed at the end unless ``keep`` (in Slicer, clicks left in the scene would be
    drafted into the user's work folder when the scene closes). Raises ``AssertionError`` naming what is wrong.
    """
    volume, tumor, geometry = syntheticVolume(scene)
    logic = PASegCoreLogic(scene)
    try:
        return _checkPreview(logic, volume, tumor, geometry, epsilon, lamb)
    finally:
        if not keep:
            logic.unloadCase(volume, discard=True)


def _checkPreview(logic, volume, tumor, geometry, epsilon: float, lamb: float) -> Dict[str, int]:
    node = logic.addObject(volume)
    status = objects.placementStatus(node, volume)
    assert status.expectedLabel == "F", f"a new tumor should expect the F point first, got {status.expectedLabel}"
    for label, index in CLICKS.items():
        objects.setControlPoint(node, label, geometry.index_to_world(index, coordinate_system="RAS"))
    status = objects.placementStatus(node, volume)
    assert status.valid, f"the seven synthetic clicks should be valid: {status.error}"
    # the seven points' box fill is scikit-image's random walker: without it, the plain seeds (the kinds scenario
    # says what was skipped and how to install it)
    fill = {} if importlib.util.find_spec("skimage") is not None else {"fill": "none"}
    segmentation = logic.expansionPreview(volume, epsilon=epsilon, lamb=lamb, **fill)
    counts = segmentVoxelCounts(segmentation, volume, ["foreground", "background", "unlabeled"])
    assert sum(counts.values()) == tumor.size, f"segments must cover the volume once: {counts}"
    # outside the box is background; inside, the seeds filled by the random walker (the default) leave a band
    assert counts["background"] >= tumor.size - BOX_VOXELS, f"box voxels {BOX_VOXELS}: {counts}"
    assert counts["unlabeled"] > 0, f"the box keeps an uncertain band unlabeled: {counts}"
    assert 50 < counts["foreground"] < 1.2 * tumor.sum(), f"foreground should lie in the tumor: {counts}"
    inside = logic.previewLabels(volume)[tumor].tolist().count(1)
    assert inside >= 0.9 * counts["foreground"], f"only {inside} of {counts['foreground']} fg voxels in the tumor"
    return counts


def kindPoints(kind: str, tumor: np.ndarray, geometry: ImageGeometry) -> Dict[str, np.ndarray]:
    """LPS points of ``kind`` for the mask ``tumor``: extreme points on the lines through its centre voxel; a box
    2 voxels larger than the tumour on every side (its corners ``lo`` / ``hi``)."""
    voxels = np.argwhere(tumor)
    lo, hi = voxels.min(axis=0), voxels.max(axis=0)
    if kind == "box":
        corners = geometry.index_to_world(np.stack([lo - 2, hi + 2]).astype(np.float64))
        return {"lo": corners.min(axis=0), "hi": corners.max(axis=0)}
    center, points = (lo + hi) // 2, {}
    for side, (axis, sign) in side_axis(geometry).items():
        line = [slice(int(c), int(c) + 1) for c in center]
        line[axis] = slice(None)
        along = np.flatnonzero(tumor[tuple(line)].ravel())
        index = center.astype(np.float64)
        index[axis] = along.max() if sign > 0 else along.min()
        points[side] = geometry.index_to_world(index)
    return points


def runKindsScenario(scene, *, keep: bool = False) -> Dict[str, int]:
    """An extreme-points tumour, then a box, of the synthetic tumour, each previewed (random walker) and checked;
    returns the foreground voxels of each preview. Its nodes are removed at the end unless ``keep``."""
    volume, tumor, geometry = syntheticVolume(scene, "PASegTest kinds volume")
    logic, counts = PASegCoreLogic(scene), {}
    try:
        for kind in ("extreme_points", "box"):
            for old in logic.objectNodes(volume):
                scene.RemoveNode(old)
            node = logic.addObject(volume, kind)
            objects.setPlacedPointsLps(node, volume, kindPoints(kind, tumor, geometry))
            status = objects.placementStatus(node, volume)
            assert status.valid, f"the synthetic {kind} should be valid: {status.error}"
            logic.expansionPreview(volume, epsilon=0.175, lamb=0.5)
            foreground = logic.previewLabels(volume) == 1
            inside = int((foreground & tumor).sum())
            assert inside >= 0.5 * tumor.sum(), f"{kind}: {inside} of {tumor.sum()} tumour voxels are foreground"
            assert inside >= 0.75 * foreground.sum(), f"{kind}: only {inside} of {foreground.sum()} fg voxels in it"
            counts[kind] = int(foreground.sum())
        return counts
    finally:
        if not keep:
            logic.unloadCase(volume, discard=True)


#: What the self-test says when scikit-image (the random walker of the extreme-points and box previews) is missing.
RANDOM_WALKER_SKIPPED = ("scikit-image is not installed, which Slicer does not ship: the extreme-points and box "
                         "previews (random walker) are skipped. The PASeg module offers to install it when such a "
                         "tumor is previewed (or: PythonSlicer -m pip install scikit-image)")  # fmt: skip


def randomWalkerImportable() -> bool:
    """Whether scikit-image (the random-walker previews' random walker and shortest paths) can be imported; it is
    not imported here."""
    import importlib.util

    try:
        return importlib.util.find_spec("skimage") is not None
    except (ImportError, ValueError):
        return False


def randomWalkerReady(checker=None) -> str:
    """``""`` when the random-walker previews can run, else why they are skipped (:data:`RANDOM_WALKER_SKIPPED`).

    ``checker``: a :class:`~PASegSlicer.jobs.dependencies.DependencyChecker` that offers to install scikit-image (run
    interactively); ``None`` (ctest, ``--testing``): no prompt, no network."""
    from .jobs.dependencies import RANDOM_WALKER

    if randomWalkerImportable():
        return ""
    problem = checker.offer(RANDOM_WALKER, "The self-test's extreme-points and box previews") if checker else ""
    if checker is not None and not problem and randomWalkerImportable():
        return ""
    return RANDOM_WALKER_SKIPPED + (f" ({problem})" if problem else "")


def kindsScenarioOrSkip(scene, *, interactive: bool = False, checker=None) -> str:
    """Run :func:`runKindsScenario` when scikit-image is there (installed on request when ``interactive``: Slicer's
    dialogs and pip, unless a ``checker`` is given); returns what to show: the foreground voxels, or why the
    scenario was skipped (never a failure: Slicer does not ship scikit-image)."""
    if interactive and checker is None:
        import slicer

        from .jobs.dependencies import DependencyChecker

        checker = DependencyChecker(slicer.util.confirmOkCancelDisplay, slicer.util.pip_install)
    skipped = randomWalkerReady(checker)
    return skipped or f"Foreground voxels: {runKindsScenario(scene)}"


#: A training run that finishes in seconds on a CPU: it checks the path, not the accuracy.
TINY_TRAINING = {"patch_size": [32, 32, 16], "iterations_per_epoch": 3, "validate_every": 1, "checkpoint_every": 1,
                 "crf_downsample_to": None, "num_threads": 1, "amp": False, "seed": 0}  # fmt: skip


def runFullScenario(scene, folder, *, python: Optional[str] = None, timeoutSeconds: float = 600.0) -> Dict[str, Any]:
    """Click → preview → save → tiny training job → prediction job → import, in ``folder`` (created).

    Jobs run in child processes through :class:`~PASegSlicer.jobs.runner.JobRunner` (``python``: the interpreter of
    the children, default ``PythonSlicer`` in Slicer, this Python elsewhere); this function waits for them, so
    it is for tests only. Returns what was made (job folders, the model, the imported segment's voxel count).
    Raises ``AssertionError`` naming what went wrong (with the job's message and log path). Its nodes are
    removed at the end.
    """
    folder = Path(folder)
    dataset, work = folder / "dataset", folder / "work"
    dataset.mkdir(parents=True, exist_ok=True)
    counts = runScenario(scene, keep=True)
    logic = PASegCoreLogic(scene)
    volume = scene.GetFirstNodeByName("PASegTest volume")
    try:
        return _trainAndPredict(scene, logic, volume, folder, dataset, work, counts, python, timeoutSeconds)
    finally:
        logic.unloadCase(volume, discard=True)


def _trainAndPredict(scene, logic, volume, folder: Path, dataset: Path, work: Path, counts: Dict[str, int],
                     python: Optional[str], timeoutSeconds: float) -> Dict[str, Any]:  # fmt: skip
    written = logic.saveAnnotations(volume, dataset, work)
    assert {"annotations", "image"} <= set(written), f"saving should write the clicks and the image: {written}"
    config = folder / "tiny.json"
    config.write_text(json.dumps(TINY_TRAINING), encoding="utf-8")

    def wait(runner: JobRunner, job) -> None:
        assert runner.wait(timeoutSeconds), f"{job.kind} job did not finish in {timeoutSeconds:g} s ({job.folder})"
        state = runner.state
        assert state.status == "done", f"{job.kind} job {state.status}: {state.message} (log: {job.folder}/log.txt)"

    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    train = control.startTrainingJob(runner, work, dataset, mode="stage 1", networks=["unet3d"], epochs=2,
                                     device="cpu", configFile=str(config), python=python)  # fmt: skip
    wait(runner, train)
    trained = control.finishJob(train, runner.state, scene, logic)
    assert [e.network for e in trained.registered] == ["unet3d"], f"the model should be registered: {trained}"
    runDir = trained.registered[0].runDir
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    predict = control.startPredictionJob(runner, work, runDir, scene=scene, volumeNode=volume,
                                         caseId=logic.caseIdOf(volume), restrictToBox=True, device="cpu",
                                         python=python)  # fmt: skip
    wait(runner, predict)
    predicted = control.finishJob(predict, runner.state, scene, logic)
    assert not predicted.problems and predicted.importedNode is not None, f"import failed: {predicted.problems}"
    segmentVoxels = segmentVoxelCounts(predicted.importedNode, volume, ["tumor 1"])["tumor 1"]
    assert 0 <= segmentVoxels <= BOX_VOXELS, f"the prediction is restricted to the box: {segmentVoxels} voxels"
    return {"preview": counts, "trainJob": str(train.folder), "model": runDir, "predictJob": str(predict.folder),
            "predictedVoxels": segmentVoxels}  # fmt: skip
