"""Background jobs of the Slicer module with real child processes (no Slicer needed): the job runner, the
stop file and the process-tree kill, job folders and commands, the model list, the case list, dependencies.

The children are tiny scripts speaking the ``paseg train|predict`` progress protocol; a fake ``python``
(a shell script) runs them in place of ``python -m PASegLib`` so the real command lines are exercised.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import process_alive
from headlessgui import FAKE_CLI_START, modelRun
from PASegSlicer.annotation import cases
from PASegSlicer.jobs import commands, control, devices
from PASegSlicer.jobs.dependencies import MINIMUM_TORCH, DependencyChecker, DependencyError, Requirement
from PASegSlicer.jobs.models import ModelRegistry
from PASegSlicer.jobs.processes import descendantProcessIds
from PASegSlicer.jobs.runner import JobRunner, JobStep, SubprocessBackend, parseProgressLine, threadingSchedule

FAKE_PASEG = FAKE_CLI_START + r"""
mode = os.environ.get("FAKE_MODE", "progress")
if command == "train":
    out.mkdir(parents=True, exist_ok=True)
    emit(event="start", total_iterations=4, epochs=2, run_dir=str(out))
    print("free text log line: ü ✓", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    if mode == "fail":
        emit(event="error", message="CUDA out of memory: lower the patch size")
        sys.exit(1)
    if mode in ("hang", "obey"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        (out / "grandchild.pid").write_text(str(child.pid))
        emit(event="iteration", epoch=1, iteration=1, total_iterations=4, losses={"ce": 0.9}, lr=0.01, eta_s=30)
        while True:
            if mode == "obey" and (out / "STOP").exists():
                child.kill()
                emit(event="stopped", epoch=1, iteration=1)
                sys.exit(3)
            time.sleep(0.05)
    for it in range(1, 5):
        emit(event="iteration", epoch=(it + 1) // 2, iteration=it, total_iterations=4,
             losses={"dice_ce": 1.0 / it, "crf": 0.5}, lr=0.01, eta_s=4 - it)
        if it % 2 == 0:
            emit(event="validation", epoch=it // 2, score=0.5 + 0.1 * it)
    (out / "best.pt").write_text("weights")
    stage = int(args[args.index("--stage") + 1])
    network = args[args.index("--network") + 1] if "--network" in args else "unet2d5"
    (out / "model.json").write_text(json.dumps({"network": network, "stage": stage, "best_score": 0.9,
        "best_epoch": 2, "created": "2026-01-02T03:04:05", "paseg_version": "0", "checkpoint": "best.pt"}))
    emit(event="checkpoint", path=str(out / "best.pt"))
    emit(event="done", best_score=0.9, best_epoch=2, run_dir=str(out))
    sys.stdout.write("last line without a newline")
elif command == "predict":  # PASegLib is on the step's PYTHONPATH (jobs.commands.childEnvironment)
    from PASegLib.image.io import read_image, write_image
    inputs = [Path(args[2])] if Path(args[2]).is_file() else sorted(Path(args[2]).glob("*_image.*"))
    for n, path in enumerate(inputs, 1):
        image = read_image(path)
        case = path.name.split("_image")[0]
        mask = (image.array > image.array.mean()).astype("uint8")
        pred = write_image(out / f"{case}_pred.nii.gz", mask, image.geometry)
        emit(event="case", index=n, total=len(inputs), case=case, pred=str(pred))
"""


def _runner(tmp_path, **kwargs):
    events = []
    runner = JobRunner(SubprocessBackend(), threadingSchedule, logPath=tmp_path / "log.txt", onEvent=events.append,
                       **kwargs)  # fmt: skip
    return runner, events


def _step(fake_python, out, mode="progress", name="stage 1"):
    return JobStep(name, fake_python, ["-m", "PASegLib", "train", "DATA", "--out", str(out), "--stage", "1"],
                   str(out), None, {"FAKE_MODE": mode})  # fmt: skip


def test_progress_line_parsing():
    assert parseProgressLine('PASEG {"event": "done", "best_score": 0.5}') == {"event": "done", "best_score": 0.5}
    assert parseProgressLine("PASEG {broken") is None
    assert parseProgressLine('PASEG {"score": 1}') is None
    assert parseProgressLine("epoch 3 loss 0.2") is None


def test_runner_follows_progress_and_bounds_the_log(tmp_path, fake_python):
    runner, events = _runner(tmp_path, maxLogLines=4)
    runner.start([_step(fake_python, tmp_path / "run")])
    assert runner.wait(20)
    state = runner.state
    assert state.status == "done" and state.exitCode == 0 and state.fraction == 1.0
    assert [e["event"] for e in events][:3] == ["start", "iteration", "iteration"]
    assert events[-1] == {"event": "finished", "status": "done", "message": "finished"}
    assert state.losses == {"dice_ce": 0.25, "crf": 0.5} and state.lastScore == pytest.approx(0.9)
    assert len(state.lossHistory) == 4 and [v["x"] for v in state.validationHistory] == [2, 4]
    assert state.doneEvents[0]["run_dir"] == str(tmp_path / "run")
    assert state.summary()["losses"] == "dice_ce 0.25, crf 0.5"
    assert len(runner.logLines) == 4  # bounded pane …
    log = (tmp_path / "log.txt").read_text(encoding="utf-8")  # … full log file
    for text in ("free text log line: ü ✓", "! a warning on stderr", '"event": "validation"', "last line without"):
        assert text in log


def test_runner_reports_a_failing_child(tmp_path, fake_python):
    runner, events = _runner(tmp_path)
    runner.start([_step(fake_python, tmp_path / "a", "fail"), _step(fake_python, tmp_path / "b", name="never")])
    assert runner.wait(20)
    assert runner.state.status == "failed" and runner.state.exitCode == 1
    assert "stage 1 exited with code 1: CUDA out of memory" in runner.state.message
    assert not (tmp_path / "b").exists()  # the next step does not start after a failure


def test_stop_kills_a_hanging_process_tree_after_the_timeout(tmp_path, fake_python):
    runner, _ = _runner(tmp_path, stopTimeoutSeconds=0.5)
    out = tmp_path / "run"
    runner.start([_step(fake_python, out, "hang")])
    deadline = time.time() + 20
    while not (out / "grandchild.pid").exists() and time.time() < deadline:
        time.sleep(0.05)
    grandchild = int((out / "grandchild.pid").read_text())
    child = runner.backend.processId()
    assert grandchild in descendantProcessIds(child) and process_alive(grandchild)
    started = time.time()
    runner.stop()
    assert (out / "STOP").is_file() and runner.state.status == "stopping"
    assert runner.wait(20)
    assert runner.state.status == "stopped" and runner.state.killed and runner.state.exitCode is None
    assert 0.4 < time.time() - started < 10
    time.sleep(0.2)
    assert not process_alive(child) and not process_alive(grandchild)


def test_stop_file_lets_a_cooperating_child_exit_cleanly(tmp_path, fake_python):
    runner, events = _runner(tmp_path, stopTimeoutSeconds=30)
    out = tmp_path / "run"
    runner.start([_step(fake_python, out, "obey"), _step(fake_python, tmp_path / "next", name="next")])
    deadline = time.time() + 20
    while not runner.state.lossHistory and time.time() < deadline:
        time.sleep(0.05)
    runner.stop()
    assert runner.wait(20)
    assert runner.state.status == "stopped" and runner.state.exitCode == 3 and not runner.state.killed
    assert "stopped" in [e["event"] for e in events] and not (tmp_path / "next").exists()


def test_a_missing_program_fails_clearly(tmp_path):
    runner, _ = _runner(tmp_path)
    runner.start([JobStep("x", str(tmp_path / "no-such-python"), ["-m", "PASegLib"])])
    assert runner.wait(5) and runner.state.status == "failed" and "could not start" in runner.state.message


def test_training_job_end_to_end_registers_the_models(tmp_path, fake_python):
    data = tmp_path / "data"
    data.mkdir()
    (data / "c1_image.nrrd").write_bytes(b"")
    with pytest.raises(ValueError, match="no annotated case"):
        control.startTrainingJob(JobRunner(SubprocessBackend(), threadingSchedule), tmp_path / "work", data,
                                 mode="stage 1", networks=["unet2d5"], epochs=2, device="cpu")  # fmt: skip
    (data / "c1.mrk.json").write_text("{}")
    runner, events = _runner(tmp_path)
    with pytest.raises(ValueError, match="two finished stage-1 runs"):
        control.startTrainingJob(runner, tmp_path / "work", data, mode="SCM", networks=["unet2d5"], epochs=2,
                                 device="cpu", initRuns=["", "."])  # fmt: skip
    assert not runner.isRunning() and not (tmp_path / "work" / "jobs").exists()
    job = control.startTrainingJob(runner, tmp_path / "work", data, mode="stage 1 + SCM",
                                   networks=["unet2d5", "attention_unet"], epochs=2,
                                   device=commands.deviceArgument("GPU", 1), python=fake_python)  # fmt: skip
    assert runner.wait(30) and runner.state.status == "done", runner.state.message
    job = job.folder
    doc = json.loads((job / "job.json").read_text())
    stepCommands = [s["command"] for s in doc["steps"]]
    assert [c[1:5] for c in stepCommands] == [["-m", "PASegLib", "train", str(data)]] * 3
    assert stepCommands[0][stepCommands[0].index("--device") + 1] == "cuda:1"
    assert stepCommands[2][stepCommands[2].index("--init") + 1 :][:2] == [
        str(job / "stage1-unet2d5"),
        str(job / "stage1-attention_unet"),
    ]
    registry = ModelRegistry(tmp_path / "work" / "models.json")
    registered = control.finishTrainingJob(job, runner.state, registry)
    assert sorted((e.network, e.stage) for e in registered) == [("attention_unet", 1), ("unet2d5", 1), ("unet2d5", 2)]
    assert len(registry.models()) == 3 and json.loads((job / "job.json").read_text())["status"] == "done"
    assert "step 3/3: SCM (stage 2)" in (job / "log.txt").read_text()


def test_prediction_job_end_to_end_imports_segments(tmp_path, fake_python, blob_case):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (make setup installs it)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core")
    from PASegSlicer.annotation.logic import PASegCoreLogic
    from PASegSlicer.mrml.headless import HeadlessSlicer
    from PASegSlicer.mrml.segments import segmentationToLabels
    from PASegSlicer.mrml.volumes import createVolumeNode

    run = modelRun(tmp_path)
    app = HeadlessSlicer()
    try:
        image, _ = blob_case
        volume = createVolumeNode(app.scene, image, "blob")
        runner, _ = _runner(tmp_path)  # restrictToBox on an unannotated volume: test_slicer_corrections (D7)
        job = control.startPredictionJob(runner, tmp_path / "work", run, scene=app.scene, volumeNode=volume,
                                         caseId="blob", device="cpu", python=fake_python)  # fmt: skip
        assert runner.wait(30) and runner.state.status == "done", runner.state.message
        files = control.finishPredictionJob(job.folder, runner.state, tmp_path / "work")
        assert list(files) == ["blob"] and cases.predictionPath(tmp_path / "work", "blob").is_file()
        node = PASegCoreLogic(app.scene).importPrediction(volume, files["blob"])
        shown = segmentationToLabels(node, volume, ["tumor 1"])
        assert (shown == (image.array > image.array.mean())).all()
    finally:
        app.close()


def test_step_building_refuses_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="two different networks"):
        commands.trainingSteps(
            tmp_path, tmp_path, mode="stage 1 + SCM", networks=["unet3d", "unet3d"], epochs=1, device="cpu"
        )
    with pytest.raises(ValueError, match="two different stage-1 runs"):
        commands.trainingSteps(tmp_path, tmp_path, mode="SCM", networks=["unet3d"], epochs=1, device="cpu",
                               initRuns=["a"])  # fmt: skip
    steps = commands.trainingSteps(tmp_path, "D", mode="SCM", networks=["x"], epochs=5, device="auto",
                                   initRuns=["a", "b"], configFile="c.json", python="py")  # fmt: skip
    assert steps[0].arguments == ["-m", "PASegLib", "train", "D", "--out", str(tmp_path / "scm"), "--stage", "2",
                                  "--init", "a", "b", "--epochs", "5", "--device", "auto", "--quiet",
                                  "--config", "c.json"]  # fmt: skip
    assert steps[0].runDir == str(tmp_path / "scm") and "PYTHONPATH" in steps[0].environment
    predict = commands.predictionSteps(tmp_path, "RUN", "IN", annotations="A", restrictToBox=True,
                                       largestComponent=True)  # fmt: skip
    assert predict[0].arguments[2:] == ["predict", "RUN", "IN", "--out", str(tmp_path / "output"), "--device", "auto",
                                        "--quiet", "--annotations", "A", "--restrict-to-box",
                                        "--largest-component"]  # fmt: skip
    modes = commands.DEVICE_MODES
    assert [commands.deviceArgument(m, 2) for m in modes] == ["auto", "cuda:2", commands.ALL_GPUS, "cpu"]


def test_model_registry(tmp_path):
    registry = ModelRegistry(tmp_path / "models.json")
    with pytest.raises(ValueError, match="not a finished PASeg run"):
        registry.register(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    info = {"network": "unet2d5", "stage": 2, "best_score": 0.75, "best_epoch": 7, "created": "2026-03-04T05:06:07"}
    (run / "model.json").write_text(json.dumps({**info, "checkpoint": "missing.pt"}))
    with pytest.raises(ValueError, match="checkpoint missing.pt does not exist"):
        registry.register(run)
    (run / "missing.pt").write_text("w")
    registry.register(run)
    entry = registry.register(run)
    assert [e.runDir for e in registry.models()] == [str(run.resolve())]
    assert entry.label.startswith("unet2d5 · SCM · score 0.750 · 2026-03-04 05:06")
    os.rename(run, tmp_path / "moved")
    assert registry.models() == []


def test_case_list_statuses_and_navigation(tmp_path):
    for case in ("a", "b", "c"):
        (tmp_path / f"{case}_image.nrrd").write_bytes(b"")
    (tmp_path / "b.mrk.json").write_text("{}")
    (tmp_path / "c.mrk.json").write_text("{}")
    work = tmp_path / "work"
    cases.expandedPath(work, "c").parent.mkdir(parents=True)
    cases.expandedPath(work, "c").write_bytes(b"")
    listing = cases.CaseList(tmp_path, work)
    assert [e.label for e in listing.refresh()] == ["a (not annotated)", "b (annotated)", "c (expanded)"]
    assert listing.next().caseId == "b" and listing.next().caseId == "c" and listing.next().caseId == "c"
    assert listing.previous().caseId == "b"
    assert listing.nextWhere(lambda e: e.status == cases.NOT_ANNOTATED).caseId == "a"
    cases.predictionPath(work, "a").parent.mkdir(parents=True)
    cases.predictionPath(work, "a").write_bytes(b"")
    assert [e.status for e in listing.refresh()][0] == cases.PREDICTED and listing.current.caseId == "a"
    (tmp_path / "orphan.mrk.json").write_text("{}")
    assert listing.refresh() == [] and "orphan.mrk.json" in listing.message


def test_dependency_checker_installs_with_confirmation_and_constraints():
    present = {"numpy"}
    calls = []

    def pip(arguments):
        constraints = Path(arguments[arguments.index("--constraint") + 1]).read_text()
        calls.append((arguments[:-2], constraints))
        present.update(a.split(">")[0] for a in arguments[:-2])

    find = lambda name: object() if name in present else None  # noqa: E731
    wanted = [Requirement("numpy", "numpy"), Requirement("monai", "monai>=1.3")]
    with pytest.raises(DependencyError, match="cancelled"):
        DependencyChecker(lambda text: False, pip, findSpec=find).ensure(wanted, "Training")
    assert calls == []
    questions = []
    checker = DependencyChecker(lambda text: questions.append(text) or True, pip, findSpec=find)
    assert checker.ensure(wanted, "Training") == ["monai>=1.3"] and "monai>=1.3" in questions[0]
    assert calls[0][0] == ["monai>=1.3"] and f"numpy=={__import__('numpy').__version__}" in calls[0][1]
    assert checker.ensure(wanted, "Training") == [] and len(calls) == 1
    with pytest.raises(DependencyError, match="failed"):
        DependencyChecker(lambda t: True, lambda a: None, findSpec=find).ensure([Requirement("x", "x")], "T")


def test_torch_comes_from_the_pytorch_extension():
    def missing(name):
        raise ModuleNotFoundError(name)

    checker = DependencyChecker(lambda t: True, lambda a: None, findSpec=lambda n: None, importModule=missing)
    with pytest.raises(DependencyError, match="Extensions Manager"):
        checker.ensureTorch()
    asked = {}

    class Logic:
        def torchInstalled(self):
            return False

        def installTorch(self, **kwargs):
            asked.update(kwargs)
            return None

    fake = type("PyTorchUtils", (), {"PyTorchUtilsLogic": Logic})
    checker = DependencyChecker(lambda t: True, lambda a: None, findSpec=lambda n: None, importModule=lambda n: fake)
    with pytest.raises(DependencyError, match="torch was not installed"):
        checker.ensureTorch()
    assert asked == {"askConfirmation": True, "torchVersionRequirement": f">={MINIMUM_TORCH}"}


def test_device_probe_reports_this_machines_torch(tmp_path):
    torch = pytest.importorskip("torch")
    runner, events = _runner(tmp_path)
    runner.start([devices.deviceProbeStep(python=sys.executable)])
    assert runner.wait(60) and runner.state.status == "done", runner.state.message
    found = [e for e in events if e["event"] == "devices"][0]
    assert found["torch"] == torch.__version__
    assert len(found["cuda"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    text = devices.describeDevices(found)
    assert ("GPU 0:" in text) if found["cuda"] else ("no CUDA GPU found" in text)
    assert "not installed" in devices.describeDevices({"event": "devices", "torch": None})


def test_job_folder_files(tmp_path):
    first, second = commands.newJobFolder(tmp_path, "train"), commands.newJobFolder(tmp_path, "train")
    assert first != second and first.parent == second.parent == tmp_path / "jobs"
    steps = [JobStep("s", "py", ["-m", "PASegLib", "train"], str(first / "run"))]
    commands.writeJobFile(first, "train", steps, {"epochs": 3}, dataset="D")
    doc = commands.updateJobFile(first, status="stopped", exit_code=3)
    assert doc["status"] == "stopped" and doc["steps"][0]["command"] == ["py", "-m", "PASegLib", "train"]
    assert json.loads((first / "job.json").read_text()) == doc


PHASES_CHILD = r"""
import json
def emit(**event):
    print("PASEG " + json.dumps(event), flush=True)
emit(event="phase", phase="preparing", total=4)
for n in range(1, 5):
    emit(event="prepare", index=n, total=4, case=f"c{n}", cached=False)
emit(event="start", total_iterations=10, epochs=2, iteration=4, resumed=True)
emit(event="iteration", epoch=2, iteration=5, total_iterations=10, losses={"loss": 1.0}, lr=0.01, eta_s=5)
emit(event="phase", phase="validating", epoch=2, total=2)
emit(event="validation_case", epoch=2, index=1, total=2, case="c4")
emit(event="validation", epoch=2, score=0.5)
emit(event="stopped", phase="training", epoch=3, iteration=5, message="stopped at iteration 5/10")
raise SystemExit(3)
"""


def test_job_state_follows_the_phases(tmp_path):
    script = tmp_path / "phases.py"
    script.write_text(PHASES_CHILD, encoding="utf-8")
    snapshots = []
    runner = JobRunner(SubprocessBackend(), threadingSchedule)
    runner.onEvent = lambda e: snapshots.append((e["event"], runner.state.summary()["phase"],
                                                 round(runner.state.phaseFraction, 3), round(runner.state.fraction, 3)))
    runner.start([JobStep("stage 1", sys.executable, [str(script)])])
    assert runner.wait(20) and runner.state.status == "stopped" and runner.state.exitCode == 3
    assert snapshots[:-1] == [
        ("phase", "preparing data: 0/4 cases", 0.0, 0.0),
        ("prepare", "preparing data: 1/4 cases", 0.25, 0.0),
        ("prepare", "preparing data: 2/4 cases", 0.5, 0.0),
        ("prepare", "preparing data: 3/4 cases", 0.75, 0.0),
        ("prepare", "preparing data: 4/4 cases", 1.0, 0.0),
        ("start", "training: 4/10 iterations", 0.4, 0.4),  # a resumed run starts at its saved iteration
        ("iteration", "training: 5/10 iterations", 0.5, 0.5),
        ("phase", "validating epoch 2: 0/2 cases", 0.0, 0.5),
        ("validation_case", "validating epoch 2: 1/2 cases", 0.5, 0.5),
        ("validation", "training: 5/10 iterations", 0.5, 0.5),
        ("stopped", "training: 5/10 iterations", 0.5, 0.5),
    ]
    assert snapshots[-1][0] == "finished" and runner.state.message == "stopped at iteration 5/10"


def test_a_pipeline_steps_share_the_progress_of_its_job_step():
    from PASegSlicer.jobs.state import JobState

    state = JobState(status="running", stepCount=2)
    state.beginStep(1, "pipeline (stage 1 + refinement)")  # the job's second step runs `paseg run`
    assert state.fraction == 0.5 and state.summary()["step"] == "pipeline (stage 1 + refinement) (2/2)"
    state.apply({"event": "step", "step": "stage1_primary", "index": 3, "total": 4})
    state.apply({"event": "iteration", "iteration": 5, "total_iterations": 10, "losses": {}})
    # (1 + (2 + 0.5) / 4) / 2: the bar never goes back when the pipeline's next run starts
    assert state.fraction == pytest.approx(0.8125)
    assert state.summary()["step"] == "pipeline (stage 1 + refinement) (2/2) › stage1_primary (3/4)"
    state.apply({"event": "iteration", "iteration": -5, "total_iterations": 10, "losses": {}})
    assert state.fraction == pytest.approx(0.75)  # never below the pipeline step's start
    state.apply({"event": "prepare", "index": 1, "total": 4})  # the next run prepares its data: the bar stays
    assert not state.showsPreparation and "preparing data: 1/4 cases" in state.summary()["phase"]
    state.apply({"event": "step", "step": "predict", "index": 4, "total": 4})
    assert state.fraction == pytest.approx(0.875) and state.summary()["phase"] == ""
    state.apply({"event": "step", "step": "bad", "index": 9, "total": 4})  # an index past the end stays inside
    assert state.subStepIndex == 3
    state.beginStep(0, "stage 1")  # a job step without steps of its own
    assert state.subStepCount == 0 and state.summary()["step"] == "stage 1 (1/2)" and state.fraction == 0.0
    state.apply({"event": "prepare", "index": 1, "total": 4})
    assert state.showsPreparation and state.phaseFraction == 0.25  # outside a pipeline: the preparation's own bar


def test_steps_carry_their_stop_file_and_a_utf8_environment(tmp_path):
    from PASegSlicer.jobs.processes import NO_WINDOW, childOutputEnvironment

    train = commands.trainingSteps(tmp_path, "D", mode="stage 1", networks=["unet3d"], epochs=1, device="cpu",
                                   python="py")[0]
    assert train.stopPath() == tmp_path / "stage1-unet3d" / "STOP"
    predict = commands.predictionSteps(tmp_path, "RUN", "IN", python="py")[0]
    assert predict.runDir is None and predict.stopPath() == tmp_path / "output" / "STOP"
    assert devices.deviceProbeStep(python="py").stopPath() is None  # a stop kills it at once
    env = commands.childEnvironment()
    assert env["PYTHONIOENCODING"] == "utf-8" and env["PYTHONUTF8"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert childOutputEnvironment()["PYTHONIOENCODING"] == "utf-8"
    assert NO_WINDOW == (0 if os.name != "nt" else 0x08000000)
    commands.writeJobFile(tmp_path, "predict", [predict], {})
    doc = json.loads((tmp_path / "job.json").read_text())
    assert doc["steps"][0]["stop_file"] == str(tmp_path / "output" / "STOP")
    # a child's non-ASCII output arrives intact whatever the locale says (PYTHONIOENCODING=utf-8 by default)
    lines = []
    runner = JobRunner(SubprocessBackend(), threadingSchedule, onLog=lines.append)
    runner.start([JobStep("echo", sys.executable, ["-c", "print('Fall Müller ✓ 肺')"], environment={"LC_ALL": "C"})])
    assert runner.wait(20) and runner.state.status == "done"
    assert "Fall Müller ✓ 肺" in lines


def test_the_pipeline_modes_are_one_paseg_run_step(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"patch_size": [32, 32, 16], "epochs": 7}))
    steps = commands.trainingSteps(tmp_path, "D", mode="teacher–student", networks=["unet3d", "attention_unet"],
                                   epochs=300, device="cuda:1", configFile=str(config), python="py")  # fmt: skip
    assert len(steps) == 1 and steps[0].runDir is None
    # the preset's budget and networks; the settings file's keys for every run; the GUI's epochs not passed
    assert steps[0].arguments == ["-m", "PASegLib", "run", "D", "--out", str(tmp_path / "pipeline"), "--preset",
                                  "auto", "--mixed", "teacher_student", "--second-stage", "scm", "--device",
                                  "cuda:1", "--quiet", "--set", "patch_size=[32, 32, 16]", "--set",
                                  "epochs=7"]  # fmt: skip
    assert steps[0].stopPath() == tmp_path / "pipeline" / "STOP"
    refine = commands.trainingSteps(tmp_path, "D", mode="stage 1 + refinement", networks=["unet3d"], epochs=3,
                                    device="cpu", python="py")[0].arguments  # fmt: skip
    assert refine[refine.index("--second-stage") + 1] == "refine" and "--set" not in refine
    with pytest.raises(ValueError, match="one device"):
        commands.trainingSteps(tmp_path, "D", mode="stage 1 + refinement", networks=["unet3d"], epochs=3,
                               device=commands.ALL_GPUS)  # fmt: skip
    config.write_text(json.dumps({"network": "unet3d", "stage": 1, "lr": 0.01}))  # e.g. a run's config.json
    with pytest.raises(ValueError, match=r"sets network, stage: .* chooses these itself"):
        commands.trainingSteps(tmp_path, "D", mode="stage 1 + refinement", networks=["unet3d"], epochs=3,
                               device="cpu", configFile=str(config))  # fmt: skip
    config.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        commands.trainingSteps(tmp_path, "D", mode="stage 1 + refinement", networks=["unet3d"], epochs=3,
                               device="cpu", configFile=str(config))  # fmt: skip
    assert commands.TRAIN_MODES[0] == "stage 1 + refinement"
    assert set(commands.PIPELINE_MODES) < set(commands.TRAIN_MODES)


MODEL_INFO = {"network": "unet3d", "stage": 1, "best_score": 0.8, "best_epoch": 1, "created": "2026-01-01T00:00:00",
              "checkpoint": "best.pt"}


def test_a_stopped_pipeline_job_resumes_and_its_teacher_is_never_a_model(tmp_path):
    from PASegSlicer.jobs import background

    job = tmp_path / "work" / "jobs" / "20260101-000000-train"
    job.mkdir(parents=True)
    steps = commands.trainingSteps(job, tmp_path / "data", mode="teacher–student", networks=["unet3d"], epochs=1,
                                   device="cpu", python="py")  # fmt: skip
    commands.writeJobFile(job, "train", steps, {"mode": "teacher–student"})
    control.updateJobFile(job, status="stopped")
    pipeline = job / "pipeline"
    teacher, student = pipeline / "teacher", pipeline / "student_unet3d"
    for run in (teacher, student):
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.json").write_text("{}")
        (run / "checkpoints" / "last.pt").write_text("w")
        time.sleep(0.01)  # the student started after the teacher
    (teacher / "model.json").write_text(json.dumps(MODEL_INFO))
    (teacher / "best.pt").write_text("w")
    (pipeline / "pipeline.json").write_text(json.dumps({"options": {}, "done": ["clicks", "teacher"]}))
    record = next(r for r in background.scanJobs(tmp_path / "work") if r.folder == job)
    assert record.runs == [str(teacher), str(student)] and record.stoppedRuns == [str(student)]
    assert record.pipelines == [str(pipeline)] and record.resumable
    resumed = background.prepareResume(job)
    doc = json.loads((job / "job.json").read_text())
    assert doc["steps"][0]["skip"] is False and doc["steps"][0]["command"][1:] == steps[0].arguments  # unchanged
    assert resumed.stoppedRuns == [str(student)]
    # the job ends: the teacher (it reads boxes) is not registered, the student is
    (student / "model.json").write_text(json.dumps(MODEL_INFO))
    (student / "best.pt").write_text("w")
    state = type("State", (), {"doneEvents": [{"run_dir": str(teacher)}, {"run_dir": str(student)}],
                               "status": "done", "exitCode": 0, "message": ""})()
    registered = control.finishTrainingJob(job, state, ModelRegistry(tmp_path / "work" / "models.json"))
    assert [e.runDir for e in registered] == [str(student)]
    (pipeline / "pipeline.json").write_text(json.dumps({"options": {}, "done": ["clicks", "report"]}))
    control.updateJobFile(job, status="stopped")
    record = next(r for r in background.scanJobs(tmp_path / "work") if r.folder == job)
    assert not record.resumable  # every run and the pipeline finished
