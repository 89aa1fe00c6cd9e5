"""The review queue in the module, headless on a real MRML scene (``slicer-core``): the case list shows and sorts
``<work>/review_queue.json``, "Review next" opens the worst case not corrected since the ranking, and "Rank cases for
review" runs ``paseg review-queue`` as a job (a fake child here; the command itself is tested in
``Testing/Python/inference/test_review.py``)."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from conftest import require_slicer_core
from headlessgui import HeadlessApp, Parameters, widgetsOf
from PASegSlicer.annotation import cases
from PASegSlicer.gui.annotationpanel import AnnotationPanel
from PASegSlicer.gui.jobpanel import JobPanel
from PASegSlicer.jobs import commands
from PASegSlicer.jobs.dependencies import DependencyChecker
from PASegSlicer.jobs.runner import JobRunner, SubprocessBackend, threadingSchedule

from PASegLib.cli.main import build_parser
from PASegLib.image.io import write_image

slicer = require_slicer_core()

#: a ``python -m PASegLib review-queue …`` that ranks the dataset's cases by name, last first (scores 0.1, 0.2, …)
FAKE_REVIEW = r"""
import json, sys
from pathlib import Path
args = sys.argv[1:]
args = args[2:] if args[:2] == ["-m", "PASegLib"] else args
assert args[0] == "review-queue", args
out, data = Path(args[args.index("--out") + 1]), Path(args[args.index("--data") + 1])
ids = sorted(p.name.split("_image")[0] for p in data.glob("*_image.*"))
print("PASEG " + json.dumps({"event": "start", "total": len(ids)}), flush=True)
rows = []
for n, case in enumerate(ids, 1):
    rows.append({"case": case, "score": n / 10})
    print("PASEG " + json.dumps({"event": "case", "index": n, "total": len(ids), "case": case}), flush=True)
rows.sort(key=lambda r: -r["score"])
for rank, row in enumerate(rows, 1):
    row["rank"] = rank
