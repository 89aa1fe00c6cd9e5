"""``paseg devices``: the GPU inventory the Slicer module asks of a child process."""

from __future__ import annotations

import json
import sys

from conftest import progress_events

from PASegLib.cli.main import main


def test_devices_reports_what_torch_sees(capsys):
    import torch

    assert main(["devices", "--json"]) == 0
    out = capsys.readouterr().out
    events = [e for e in progress_events(out) if e["event"] == "devices"]
    assert len(events) == 1
    assert events[0]["torch"] == torch.__version__ and "error" not in events[0]
    assert len(events[0]["cuda"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert json.loads(out.strip().splitlines()[-1])["torch"] == torch.__version__


def test_devices_without_torch_says_so_and_exits_zero(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "PASegLib.training.runtime", None)  # the import fails as without torch
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    (event,) = [e for e in progress_events(out) if e["event"] == "devices"]
    assert event["torch"] is None and event["cuda"] == [] and "Error" in event["error"]
    assert "torch cannot be loaded" in out
