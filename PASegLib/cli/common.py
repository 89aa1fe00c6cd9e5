"""Helpers shared by the ``paseg`` subcommands: all-or-nothing output folders, progress bars, JSON output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, TypeVar

from PASegLib.jobs.events import json_safe, parse_progress_line

T = TypeVar("T")

#: Exit codes of every ``paseg`` command.


@contextlib.contextmanager
def staged_output(out_dir: os.PathLike) -> Iterator[Path]:
    """Yield a staging folder whose files move into ``out_dir`` only when the block succeeds.

    A failing command leaves ``out_dir`` as it was (a folder it created is removed again), so bad input
    never produces partial output. Each file is moved with ``os.replace`` (atomic per file).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".paseg-staging-", dir=out))
    try:
        yield stage
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                dest = out / path.relative_to(stage)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()


def progress(items: Iterable[T], *, desc: str, total: Optional[int] = None, quiet: bool = False) -> Iterable[T]:
    """A tqdm progress bar on stderr over ``items`` (plain iteration when ``quiet``)."""
    if quiet:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, file=sys.stderr, unit="case", dynamic_ncols=True)


def print_json(obj: Any) -> None:
    """Print ``obj`` as one line of strict JSON on stdout (the last line a ``--json`` command prints)."""
    sys.stdout.write(json.dumps(json_safe(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def mean_of(rows: Iterable[dict], key: str) -> Optional[float]:
    """Mean of the finite values of ``key`` over ``rows`` (``None`` when there are none)."""
    values = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
    return sum(values) / len(values) if values else None


class ProgressBarStream:
    """A text stream for progress events: passes every line to stdout and, unless ``quiet``, drives a tqdm
    bar on stderr from the ``PASEG`` lines (pipeline steps, training iterations, validation scores)."""

    def __init__(self, *, quiet: bool = False, desc: str = "train") -> None:
        self.quiet, self.desc, self.bar, self.buffer = quiet, desc, None, ""

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            event = parse_progress_line(line)
            if event is not None and not self.quiet:
                self._update(event)

    def flush(self) -> None:
        sys.stdout.flush()

    def _update(self, event: dict) -> None:
        kind = event["event"]
        if kind == "step":
            self.desc = f"[{event['index']}/{event['total']}] {event['step']}"
            print(self.desc, file=sys.stderr)
        elif kind == "start" and "total_iterations" in event:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=event["total_iterations"], initial=event.get("iteration", 0), file=sys.stderr,
                            desc=self.desc, unit="it", dynamic_ncols=True)
        elif kind == "iteration" and self.bar is not None:
            self.bar.update(event["iteration"] - self.bar.n)
            loss = (event.get("losses") or {}).get("loss")
            self.bar.set_postfix(epoch=event["epoch"], loss="-" if loss is None else f"{loss:.4f}",
                                 data=f"{event.get('data_wait') or 0:.0%}", refresh=False)
        elif kind == "validation" and self.bar is not None:
            extra = (f", Dice {event['dice']:.3f}, precision {event['precision']:.3f}, recall {event['recall']:.3f}"
                     f" (labels: information only)" if event.get("dice") is not None else "")
            self.bar.write(f"epoch {event['epoch']}: label-free score {event['score']:.4f}{extra}"
                           + (" (best)" if event.get("best") else ""))
        elif kind in ("done", "stopped"):
            self.close()
            if kind == "stopped":
                why = event.get("message") or "checkpoint saved; continue with --resume"
                print(f"stopped: {why}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
