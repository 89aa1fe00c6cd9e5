"""The pipeline's inputs (``paseg run``, the benchmarks): clicks simulated for labelled cases without any, the
annotation kinds of a cohort, the median voxel spacing. numpy only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from PASegLib.data.dataset import CaseFiles, DatasetError, load_case
from PASegLib.jobs.stopping import StopFile

__all__ = ["cohort_kinds", "median_spacing", "simulate_missing_clicks"]


def cohort_kinds(files: List[CaseFiles]) -> List[str]:
    """The annotation kinds of the cases' markups files (``pasegKind``; ROI markups are boxes; seven points
    otherwise, and for the ``_7points`` label maps)."""
    kinds = []
    for f in files:
        if f.markups is None:
            kinds.append("seven_points")
            continue
        try:
            markups = json.loads(Path(f.markups).read_text(encoding="utf-8")).get("markups", [])
        except (OSError, ValueError, AttributeError, RecursionError):
            continue  # the reader names what is wrong when the case is prepared
        for m in markups if isinstance(markups, list) else []:
            kind = m.get("pasegKind", "box" if m.get("type") == "ROI" else "seven_points") if isinstance(m, dict) \
                else None
            if isinstance(kind, str):  # anything else: the reader names the file when the case is prepared
                kinds.append(kind)
    return kinds


def simulate_missing_clicks(files: List[CaseFiles], out: Path, seed: int, stop: Optional[StopFile] = None, *,
                             config: Any = None, dense_ids: Sequence[str] = ()) -> int:
    """Simulate the clicks (``config``: a :class:`~PASegLib.annotation.simulation.ClickSimulationConfig`, default seven
    points; a dense annotation for ``dense_ids``) of the cases in ``files`` that have a label and no annotation
    yet; returns how many were written. Each case's clicks come from its own stream (``seed`` and the case id,
    :func:`~PASegLib.annotation.simulation.case_rng`) unless ``config.legacy_shared_stream``."""
    from PASegLib.annotation.markups import write_markups
    from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks
    from PASegLib.annotation.validation import validate_case

    config = config or ClickSimulationConfig()
    dense = ClickSimulationConfig(kind="dense")
    n = 0
    for f in files:
        if f.has_annotation or f.label is None or (out / f"{f.case_id}.mrk.json").is_file():
            continue
        if stop is not None:
            stop.check()
        case = load_case(f, load_annotation=False)
        try:
            annotation = simulate_clicks(case.label.array, case.image.geometry, seed=seed,
                                         config=dense if f.case_id in set(dense_ids) else config,
                                         case_id=f.case_id)
        except ValueError as exc:
            raise DatasetError(f"{f.label}: {exc}") from None
        validate_case(annotation, case.image.geometry)
        write_markups(out / f"{f.case_id}.mrk.json", annotation)
        n += 1
    return n


def median_spacing(files: List[CaseFiles]) -> List[float]:
    """Median voxel spacing (mm) of the images, from their headers (a 2D/4D or unreadable image is named)."""
    from PASegLib.image.io import read_geometry

    spacings = [read_geometry(f.image, role="image").spacing for f in files]
    return [float(s) for s in np.median(np.asarray(spacings), axis=0)]
