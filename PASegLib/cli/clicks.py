"""``paseg simulate-clicks`` and ``paseg convert-clicks``."""

from __future__ import annotations

import argparse
from pathlib import Path

from PASegLib.annotation.kinds import kind_names
from PASegLib.annotation.markups import write_markups
from PASegLib.annotation.sevenpoints import write_seven_points
from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks
from PASegLib.annotation.validation import validate_case
from PASegLib.cli.common import print_json, progress, staged_output
from PASegLib.data.dataset import DatasetError, list_cases, load_case


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate-clicks",
        help="simulate the clicks of an annotation kind (default seven points) from each case's label",
        description="Simulate the annotation of every <case>_label file of DATASET and write <case>.mrk.json per "
        "case: --kind seven_points (default; one click inside, one beyond each side, as the PA-Seg experiments "
        "do), extreme_points (the outermost voxel towards each side, within --extreme-jitter-mm), single_point "
        "(one click anywhere inside, plus PSCV's one background click unless --no-background), box (a loose box, "
        "--box-margin-mm) or dense (the label itself). --dense-cases N makes the first N cases (sorted by id) "
        "dense and the rest --kind: a mixed cohort. Existing clicks (a <case>.mrk.json in the output folder, or "
        "in DATASET a <case>_7points file the new file would override) are never replaced without --overwrite. "
        "Each case's clicks come from its own random stream (--seed and the case id: the same clicks whatever the "
        "other cases); --shared-stream draws every case from --seed alone, as before (the committed results). "
        "--click-noise MM displaces every simulated point by a random offset (RMS MM mm), kept inside the image.",
    )
    p.add_argument("dataset", type=Path, help="dataset folder with <case>_image.* and <case>_label.*")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: DATASET itself)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace clicks that exist (hand-made ones included)")
    p.add_argument("--largest-only", action="store_true", help="annotate only the largest component per case")
    p.add_argument("--min-size", type=int, default=10, help="ignore components smaller than this (voxels)")
    p.add_argument("--margin-mm", type=float, nargs=2, default=(2.0, 10.0), metavar=("LOW", "HIGH"),
                   help="distance range (mm) between an object's extreme voxel and its background click")  # fmt: skip
    p.add_argument("--kind", default="seven_points", choices=kind_names(), help="annotation kind (default "
                   "seven_points)")
    p.add_argument("--dense-cases", type=int, default=0, metavar="N",
                   help="the first N cases (sorted by id) get a dense annotation (their label): a mixed cohort")
    p.add_argument("--extreme-jitter-mm", type=float, default=2.0, metavar="MM",
                   help="extreme points: how far inside the extent (mm) a click may land (default 2)")
    p.add_argument("--box-margin-mm", type=float, nargs=2, default=(2.0, 10.0), metavar=("LOW", "HIGH"),
                   help="box: margin range (mm) added on each side (default 2 10)")
    p.add_argument("--no-background", action="store_true", help="single point: no background click B")
    p.add_argument("--click-noise", type=float, default=0.0, metavar="MM",
                   help="click noise (mm, default 0 = exact clicks): every point moved by a random 3D offset, kept "
                   "inside the image (gaussian: RMS distance MM; uniform: within a ball of radius MM)")
    p.add_argument("--click-noise-kind", default="gaussian", choices=("gaussian", "uniform"),
                   help="distribution of the click noise (default gaussian)")
    p.add_argument("--shared-stream", action="store_true",
                   help="draw every case's clicks from --seed alone (the same draws on every case), as PASeg did "
                   "before per-case streams: reproduces the committed results")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_simulate)

    c = sub.add_parser(
        "convert-clicks",
        help="convert annotations between Slicer markups and the official 7-point label maps",
        description="Write every annotated case's clicks as <case>.mrk.json (--to markups) or as the official "
        "PA-Seg <case>_7points.nii.gz label map (--to 7points).",
    )
    c.add_argument("dataset", type=Path, help="dataset folder")
    c.add_argument("--to", choices=("markups", "7points"), required=True, help="target format")
    c.add_argument("--out", type=Path, required=True, help="output folder")
    c.add_argument("--annotations", type=Path, default=None, help="folder with <case>.mrk.json files")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_convert)


