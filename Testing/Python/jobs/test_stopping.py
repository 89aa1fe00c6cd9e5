"""The stop file: only a file older than the command's process is stale; one written after the start is kept.

The end-to-end faults (``paseg train``/``predict``/``run`` with a STOP written 0.3 s after they start) are in
``Testing/Python/integration/test_faults.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from PASegLib.jobs.stopping import (
    LAUNCHER_PID_ENV,
    STALE_MARGIN_S,
    StopFile,
    StopRequested,
    command_started_at,
    process_started_at,
)


def test_a_stop_file_older_than_the_command_is_stale_and_removed(tmp_path):
    stop = StopFile(tmp_path / "STOP")
    assert not stop.clear_stale()  # none there
    stop.path.touch()
    old = command_started_at() - STALE_MARGIN_S - 10
    os.utime(stop.path, (old, old))
    assert stop.clear_stale() and not stop.path.exists()


def test_a_stop_file_written_after_the_command_started_is_kept_and_honoured(tmp_path):
    stop = StopFile(tmp_path / "STOP")
    stop.path.touch()  # e.g. Stop pressed right after Start, before the command looked
    assert not stop.clear_stale() and stop.path.exists()
    with pytest.raises(StopRequested, match="STOP appeared"):
        stop.check()
    # with an explicit start: one second before it counts as written after it (coarse file-system times) …
    started = time.time()
    os.utime(stop.path, (started - 1, started - 1))
    assert not stop.clear_stale(started_at=started) and stop.path.exists()
    # … more than STALE_MARGIN_S before it does not
    os.utime(stop.path, (started - STALE_MARGIN_S - 1,) * 2)
    assert stop.clear_stale(started_at=started) and not stop.path.exists()


def test_a_stop_folder_is_never_removed_as_stale(tmp_path):
    stop = StopFile(tmp_path / "STOP")
    stop.path.mkdir()
    os.utime(stop.path, (0, 0))
    assert not stop.clear_stale() and stop.requested()


def test_this_process_started_before_now_and_after_its_parent():
    started = process_started_at()
    if started is None:
        pytest.skip("this system does not report process start times")
    assert started <= time.time() and command_started_at() <= started + 0.05  # 10 ms resolution on Linux
    parent = process_started_at(os.getppid())
    assert parent is None or parent <= started + 0.05  # 10 ms resolution on Linux


def test_a_child_reports_its_own_start_within_a_fraction_of_a_second():
    if process_started_at() is None:
        pytest.skip("this system does not report process start times")
    before = time.time()
    code = "from PASegLib.jobs.stopping import command_started_at; print(command_started_at())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    started = float(done.stdout)
    assert before - 0.05 <= started <= before + 2.0, (before, started)  # the fork, not the import (~0.1 s later)


def test_the_launchers_start_counts_for_the_processes_it_started(monkeypatch):
    if process_started_at() is None:
        pytest.skip("this system does not report process start times")
    parent = process_started_at(os.getppid())
    monkeypatch.setenv(LAUNCHER_PID_ENV, str(os.getppid()))
    assert command_started_at() == pytest.approx(min(parent, process_started_at()), abs=0.05)
    monkeypatch.setenv(LAUNCHER_PID_ENV, "not a pid")
    assert command_started_at() == pytest.approx(process_started_at(), abs=0.05)
