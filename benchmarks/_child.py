"""Shared by the speed benchmarks: measure one configuration in a fresh child process.

A fresh process per measurement gives each its own peak memory (``ru_maxrss``), thread settings and caches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(script: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Run ``python SCRIPT --child JSON(cfg)`` with the repository on ``PYTHONPATH``.

    Returns the JSON object the child printed on its last stdout line, or ``{"error": <last stderr line>}``
    when it failed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(cfg)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines()[-1:] or ["?"])[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_summary(result: Dict[str, Any], out_json=None) -> int:
    """Print the benchmark's JSON summary as the last stdout line and also write it to ``out_json`` (a path or
    ``None``); returns the exit code 0."""
    from pathlib import Path

    if out_json:
        path = Path(out_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return 0


def child_or_skip(args: Any, child, data) -> Any:
    """The common start of a benchmark's ``main``: with ``--child JSON`` run ``child(cfg)`` and print its result;
    without the data folder ``data`` print a ``skipped`` line. Returns the exit code 0 when it did either, else
    ``None`` (the benchmark goes on)."""
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if not data.is_dir():
        print(json.dumps({"skipped": f"data not found: {data}"}))
        return 0
    return None