def run_simulate(args: argparse.Namespace) -> int:
    config = ClickSimulationConfig(
        margin_mm=tuple(args.margin_mm), min_size=args.min_size, largest_only=args.largest_only, kind=args.kind,
        extreme_jitter_mm=args.extreme_jitter_mm, box_margin_mm=tuple(args.box_margin_mm),
        single_point_background=not args.no_background, click_noise_mm=args.click_noise,
        click_noise=args.click_noise_kind, legacy_shared_stream=args.shared_stream,
    )
    cases = list_cases(args.dataset)
    if not 0 <= args.dense_cases <= len(cases):
        raise DatasetError(f"--dense-cases must be between 0 and the {len(cases)} case(s) of {args.dataset}, got "
                           f"{args.dense_cases}")
    dense_ids = {c.case_id for c in sorted(cases, key=lambda c: c.case_id)[:args.dense_cases]}
    dense = ClickSimulationConfig(kind="dense", min_size=args.min_size, largest_only=args.largest_only)
    missing = [c.case_id for c in cases if c.label is None]
    if missing:
        raise DatasetError(
            f"{args.dataset}: simulate-clicks needs a <case>_label file; missing for {', '.join(missing)}"
        )
    out_dir = args.out if args.out is not None else args.dataset
    if not args.overwrite:
        _refuse_existing_clicks(cases, out_dir, in_dataset=args.out is None)
    summary = []
    with staged_output(out_dir) as stage:
        for files in progress(cases, desc="simulate clicks", quiet=args.quiet):
            case = load_case(files, load_annotation=False)
            try:
                annotation = simulate_clicks(case.label.array, case.image.geometry, seed=args.seed,
                                             config=dense if files.case_id in dense_ids else config,
                                             case_id=files.case_id)
            except ValueError as exc:
                raise DatasetError(f"{files.label}: {exc}") from None
            validate_case(annotation, case.image.geometry)
            write_markups(stage / f"{files.case_id}.mrk.json", annotation)
            summary.append({"case": files.case_id, "objects": len(annotation.objects),
                            "kind": annotation.objects[0].kind})
    print(f"wrote {len(summary)} annotation file(s) to {out_dir}")
    if args.json:
        print_json({"out": str(out_dir), "cases": summary})
    return 0


def _refuse_existing_clicks(cases, out_dir: Path, *, in_dataset: bool) -> None:
    """Raise naming the cases whose clicks the simulation would replace (or, in DATASET, override)."""
    existing = [f"{c.case_id}.mrk.json" for c in cases if (out_dir / f"{c.case_id}.mrk.json").is_file()]
    if in_dataset:
        existing += [c.seven_points.name for c in cases if c.seven_points is not None and c.markups is None]
    if existing:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise DatasetError(f"{out_dir}: clicks exist for {len(existing)} case(s) ({shown}); simulate-clicks would "
                           "replace them: use --out DIR to write the simulated clicks elsewhere, or --overwrite to "
                           "replace them")


def run_convert(args: argparse.Namespace) -> int:
    cases = [c for c in list_cases(args.dataset, annotations_dir=args.annotations) if c.has_annotation]
    if not cases:
        raise DatasetError(f"{args.dataset}: no annotated case (<case>.mrk.json or <case>_7points.*) found")
    with staged_output(args.out) as stage:
        for files in progress(cases, desc="convert clicks", quiet=args.quiet):
            case = load_case(files)  # with the label when there is one: clicks it contradicts are warned about
            if args.to == "markups":
                write_markups(stage / f"{files.case_id}.mrk.json", case.annotation)
            else:
                write_seven_points(stage / f"{files.case_id}_7points.nii.gz", case.annotation, case.image.geometry)
    print(f"converted {len(cases)} case(s) to {args.to} in {args.out}")
    return 0
