"""Weak-label protocols side by side on ../shared/data/la_heart: Dice, ASSD, HD95 and clicks.

Same split, clicks seed, preset and evaluation as ``benchmarks/bench_accuracy.py`` (the 80 case ids sorted; the
first 60 train — the trainer holds 12 of them out for validation —, the last 20 test; every row evaluated on the
20 test cases at native resolution with its selected weights). Each protocol's annotations are simulated from
the labels with seed 0 (``paseg simulate-clicks --kind …`` defaults) into ``--out/clicks_<kind>``.

Rows (the summary's keys):

* ``full`` — dense labels for every training case (the upper bound) — the accuracy benchmark's
  ``full supervision`` row, reused when that benchmark's output is present (``--accuracy-out``);
* ``seven_points`` / ``seven_points_scm`` — PA-Seg stage one and SCM (defaults), likewise reused;
* ``single_point`` — PSCV: one click inside each object and one background click per case; partial CE + Dice
  on the clicked balls plus the 3D contrastive variance loss (no mCRF, no VM), 4 patches per batch (the
  contrastive term compares the patches of a batch; training refuses it below 2);
* ``extreme_points`` — Going to Extremes round 1: random-walker pseudo labels from the six extreme points,
  Dice + CE + point loss, the clicks as a second input channel (predicted with the test cases' simulated
  extreme points); ``extreme_points_no_clicks`` the same model with an empty click channel;
  ``extreme_points_refined`` round 2, trained on round 1's predictions regularised by the random walker
  (:mod:`PASegLib.pipeline.refine`);
* ``box`` — random-walker pseudo labels from a loose box (2–10 mm margin), Dice + CE;
* ``mixed_3`` / ``mixed_6`` / ``mixed_12`` — 3, 6, 12 training cases densely labelled (the first of the
  non-held-out training ids), seven points for the rest; stage one (defaults), each case supervised by what it
  has.

Clicks per object: the kind's clicks (:func:`PASegLib.annotation.model.clicks_of`); a dense case counts as one
contour per slice the object spans (``contour_slices_per_object``, the annotation-time proxy of dense labels).

Usage::

    python benchmarks/bench_protocols.py --rows mixed_6 --threads 1        # one row (resumable)
    python benchmarks/bench_protocols.py --summary docs/results/protocols_cpu.json --markdown
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_accuracy import LA_HEART, PLAIN_SEEDS, finished_rows, run_row, slug, summarize  # noqa: E402

from PASegLib.annotation.simulation import ClickSimulationConfig  # noqa: E402
from PASegLib.data.dataset import list_cases  # noqa: E402
from PASegLib.data.prepared import split_cases  # noqa: E402
from PASegLib.pipeline.inputs import median_spacing, simulate_missing_clicks  # noqa: E402
from PASegLib.pipeline.presets import preset_configs  # noqa: E402
from PASegLib.utils.atomic import atomic_write_json  # noqa: E402

#: accuracy-benchmark rows reused as protocol rows
REUSED = {"full": "full supervision", "seven_points": "stage one (defaults)", "seven_points_scm": "SCM (defaults)"}
MIXED = (3, 6, 12)


def simulate(kind: str, out: Path, files, *, dense_ids=(), legacy_shared_stream: bool) -> Path:
    """``out/clicks_<kind>``: the simulated annotations of every case (seed 0); ``dense_ids`` get a dense object.
    ``legacy_shared_stream``: every case drawn from seed 0 alone (the same draws on every case), as the committed
    rows of ``docs/results/protocols_cpu.json`` and ``review_queue_cpu.json`` were simulated (True to reproduce
    them); False: each case its own stream (``PASegLib.annotation.simulation.case_rng``)."""
    folder = out / f"clicks_{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    if dense_ids:
        base = simulate("seven_points", out, files, legacy_shared_stream=legacy_shared_stream)
        dense = simulate("dense", out, [f for f in files if f.case_id in set(dense_ids)],
                         legacy_shared_stream=legacy_shared_stream)
        for f in files:
            target = folder / f"{f.case_id}.mrk.json"
            if not target.is_file():
                src = dense if f.case_id in set(dense_ids) else base
                shutil.copyfile(src / f"{f.case_id}.mrk.json", target)
        return folder
    simulate_missing_clicks(files, folder, seed=0,
                            config=ClickSimulationConfig(kind=kind, legacy_shared_stream=legacy_shared_stream))
    return folder


def row_table(a, s, train_ids, val_ids, out: Path):
    """``{row: (mode, config, train ids, source, options)}`` as in ``bench_accuracy.row_table``; ``options``
    ``kind`` names the annotation folder, ``dense`` the dense cases of a mixed row, ``refine_from`` the round
    whose predictions (regularised by the random walker) are the row's labels."""
    weak = a.replace(alpha=0.0, beta=0.0)
    extreme = weak.replace(point_loss_weight=1.0, point_channel=True)
    usable = [c for c in train_ids if c not in set(val_ids)]
    rows = {
        "single_point": ("train", weak.replace(cv_weight=0.3, batch_size=4), train_ids, None, {"kind": "single_point"}),
        "extreme_points": ("train", extreme, train_ids, None, {"kind": "extreme_points"}),
        "extreme_points_no_clicks": ("reuse", None, train_ids, "extreme_points",
                                     {"kind": "extreme_points", "use_clicks": False, "paired_with": "extreme_points"}),
        "extreme_points_refined": ("train", extreme.replace(pseudo_labels=str(out / "refined_extreme_points")),
                                   train_ids, None, {"kind": "extreme_points", "refine_from": "extreme_points",
                                                     "paired_with": "extreme_points"}),
        "box": ("train", weak, train_ids, None, {"kind": "box"}),
    }
    for n in MIXED:
        rows[f"mixed_{n}"] = ("train", a, train_ids, None, {"kind": f"mixed_{n}", "dense": usable[:n],
                                                            "paired_with": "seven_points"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "protocols_cpu")
    parser.add_argument("--accuracy-out", type=Path, default=ROOT / "bench_output" / "accuracy_cpu",
                        help="bench_accuracy output whose finished rows give full / seven_points / seven_points_scm")
    parser.add_argument("--rows", nargs="+", default=None)
    parser.add_argument("--summary", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--device-note", default="2-core shared x86-64 CPU, torch 2.13.0+cpu, no GPU",
                        help="the machine the rows ran on, stored in the summary")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    out = args.out
    (out / "rows").mkdir(parents=True, exist_ok=True)
    ids = sorted(c.case_id for c in list_cases(args.data))
    if len(ids) != 80:
        raise SystemExit(f"{args.data}: expected the 80 la_heart cases, found {len(ids)}")
    train_ids, test_ids = ids[:60], ids[60:]
    files = list_cases(args.data)
    a, _b, s = preset_configs("cpu", median_spacing([f for f in files if f.case_id in set(train_ids)]), seed=0,
                              device=args.device, overrides=PLAIN_SEEDS)  # the committed rows' seven points
    _, val_ids = split_cases(train_ids, validation_fraction=a.validation_fraction, seed=a.seed)
    rows = row_table(a, s, train_ids, val_ids, out.resolve())
    unknown = sorted(set(args.rows or ()) - set(rows) - set(REUSED))
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {unknown}; rows: {', '.join(list(REUSED) + list(rows))}")
    if not (args.summary or args.markdown):
        for name, spec in rows.items():
            if (args.rows and name not in args.rows) or (out / "rows" / f"{slug(name)}.json").is_file():
                continue
            options = spec[4]
            kind = options["kind"]
            # the committed rows were simulated with one stream shared by every case: kept to reproduce them
            clicks = simulate(kind, out, files, dense_ids=options.get("dense", ()), legacy_shared_stream=True)
            by_id = {f.case_id: f for f in list_cases(args.data, annotations_dir=clicks)}
            start = time.monotonic()
            if options.get("refine_from"):
                refine(options["refine_from"], spec[1].pseudo_labels, out, [by_id[c] for c in train_ids], args.device)
            r = run_row(name, spec, rows, out, args.data, clicks, out / f"cache_{kind}", test_ids, by_id,
                        args.device, args.threads, tag=kind)
            print(f"{name:30s} Dice {np.mean([c['dice'] for c in r['cases'].values()]):.4f}  "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr)
    return report(args, out, rows, train_ids, test_ids, val_ids)


def refine(source: str, folder: str, out: Path, cases, device: str) -> None:
    """The refinement step (``PASegLib.pipeline.refine``) from row ``source``'s run into ``folder`` (resumable:
    cases already refined are kept); its per-case rows go to ``folder/refine.json``."""
    from PASegLib.pipeline.refine import refine_pseudo_labels

    done = out / "rows" / f"{slug(source)}.json"
    if not done.is_file():
        raise SystemExit(f"row {source!r} must finish before it can be refined")
    run = json.loads(done.read_text(encoding="utf-8"))["run"]
    todo = [f for f in cases if not (Path(folder) / f"{f.case_id}_pseudo.nii.gz").is_file()]
    if todo:
        start = time.monotonic()
        rows = refine_pseudo_labels(run, todo, folder, device=device)
        log = Path(folder) / "refine.json"
        old = json.loads(log.read_text(encoding="utf-8"))["cases"] if log.is_file() else []
        atomic_write_json(log, {"run": run, "seconds": round(time.monotonic() - start, 1), "cases": old + rows})


def report(args, out: Path, rows, train_ids, test_ids, val_ids) -> int:
    """The finished rows (and the reused accuracy rows) → summary JSON / Markdown."""
    results = {}
    for key, source in REUSED.items():
        path = args.accuracy_out / "rows" / f"{slug(source)}.json"
        if path.is_file():
            results[key] = {**json.loads(path.read_text(encoding="utf-8")), "reused_from": source}
    results = finished_rows(out, rows, results)
    table_rows = {**{k: ("reuse", None, train_ids, None, {}) for k in REUSED}, **rows}
    summary = summarize({k: {**v, "options": v.get("options", {}) if k in rows else {}} for k, v in results.items()},
                        table_rows, preset="cpu",
                        split={"train": len(train_ids), "test": len(test_ids), "validation": len(val_ids),
                               "order": "case ids sorted; first train, last test", "clicks_seed": 0})
    for name, entry in summary["rows"].items():
        if "full" in summary["rows"]:
            full = summary["rows"]["full"]
            entry["ratio_to_full"] = entry["dice_mean"] / max(full["dice_mean"], full["dice_last_mean"])
        entry.update(annotation_cost(name, rows, out, train_ids))
    for key in ("selection", "full_supervision", "stage_one", "scm"):  # the accuracy benchmark's headline keys
        summary.pop(key, None)
    summary["reused_from_accuracy_benchmark"] = {k: v for k, v in REUSED.items() if k in results}
    summary["device"] = args.device_note
    if args.summary:
        atomic_write_json(args.summary, summary)
    if args.markdown:
        print(markdown(summary))
        return 0
    print(json.dumps(summary))
    return 0


def annotation_cost(name, rows, out: Path, train_ids):
    """``clicks_per_object`` (clicked cases) and, for rows with dense cases, ``dense_cases`` and
    ``contour_slices_per_object`` (axial slices the dense objects span)."""
    from PASegLib.annotation.markups import read_markups
    from PASegLib.annotation.model import clicks_of
    from PASegLib.image.geometry import ImageGeometry  # noqa: F401  (documented type of the geometry below)
    from PASegLib.image.io import read_geometry

    kind = {"full": "dense", "seven_points": "seven_points", "seven_points_scm": "seven_points"}.get(name)
    kind = kind or rows[name][4]["kind"]
    by_id = {f.case_id: f for f in list_cases(LA_HEART)}
    if kind == "dense":
        from PASegLib.image.io import read_image

        slices = [int(np.count_nonzero((np.asarray(read_image(by_id[c].label, role="label").array) > 0)
                                       .any(axis=(0, 1)))) for c in train_ids]
        return {"clicks_per_object": None, "dense_cases": len(train_ids),
                "contour_slices_per_object": float(np.mean(slices))}
    folder = out / f"clicks_{kind}" if (out / f"clicks_{kind}").is_dir() else out / "clicks_seven_points"
    clicks, dense_slices = [], []
    for cid in train_ids:
        path = folder / f"{cid}.mrk.json"
        if not path.is_file():
            continue
        annotation = read_markups(path, read_geometry(by_id[cid].image, role="image"))
        for obj in annotation.objects:
            if obj.kind == "dense":
                from PASegLib.image.io import read_image

                label = np.asarray(read_image(by_id[cid].label, role="label").array) > 0
                dense_slices.append(int(np.count_nonzero(label.any(axis=(0, 1)))))
            else:
                clicks.append(clicks_of(obj))
    cost = {"clicks_per_object": float(np.mean(clicks)) if clicks else None}
    if dense_slices:
        cost.update({"dense_cases": len(dense_slices), "contour_slices_per_object": float(np.mean(dense_slices))})
    return cost


def markdown(summary) -> str:
    """The summary as the Markdown table of ``docs/BENCHMARKS.md``."""
    lines = ["| protocol | clicks / object | dense cases (contour slices each) | Dice | ASSD (mm) | HD95 (mm) | "
             "Dice / full | paired vs | train (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        clicks = f"{r['clicks_per_object']:.1f}" if r.get("clicks_per_object") is not None else "–"
        dense = f"{r['dense_cases']} ({r['contour_slices_per_object']:.0f})" if r.get("dense_cases") else "0"
        ratio = f"{r['ratio_to_full']:.3f}" if r.get("ratio_to_full") is not None else "–"
        p = r.get("paired")
        paired = f"{p['against']}: {p['mean_diff']:+.3f} ({p['improved']}/{p['cases']})" if p else "–"
        lines.append(f"| {name} | {clicks} | {dense} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | "
                     f"{r['assd']['mean']:.2f} | {r['hd95']['mean']:.2f} | {ratio} | {paired} | {r['train_s']:.0f} |")
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
