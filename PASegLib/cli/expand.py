"""``paseg expand``: annotations of any kind → partial label maps (+ PNG previews)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from PASegLib.annotation.validation import object_box
from PASegLib.cli.common import mean_of, print_json, progress, staged_output
from PASegLib.data.dataset import DatasetError, list_cases, load_case
from PASegLib.image.io import write_image
from PASegLib.seeds.expansion import (
    BACKENDS,
    EXTENTS,
    FILLS,
    VALID_REGIONS,
    ExpansionConfig,
    seed_precision_recall,
)
from PASegLib.seeds.preview import write_preview
from PASegLib.seeds.pseudo_labels import pseudo_label_map


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expand",
        help="expand each case's clicks into a partial label map",
        description="Turn the annotation of every annotated case of DATASET into <case>_partial.nii.gz (0 = "
        "background, 1 = foreground, 2 = unlabeled) and a PNG preview of the three planes through the first "
        "object. Each object by its kind: seven points by the geodesic expansion (PA-Seg §III-A.2), extreme points "
        "and boxes by the random walker, single points as small balls, a dense label as it is (a mix is fine).",
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
    p.add_argument("--fill", choices=FILLS, default=d.fill,
                   help="seven points: random_walker = the seeds grown over the click box by the random walker, "
                   "an uncertain band left unlabelled (default, as training uses); none = the plain "
                   "expanded seeds")  # fmt: skip
    p.add_argument("--fill-margin", type=float, default=d.fill_margin,
                   help=f"--fill random_walker: box voxels whose probability is within this of 0.5 stay unlabelled "
                   f"(default {d.fill_margin})")  # fmt: skip
    p.add_argument("--fill-bg-radius-mm", type=float, default=d.fill_bg_radius_mm,
                   help=f"--fill random_walker: background seeds = a ball of this radius (mm) around each background "
                   f"click (default {d.fill_bg_radius_mm})")  # fmt: skip
    p.add_argument("--random-walker", type=json.loads, default={}, metavar="JSON",
                   help='random-walker settings of extreme points, boxes and --fill, e.g. \'{"beta": 130}\'')
    p.add_argument("--point-radius-mm", type=float, default=2.0,
                   help="single point: radius (mm) of the labelled ball around each click (default 2)")
    p.add_argument("--no-preview", action="store_true", help="do not write PNG previews")
    p.add_argument("--json", action="store_true", help="print per-case and mean results as the last stdout line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PASegLib.data.prepared import dense_label_of, label_box
    from PASegLib.seeds.random_walker import RandomWalkerConfig

    if not isinstance(args.random_walker, dict):
        raise ValueError(f"--random-walker must be a JSON object of settings, got {args.random_walker!r}")
    try:
        rw = RandomWalkerConfig.from_dict(args.random_walker).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--random-walker: {exc}") from None
    config = ExpansionConfig(
        epsilon=args.epsilon,
        extent=args.extent,
        lamb=args.lamb,
        valid_region=args.valid_region,
        valid_threshold=args.valid_threshold,
        smooth_sigma_mm=args.smooth_sigma_mm,
        backend=args.backend,
        device=args.device,
        fill=args.fill,
        fill_margin=args.fill_margin,
        fill_bg_radius_mm=args.fill_bg_radius_mm,
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
            try:
                partial = pseudo_label_map(case.image, case.annotation, expansion=config, random_walker=rw,
                                           dense_label=dense_label_of(case), point_radius_mm=args.point_radius_mm)
            except ValueError as exc:
                raise DatasetError(f"{case.annotation_path or files.case_id}: cannot make the labels of case "
                                   f"{files.case_id!r}: {exc}") from None
            seconds = time.perf_counter() - start
            write_image(stage / f"{files.case_id}_partial.nii.gz", partial, case.image.geometry)
            row = {"case": files.case_id, "objects": len(case.annotation.objects), "seconds": round(seconds, 4),
                   "kinds": sorted({o.kind for o in case.annotation.objects})}
            row["fg_voxels"] = int((partial == 1).sum())
            row["unlabeled_voxels"] = int((partial == 2).sum())
            if case.label is not None:
                row.update(seed_precision_recall(partial, case.label.array))
            rows.append(row)
            if not args.no_preview:
                geometry = case.image.geometry
                first = case.annotation.objects[0]
                if first.foreground is not None:
                    fg_voxel = geometry.world_to_voxel(first.foreground)
                else:  # the centre of the object's box (extreme points, box) or of the dense label
                    lo, hi = object_box(first, geometry) if first.kind != "dense" else label_box(partial == 1)
                    fg_voxel = (np.asarray(lo) + np.asarray(hi)) // 2
                points = [geometry.world_to_voxel(p) for o in case.annotation.objects for p in o.points().values()]
                clicks = np.stack(points) if points else None
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
    text = "extent auto" if config.extent == "auto" else f"ε={config.epsilon}"
    return text if config.fill == "none" else f"{text}, random-walker fill"
