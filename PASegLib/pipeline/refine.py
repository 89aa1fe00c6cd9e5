"""Refinement rounds of the Going-to-Extremes protocol (paper 004 §2.4): a trained model's predictions of
the training cases, regularised by the random walker, become the next round's labels.

:func:`refine_pseudo_labels` predicts every annotated case with a run (a click-conditioned run gets the case's
clicks), regularises the foreground probability with
:func:`~PASegLib.seeds.random_walker_labels.refine_with_random_walker` (the band around the predicted boundary is re-
decided by the random walker, on the working grid of ``RandomWalkerConfig.working_spacing_mm``; voxels outside
every object's box are background when every object has a box that holds it — extreme points, boxes, seven points)
and writes ``<out>/<case>_pseudo.nii.gz`` (uint8, 0/1, on the image's grid, atomically). A dense case keeps its
label. The next round trains with ``TrainConfig.pseudo_labels = <out>`` (the prepared-data cache keys on those
files), with the same clicks (the click channel and the point loss still use them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from PASegLib.annotation.kinds import BOXED_KINDS
from PASegLib.annotation.validation import object_box
from PASegLib.data.dataset import CaseFiles, load_case
from PASegLib.image.io import write_image
from PASegLib.utils.atomic import PathLike

__all__ = ["refine_pseudo_labels"]


def _outside_boxes(annotation: Any, geometry: Any, rw: Any) -> Optional[np.ndarray]:
    """bool ``[i, j, k]``: voxels outside every object's box, each grown by ``rw.box_shell_mm(kind)``
    (:class:`~PASegLib.seeds.random_walker.RandomWalkerConfig`: an extreme-point box by ``extreme_tolerance_mm``,
    since clicks land near the extent, and extreme-point boxes and boxes by the click error's margin) — (``None``
    when an object has no such box)."""
    from PASegLib.seeds.pseudo_labels import grown_box_mask

    if not all(o.kind in BOXED_KINDS for o in annotation.objects):
        return None
    outside = np.ones(geometry.shape, dtype=bool)
    for obj in annotation.objects:
        lo, hi = object_box(obj, geometry)
        outside &= ~grown_box_mask(geometry.shape, lo, hi, rw.box_shell_mm(obj.kind), geometry.spacing)
    return outside


def refine_pseudo_labels(run_dir: PathLike, cases: Sequence[CaseFiles], out_dir: PathLike, *,
                         random_walker: Optional[Dict[str, Any]] = None, device: str = "auto",
                         on_case: Optional[Callable[[int, int, str, Dict[str, Any]], None]] = None,
                         stop: Any = None) -> List[Dict[str, Any]]:
    """Write the refined labels ``<out_dir>/<case>_pseudo.nii.gz`` of the annotated ``cases`` from ``run_dir``.

    Args:
        run_dir: a trained stage-one run (its ``best`` weights).
        cases: the training cases (each needs an annotation; dense cases are copied from their label).
        out_dir: the folder of the next round's ``TrainConfig.pseudo_labels`` (created).
        random_walker: :class:`~PASegLib.seeds.random_walker.RandomWalkerConfig` fields.
        device: where the model runs.
        on_case: called as ``on_case(index, total, case_id, row)`` after each case.
        stop: a :class:`~PASegLib.jobs.stopping.StopFile` checked before every case.

    Returns:
        One row per case: ``case``, ``fg_voxels`` (refined), ``changed`` (share of the voxels whose label the
        random walker changed against the thresholded prediction), ``seconds``.
    """
    from PASegLib.inference.predictor import load_predictor
    from PASegLib.seeds.pseudo_labels import to_grid, working_grid
    from PASegLib.seeds.random_walker import RandomWalkerConfig
    from PASegLib.seeds.random_walker_labels import refine_with_random_walker

    rw = RandomWalkerConfig.from_dict(random_walker or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(run_dir, device=device, verbose=False)
    rows = []
    for index, files in enumerate(cases, start=1):
        if stop is not None:
            stop.check()
        start = time.perf_counter()
        case = load_case(files, load_label=True, load_annotation=True, warn=None)
        if case.annotation is None:
            raise ValueError(f"case {files.case_id!r} has no annotation to refine")
        geometry = case.image.geometry
        if any(o.kind == "dense" for o in case.annotation.objects):
            from PASegLib.data.prepared import dense_label_of

            labels = (dense_label_of(case) > 0).astype(np.uint8)
            changed = 0.0
        else:
            prob = predictor.predict(case.image, annotation=case.annotation).probability
            grid = working_grid(geometry, rw.working_spacing_mm)  # as the first round's pseudo labels
            outside = _outside_boxes(case.annotation, geometry, rw)
            _, rw_prob = refine_with_random_walker(
                to_grid(np.asarray(case.image.array, dtype=np.float32), grid, order=1), to_grid(prob, grid, order=1),
                spacing=grid.spacing, config=rw, return_probability=True,
                outside=None if outside is None else to_grid(outside.astype(np.uint8), grid, order=0) > 0)
            labels = (to_grid(rw_prob, geometry, order=1) >= 0.5).astype(np.uint8)
            if outside is not None:
                labels[outside] = 0
            changed = float(np.mean(labels != (prob >= 0.5)))
        write_image(out / f"{files.case_id}_pseudo.nii.gz", labels, geometry)
        row = {"case": files.case_id, "fg_voxels": int(np.count_nonzero(labels)), "changed": round(changed, 5),
               "seconds": round(time.perf_counter() - start, 2)}
        rows.append(row)
        if on_case is not None:
            on_case(index, len(cases), files.case_id, row)
    return rows
