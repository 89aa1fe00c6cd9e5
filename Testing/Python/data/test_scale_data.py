"""Training data at scale: parallel preparation, streaming from the cache.

Parallel preparation writes the cache serial preparation writes, reports the same progress, fails with the
serial error naming the case (the pool stopped, no worker left, no entry for the failing case) and honours
STOP; cases streamed from the cache give the patches and the losses of the in-memory path; the in-memory
case cache never holds more than its limit. Tiny synthetic datasets (``tiny_dataset``: four 48×48×16 cases,
linked under more ids where a test needs more cases).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from PASegLib.data.cache import inspect_entry, read_entry
from PASegLib.data.dataset import DatasetError, list_cases
from PASegLib.data.prepare import prepare_cases
from PASegLib.data.prepared import PreparedCase
from PASegLib.data.sampler import PatchSampler
from PASegLib.data.streaming import CachedCase, CaseStore
from PASegLib.jobs.events import parse_progress_line
from PASegLib.jobs.stopping import EXIT_STOPPED, STOP_FILE, StopFile, StopRequested
from PASegLib.training.config import TrainConfig
from PASegLib.training.launch import merge_resume_config, train_from_dataset

TINY = dict(patch_size=(32, 32, 16), crf_downsample_to=None, validate_every=1, checkpoint_every=1,
            deterministic=True, num_threads=1, network="unet3d")
ARRAYS = ("image", "partial", "valid", "label")


def _linked(source: Path, dest: Path, copies: int) -> Path:
    """``dest`` holding every case of ``source`` ``copies`` times under new ids (``<case>_c<n>``, symlinks)."""
    dest.mkdir()
    for path in sorted(source.iterdir()):
        match = re.match(r"^(synth_\d+)(.*)$", path.name)
        for n in range(copies):
            (dest / f"{match.group(1)}_c{n}{match.group(2)}").symlink_to(path)
    return dest


def _entries(cache: Path) -> dict:
    """Case id → arrays (and clicks, boxes) of every entry of ``cache``."""
    out = {}
    for path in sorted(cache.glob("*.npz")):
        case = read_entry(inspect_entry(path), path.name.rsplit("-", 1)[0])
        out[path.name] = case
    return out


def _worker_processes() -> set:
    """Live processes started by this one (directly or through the forkserver), except multiprocessing's own
    helpers that live as long as this process (the forkserver, the resource tracker)."""
    from multiprocessing import forkserver

    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    parents = {os.getpid()} | ({server} if server else set())
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid, state = re.search(r"PPid:\s+(\d+)", text), re.search(r"State:\s+(\w)", text)
        pid = int(status.parent.name)
        if ppid and int(ppid.group(1)) in parents and pid != server and state.group(1) != "Z":
            try:
                if b"resource_tracker" in (status.parent / "cmdline").read_bytes():
                    continue
            except OSError:
                continue
            found.add(pid)
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")


# -- parallel preparation ----------------------------------------------------------------------------------------
def test_parallel_preparation_writes_the_serial_cache(tiny_dataset, tmp_path):
    files = list_cases(tiny_dataset)
    config = TrainConfig(**TINY)
    reports = {}
    for workers in (1, 2):
        reports[workers] = []
        cases = prepare_cases(files, config, cache_dir=tmp_path / f"w{workers}", workers=workers,
                              on_case=lambda *a, seen=reports[workers]: seen.append(a))
        assert [c.case_id for c in cases] == [f.case_id for f in files]
    assert reports[1] == reports[2] == [(i, 4, f.case_id, False) for i, f in enumerate(files)]
    serial, parallel = _entries(tmp_path / "w1"), _entries(tmp_path / "w2")
    assert sorted(serial) == sorted(parallel) and len(serial) == 4  # same keys
    for name, a in serial.items():
        b = parallel[name]
        for key in ARRAYS:
            assert np.array_equal(getattr(a, key), getattr(b, key)) and getattr(a, key).dtype == getattr(b, key).dtype
        assert all(np.array_equal(x, y) for x, y in zip(a.clicks, b.clicks))
        assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a.boxes, b.boxes))
        assert a.geometry == b.geometry and a.source_geometry == b.source_geometry
    again = []  # a second pass reads everything from the cache
    prepare_cases(files, config, cache_dir=tmp_path / "w2", workers=2, on_case=lambda *a: again.append(a[3]))
    assert again == [True] * 4


@needs_proc
def test_a_failing_case_stops_the_pool_with_the_serial_error(tiny_dataset, tmp_path):
    data = _linked(tiny_dataset, tmp_path / "data", 3)
    (data / "synth_001_c1_image.nii.gz").unlink()
    (data / "synth_001_c1_image.nii.gz").write_bytes(b"\x1f\x8b not an image")  # the 5th case of 12
    files = list_cases(data)
    config = TrainConfig(**TINY)
    errors = {}
    for workers in (1, 2):
        with pytest.raises(Exception) as caught:
            prepare_cases(files, config, cache_dir=tmp_path / f"w{workers}", workers=workers)
        errors[workers] = caught.value
        cache = tmp_path / f"w{workers}"
        assert not list(cache.glob("synth_001_c1-*")), "no entry for the failing case"
        assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no temporary file"
        for path in cache.glob("*.npz"):
            inspect_entry(path)  # every entry is whole
    assert type(errors[2]) is type(errors[1]) and str(errors[2]) == str(errors[1])
    assert "synth_001_c1_image.nii.gz" in str(errors[1]) and isinstance(errors[1], (DatasetError, ValueError))
    assert not multiprocessing.active_children() and not _worker_processes()


def test_a_case_without_clicks_is_named_by_the_workers(tiny_dataset, tmp_path):
    data = _linked(tiny_dataset, tmp_path / "data", 1)
    (data / "synth_002_c0.mrk.json").unlink()
    files = list_cases(data)
    assert files[2].case_id == "synth_002_c0" and not files[2].has_annotation
    with pytest.raises(DatasetError, match="case 'synth_002_c0' has no clicks"):
        prepare_cases(files, TrainConfig(**TINY), cache_dir=tmp_path / "cache", workers=2)


class _StopOn(io.StringIO):
    """A progress stream that creates ``path`` at the first event ``kind`` (and remembers when)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__()
        self.path, self.kind, self.when = path, kind, None

    def write(self, text):
        event = parse_progress_line(text)
        if event is not None and event["event"] == self.kind and self.when is None:
            self.path.touch()
            self.when = time.monotonic()
        return super().write(text)


