"""Faults during training and prediction (run folders, checkpoints, resume).

STOP at an epoch boundary (bit-identical resume), a trainer killed during its first checkpoint write or during
preparation (the same command then works, its temporary files are removed and its lock is taken over), two
commands on one folder (the second refused), a damaged prepared-data cache entry (rebuilt), disk full while
saving a checkpoint (simulated in-process; on a real small tmpfs where the machine allows mounting one),
tampered checkpoints, stale temporary files. The pipeline's faults (``paseg run``: STOP in its steps, a failed
start, a damaged ``pipeline.json``) are in ``test_scm_pipeline.py``.

Tiny volumes and runs; in-process calls except where the process boundary is the point (kill -9, a second
process holding a lock, a real file system filling up).
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_error, progress_events

from PASegLib.cli.main import main
from PASegLib.data.prepare import prepare_cases
from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.stopping import EXIT_STOPPED, STOP_FILE
from PASegLib.training import checkpoint as checkpoint_module
from PASegLib.training.checkpoint import load_checkpoint
from PASegLib.training.config import TrainConfig
from PASegLib.training.launch import train_from_dataset

ROOT = Path(__file__).resolve().parents[3]
#: the lock file of a folder in use (PASegLib.jobs.lock.LOCK_FILE; spelled out so that every test here runs,
#: and fails for its own reason, on a PASegLib without locks)
LOCK_FILE = ".paseg-lock"
TINY = dict(patch_size=(32, 32, 16), crf_downsample_to=None, validate_every=1, checkpoint_every=1,
            deterministic=True, num_threads=1, network="unet3d")
CONFIG = TrainConfig(epochs=2, iterations_per_epoch=2, **TINY)
#: a config file for CLI runs: one iteration
CLI_CONFIG = {**TINY, "patch_size": [32, 32, 16], "epochs": 1, "iterations_per_epoch": 1}

#: ``python LAUNCHER …`` = ``python -m PASegLib …`` with a fault: PASEG_TEST_FAULT=kill_in_checkpoint (kill -9
#: while the first checkpoint is being written) or slow_prepare (1 s before each case is prepared)
LAUNCHER = r"""
import os, signal, sys, time
fault = os.environ.get("PASEG_TEST_FAULT", "")
if fault == "kill_in_checkpoint":
    import torch
    def dying_save(obj, f, *args, **kwargs):
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 a partial checkpoint")
            f.flush()
        else:
            open(f, "wb").write(b"PK\x03\x04 a partial checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
elif fault == "slow_prepare":
    import PASegLib.data.prepared as data
    original = data.prepare_case
    def slow(*args, **kwargs):
        time.sleep(1.0)
        return original(*args, **kwargs)
    data.prepare_case = slow
from PASegLib.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _events(text: str):
    return progress_events(text)


def _error(captured, command: str = "train") -> str:
    return cli_error(captured, command)


class _StopOn(io.StringIO):
    """A progress stream that creates ``path`` when it sees the ``n``-th event ``kind`` matching ``match``."""

    def __init__(self, path: Path, kind: str, n: int = 1, **match):
        super().__init__()
        self.path, self.kind, self.n, self.match, self.seen = path, kind, n, match, 0

    def write(self, text):
        event = parse_progress_line(text)
        if event is not None and event["event"] == self.kind and all(event.get(k) == v for k, v in self.match.items()):
            self.seen += 1
            if self.seen == self.n:
                self.path.touch()
        return super().write(text)


def _weights(path: Path, role: str = "primary"):
    return load_checkpoint(path)["networks"][role]["state_dict"]


@pytest.fixture(scope="module")
def full_run(tiny_dataset, tmp_path_factory):
    """An uninterrupted run of :data:`CONFIG` and its progress events."""
    run = tmp_path_factory.mktemp("faults") / "full"
    stream = io.StringIO()
    assert train_from_dataset(tiny_dataset, run, CONFIG, stream=stream) == 0
    return run, _events(stream.getvalue())


def _child(args, fault: str, tmp_path: Path) -> subprocess.Popen:
    launcher = tmp_path / "faulty_paseg.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    env = {**os.environ, "PASEG_TEST_FAULT": fault,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, str(launcher), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)


def _train_args(dataset: Path, run: Path, tmp_path: Path, *extra: str):
    config = tmp_path / "cli_config.json"
    config.write_text(json.dumps(CLI_CONFIG))
    return ["train", str(dataset), "--out", str(run), "--quiet", "--config", str(config), *extra]


# -- resume exactness ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_stop_at_an_epoch_boundary_resumes_bit_identical(tiny_dataset, full_run, tmp_path):
    full, want = full_run
    cut = tmp_path / "cut"
    stream = _StopOn(cut / STOP_FILE, "checkpoint", epoch=1)  # after epoch 1's checkpoint, before epoch 2's order
    assert train_from_dataset(tiny_dataset, cut, CONFIG, stream=stream) == EXIT_STOPPED
    events = _events(stream.getvalue())
    assert events[-1]["event"] == "stopped" and events[-1]["phase"] == "training" and events[-1]["iteration"] == 2
    saved = load_checkpoint(cut / "checkpoints" / "last.pt")["trainer"]
    assert (saved["epoch"], saved["position"], saved["global_step"]) == (1, 0, 2)
    resumed = io.StringIO()
    assert train_from_dataset(tiny_dataset, cut, None, resume=True, stream=resumed) == 0
    keep, strip = ("iteration", "validation"), ("elapsed_s", "eta_s", "data_wait")
    got = [{k: v for k, v in e.items() if k not in strip} for e in events + _events(resumed.getvalue())
           if e["event"] in keep]
    assert got == [{k: v for k, v in e.items() if k not in strip} for e in want if e["event"] in keep]
    for name in ("last", "best"):
        a, b = _weights(full / "checkpoints" / f"{name}.pt"), _weights(cut / "checkpoints" / f"{name}.pt")
        assert all(torch.equal(v, b[k]) for k, v in a.items()), name


# -- tampered checkpoints ------------------------------------------------------------------------------------------
TAMPERED = {
    "no trainer.position": (lambda d: d["trainer"].pop("position"), "missing trainer.position"),
    "no rng": (lambda d: d.pop("rng"), "missing rng"),
    "no optimizer": (lambda d: d["optimizers"].pop("primary"), "missing optimizers.primary"),
    "optimizer state emptied": (lambda d: d["optimizers"].__setitem__("primary", {}), "optimizers.primary"),
    "position 999": (lambda d: d["trainer"].__setitem__("position", 999), r"trainer.position is 999"),
    "epoch 10**6": (lambda d: d["trainer"].__setitem__("epoch", 10**6), r"trainer.epoch is 1000000"),
    "global_step off": (lambda d: d["trainer"].__setitem__("global_step", 7), "trainer.global_step is 7"),
    "order out of range": (lambda d: d["trainer"].__setitem__("order", [0, 99]), "trainer.order"),
    "history not JSON": (lambda d: d["trainer"].__setitem__("history", "[{"), "trainer.history"),
    "numpy rng garbage": (lambda d: d["rng"].__setitem__("numpy", {"x": 1}), "rng does not load"),
    "format_version text": (lambda d: d.__setitem__("format_version", "x"), "format_version must be"),
}


@pytest.mark.slow
def test_tampered_checkpoints_are_refused_naming_the_file_and_field(tiny_dataset, full_run, tmp_path, capsys):
    full, _ = full_run
    original = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    original["trainer"]["epoch"], original["trainer"]["position"], original["trainer"]["global_step"] = 1, 1, 3
    original["config"]["epochs"] = 2
    run = tmp_path / "run"
    shutil.copytree(full, run, ignore=shutil.ignore_patterns("model.json", "checkpoints"))
    (run / "checkpoints").mkdir()
    for name, (change, what) in TAMPERED.items():
        data = copy.deepcopy(original)
        change(data)
        torch.save(data, run / "checkpoints" / "last.pt")
        assert main(["train", str(tiny_dataset), "--out", str(run), "--resume", "--quiet"]) == 1, name
        message = _error(capsys.readouterr())
        assert str(run / "checkpoints" / "last.pt") in message and re.search(what, message), (name, message)
    # the untampered state resumes (position 1 of epoch 2)
    torch.save(original, run / "checkpoints" / "last.pt")
    assert main(["train", str(tiny_dataset), "--out", str(run), "--resume", "--quiet"]) == 0
    capsys.readouterr()


# -- crashes and kills ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="kill -9")
def test_killed_during_the_first_checkpoint_write_the_same_command_works(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = _train_args(tiny_dataset, run, tmp_path)
    child = _child(args, "kill_in_checkpoint", tmp_path)
    out, err = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, err
    assert any(e["event"] == "iteration" for e in _events(out))
    temp = [p.name for p in (run / "checkpoints").iterdir()]
    assert len(temp) == 1 and temp[0].startswith(".last.pt.") and ".tmp" in temp[0]  # what kill -9 leaves
    assert not (run / "checkpoints" / "last.pt").exists()
    assert main(args) == 0  # the same command (its lock is stale: the process that held it was killed)
    err = capsys.readouterr().err
    assert "taking the lock over" in err and "ended before its first checkpoint" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert (run / "model.json").is_file() and not (run / LOCK_FILE).exists()
    # temporary files of killed writers are removed when a run resumes too
    stale = [run / "checkpoints" / f".last.pt.{child.pid}-abcd1234.tmp.pt", run / ".history.json.k2j4h5g6.tmp.json"]
    for path in stale:
        path.write_bytes(b"partial")
    assert main(args + ["--resume", "--epochs", "2"]) == 0
    assert not any(path.exists() for path in stale)
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="kill -9")
def test_two_trainers_on_one_folder_and_a_stale_lock(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = _train_args(tiny_dataset, run, tmp_path)
    child = _child(args, "slow_prepare", tmp_path)
    try:
        for line in child.stdout:  # the child holds the folder: it is preparing the data
            event = parse_progress_line(line)
            if event is not None and event["event"] == "prepare":
                break
        else:
            pytest.fail(child.stderr.read())
        for extra in ([], ["--resume"]):  # a second trainer, a second --resume
            assert main(args + extra) == 1
            message = _error(capsys.readouterr())
            assert f"{run} is in use by process {child.pid} (paseg train" in message, message
        assert child.poll() is None
    finally:
        child.kill()  # kill -9 during preparation: a stale lock, config.json, no checkpoint
        child.communicate(timeout=60)
    assert (run / "config.json").is_file() and not (run / "checkpoints").exists()
    assert main(args) == 0  # the same command takes the stale lock over and trains
    assert f"locked by process {child.pid}" in capsys.readouterr().err
    assert (run / "model.json").is_file() and not (run / LOCK_FILE).exists()


def test_folder_lock_fallback_without_os_locks(tmp_path, monkeypatch):
    import PASegLib.jobs.lock as lock_module
    from PASegLib.jobs.lock import FolderLock, FolderLockedError

    def no_locks(fd):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module, "_os_lock", no_locks)
    folder = tmp_path / "f"
    with FolderLock(folder, purpose="paseg train"):
        with pytest.raises(FolderLockedError, match=f"in use by process {os.getpid()}"):
            FolderLock(folder).acquire()
    assert not (folder / LOCK_FILE).exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    for holder in ({"pid": int(gone.stdout), "host": socket.gethostname()},  # its process ended
                   {"pid": os.getpid(), "host": socket.gethostname(), "started": "another boot:1"}):  # pid reused
        (folder / LOCK_FILE).write_text(json.dumps(holder))
        lock = FolderLock(folder)
        assert "ended without releasing it" in lock.acquire(quiet=True)
        lock.release()


# -- disk full -----------------------------------------------------------------------------------------------------
class _FullDisk(io.FileIO):
    """A file that takes 64 KiB, then fails like a full disk."""

    def write(self, data):
        if self.tell() + len(data) > 65536:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.slow
def test_disk_full_while_saving_a_checkpoint(tiny_dataset, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    args = _train_args(tiny_dataset, run, tmp_path)
    monkeypatch.setattr(checkpoint_module, "open", lambda path, mode="r": _FullDisk(path, "wb"), raising=False)
    assert main(args) == 1
    message = _error(capsys.readouterr())
    assert message.startswith(f"no space left on device while writing {run / 'checkpoints' / 'last.pt'}"), message
    assert list((run / "checkpoints").iterdir()) == [] and not (run / LOCK_FILE).exists()
    monkeypatch.undo()  # space freed: the same command trains
    assert main(args) == 0
    capsys.readouterr()


def _mountable(folder: Path) -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{folder}'"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
def test_disk_full_on_a_real_small_file_system(tiny_dataset, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if not _mountable(small):
        pytest.skip("no small file system can be mounted here (needs Linux user namespaces: unshare -rm)")
    run = small / "run"
    args = [sys.executable, "-m", "PASegLib"] + _train_args(tiny_dataset, run, tmp_path, "--cache-dir",
                                                             str(tmp_path / "cache"))
    script = (f"mount -t tmpfs -o size=2m tmpfs '{small}' && {{ {' '.join(map(repr, args))}; rc=$?; "
              f"ls -A '{run}/checkpoints'; ls -A '{run}'; exit $rc; }}")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 1, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith("paseg train: error: ")]
    assert lines == [f"paseg train: error: no space left on device while writing {run / 'checkpoints' / 'last.pt'}; "
                     f"free some space and run the command again"], done.stderr
    listing = done.stdout.split("PASEG")[-1].splitlines()[1:]  # checkpoints/ (empty), then the run folder
    assert listing == ["checkpoints", "config.json", "split.json"], done.stdout  # no temporary file, no lock


# -- damaged cache, stale temporary files ------------------------------------------------------------------------
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(tiny_dataset, tmp_path, capsys):
    from PASegLib.data.dataset import list_cases

    files = list_cases(tiny_dataset)[:2]
    config, cache = TrainConfig(**TINY), tmp_path / "cache"
    first = prepare_cases(files, config, cache_dir=cache)
    entries = sorted(cache.glob("*.npz"))
    entries[0].write_bytes(entries[0].read_bytes()[:300])  # truncated: not a zip file any more
    seen = []
    again = prepare_cases(files, config, cache_dir=cache, on_case=lambda i, n, c, cached: seen.append(cached))
    assert seen == [False, True]
    assert f"warning: {entries[0]}: damaged prepared-data cache entry" in capsys.readouterr().err
    assert (again[0].image == first[0].image).all()
    seen.clear()
    prepare_cases(files, config, cache_dir=cache, on_case=lambda i, n, c, cached: seen.append(cached))
    assert seen == [True, True]  # the rebuilt entry is whole again


def test_stale_temporary_files_are_removed(tmp_path):
    from PASegLib.utils.atomic import remove_stale_temp_files

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    shared = tmp_path / "cache"
    shared.mkdir()
    dead = shared / f".c-1.npz.{pid}-abcd1234.tmp.npz"
    alive = shared / f".c-2.npz.{os.getpid()}-abcd1234.tmp.npz"
    for path in (dead, alive, shared / "c-3.npz"):
        path.write_bytes(b"x")
    assert remove_stale_temp_files(shared) == [dead]  # a shared folder: only the dead writer's
    owned = tmp_path / "run"
    (owned / ".paseg-staging-x1").mkdir(parents=True)
    (owned / ".last.pt.abcd1234.tmp.pt").write_bytes(b"x")  # an older PASeg's name (no pid)
    (owned / "last.pt").write_bytes(b"x")
    (owned / LOCK_FILE).write_bytes(b"")
    remove_stale_temp_files(owned, owned=True)
    assert sorted(p.name for p in owned.iterdir()) == [LOCK_FILE, "last.pt"]


@pytest.mark.slow
def test_predict_cleans_its_folder_and_refuses_a_second_command(tiny_dataset, full_run, tmp_path, capsys):
    from PASegLib.jobs.lock import FolderLock

    full, _ = full_run
    out = tmp_path / "pred"
    (out / ".paseg-staging-abc123").mkdir(parents=True)  # what a killed predict leaves
    (out / ".paseg-staging-abc123" / "synth_000_pred.nii.gz").write_bytes(b"x")
    image = str(tiny_dataset / "synth_000_image.nii.gz")
    with FolderLock(out, purpose="paseg predict"):
        assert main(["predict", str(full), image, "--out", str(out), "--quiet", "--device", "cpu"]) == 1
        assert f"{out} is in use by process {os.getpid()}" in _error(capsys.readouterr(), "predict")
    assert main(["predict", str(full), image, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["synth_000_pred.nii.gz", "synth_000_prob.nii.gz"]
    capsys.readouterr()


# -- a STOP right after the start; checkpoint paths that are not files ----------------------------------------------
def _stop_soon_after_start(args, stop: Path, tmp_path: Path, *, delay_s: float = 0.3):
    """Run ``python -m PASegLib ARGS`` and create ``stop`` ``delay_s`` after the process started (while Python
    still imports torch, before the command looked for a stale stop file); returns (exit code, events, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-m", "PASegLib", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    time.sleep(delay_s)
    stop.parent.mkdir(parents=True, exist_ok=True)
    stop.touch()
    out, err = child.communicate(timeout=300)
    return child.returncode, _events(out), err


def test_a_stop_written_right_after_paseg_train_starts_is_honoured(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    code, events, err = _stop_soon_after_start(_train_args(tiny_dataset, run, tmp_path), run / STOP_FILE, tmp_path)
    assert code == EXIT_STOPPED, err
    assert events[-1]["event"] == "stopped" and events[-1]["phase"] == "preparing", events
    assert not any(e["event"] == "iteration" for e in events)
    assert not (run / STOP_FILE).exists() and not (run / "checkpoints").exists()


@pytest.mark.slow
def test_a_stop_written_right_after_paseg_predict_and_paseg_run_start_is_honoured(tiny_dataset, full_run, tmp_path):
    full, _ = full_run
    out = tmp_path / "pred"
    args = ["predict", str(full), str(tiny_dataset), "--out", str(out), "--quiet", "--device", "cpu"]
    code, events, err = _stop_soon_after_start(args, out / STOP_FILE, tmp_path)
    assert code == EXIT_STOPPED, err
    assert events[-1]["event"] == "stopped" and not any(e["event"] == "case" for e in events), events
    assert not list(out.glob("*.nii.gz")) and not (out / STOP_FILE).exists()
    pipe = tmp_path / "pipe"
    args = ["run", str(tiny_dataset), "--out", str(pipe), "--quiet", "--device", "cpu",
            *(f"--set={k}={json.dumps(v)}" for k, v in CLI_CONFIG.items())]
    code, events, err = _stop_soon_after_start(args, pipe / STOP_FILE, tmp_path)
    assert code == EXIT_STOPPED, err
    assert events[-1]["event"] == "stopped" and not any(e["event"] == "iteration" for e in events), events
    assert not (pipe / STOP_FILE).exists()


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "same command"])
@pytest.mark.parametrize("what", ["folder", "broken link"])
def test_a_last_pt_that_is_not_a_file_is_refused_naming_it(tiny_dataset, tmp_path, capsys, what, resume):
    if what == "broken link" and os.name == "nt":
        pytest.skip("symbolic links need privileges on Windows")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    CONFIG.save(run / "config.json")  # a run whose checkpoints/last.pt is not a file
    last = run / "checkpoints" / "last.pt"
    if what == "folder":
        last.mkdir()
        (last / "data.pkl").write_bytes(b"x")
    else:
        last.symlink_to(tmp_path / "gone.pt")
    before = sorted((str(p.relative_to(run)), p.lstat().st_mtime_ns) for p in run.rglob("*"))
    args = ["train", str(tiny_dataset), "--out", str(run), "--quiet"] + (["--resume"] if resume else [])
    assert main(args) == 1
    message = _error(capsys.readouterr())
    assert message.startswith(f"{last} is a {what}"), message
    assert "not a checkpoint file" in message
    assert sorted((str(p.relative_to(run)), p.lstat().st_mtime_ns) for p in run.rglob("*")) == before  # unchanged