out.write_text(json.dumps({"signal": "flip", "cases": rows}))
"""


@pytest.fixture
def gui(app):
    """(application services, widgets, parameters, ``{"node": the parameters while shown}``)."""
    shown = {"node": Parameters()}
    return HeadlessApp(app), widgetsOf(), shown["node"], shown


@pytest.fixture
def annotations(gui, logic):
    headless, ui, parameters, shown = gui
    panel = AnnotationPanel(ui, headless, logic, lambda: parameters, lambda: shown["node"], lambda: None)
    yield panel
    panel.cleanup()


@pytest.fixture
def dataset(gui, blob_case, tmp_path):
    """Cases c1, c2, c3 (the blob image) and the work folder set in the parameters."""
    _, _, parameters, _ = gui
    image, _ = blob_case
    for caseId in ("c1", "c2", "c3"):
        write_image(tmp_path / "data" / f"{caseId}_image.nrrd", image.array, image.geometry)
    parameters.datasetFolder, parameters.workFolder = tmp_path / "data", tmp_path / "work"
    (tmp_path / "work").mkdir()
    return tmp_path / "data"


def _queue(work, ranks, age_s=100.0):
    """Write ``review_queue.json`` ranking ``ranks`` (case → (rank, score)), ``age_s`` seconds old."""
    path = cases.reviewQueuePath(work)
    rows = [{"case": c, "rank": r, "score": s} for c, (r, s) in ranks.items()]
    path.write_text(json.dumps({"signal": "flip", "cases": rows}), encoding="utf-8")
    old = path.stat().st_mtime - age_s
    os.utime(path, (old, old))
    return path


def _save(dataset, caseId):
    """A saved annotation for ``caseId``, newer than the queue (the user corrected the case)."""
    (dataset / f"{caseId}.mrk.json").write_text("{}")


def test_case_list_shows_the_queue_and_sorts_worst_first_on_request(gui, annotations, dataset, tmp_path):
    headless, ui, _, _ = gui
    _queue(tmp_path / "work", {"c3": (1, 0.5), "c1": (2, 0.25)})  # c2 not ranked
    annotations.refreshCases()
    assert ui.caseList.items == ["c1 (not annotated) · review #2 (0.250)", "c2 (not annotated)",
                                 "c3 (not annotated) · review #1 (0.500)"]  # fmt: skip
    ui.caseList.setCurrentRow(1)
    ui.reviewSortButton.click()
    assert [item.split(" ")[0] for item in ui.caseList.items] == ["c3", "c1", "c2"]
    assert ui.reviewSortButton.text == "Sort: by name"
    annotations.refreshCases()  # the order stays until the user switches back
    assert [item.split(" ")[0] for item in ui.caseList.items] == ["c3", "c1", "c2"]
    ui.reviewSortButton.click()
    assert [item.split(" ")[0] for item in ui.caseList.items] == ["c1", "c2", "c3"]
    assert ui.reviewSortButton.text == "Sort: worst first"


def test_review_next_opens_the_worst_case_not_corrected_yet(gui, annotations, dataset, tmp_path):
    headless, ui, parameters, _ = gui
    _queue(tmp_path / "work", {"c2": (1, 0.6), "c3": (2, 0.4), "c1": (3, 0.1)})
    _save(dataset, "c2")  # corrected since the ranking
    annotations.refreshCases()
    assert ui.caseList.items[1] == "c2 (annotated) · review #1 (0.600), corrected"
    ui.reviewNextButton.click()
    assert parameters.inputVolume.GetName() == "c3" and ui.caseList.items[ui.caseList.currentRow].startswith("c3")
    assert headless.shown["status"][-1] == "Review #2: c3 (disagreement 0.400)"
    ui.reviewNextButton.click()  # c3 is open (not saved yet): the next worst
    assert parameters.inputVolume.GetName() == "c1"
    _save(dataset, "c3")
    ui.reviewNextButton.click()  # c1 open, c2 and c3 corrected
    assert parameters.inputVolume.GetName() == "c1"
    assert headless.shown["status"][-1] == "c1, open now, is the last case of the review queue not corrected yet."
    _save(dataset, "c1")
    ui.reviewNextButton.click()
    assert headless.shown["status"][-1].startswith("Every case of the review queue was corrected")


def test_without_a_queue_or_with_an_unreadable_one_the_list_is_by_name_and_says_why(gui, annotations, dataset,
                                                                                    tmp_path):  # fmt: skip
    headless, ui, parameters, _ = gui
    annotations.refreshCases()
    ui.reviewNextButton.click()
    assert parameters.inputVolume is None and headless.shown["status"][-1].startswith("No review queue yet")
    cases.reviewQueuePath(tmp_path / "work").write_text("{broken", encoding="utf-8")
    annotations.refreshCases()
    assert ui.caseList.items == ["c1 (not annotated)", "c2 (not annotated)", "c3 (not annotated)"]
    assert "review_queue.json cannot be read" in headless.shown["status"][-1]
    assert "rank the cases again" in headless.shown["status"][-1]


def test_review_job_command_line_is_the_cli_s(tmp_path):
    queue = tmp_path / "work" / "review_queue.json"
    (step,) = commands.reviewQueueSteps(tmp_path / "job", tmp_path / "run", tmp_path / "data", queue, device="cpu",
                                        python="py")  # fmt: skip
    assert step.program == "py" and step.arguments[:3] == ["-m", "PASegLib", "review-queue"]
    assert step.stopPath() == tmp_path / "job" / "output" / "STOP"
    args = build_parser().parse_args(step.arguments[2:])  # the real `paseg` parser accepts it
    assert (args.model, args.data, args.out) == (tmp_path / "run", tmp_path / "data", queue)
    assert args.stop_file == step.stopPath() and args.device == "cpu" and args.func.__module__ == "PASegLib.cli.review"


def test_rank_cases_button_runs_the_job_and_the_case_list_shows_the_queue(gui, logic, annotations, dataset,
                                                                          tmp_path):  # fmt: skip
    headless, ui, parameters, _ = gui
    script, launcher = tmp_path / "fake_review.py", tmp_path / "fakepython"
    script.write_text(FAKE_REVIEW, encoding="utf-8")
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"network": "unet3d", "stage": 1, "best_score": 0.8, "best_epoch": 3,
                                                "created": "2026-01-01T00:00:00", "checkpoint": "best.pt"}))
    (run / "best.pt").write_text("w")
    parameters.modelRunDir, parameters.deviceMode = run, "CPU (force)"
    runners = []

    def runnerFactory(**callbacks):
        runners.append(JobRunner(SubprocessBackend(), threadingSchedule, **callbacks))
        return runners[-1]

    checker = DependencyChecker(headless.confirmOkCancelDisplay, headless.pip_install,
                                findSpec=lambda name: object(), installedVersion=lambda name: "2.5.0",
                                probeDevices=lambda: {"event": "devices", "torch": "2.5.0", "cuda": []})  # fmt: skip
    panel = JobPanel(ui, headless, logic, lambda: parameters, lambda: parameters, annotations.refreshCases,
                     runnerFactory, lambda: checker, python=str(launcher))  # fmt: skip
    panel.updateButtons()
    ui.rankCasesButton.click()
    assert not ui.rankCasesButton.enabled and ui.jobFolderLabel.text.startswith("Job folder: ")
    assert runners[0].wait(30) and runners[0].state.status == "done", runners[0].state.message
    assert headless.shown["error"] == [] and ui.rankCasesButton.enabled
    job = json.loads((panel.job.folder / "job.json").read_text(encoding="utf-8"))
    assert job["kind"] == "review" and job["status"] == "done" and job["queue"] == str(cases.reviewQueuePath(
        tmp_path / "work"))  # fmt: skip
    assert "--stop-file" in job["steps"][0]["command"] and "cpu" in job["steps"][0]["command"]
    assert ui.caseList.items == ["c1 (not annotated) · review #3 (0.100)", "c2 (not annotated) · review #2 (0.200)",
                                 "c3 (not annotated) · review #1 (0.300)"]  # fmt: skip
    ui.reviewNextButton.click()
    assert parameters.inputVolume.GetName() == "c3"
    panel.cleanup()
