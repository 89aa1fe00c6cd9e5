"""``paseg evaluate``: Dice, ASSD, HD95, precision and recall of predictions against dataset labels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

from PASegLib.cli.common import mean_of, print_json, progress
from PASegLib.data.dataset import DatasetError, list_cases
from PASegLib.evaluation.metrics import compute_metrics
from PASegLib.image.io import check_label_values, image_suffix, read_image, strip_image_suffix

METRIC_KEYS = ("dice", "assd", "hd95", "precision", "recall")
PREDICTION_SUFFIXES = ("_pred", "_prediction", "_label", "")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare predictions with the dataset's labels",
        description="Compare <case>_pred.* (or <case>_prediction.*, <case>_label.*, <case>.*) files of PRED_DIR "
        "with the <case>_label.* files of DATASET: Dice, ASSD and HD95 (mm, with the image spacing), precision "
        "and recall per case and on average. Nonzero voxels are foreground; both files must be label maps "
        "(non-negative integers, as the other commands require), so a value of -1 or 0.5 is refused, not scored.",
    )
    p.add_argument("pred_dir", type=Path, help="folder of predictions")
    p.add_argument("dataset", type=Path, help="dataset folder with <case>_label.* files")
    p.add_argument("--json", action="store_true", help="print per-case and mean metrics as the last stdout line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def find_predictions(pred_dir: Path) -> Dict[str, Path]:
    """Map case id → prediction file of ``pred_dir`` (see the command's description for the names)."""
    if not pred_dir.is_dir():
        raise DatasetError(f"prediction folder not found: {pred_dir}")
    found: Dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        if not path.is_file() or image_suffix(path) is None:
            continue
        stem = strip_image_suffix(path)
        for suffix in PREDICTION_SUFFIXES:
            if suffix and stem.endswith(suffix):
                found.setdefault(stem[: -len(suffix)], path)
                break
        else:
            found.setdefault(stem, path)
    return found


def run(args: argparse.Namespace) -> int:
    predictions = find_predictions(args.pred_dir)
    cases = [c for c in list_cases(args.dataset) if c.case_id in predictions]
    if not cases:
        raise DatasetError(f"{args.pred_dir}: no prediction matches a case of {args.dataset}")
    unlabeled = [c.case_id for c in cases if c.label is None]
    if unlabeled:
        raise DatasetError(f"{args.dataset}: no <case>_label file for {', '.join(unlabeled)}")
    rows = []
    for files in progress(cases, desc="evaluate", quiet=args.quiet):
        label = read_image(files.label, role="label")
        check_label_values(label, source=str(files.label))
        pred_file = predictions[files.case_id]
        pred = read_image(pred_file, role="prediction")
        mismatch = label.geometry.mismatch(pred.geometry)
        if mismatch:
            raise DatasetError(f"{pred_file}: geometry differs from {files.label} ({mismatch})")
        check_label_values(pred, source=str(pred_file), role="prediction")
        metrics = compute_metrics(pred.array > 0, label.array > 0, spacing=label.geometry.spacing)
        rows.append({"case": files.case_id, **{k: float(metrics[k]) for k in METRIC_KEYS}})
    mean = {k: mean_of(rows, k) for k in METRIC_KEYS}
    for row in rows:
        print(f"{row['case']}: " + ", ".join(f"{k} {row[k]:.4f}" for k in METRIC_KEYS))
    print("mean: " + ", ".join(f"{k} {mean[k]:.4f}" if mean[k] is not None else f"{k} n/a" for k in METRIC_KEYS))
    if args.json:
        print_json({"cases": rows, "mean": mean, "n": len(rows)})
    return 0
