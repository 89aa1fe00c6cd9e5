"""Atomic writes on Windows: ``os.replace`` refused while another process reads the destination (review finding 5).

Windows refuses to replace a file that another process has open (the GUI reading ``status.json``, an antivirus
scan) with ``PermissionError``; :func:`~PASegLib.utils.atomic.atomic_path` retries for about a second there. The
refusal is injected (``os.replace`` raising), with the module's Windows switch on, so it runs on every system.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from PASegLib.utils import atomic


def _refusing(monkeypatch, times: int):
    """``os.replace`` refused ``times`` times (a reader holds the file), then done; returns the calls."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(str(dst))
        if len(calls) <= times:
            raise PermissionError(13, "Access is denied", str(dst))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    return calls


def test_a_replace_refused_while_a_reader_has_the_file_open_is_retried_on_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_RETRY_REPLACE", True, raising=False)  # what os.name == "nt" sets
    dest = tmp_path / "status.json"
    dest.write_text('{"status": "running"}')
    calls = _refusing(monkeypatch, 3)
    atomic.atomic_write_json(dest, {"status": "done"})
    assert json.loads(dest.read_text()) == {"status": "done"} and len(calls) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left


def test_a_replace_refused_for_good_fails_after_the_retries_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_RETRY_REPLACE", True, raising=False)
    monkeypatch.setattr(atomic, "_RETRY_REPLACE_S", 0.3, raising=False)  # 1 s in use; shorter here
    dest = tmp_path / "status.json"
    dest.write_text('{"status": "running"}')
    calls = _refusing(monkeypatch, 10**6)
    started = time.monotonic()
    with pytest.raises(PermissionError) as error:
        atomic.atomic_write_json(dest, {"status": "done"})
    assert 0.3 <= time.monotonic() - started < 2 and len(calls) > 2 and error.value.filename == str(dest)
    assert json.loads(dest.read_text()) == {"status": "running"} and len(list(tmp_path.iterdir())) == 1


def test_elsewhere_a_refused_replace_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_RETRY_REPLACE", False, raising=False)  # POSIX: a refusal is no passing lock
    calls = _refusing(monkeypatch, 1)
    with pytest.raises(PermissionError):
        atomic.atomic_write_text(tmp_path / "a.txt", "x")
    assert len(calls) == 1
