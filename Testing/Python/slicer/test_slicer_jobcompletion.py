"""A job finishes from what it recorded when it started, whatever the widget shows by then:
predictions go into the volume node they were started for, a vanished node is reported with where
the file is kept, training results reach the job's own work folder, and the loss curve is built incrementally.

Real child processes (the fake ``python -m PASegLib`` of :mod:`test_slicer_jobs`) and real MRML (slicer-core).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_slicer_core
from PASegSlicer.annotation import cases
from PASegSlicer.annotation.logic import PREDICTION_ROLE, PASegCoreLogic
from PASegSlicer.gui.lossplot import LossCurvePlot
from PASegSlicer.jobs import control
from PASegSlicer.jobs.runner import JobRunner, SubprocessBackend, threadingSchedule
from PASegSlicer.mrml.segments import segmentationToLabels
from PASegSlicer.mrml.volumes import createVolumeNode

slicer = require_slicer_core()


def _predictionNodes(scene, volume):
    return PASegCoreLogic(scene).segmentationsOf(volume, PREDICTION_ROLE)


def _predict(app, tmp_path, fake_python, model_run, volume, caseId):
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    job = control.startPredictionJob(runner, tmp_path / "work", model_run, scene=app.scene, volumeNode=volume,
                                     caseId=caseId, device="cpu", python=fake_python)  # fmt: skip
    assert runner.wait(60) and runner.state.status == "done", runner.state.message
    return job, runner.state


def test_prediction_goes_into_the_recorded_volume_not_the_selected_one(app, tmp_path, fake_python, model_run,
                                                                       blob_case):  # fmt: skip
    image, _ = blob_case
    logic = PASegCoreLogic(app.scene)
    started = createVolumeNode(app.scene, image, "started for")
    job, state = _predict(app, tmp_path, fake_python, model_run, started, "started_for")
    assert job.volumeNodeId == started.GetID() and job.caseId == "started_for" and job.kind == "predict"
    # meanwhile the user left the module (its parameter node is released) and loaded another volume
    other = createVolumeNode(app.scene, image, "other")
    outcome = control.finishJob(job, state, app.scene, logic)
    assert outcome.problems == [] and outcome.importedNode is not None
    assert _predictionNodes(app.scene, other) == [] and _predictionNodes(app.scene, started) == [outcome.importedNode]
    shown = segmentationToLabels(outcome.importedNode, started, ["tumor 1"])
    assert (shown == (image.array > image.array.mean())).all()
    assert cases.predictionPath(tmp_path / "work", "started_for").is_file()
    assert json.loads((job.folder / "job.json").read_text())["status"] == "done"


def test_a_vanished_volume_is_reported_with_where_the_prediction_is_kept(app, tmp_path, fake_python, model_run,
                                                                        blob_case):  # fmt: skip
    image, _ = blob_case
    logic = PASegCoreLogic(app.scene)
    started = createVolumeNode(app.scene, image, "gone")
    job, state = _predict(app, tmp_path, fake_python, model_run, started, "gone")
    app.scene.Clear(False)  # scene closed: node IDs are reused by the next volumes
    reused = createVolumeNode(app.scene, image, "another case")
    assert reused.GetID() == job.volumeNodeId  # the same ID now names another case: it must not receive it
    outcome = control.finishJob(job, state, app.scene, logic)
    kept = cases.predictionPath(tmp_path / "work", "gone")
    assert outcome.importedNode is None and _predictionNodes(app.scene, reused) == []
    assert len(outcome.problems) == 1 and "no longer in the scene" in outcome.problems[0]
    assert str(kept) in outcome.problems[0] and kept.is_file()
    assert json.loads((job.folder / "job.json").read_text())["status"] == "done"


def test_an_import_failure_is_reported_and_the_job_still_recorded(app, tmp_path, fake_python, model_run, blob_case):
    image, _ = blob_case
    logic = PASegCoreLogic(app.scene)
    started = createVolumeNode(app.scene, image, "broken")
    job, state = _predict(app, tmp_path, fake_python, model_run, started, "broken")
    started.SetAndObserveImageData(None)  # the volume lost its voxels: the import cannot work
    outcome = control.finishJob(job, state, app.scene, logic)
    assert outcome.importedNode is None and "could not be imported" in outcome.problems[0]
    assert json.loads((job.folder / "job.json").read_text())["status"] == "done"


def test_training_results_go_to_the_work_folder_the_job_started_with(tmp_path, fake_python):
    data = tmp_path / "data"
    data.mkdir()
    (data / "c1_image.nrrd").write_bytes(b"")
    (data / "c1.mrk.json").write_text("{}")
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    job = control.startTrainingJob(runner, tmp_path / "work", data, mode="stage 1", networks=["unet2d5"],
                                   epochs=2, device="cpu", python=fake_python)  # fmt: skip
    assert runner.wait(60) and runner.state.status == "done", runner.state.message
    # the user has since pointed the (released) widget at another work folder: irrelevant to the job
    outcome = control.finishJob(job, runner.state, None, None)
    assert [e.network for e in outcome.registered] == ["unet2d5"]
    models = json.loads((tmp_path / "work" / "models.json").read_text())["models"]
    assert [Path(m["runDir"]).name for m in models] == ["stage1-unet2d5"]


def test_loss_curve_is_built_incrementally_and_bounded(app):
    incremental = LossCurvePlot(app.scene, name="incremental", maxPoints=50)
    history = []
    for n in range(1, 1001):
        history.append({"step": 0, "iteration": n, "row": float(n), **({"late": 1.0} if n > 600 else {})})
        if n % 37 == 0:
            incremental.update(history)
    incremental.update(history)
    x, row = incremental.values("iteration"), incremental.values("row")
    assert 25 <= len(x) <= 51 and np.allclose(x, row)  # each point is the mean of the rows it stands for
    assert x[0] < x[-1] <= 1000 and np.isnan(incremental.values("late")[0]) and incremental.values("late")[-1] == 1
    once = LossCurvePlot(app.scene, name="once", maxPoints=50)
    once.update(list(history))
    np.testing.assert_allclose(once.values("row"), row)
    with pytest.raises(ValueError, match="maxPoints"):
        LossCurvePlot(app.scene, maxPoints=1)


def test_segmentations_refer_to_their_volume_by_node_reference_and_old_scenes_convert(app, blob_case):
    image, label = blob_case
    logic = PASegCoreLogic(app.scene)
    volume = createVolumeNode(app.scene, image, "v")
    preview = logic.previewSegmentationNode(volume)
    assert preview.GetNodeReference("PASegPreviewOf") is volume and logic.previewSegmentationNode(volume) is preview
    old = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "saved by an older PASeg")
    old.SetAttribute("PASeg.PredictionOf", volume.GetID())
    assert logic.segmentationsOf(volume, PREDICTION_ROLE) == [old]
    assert old.GetNodeReference(PREDICTION_ROLE) is volume and old.GetAttribute("PASeg.PredictionOf") is None
    with pytest.raises(ValueError, match="role must be one of"):
        logic.segmentationsOf(volume, "nonsense")


@pytest.mark.slow
def test_the_self_test_runs_the_whole_path_click_to_imported_prediction(app, tmp_path):
    """What ``PASegTest`` runs inside Slicer, here with this Python as the job's child interpreter."""
    pytest.importorskip("torch")
    from PASegSlicer.selftest import BOX_VOXELS, runFullScenario

    made = runFullScenario(app.scene, tmp_path, python=sys.executable, timeoutSeconds=300)
    assert made["preview"]["foreground"] > 0 and 0 <= made["predictedVoxels"] <= BOX_VOXELS
    assert (Path(made["model"]) / "model.json").is_file()
    assert json.loads((Path(made["predictJob"]) / "job.json").read_text())["status"] == "done"