@needs_proc
def test_stop_during_parallel_preparation(tiny_dataset, tmp_path):
    data = _linked(tiny_dataset, tmp_path / "data", 4)
    run, cache = tmp_path / "run", tmp_path / "cache"
    stream = _StopOn(run / STOP_FILE, "prepare")  # after the first case is ready, 15 to go
    config = TrainConfig(epochs=1, prepare_workers=2, **TINY)
    assert train_from_dataset(data, run, config, cache_dir=cache, stream=stream) == EXIT_STOPPED
    stopped = time.monotonic() - stream.when
    events = [parse_progress_line(x) for x in stream.getvalue().splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["phase"] == "preparing"
    assert stopped < 5.0, f"the stop took {stopped:.1f} s"
    entries = list(cache.glob("*.npz"))
    assert 1 <= len(entries) < 16 and not [p for p in cache.iterdir() if p.name.startswith(".")]
    for path in entries:
        inspect_entry(path)
    assert not multiprocessing.active_children() and not _worker_processes()
    assert not (run / STOP_FILE).exists()


def test_stop_file_present_before_parallel_preparation(tiny_dataset, tmp_path):
    stop = StopFile(tmp_path / STOP_FILE)
    stop.path.touch()
    with pytest.raises(StopRequested):
        prepare_cases(list_cases(tiny_dataset), TrainConfig(**TINY), cache_dir=tmp_path / "cache", stop=stop,
                      workers=2)
    assert not list((tmp_path / "cache").glob("*.npz"))


# -- streaming ---------------------------------------------------------------------------------------------------
def test_streamed_cases_give_the_patches_of_the_in_memory_path(tiny_dataset, tmp_path):
    files = list_cases(tiny_dataset)
    config = TrainConfig(supervision="full", **TINY)
    eager = prepare_cases(files, config, cache_dir=tmp_path / "cache", workers=1)
    one_case = eager[0].image.nbytes + eager[0].partial.nbytes + eager[0].valid.nbytes + eager[0].label.nbytes
    lazy = prepare_cases(files, config.replace(cache_mb=1.5 * one_case / 2**20), cache_dir=tmp_path / "cache",
                         lazy=True)
    assert all(isinstance(c, CachedCase) for c in lazy) and all(isinstance(c, PreparedCase) for c in eager)
    for a, b in zip(eager, lazy):  # what validation reads
        assert a.case_id == b.case_id and a.geometry == b.geometry and len(a.clicks) == len(b.clicks)
        for key in ARRAYS:
            assert np.array_equal(getattr(a, key), getattr(b, key))
    in_memory, streamed = PatchSampler(eager, config), PatchSampler(lazy, config)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    order = list(np.random.default_rng(1).integers(0, 4, size=40))
    for n, index in enumerate(order):
        with streamed.timed(upcoming=order[n + 1:]):
            b = streamed.sample(index, rng_b)
        a = in_memory.sample(index, rng_a)
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
        assert 0.0 <= streamed.data_wait() <= 1.0
    assert streamed.store.loads > 4  # the cases were read again after eviction
    assert streamed.store.peak_bytes <= 1.5 * one_case


def test_the_case_cache_never_holds_more_than_its_limit(tiny_dataset, tmp_path):
    data = _linked(tiny_dataset, tmp_path / "data", 2)
    lazy = prepare_cases(list_cases(data), TrainConfig(**TINY), cache_dir=tmp_path / "cache", lazy=True)
    size = lazy[0].nbytes
    for limit in (0, size, int(2.5 * size), 3 * size):
        store = CaseStore(limit_bytes=limit)
        cases = [CachedCase(c.case_id, c.info, store) for c in lazy]
        rng = np.random.default_rng(limit)
        for _ in range(40):
            store.prefetch([cases[i] for i in rng.integers(0, 8, size=3)])
            assert np.array_equal(cases[int(rng.integers(0, 8))].image.shape, lazy[0].geometry.shape)
            assert store.held_bytes <= max(limit, size)
        store.close()
        assert store.peak_bytes <= max(limit, size), limit  # a case larger than the limit is held alone
        assert len(store.held()) == 0
    unlimited = lazy[0].store  # the default budget holds the whole tiny cohort
    for case in lazy:
        case.load()
    assert len(unlimited.held()) == 8


def test_a_cache_entry_damaged_during_the_run_is_named(tiny_dataset, tmp_path):
    lazy = prepare_cases(list_cases(tiny_dataset)[:1], TrainConfig(**TINY), cache_dir=tmp_path / "cache", lazy=True)
    path = lazy[0].info.path
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match=re.escape(str(path))):
        lazy[0].load()


