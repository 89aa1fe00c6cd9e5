"""Model packages in the Slicer module, headless on a real MRML scene (``slicer-core``): a package written by
``paseg export model`` is imported through the inference panel (checked by the real ``python -m PASegLib show-model``
child, copied into the work folder's models, listed with its networks, description and Dice, and chosen); a
tampered package is refused naming the member, and nothing is copied; the prediction job predicts with the imported
package (the real ``python -m PASegLib predict`` child) into the volume it was started for."""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import require_slicer_core
from headlessgui import HeadlessApp, Parameters, jobPanel, widgetsOf
from PASegSlicer.jobs.models import ModelRegistry
from PASegSlicer.mrml import volumes
from PASegSlicer.mrml.segments import segmentationToLabels

from PASegLib.image.io import read_image
from PASegLib.interop.package import WEIGHTS, export_model_package, load_package_predictor
from PASegLib.networks import build_network
from PASegLib.training.checkpoint import save_checkpoint
from PASegLib.training.config import TrainConfig

slicer = require_slicer_core()


def package_of(folder: pathlib.Path, name: str, *, description: str, seed: int = 0) -> pathlib.Path:
    """A package of a small stage-1 run (random weights) whose validation measured Dice 0.83."""
    torch.manual_seed(seed)
    run = folder / f"run-{name}-{seed}"
    config = TrainConfig(patch_size=(40, 36, 20), network="unet3d", epochs=2)
    run.mkdir(parents=True)
    config.save(run / "config.json")
    tiny = {"filters": [4, 8, 16]}
    net = build_network("unet3d", in_channels=1, out_channels=2, **tiny)
    history = [{"event": "validation", "epoch": 2, "score": 0.7, "dice": 0.83}]
    save_checkpoint(run / "checkpoints" / "best.pt", {
        "kind": "stage1", "config": config.to_dict(),
        "networks": {"primary": {"name": "unet3d", "state_dict": net.state_dict(), "kwargs": tiny}},
        "trainer": {"epoch": 2, "history": json.dumps(history)}})
    package = folder / f"{name}.zip"
    export_model_package(run, package, description=description)
    return package


@pytest.fixture
def panel(app, logic, tmp_path):
    """(the inference panel on the real scene, its application services, widgets, parameters, job runners); the
    jobs' children are this Python (``python -m PASegLib``)."""
    headless, ui, parameters = HeadlessApp(app), widgetsOf(), Parameters()
    jobs, runners = jobPanel(logic, headless, ui, parameters, python=sys.executable)
    parameters.workFolder = tmp_path / "work"
    yield jobs, headless, ui, parameters, runners
    jobs.cleanup()


def finish_import(jobs, headless):
    """Wait for the import's worker thread, then run the panel's timer as the event loop would."""
    assert jobs.importing is not None and not jobs.ui.importModelButton.enabled  # under way, the button off
    concurrent.futures.wait([jobs.importing], timeout=120)
    headless.runTimers()
    assert jobs.importing is None and jobs.ui.importModelButton.enabled


def test_importing_a_package_copies_it_lists_its_card_and_chooses_it(panel, tmp_path):
    jobs, headless, ui, parameters, _ = panel
    shared = tmp_path / "from a colleague"
    shared.mkdir()
    package = package_of(shared, "Liver model", description="Liver lesions, portal-venous CT")
    headless.fileName = str(package)
    ui.importModelButton.click()
    assert headless.shown["status"][-1].startswith("Checking the model package")  # the GUI did not wait
    finish_import(jobs, headless)
    assert headless.shown["error"] == []
    copied = tmp_path / "work" / "models" / "Liver_model" / "Liver_model.zip"
    assert copied.read_bytes() == package.read_bytes()
    assert sorted(p.name for p in copied.parent.iterdir()) == ["Liver_model.zip"]  # no temporary file left
    assert parameters.modelRunDir == copied.resolve() and ui.modelComboBox.currentIndex == 0
    (label,) = ui.modelComboBox.items
    for text in ("unet3d", "stage 1", "Dice 0.830 (validation)", "Liver lesions, portal-venous CT",
                 "package Liver_model.zip"):
        assert text in label, label
    assert headless.shown["status"][-1].startswith("Imported the model package unet3d")
    (entry,) = ModelRegistry(tmp_path / "work" / "models.json").models()  # kept in the work folder's list
    assert entry.package and entry.description == "Liver lesions, portal-venous CT" and entry.dice == 0.83

    ui.importModelButton.click()  # the same package again: the same entry
    finish_import(jobs, headless)
    assert len(ui.modelComboBox.items) == 1 and sorted(p.name for p in copied.parent.parent.iterdir()) == [
        "Liver_model"]
    other = package_of(tmp_path / "elsewhere", "Liver model", description="another model", seed=1)
    headless.fileName = str(other)
    ui.importModelButton.click()  # same name, other package: its own folder
    finish_import(jobs, headless)
    assert (tmp_path / "work" / "models" / "Liver_model-2" / "Liver_model-2.zip").read_bytes() == other.read_bytes()
    assert len(ui.modelComboBox.items) == 2 and headless.shown["error"] == []


def test_a_tampered_package_is_refused_naming_the_member_and_nothing_is_copied(panel, tmp_path):
    jobs, headless, ui, parameters, _ = panel
    package = package_of(tmp_path, "model", description="")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(package) as good, zipfile.ZipFile(tampered, "w") as bad:
        for item in good.infolist():
            data = good.read(item.filename)
            bad.writestr(item, data[:-1] + bytes([data[-1] ^ 1]) if item.filename == WEIGHTS else data)
    headless.fileName = str(tampered)
    ui.importModelButton.click()
    finish_import(jobs, headless)
    (shown,) = headless.shown["error"]
    assert "could not be imported" in shown and f"{tampered}: member {WEIGHTS} does not match the SHA-256" in shown
    assert not (tmp_path / "work" / "models").exists() and ui.modelComboBox.items == []
    assert parameters.modelRunDir == pathlib.Path("")
    headless.fileName = ""  # the dialog was cancelled: nothing happens
    ui.importModelButton.click()
    assert len(headless.shown["error"]) == 1


@pytest.mark.slow
def test_the_prediction_job_predicts_with_the_imported_package(panel, scene, logic, blob_case, tmp_path):
    jobs, headless, ui, parameters, runners = panel
    headless.fileName = str(package_of(tmp_path, "blob", description="blob"))
    ui.importModelButton.click()
    finish_import(jobs, headless)
    image, _ = blob_case
    volume = volumes.createVolumeNode(scene, image, "patient volume")
    parameters.inputVolume, parameters.restrictToBox, parameters.deviceMode = volume, False, "CPU (force)"
    ui.predictButton.click()
    assert runners[0].wait(180) and runners[0].state.status == "done", runners[0].state.message
    assert headless.shown["error"] == []
    job = json.loads((pathlib.Path(jobs.job.folder) / "job.json").read_text())
    command = job["steps"][0]["command"]
    assert command[1:5] == ["-m", "PASegLib", "predict", str(parameters.modelRunDir)]  # the imported copy
    prediction = read_image(job["predictions"]["patient_volume"])
    expected = load_package_predictor(parameters.modelRunDir, device="cpu").predict(read_image(job["inputs"]["image"]))
    assert np.array_equal(np.asarray(prediction.array), expected.labels)
    (node,) = logic.segmentationsOf(volume, "PASegPredictionOf")
    shown = segmentationToLabels(node, volume, ["tumor 1"])
    assert np.array_equal(shown > 0, np.asarray(prediction.array) > 0)
