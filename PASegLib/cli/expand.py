"""``paseg expand``: seven clicks → partial label maps (+ PNG previews)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..dataset import DatasetError, list_cases, load_case
from ..image_io import write_image
from ..seeds.expansion import BACKENDS, EXTENTS, VALID_REGIONS, ExpansionConfig, expand_seeds, seed_precision_recall
from ..seeds.preview import write_preview
from .common import mean_of, print_json, progress, staged_output


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expand",
        help="expand each case's clicks into a partial label map",
        description="Expand the seven clicks of every annotated case of DATASET with the geodesic distance "
        "transform (PA-Seg §III-A.2) into <case>_partial.nii.gz (0 = background, 1 = foreground, 2 = unlabeled) "
        "and a PNG preview of the three planes through the foreground click.",
    )
    p.add_argument("dataset", type=Path, help="dataset folder (<case>_image.*, <case>.mrk.json or <case>_7points.*)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--annotations", type=Path, default=None, help="folder with <case>.mrk.json (default: DATASET)")
    d = ExpansionConfig()
    p.add_argument("--epsilon", type=float, default=d.epsilon, help=f"expansion threshold ε (default {d.epsilon})")
    p.add_argument("--extent", choices=EXTENTS, default=d.extent,
                   help="fixed: foreground where distance < ε·D_max; auto: chosen per object from the image and "
                   "the clicks, no ε (see docs/BENCHMARKS.md)")  # fmt: skip
    p.add_argument("--lamb", type=float, default=d.lamb, help=f"geodesic λ (default {d.lamb})")
    p.add_argument("--valid-region", choices=VALID_REGIONS, default=d.valid_region,
                   help="voxels outside the valid region are background (default: all voxels are valid)")  # fmt: skip
    p.add_argument("--valid-threshold", type=float, default=None, help="threshold for --valid-region above_threshold")
    p.add_argument("--smooth-sigma-mm", type=float, default=d.smooth_sigma_mm,
                   help="Gaussian pre-smoothing (mm) before the geodesic; 0 = raw intensities")  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="geodesic backend (geodistk: the paper's GeodisTK, 4 iterations, when installed)")  # fmt: skip
    p.add_argument("--device", default=None, help="torch device for --backend torch (e.g. cuda)")
    p.add_argument("--no-preview", action="store_true", help="do not write PNG previews")
    p.add_argument("--json", action="store_true", help="print per-case and mean results as the last stdout line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = ExpansionConfig(
        epsilon=args.epsilon,
        extent=args.extent,
        lamb=args.lamb,
        valid_region=args.valid_region,
        valid_threshold=args.valid_threshold,
        smooth_sigma_mm=args.smooth_sigma_mm,
        backend=args.backend,
        device=args.device,
    )
    all_cases = list_cases(args.dataset, annotations_dir=args.annotations)
    cases = [c for c in all_cases if c.has_annotation]
    skipped = [c.case_id for c in all_cases if not c.has_annotation]
    if not cases:
        raise DatasetError(
            f"{args.dataset}: no annotated case; add <case>.mrk.json files (e.g. with `paseg simulate-clicks`)"
        )
    if skipped:
        print(f"note: {len(skipped)} case(s) without annotation skipped: {', '.join(skipped)}", file=sys.stderr)
    rows = []
    with staged_output(args.out) as stage:
        for files in progress(cases, desc="expand", quiet=args.quiet):
            case = load_case(files)  # prints its warnings (overlapping boxes, clicks the label contradicts)
            start = time.perf_counter()
            partial = expand_seeds(case.image, case.annotation, config=config)
            seconds = time.perf_counter() - start
            write_image(stage / f"{files.case_id}_partial.nii.gz", partial, case.image.geometry)
            row = {"case": files.case_id, "objects": len(case.annotation.objects), "seconds": round(seconds, 4)}
            row["fg_voxels"] = int((partial == 1).sum())
            row["unlabeled_voxels"] = int((partial == 2).sum())
            if case.label is not None:
                row.update(seed_precision_recall(partial, case.label.array))
            rows.append(row)
            if not args.no_preview:
                geometry = case.image.geometry
                fg_voxel = geometry.world_to_voxel(case.annotation.objects[0].foreground)
                clicks = np.stack(
                    [geometry.world_to_voxel(p) for o in case.annotation.objects for p in o.points().values()]
                )
                write_preview(
                    stage / f"{files.case_id}_partial.png",
                    case.image.array,
                    geometry,
                    point=fg_voxel,
                    labels=partial,
                    contour=None if case.label is None else case.label.array,
                    clicks=clicks,
                    title=f"{files.case_id}: expanded seeds (red: foreground, green: background, "
                    f"{_extent_text(config)})",
                )
    summary = {
        "out": str(args.out),
        "config": config.to_dict(),
        "cases": rows,
        "mean": {k: mean_of(rows, k) for k in ("fg_precision", "fg_recall", "bg_error", "seconds")},
        "skipped": skipped,
    }
    print(f"expanded {len(rows)} case(s) into {args.out}")
    if args.json:
        print_json(summary)
    return 0


def _extent_text(config: ExpansionConfig) -> str:
    return "extent auto" if config.extent == "auto" else f"ε={config.epsilon}"