@pytest.mark.slow
def test_streaming_training_gives_the_losses_of_the_in_memory_path(tiny_dataset, tmp_path):
    runs = {}
    for name, cache_mb in (("memory", None), ("streamed", 0.05)):  # 0.05 MiB: under one case, read every time
        config = TrainConfig(epochs=2, iterations_per_epoch=3, validation_fraction=0.25, cache_mb=cache_mb, **TINY)
        stream = io.StringIO()
        assert train_from_dataset(tiny_dataset, tmp_path / name, config, cache_dir=tmp_path / "cache",
                                  stream=stream) == 0
        runs[name] = [parse_progress_line(x) for x in stream.getvalue().splitlines()]
    losses = {k: [e["losses"] for e in v if e["event"] == "iteration"] for k, v in runs.items()}
    assert len(losses["memory"]) == 6 and losses["memory"] == losses["streamed"]  # bit-identical floats
    scores = {k: [e["score"] for e in v if e["event"] == "validation"] for k, v in runs.items()}
    assert scores["memory"] == scores["streamed"]
    waits = [e["data_wait"] for e in runs["streamed"] if e["event"] == "iteration"]
    assert all(0.0 <= w <= 1.0 for w in waits)
    history = json.loads((tmp_path / "streamed" / "history.json").read_text())["events"]
    assert all("data_wait" in e for e in history if e["event"] == "iteration")


# -- settings ----------------------------------------------------------------------------------------------------
def test_scale_settings_are_checked_and_resumable():
    for bad, words in ((dict(cache_mb=-1), "cache_mb"), (dict(prepare_workers=-2), "prepare_workers"),
                       (dict(prefetch_cases=1.5), "prefetch_cases"), (dict(cache_mb="big"), "cache_mb")):
        with pytest.raises(ValueError, match=words):
            TrainConfig(**bad)
    saved = TrainConfig(**TINY)
    changed = merge_resume_config(saved, saved.replace(prepare_workers=8, cache_mb=None, prefetch_cases=0),
                                  source="config.json")
    assert (changed.prepare_workers, changed.cache_mb, changed.prefetch_cases) == (8, None, 0)
    assert TrainConfig.from_dict(saved.to_dict()) == saved


def test_no_torch_at_import():
    import subprocess

    code = ("import sys, PASegLib.data.prepared, PASegLib.data.prepare, PASegLib.data.streaming; "
            "assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_train_flags_set_the_scale_settings(tmp_path):
    """``paseg train --prepare-workers N --cache-mb MB`` reach the run's settings (``paseg run`` uses ``--set``)."""
    import argparse

    from PASegLib.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_parsers(parser.add_subparsers())
    args = parser.parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--prepare-workers", "3",
                              "--cache-mb", "64"])  # fmt: skip
    config = train_cli._config(args)
    assert config.prepare_workers == 3 and config.cache_mb == 64