def test_a_job_that_cannot_start_is_finished_after_start_returns(tmp_path):
    """The end of a job that could not start is reported later, not inside ``start()``: the GUI records the job
    ``start`` returns, and must not take in that end as the previous job's (review finding)."""
    from PASegSlicer.jobs.runner import JobStep

    events, later = [], []  # the scheduler runs callbacks when the test says (the GUI's event loop)
    runner = JobRunner(SubprocessBackend(), lambda delay, callback: later.append(callback), onEvent=events.append)
    runner.start([JobStep("x", str(tmp_path / "no-such-python"), ["-m", "PASegLib"])])
    assert events == [] and runner.isRunning() and len(later) == 1  # start() returned before any end was reported
    later.pop()()
    assert runner.wait(0) and runner.state.status == "failed" and "could not start" in runner.state.message
    assert [e["event"] for e in events] == ["finished"]


def test_the_self_test_leaves_no_clicks_in_the_scene(app):
    """Clicks left by ``PASegTest`` would be drafted into the user's work folder when the scene closes."""
    from PASegSlicer.selftest import runScenario

    runScenario(app.scene)
    for cls in ("vtkMRMLScalarVolumeNode", "vtkMRMLMarkupsFiducialNode", "vtkMRMLSegmentationNode"):
        assert app.scene.GetNumberOfNodesByClass(cls) == 0, cls
