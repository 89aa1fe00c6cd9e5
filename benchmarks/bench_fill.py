"""Label quality of the seven-point pseudo labels: the plain expanded seeds vs the random-walker fill of the box.

Training cases only: the la_heart ids sorted by name, the first 60 are the training cases (the last 20 the
test set of ``bench_accuracy.py``, never read here); ``--cases N`` takes the first N of the 60 (default 30).
Clicks are simulated from each label with seed 0 and one random stream shared by every case
(``legacy_shared_stream``, as ``bench_accuracy.py`` and the committed ``docs/results/fill_labels_cpu.json`` did;
the default seven-point settings otherwise). Both label maps come from
:func:`~PASegLib.seeds.pseudo_labels.pseudo_label_map` at the image's native resolution with the default
:class:`~PASegLib.seeds.expansion.ExpansionConfig` (``fill="none"`` vs ``fill="random_walker"``) and the
default random-walker settings (2 mm working grid).

Per case and map, against the ground truth G (all at native resolution):

* labelled foreground F = (map == 1): ``dice`` = 2|F ∩ G| / (|F| + |G|), ``precision``, ``recall``;
* ``bg_error`` = |(map == 0) ∩ G| / |G| (object voxels wrongly labelled background);
* coverage: ``box_labelled`` = share of click-box voxels that are labelled (0 or 1), ``labelled_accuracy`` =
  share of labelled box voxels whose label agrees with G, ``object_labelled`` = share of G that is labelled;
* ``seconds``: the seeds' time (expansion) and the fill's extra time, per object.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fill.py --threads 1 --out docs/results/fill_labels_cpu.json

The last stdout line is the JSON summary (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LA_HEART = ROOT.parent / "shared" / "data" / "la_heart"


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)


def label_stats(partial, gt, box):
    """The measures of the module doc for one label map (numpy arrays, ``box`` a bool click-box mask)."""
    import numpy as np

    fg, bg = partial == 1, partial == 0
    tp = float(np.logical_and(fg, gt).sum())
    n_fg, n_gt = float(fg.sum()), float(gt.sum())
    labelled = box & (partial != 2)
    agree = (fg & gt) | (bg & ~gt)
    return {
        "dice": 2 * tp / (n_fg + n_gt) if n_fg + n_gt else 1.0,
        "precision": tp / n_fg if n_fg else 0.0,
        "recall": tp / n_gt if n_gt else 0.0,
        "bg_error": float((bg & gt).sum()) / n_gt if n_gt else 0.0,
        "box_labelled": float(labelled.sum()) / float(box.sum()),
        "labelled_accuracy": float((agree & labelled).sum()) / float(labelled.sum()) if labelled.any() else 0.0,
        "object_labelled": float((gt & (partial != 2)).sum()) / n_gt if n_gt else 0.0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--cases", type=int, default=30, help="the first N of the 60 training cases (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    parser.add_argument("--fill", type=json.loads, default={}, metavar="JSON",
                        help='ExpansionConfig fill overrides, e.g. \'{"fill_margin": 0.1}\'')
    parser.add_argument("--variants", type=json.loads, default=[], metavar="JSON",
                        help='further fill settings measured on the same seeds, e.g. \'[{"fill_margin": 0.2}]\'')
    parser.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = parser.parse_args(argv)
    _threads(args.threads)

    import numpy as np

    from PASegLib.annotation.simulation import ClickSimulationConfig
    from PASegLib.annotation.validation import object_box
    from PASegLib.data.dataset import list_cases, load_case
    from PASegLib.pipeline.inputs import simulate_missing_clicks
    from PASegLib.seeds.expansion import ExpansionConfig
    from PASegLib.seeds.pseudo_labels import pseudo_label_map
    from PASegLib.seeds.random_walker import RandomWalkerConfig
    from PASegLib.seeds.seed_fill import fill_seeds
    from PASegLib.utils.atomic import atomic_write_json

    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    ids = sorted(c.case_id for c in list_cases(args.data))
    if len(ids) != 80:
        raise SystemExit(f"{args.data}: expected the 80 la_heart cases, found {len(ids)}")
    if not 1 <= args.cases <= 60:
        raise SystemExit(f"--cases must be in 1..60 (training cases only), got {args.cases}")
    train_ids = ids[:60][: args.cases]
    plain = ExpansionConfig(fill="none")  # the plain seeds (the fill is the default since issue 20)
    filled = ExpansionConfig(**{**plain.to_dict(), "fill": "random_walker", **args.fill})
    rw = RandomWalkerConfig()
    if not isinstance(args.variants, list) or not all(isinstance(v, dict) for v in args.variants):
        raise SystemExit(f"--variants must be a JSON list of objects, got {args.variants!r}")
    variants = {json.dumps(v, sort_keys=True): ExpansionConfig(**{**filled.to_dict(), **v}) for v in args.variants}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clicks = Path(tmp)
        files = [f for f in list_cases(args.data) if f.case_id in set(train_ids)]
        simulate_missing_clicks(files, clicks, seed=0, config=ClickSimulationConfig(legacy_shared_stream=True))
        by_id = {f.case_id: f for f in list_cases(args.data, annotations_dir=clicks)}
        for case_id in train_ids:
            case = load_case(by_id[case_id])
            gt = np.asarray(case.label.array) > 0
            box = np.zeros(gt.shape, dtype=bool)
            for obj in case.annotation.objects:
                lo, hi = object_box(obj, case.image.geometry)
                box[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))] = True
            t0 = time.perf_counter()
            seeds = pseudo_label_map(case.image, case.annotation, expansion=plain)
            t1 = time.perf_counter()
            fill = fill_seeds(case.image, case.annotation, seeds, margin=filled.fill_margin,
                              bg_radius_mm=filled.fill_bg_radius_mm, random_walker=rw)
            t2 = time.perf_counter()
            n_obj = len(case.annotation.objects)
            row = {"case": case_id, "objects": n_obj,
                   "spacing_mm": [round(float(v), 4) for v in case.image.geometry.spacing], "gt_box_share": float(gt.sum()) / float(box.sum()),
                   "seeds": {**label_stats(seeds, gt, box), "seconds_per_object": (t1 - t0) / n_obj},
                   "fill": {**label_stats(fill, gt, box), "seconds_per_object": (t2 - t1) / n_obj}}
            for name, config in variants.items():
                t3 = time.perf_counter()
                other = fill_seeds(case.image, case.annotation, seeds, margin=config.fill_margin,
                                   bg_radius_mm=config.fill_bg_radius_mm, random_walker=rw)
                row.setdefault("variants", {})[name] = {**label_stats(other, gt, box),
                                                        "seconds_per_object": (time.perf_counter() - t3) / n_obj}
            rows.append(row)
            print(f"{case_id}: seeds dice {row['seeds']['dice']:.3f}  fill dice {row['fill']['dice']:.3f} "
                  f"(p {row['fill']['precision']:.3f} r {row['fill']['recall']:.3f}, "
                  f"{row['fill']['seconds_per_object']:.2f} s)", file=sys.stderr, flush=True)

    def mean(kind, key):
        return float(np.mean([r[kind][key] for r in rows]))

    keys = ("dice", "precision", "recall", "bg_error", "box_labelled", "labelled_accuracy", "object_labelled",
            "seconds_per_object")
    summary = {
        "benchmark": "benchmarks/bench_fill.py",
        "data": "la_heart",
        "split": "ids sorted by name; the first 60 are the training cases, the last 20 the test set (not read)",
        "cases": train_ids,
        "clicks": "simulate_missing_clicks(seed=0), default seven-point ClickSimulationConfig (as bench_accuracy.py): "
                  "one random stream shared by every case, no click noise",
        "resolution": "each image's native grid (spacing per row); the random walker on its 2 mm working grid",
        "threads": args.threads,
        "seeds_config": plain.to_dict(),
        "fill_config": filled.to_dict(),
        "random_walker": rw.to_dict(),
        "mean": {kind: {k: round(mean(kind, k), 4) for k in keys} for kind in ("seeds", "fill")},
        "variants": {name: {"fill_config": config.to_dict(),
                            "mean": {k: round(float(np.mean([r["variants"][name][k] for r in rows])), 4)
                                     for k in keys}} for name, config in variants.items()},
        "gt_box_share": round(float(np.mean([r["gt_box_share"] for r in rows])), 4),
        "review": {"fill_dice": 0.734, "seeds_dice": 0.529, "cases": 30, "note": "the method review's numbers"},
        "rows": rows,
    }
    if args.out is not None:
        atomic_write_json(args.out, summary)
    print(json.dumps({"mean": summary["mean"], "variants": {n: v["mean"] for n, v in summary["variants"].items()},
                      "gt_box_share": summary["gt_box_share"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
