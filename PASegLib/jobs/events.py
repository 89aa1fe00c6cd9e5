"""Machine-readable progress lines: ``PASEG {json}`` on stdout, one per event.

The trainer and the predictor print them; the Slicer module and the terminal progress bar parse them with
:func:`parse_progress_line`. Events (``"event"`` key) and their fields:

* ``start``: ``total_iterations``, ``epochs``, ``run_dir`` (trainer); ``total`` (predictor).
* ``phase``: ``phase`` (``"preparing"``, ``"validating"``), ``total`` (cases), ``epoch`` (validation) — a phase
  starts.
* ``prepare``: ``index``, ``total``, ``case``, ``cached`` — data preparation (seed expansion).
* ``validation_case``: ``epoch``, ``index``, ``total``, ``case`` — one validation case done.
* ``iteration``: ``epoch`` (1-based), ``iteration`` (1-based, global), ``total_iterations``, ``losses``
  (name → float), ``lr``, ``eta_s``, ``data_wait`` (share of the iteration spent waiting for its batch: cut in
  a background thread while the previous batch trained; a session's first batch is read and cut then). The
  trainer reads the losses from the device once per logging interval, so on a GPU the events of an interval
  (10 iterations) come together.
* ``validation``: ``epoch``, ``score`` (label-free), optional ``dice`` (only when labels exist), ``best``.
* ``checkpoint``: ``path``, ``epoch``.
* ``done``: ``best_score``, ``best_epoch``, ``run_dir``.
* ``stopped`` (the stop file ``RUN_DIR/STOP`` or ``OUT/STOP`` appeared; exit code 3): ``phase``, ``message``;
  training: ``epoch``, ``iteration``, ``checkpoint`` (``null`` when nothing was trained yet); prediction:
  ``done``, ``total``, ``out``.
* ``error``: ``message`` (names the input and what is wrong), ``command`` (the ``paseg`` subcommand),
  ``internal`` (``true`` for a bug in PASeg rather than bad input), ``log`` (internal errors: the traceback
  file). Every failing ``paseg`` command ends with this event (see :mod:`PASegLib.cli.main`).
* ``case``: ``index`` (1-based), ``total``, ``case``, ``pred`` (predictor).

numpy/stdlib only.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Dict, Mapping, Optional, TextIO

__all__ = ["PREFIX", "emit", "format_progress_line", "json_safe", "parse_progress_line"]

PREFIX = "PASEG "


def json_safe(value: Any) -> Any:
    """A strict-JSON-ready copy: NaN/inf become ``None``, numpy/torch scalars plain numbers, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if not isinstance(value, (str, bytes)) and hasattr(value, "item") and callable(value.item):
        return json_safe(value.item())  # numpy / torch scalars
    return value


def format_progress_line(event: str, **fields: Any) -> str:
    """``PASEG {"event": event, **fields}`` as one line of strict JSON (NaN/inf become ``null``)."""
    return PREFIX + json.dumps({"event": event, **json_safe(fields)}, allow_nan=False)


def emit(event: str, *, stream: Optional[TextIO] = None, **fields: Any) -> Dict[str, Any]:
    """Print one progress line (default ``sys.stdout``, flushed) and return the event dict."""
    line = format_progress_line(event, **fields)
    out = sys.stdout if stream is None else stream
    out.write(line + "\n")
    out.flush()
    return json.loads(line[len(PREFIX):])


def parse_progress_line(line: str) -> Optional[Dict[str, Any]]:
    """The event dict of a ``PASEG {json}`` line, or ``None`` for any other line (logs, damaged lines)."""
    text = line.strip()
    if not text.startswith(PREFIX):
        return None
    try:
        event = json.loads(text[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None
