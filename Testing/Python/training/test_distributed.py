"""Training on several processes (torch.distributed, gloo on the CPU): a 2-process run trains what one process
trains with the same global batch and seed, STOP is honoured by every rank and a stopped run resumes exactly,
SCM trains both networks alike, the launcher reports a failing rank once, and the Slicer job's "all GPUs"."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from PASegLib.jobs.events import parse_progress_line
from PASegLib.training.checkpoint import load_checkpoint
from PASegLib.training.config import TrainConfig
from PASegLib.training.engine import EXIT_STOPPED, STOP_FILE
from PASegLib.training.launch import train_from_dataset

#: tiny, deterministic, one thread per process; global batch 2 = one patch per rank with 2 processes
SETTINGS = dict(patch_size=(32, 32, 16), crf_downsample_to=None, validate_every=1, checkpoint_every=1,
                deterministic=True, num_threads=1, epochs=2, iterations_per_epoch=3, batch_size=2,
                validation_fraction=0.5)


def _events(text: str):
    return [e for e in (parse_progress_line(line) for line in text.splitlines()) if e is not None]


def _train_cmd(dataset: Path, out: Path, *extra: str):
    return [sys.executable, "-m", "PASegLib", "train", str(dataset), "--out", str(out), "--device", "cpu",
            "--quiet", *extra]


def _weights(run: Path, role: str = "primary", name: str = "last"):
    return load_checkpoint(run / "checkpoints" / f"{name}.pt")["networks"][role]["state_dict"]


def _losses(run: Path):
    history = json.loads(load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]["history"])
    return [e["losses"]["loss"] for e in history if e["event"] == "iteration"]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "config.json"
    path.write_text(json.dumps(TrainConfig(**SETTINGS).to_dict()))
    return path


@pytest.fixture(scope="module")
def one_process(tiny_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    assert train_from_dataset(tiny_dataset, run, TrainConfig(device="cpu", **SETTINGS), stream=io.StringIO()) == 0
    return run


@pytest.fixture(scope="module")
def two_processes(tiny_dataset, config_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("two") / "run"
    done = subprocess.run(_train_cmd(tiny_dataset, run, "--config", str(config_file), "--nproc-per-node", "2"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return run, done


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(one_process, two_processes):
    run, done = two_processes
    events = _events(done.stdout)
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1 and kinds.count("iteration") == 6  # rank 0 only
    assert next(e for e in events if e["event"] == "start")["processes"] == 2
    assert json.loads((run / "model.json").read_text())["processes"] == 2
    assert not (run / ".paseg-lock").exists() and "Grad strides" not in done.stderr
    one, two = _weights(one_process), _weights(run)
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-4
    assert _losses(run) == pytest.approx(_losses(one_process), abs=1e-5)  # the global batch's loss
    # validation split over the ranks and gathered: the one-process scores (up to voxels at 0.5)
    scores = [[e for e in json.loads((r / "history.json").read_text())["events"] if e["event"] == "validation"]
              for r in (one_process, run)]
    assert [v["epoch"] for v in scores[1]] == [1, 2]
    for a, b in zip(*scores):
        assert b["score"] == pytest.approx(a["score"], abs=1e-3) and b["dice"] == pytest.approx(a["dice"], abs=1e-3)


@pytest.mark.slow
def test_stop_is_honoured_by_every_rank_and_the_run_resumes_exactly(tiny_dataset, config_file, two_processes,
                                                                     tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(tiny_dataset, run, "--config", str(config_file), "--nproc-per-node", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        event = parse_progress_line(line)
        if event is not None:
            seen.append(event)
            if event["event"] == "iteration" and event["iteration"] == 1:
                (run / STOP_FILE).touch()
    assert proc.wait(timeout=300) == EXIT_STOPPED, proc.stderr.read()
    kinds = [e["event"] for e in seen]
    assert kinds[-1] == "stopped" and kinds.count("stopped") == 1 and "done" not in kinds
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    assert not (run / STOP_FILE).exists() and not (run / "model.json").exists()
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]
    assert saved["global_step"] == seen[-1]["iteration"] < 6
    done = subprocess.run(_train_cmd(tiny_dataset, run, "--resume", "--nproc-per-node", "2"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = _weights(two_processes[0])
    got = _weights(run)
    assert all(torch.equal(want[k], got[k]) for k in want)  # deterministic mode: bit-identical
    assert _losses(run) == _losses(two_processes[0])


@pytest.mark.slow
def test_scm_trains_both_networks_alike_on_two_ranks(tiny_dataset, tmp_path):
    base = dict(SETTINGS, epochs=1, iterations_per_epoch=1, validation_fraction=0.0)
    runs = []
    for net in ("unet3d", "attention_unet"):
        runs.append(tmp_path / f"s1-{net}")
        config = TrainConfig(network=net, device="cpu", **base)
        assert train_from_dataset(tiny_dataset, runs[-1], config, stream=io.StringIO()) == 0
    scm = TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", refresh_every=1, lr=1e-3,
                      device="cpu", **dict(base, iterations_per_epoch=2, epochs=2))
    assert train_from_dataset(tiny_dataset, tmp_path / "one", scm, init_runs=runs, stream=io.StringIO()) == 0
    (tmp_path / "scm.json").write_text(json.dumps(scm.to_dict()))
    done = subprocess.run(_train_cmd(tiny_dataset, tmp_path / "two", "--config", str(tmp_path / "scm.json"),
                                     "--init", *map(str, runs), "--nproc-per-node", "2"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [e["event"] for e in _events(done.stdout)].count("refresh") == 2
    for role in ("primary", "auxiliary"):
        one, two = _weights(tmp_path / "one", role), _weights(tmp_path / "two", role)
        assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-4, role
    frozen = [load_checkpoint(r / "checkpoints" / "last.pt")["trainer"]["extra"]["frozen"]["primary"]
              for r in (tmp_path / "one", tmp_path / "two")]
    assert max(float((frozen[0][k] - frozen[1][k]).abs().max()) for k in frozen[0]) < 1e-4


def test_bad_process_settings_fail_before_or_once(tiny_dataset, config_file, tmp_path, capsys):
    from PASegLib.cli.main import main

    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(dict(json.loads(config_file.read_text()), batch_size=3)))
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r1"), "--config", str(odd), "--device", "cpu",
                 "--nproc-per-node", "2", "--quiet"]) == 1
    assert "batch_size 3 (the global batch) cannot be split over 2 processes" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r2"), "--nproc-per-node", "gpu"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err
        # every rank fails alike: one message, one error event, nothing left behind
        cmd = [sys.executable, "-m", "PASegLib", "train", str(tiny_dataset), "--out", str(tmp_path / "r3"),
               "--config", str(config_file), "--device", "cuda", "--nproc-per-node", "2", "--quiet"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1
        assert done.stderr.count("paseg train: error:") == 1 and "no CUDA GPU" in done.stderr, done.stderr
        assert [e["event"] for e in _events(done.stdout)] == ["error"]
    assert not any((tmp_path / n).exists() for n in ("r1", "r2", "r3"))


def test_slicer_all_gpus_device_choice():
    from PASegSlicer.jobs import commands as jobs

    device = jobs.deviceArgument("all GPUs", 3)
    assert device == jobs.ALL_GPUS
    train = jobs.trainingSteps("J", "D", mode="stage 1", networks=["unet2d5"], epochs=2, device=device, python="py")
    arguments = train[0].arguments
    at = arguments.index("--device")
    assert arguments[at:at + 5] == ["--device", "cuda", "--nproc-per-node", "gpu", "--scale-batch"]
    predict = jobs.predictionSteps("J", "RUN", "IN", device=device, python="py")[0].arguments
    assert predict[predict.index("--device") + 1] == "cuda" and "--nproc-per-node" not in predict


def test_torchrun_with_one_process_uses_the_process_group(tiny_dataset, config_file, one_process, tmp_path,
                                                          monkeypatch, capsys):
    """What ``torchrun --nproc-per-node 1 -m PASegLib train`` runs (here in this process, gloo): a process group
    of one, DistributedDataParallel and the rank protocol, training exactly the plain run."""
    import socket

    from PASegLib.cli.main import main
    from PASegLib.training import distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)
    run = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--out", str(run), "--config", str(config_file), "--device", "cpu",
                 "--quiet"]) == 0
    assert not distributed.context().active  # the group was left at the end
    start = next(e for e in _events(capsys.readouterr().out) if e["event"] == "start")
    assert start["processes"] == 1
    want, got = _weights(one_process), _weights(run)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r2"), "--nproc-per-node", "2"]) == 1
    assert "under torchrun give --nproc-per-node to torchrun" in capsys.readouterr().err


def test_gpu_suite_runs_on_the_cpu(tmp_path, monkeypatch, capsys):
    """``benchmarks/gpu_suite.py --dry-run --only …``: the quick sections small on the CPU (the CUDA tests collected
    and skipped by pytest), CUDA figures skipped with the reason, the summary copied to ``$OUT``; a second ``--only``
    keeps the first run's sections. Every section through ``gpu_check.sh``: ``integration/test_gpu_check.py``."""
    from conftest import load_benchmark

    monkeypatch.setenv("OUT", str(tmp_path / "device_out"))
    (tmp_path / "device_out").mkdir()
    suite = load_benchmark("gpu_suite")
    assert "Testing/Python/losses/test_loss_crf.py::test_cuda_matches_cpu" in suite.cuda_tests()
    common = ["--dry-run", "--out", str(tmp_path / "gpu_suite.json"), "--work", str(tmp_path / "work"), "--pack",
              str(tmp_path / "no_pack")]
    assert suite.main([*common, "--only", "cuda_tests", "amp_steps", "mcrf"]) == 0
    summary = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert json.loads((tmp_path / "device_out" / "gpu_suite.json").read_text()) == summary
    assert summary["dry_run"] and summary["mcrf"]["agrees"] and summary["environment"]["pack"] is None
    assert summary["cuda_tests"]["passed"] and "skipped" in summary["cuda_tests"]["summary"]
    assert sorted(summary["amp_steps"]["steps"]) == ["attention_unet", "unet2d5", "unet3d"]
    assert all(row["device"] == summary["device"] for row in summary["amp_steps"]["steps"].values())
    assert suite.main([*common, "--only", "sliding_window"]) == 0
    summary = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert summary["kept_from_previous"] == ["amp_steps", "cuda_tests", "mcrf"]
    for section in ("cuda_tests", "amp_steps", "mcrf", "sliding_window"):
        assert "--dry-run" in summary[section]["skipped"] and "error" not in summary[section]
    assert not {"training", "ddp", "accuracy_row"} & set(summary)
    capsys.readouterr()
