"""Mixed supervision by a teacher and a student (paper 003: Sun et al., "A Teacher-Student Framework for
Semi-supervised Medical Image Segmentation From Mixed Supervision").

A mixed cohort has N densely labelled cases and M weak cases whose objects have a box (``box``; also the boxes
spanned by ``extreme_points`` and ``seven_points``). ``paseg run --mixed teacher_student`` trains in three steps
(``--mixed joint``, the default, is the joint stage one in which each case is supervised by what it has):

1. **teacher** (:func:`teacher_config`): a stage-one network trained on the N dense cases only, with a second input
   channel showing the box mask of the objects (``point_channel`` with ``click_map = "box"``: 1 inside a box, 0
   outside; the box of a dense case is its label's extent, grown during training by a random margin of
   ``box_channel_margin_mm`` per side, as loose as the weak boxes; :mod:`PASegLib.data.clickmaps`), never
   dropped. Loss: the usual data term (CE + Dice) on the dense labels; no regulariser, no held-out case (all N
   train).
2. **soft_labels** (:func:`write_soft_labels`): the teacher's foreground probability of each weak case given its
   boxes, set to 0 outside every box, written once per case as ``<out>/<case>_soft.nii.gz`` (float32 on the
   image's grid, atomically; a case whose file exists is kept, so an interrupted step continues).
3. **student** (:func:`student_config`): a stage-one network without the box channel trained on every training
   case: the dense labels with the usual data term, the soft labels with a cross-entropy with soft targets
   (:class:`~PASegLib.losses.soft_ce.SoftCrossEntropyLoss`, weight ``soft_label_weight``; the soft labels reach the
   trainer as codes of the partial map, :func:`~PASegLib.data.prepared.encode_soft_labels`). No regulariser.

The pipeline trains the auxiliary stage-one network as a second student and runs SCM and the evaluation as
for any cohort (:mod:`PASegLib.pipeline.run`).

Against the paper: the teacher takes the box as an input channel — the paper's "multi-channel input" ablation
(Table II), not its organ-to-lesion attention (Eq. 1–2: one object class here, no organ/lesion hierarchy); PASeg's
3D networks replace the 2D U-Net on three slices; the data term is CE + Dice (the paper: CE); the soft labels are
forced to 0 outside the boxes (the paper uses the softmax as it is; a box says the object lies inside it, the rule of
PASeg's random-walker box labels); the teacher's training boxes are loosened by a random margin because PASeg's
boxes are loose (the paper's are tight, and it tests perturbed boxes only at inference); the student has no
localisation branch (Eq. 4's ``L_loc``: an auxiliary decoder head regressing the boxes, discarded at test time —
it needs a second output head in every network, :mod:`PASegLib.networks`, and its gain in the paper is on small
lesions, +0.2 Dice on the liver).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.annotation.kinds import BOXED_KINDS
from PASegLib.data.dataset import CaseFiles, DatasetError, load_case
from PASegLib.pipeline.inputs import cohort_kinds
from PASegLib.utils.atomic import PathLike

__all__ = ["MIXED_MODES", "pipeline_plan", "split_mixed_cohort", "student_config", "teacher_config",
           "weak_box_margin_mm", "write_soft_labels"]

#: how a mixed cohort trains (``paseg run --mixed``): ``joint`` stage one, or paper 003's teacher and student
MIXED_MODES = ("joint", "teacher_student")


def split_mixed_cohort(files: Sequence[CaseFiles]) -> Tuple[List[str], List[str], List[str]]:
    """``(dense_ids, weak_ids, weak_kinds)`` of annotated cases: a case with a dense object is dense, the others are
    weak and every object of theirs must have a box (:data:`~PASegLib.annotation.kinds.BOXED_KINDS`);
    ``weak_kinds`` the sorted kinds of the weak cases.

    Raises:
        DatasetError: no dense case, no weak case, or a weak object without a box (naming the case and kind).
    """
    dense, weak, kinds = [], [], set()
    for f in files:
        case_kinds = cohort_kinds([f])
        if "dense" in case_kinds:
            dense.append(f.case_id)
            continue
        boxless = sorted(set(case_kinds) - set(BOXED_KINDS))
        if boxless:
            raise DatasetError(f"case {f.case_id!r} has {', '.join(boxless)} objects: the teacher of --mixed "
                               f"teacher_student needs a box per object ({', '.join(BOXED_KINDS)})")
        weak.append(f.case_id)
        kinds.update(case_kinds)
    if not dense:
        raise DatasetError("--mixed teacher_student needs densely labelled training cases to train the teacher "
                           "(--dense-cases N, or dense annotations); found none")
    if not weak:
        raise DatasetError("--mixed teacher_student needs weak (boxed) training cases for the teacher to label; "
                           "every training case is dense")
    return sorted(dense), sorted(weak), sorted(kinds)


def weak_box_margin_mm(kinds: Sequence[str]) -> Tuple[float, float]:
    """The range ``(low, high)`` (mm) of the margin between an object and its box for the weak ``kinds``, from the
    click simulation's defaults (:class:`~PASegLib.annotation.simulation.ClickSimulationConfig`): ``box_margin_mm``
    for boxes, ``margin_mm`` for the background clicks of seven points, 0 for extreme points (on the extent); the
    union over the kinds."""
    from PASegLib.annotation.simulation import ClickSimulationConfig

    sim = ClickSimulationConfig()
    ranges = {"box": tuple(sim.box_margin_mm), "seven_points": tuple(sim.margin_mm), "extreme_points": (0.0, 0.0)}
    chosen = [ranges[k] for k in kinds if k in ranges] or [(0.0, 0.0)]
    return float(min(r[0] for r in chosen)), float(max(r[1] for r in chosen))


def teacher_config(base: Any, *, box_margin_mm: Sequence[float]) -> Any:
    """The teacher's :class:`~PASegLib.training.config.TrainConfig` from the stage-one ``base``: the box channel
    (always given), its training boxes grown by ``box_margin_mm`` ``(low, high)`` per side, the data term alone, no
    held-out case, the generated labels (no ``pseudo_labels``)."""
    return base.replace(point_channel=True, click_map="box", point_channel_dropout=0.0, point_jitter_mm=0.0,
                        box_channel_margin_mm=[float(v) for v in box_margin_mm], point_loss_weight=0.0,
                        cv_weight=0.0, alpha=0.0, beta=0.0, box_prior_weight=0.0, validation_fraction=0.0,
                        pseudo_labels=None)


def student_config(base: Any, soft_labels: PathLike) -> Any:
    """The student's :class:`~PASegLib.training.config.TrainConfig` from the stage-one ``base``: no click channel,
    the soft labels of ``soft_labels`` (a folder of ``<case>_soft.nii.gz``) for the weak cases, no regulariser;
    the last weights (the click score and the pseudo-label Dice see no 0/1 voxel on a held-out weak case, whose
    labels are all soft: they would rank every round alike)."""
    selection = base.selection if base.selection in ("last", "heldout_loss", "flip_agreement") else "last"
    return base.replace(point_channel=False, click_map="heatmap", point_loss_weight=0.0, cv_weight=0.0, alpha=0.0,
                        beta=0.0, box_prior_weight=0.0, pseudo_labels=str(soft_labels), selection=selection)


def write_soft_labels(teacher_run: PathLike, cases: Sequence[CaseFiles], out_dir: PathLike, *, device: str = "auto",
                      on_case: Optional[Callable[[int, int, str, Dict[str, Any]], None]] = None,
                      stop: Any = None) -> List[Dict[str, Any]]:
    """Write ``<out_dir>/<case>_soft.nii.gz`` for the weak ``cases`` from the teacher ``teacher_run``.

    Each case: its image preprocessed as in training, the box mask of its annotation's objects on the training grid
    as the second channel, the sliding-window foreground probability (0 outside the valid region), resampled
    linearly to the image's grid, then 0 outside every object's box (on the image's grid); float32, written
    atomically. A case whose file exists is skipped (written by an earlier, interrupted call).

    Args:
        teacher_run: a trained run with ``click_map = "box"`` (its ``best`` weights).
        cases: the weak cases (each with an annotation whose objects have boxes).
        out_dir: the folder (created).
        device: where the teacher runs.
        on_case: called as ``on_case(index, total, case_id, row)`` after each case written.
        stop: a :class:`~PASegLib.jobs.stopping.StopFile` checked before every case and sliding window.

    Returns:
        One row per case written: ``case``, ``mean_in_boxes`` (the mean soft label inside the boxes),
        ``fg_voxels`` (soft label >= 0.5), ``seconds``.
    """
    from PASegLib.data.clickmaps import annotation_box_mask
    from PASegLib.image.io import write_image
    from PASegLib.image.resample import resample_to_shape
    from PASegLib.inference.predictor import load_predictor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(teacher_run, device=device, verbose=False)
    if not (predictor.config.point_channel and predictor.config.click_map == "box"):
        raise ValueError(f"{teacher_run} is not a teacher: its network does not take the box channel "
                         f"(click_map 'box')")
    rows = []
    for index, files in enumerate(cases, start=1):
        target = out / f"{files.case_id}_soft.nii.gz"
        if target.is_file():
            continue
        if stop is not None:
            stop.check()
        start = time.perf_counter()
        case = load_case(files, load_label=False, load_annotation=True, warn=None)
        if case.annotation is None or not case.annotation.objects:
            raise DatasetError(f"case {files.case_id!r} has no annotation: the teacher needs its boxes")
        geometry = case.image.geometry
        try:
            inside = annotation_box_mask(case.annotation, geometry) > 0
            # the predictor gives a box-channel model its boxes' mask on the training grid (as in training)
            prob, grid = predictor.probability_on_training_grid(case.image, stop=stop, annotation=case.annotation)
        except ValueError as exc:
            raise DatasetError(f"case {files.case_id!r}: {exc}") from None
        if grid.shape != geometry.shape:
            prob = np.clip(resample_to_shape(prob, geometry.shape, order=1), 0.0, 1.0)
        prob = prob.astype(np.float32, copy=False)
        prob[~inside] = 0.0
        write_image(target, prob, geometry)
        row = {"case": files.case_id, "mean_in_boxes": round(float(prob[inside].mean()) if inside.any() else 0.0, 4),
               "fg_voxels": int(np.count_nonzero(prob >= 0.5)), "seconds": round(time.perf_counter() - start, 2)}
        rows.append(row)
        if on_case is not None:
            on_case(index, len(cases), files.case_id, row)
    return rows


def pipeline_plan(out: Path, primary: Any, auxiliary: Any, train: Sequence[CaseFiles], *,
                  overrides: Optional[Dict[str, Any]] = None) -> Tuple[List[Tuple[str, Path, Any]],
                                                                      Dict[str, Dict[str, Any]], Any]:
    """The teacher–student steps of ``paseg run`` (:mod:`PASegLib.pipeline.run`) in the folder ``out``.

    Args:
        out: the pipeline folder.
        primary, auxiliary: the stage-one configs of the preset (with the cohort's protocol settings).
        train: the training cases (dense and weak).
        overrides: the user's settings of every run (``--set``); a ``box_channel_margin_mm`` among them is the
            teacher's, else :func:`weak_box_margin_mm` of the weak kinds.

    Returns:
        ``(plan, extra, auxiliary)``: the steps ``("teacher", out/teacher, config)``, ``("soft_labels",
        out/soft_labels, the teacher's run folder)``, ``("student", out/student_<network>, config)``; per step the
        training arguments that differ from the pipeline's (the teacher trains on the dense cases; the students
        read ``out/cache_student``, their own prepared data beside the teacher's; ``soft_labels``:
        the weak ``case_ids``); the auxiliary stage-one config made a student too.
    """
    dense, weak, kinds = split_mixed_cohort(train)
    overrides = overrides or {}
    margin = overrides.get("box_channel_margin_mm") or weak_box_margin_mm(kinds)
    teacher, soft = out / "teacher", out / "soft_labels"
    plan = [("teacher", teacher, teacher_config(primary, box_margin_mm=margin)),
            ("soft_labels", soft, teacher),
            ("student", out / f"student_{primary.network}", student_config(primary, soft))]
    students = {"cache": out / "cache_student"}
    extra = {"teacher": {"case_ids": dense}, "soft_labels": {"case_ids": weak}, "student": students,
             "stage1_auxiliary": students}
    return plan, extra, student_config(auxiliary, soft)
