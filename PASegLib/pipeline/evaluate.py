"""The evaluation and report steps of the pipeline (:mod:`PASegLib.pipeline.run`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from PASegLib.data.dataset import CaseFiles, load_case
from PASegLib.evaluation.metrics import compute_metrics
from PASegLib.image.io import read_image
from PASegLib.jobs.stopping import StopFile
from PASegLib.seeds.expansion import seed_precision_recall
from PASegLib.utils.atomic import atomic_write_json
from PASegLib.utils.version import __version__

__all__ = ["build_report", "evaluate_models"]


def evaluate_models(out: Path, cases: Sequence[CaseFiles], pred_dirs: Mapping[str, Path], config: Any,
                    cache: Path, *, stop: Optional[StopFile] = None) -> Dict[str, Any]:
    """Metrics of every model's predictions against the labels, and the expanded-seed quality.

    Writes ``out/metrics.json`` = ``{"stages": {model: {case: metrics}}, "seeds": {case: {...}}}``. Seed
    quality (:func:`~PASegLib.seeds.expansion.seed_precision_recall`) is measured on the training grid of the
    prepared cases: the pseudo labels the networks learned from (the expanded seeds, filled over the click box
    when ``expansion.fill`` is on, the default). Distances are in mm. ``stop`` is checked before
    every case (:class:`~PASegLib.jobs.stopping.StopRequested`; nothing is written then).
    """
    from PASegLib.data.prepare import prepare_cases

    labeled = [c for c in cases if c.label is not None]
    stages: Dict[str, Dict[str, Dict[str, float]]] = {m: {} for m in pred_dirs}
    for files in labeled:
        if stop is not None:
            stop.check()
        label = read_image(files.label, role="label")
        target = np.asarray(label.array) > 0
        for model, folder in pred_dirs.items():
            pred = np.asarray(read_image(folder / f"{files.case_id}_pred.nii.gz", role="prediction").array) > 0
            stages[model][files.case_id] = compute_metrics(pred, target, spacing=label.geometry.spacing)
    seeds: Dict[str, Dict[str, float]] = {}
    annotated = [c for c in labeled if c.has_annotation]
    for prepared in prepare_cases(annotated, config, cache_dir=cache, stop=stop):
        seeds[prepared.case_id] = seed_precision_recall(prepared.partial, prepared.label)
    result = {"stages": stages, "seeds": seeds}
    atomic_write_json(out / "metrics.json", result)
    return result


def _case_figure(path: Path, files: CaseFiles, pred_dir: Path, config: Any, cache: Path, title: str) -> Path:
    from PASegLib.data.prepare import prepare_cases
    from PASegLib.evaluation.figures import write_case_figure
    from PASegLib.image.resample import resample_to_shape

    case = load_case(files, load_label=True, load_annotation=True)
    geometry = case.image.geometry
    clicks, kinds, seeds = None, None, None
    if case.annotation is not None:
        points: List[np.ndarray] = []
        kinds = []
        for obj in case.annotation.objects:  # red: on or inside the object (F, extreme points); green: outside
            if obj.kind == "box":
                continue  # a box's corners are not clicks on the image
            for label, point in obj.points().items():
                points.append(np.asarray(point, float))
                kinds.append(1 if label == "F" or obj.kind == "extreme_points" else 0)
        clicks = geometry.world_to_index(np.asarray(points)) if points else None
        kinds = kinds or None
        prepared = prepare_cases([files], config, cache_dir=cache)[0]
        seeds = resample_to_shape(prepared.partial, geometry.shape, order=0)
    prediction = np.asarray(read_image(pred_dir / f"{files.case_id}_pred.nii.gz", role="prediction").array) > 0
    label = None if case.label is None else np.asarray(case.label.array) > 0
    return write_case_figure(path, image=np.asarray(case.image.array, dtype=np.float32), spacing=geometry.spacing,
                             clicks_index=clicks, click_labels=kinds, seeds=seeds, prediction=prediction,
                             label=label, title=title, crop_margin_mm=15.0)


def build_report(out: Path, *, dataset: Path, by_id: Mapping[str, CaseFiles], split: Mapping[str, List[str]],
                 runs: Mapping[str, Path], pred_dirs: Mapping[str, Path], options: Any, configs: Sequence[Any],
                 durations: Mapping[str, float], stop: Optional[StopFile] = None, final: str = "SCM") -> Path:
    """Figures and ``out/report.html`` from ``out/metrics.json`` and the runs' curves (``stop`` checked before
    every figure); the case figures show the ``final`` model's predictions."""
    from PASegLib.evaluation.report import write_report

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    stages = {m: v for m, v in metrics["stages"].items() if v}
    curves = {f"{name.replace('_', ' ')} ({run.name})": run / "loss_curves.png"
              for name, run in runs.items() if (run / "loss_curves.png").is_file()}
    final_dir = pred_dirs[final]
    figures: Dict[str, Path] = {}
    for case_id in split["predict"][: options.max_figures]:
        if stop is not None:
            stop.check()
        dice = metrics["stages"].get(final, {}).get(case_id, {}).get("dice")
        title = f"{case_id}: {final}" + (f" Dice {dice:.3f}" if dice is not None else "")
        figures[case_id] = _case_figure(out / "figures" / f"{case_id}.png", by_id[case_id], final_dir, configs[0],
                                        out / "cache", title)
    a, b, s = configs
    scm = final in ("SCM", "SCM-E")
    meta = {
        "dataset": str(dataset), "preset": options.preset,
        "networks": f"{a.network} + {b.network}" if scm else a.network,
        "second stage": "SCM" if scm else "refinement round (random-walker refined labels, retrained)",
        "training cases": len(split["train"]), "held-out test cases": len(split["test"]) or "none (every case)",
        "evaluated cases": len(split["predict"]), "stage-1 epochs": a.epochs,
        **({"SCM epochs": s.epochs} if scm else {}),
        "patch size": "×".join(map(str, a.patch_size)),
        "training grid": "native" if a.target_spacing_mm is None else "×".join(f"{v:g}" for v in a.target_spacing_mm)
        + " mm", "device": options.device,
        "duration": ", ".join(f"{k} {v:.0f} s" for k, v in durations.items()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "PASegLib": __version__,
    }
    return write_report(out, title=f"PASeg report: {dataset.name}", stages=stages,
                        seed_metrics=metrics["seeds"] or None, curves=curves, case_figures=figures, meta=meta)
