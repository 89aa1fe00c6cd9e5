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

T = TypeVar("T")

#: Exit codes of every ``paseg`` command.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


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


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(obj: Any) -> None:
    """Print ``obj`` as one line of strict JSON on stdout (the last line a ``--json`` command prints)."""
    sys.stdout.write(json.dumps(_clean(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def mean_of(rows: Iterable[dict], key: str) -> Optional[float]:
    """Mean of the finite values of ``key`` over ``rows`` (``None`` when there are none)."""
    values = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
    return sum(values) / len(values) if values else None
