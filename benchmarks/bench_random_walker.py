"""What the random-walker pseudo labels cost and how good they are: scikit-image's ``random_walker``
in 3D on the crop of each object, at the image's own resolution and on the 2 mm working grid.

For the first ``--cases`` training cases of ../shared/data/la_heart (ids sorted; the protocols benchmark's
training cases), extreme points and a loose box are simulated from the label (seed 0, the
``paseg simulate-clicks`` defaults) and :func:`PASegLib.seeds.pseudo_labels.pseudo_label_map` is timed with
``working_spacing_mm`` 2 (the default) and ``None`` (native 0.625 mm); Dice of the foreground against the label.
Prints one JSON object (per case rows and means); ``--out`` also writes it.

Usage::

    python benchmarks/bench_random_walker.py --cases 5 --out docs/results/random_walker_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks  # noqa: E402
from PASegLib.data.dataset import list_cases, load_case  # noqa: E402
from PASegLib.seeds.pseudo_labels import pseudo_label_map  # noqa: E402
from PASegLib.utils.atomic import atomic_write_json  # noqa: E402

LA_HEART = ROOT.parent / "shared" / "data" / "la_heart"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    rows = []
    for files in sorted(list_cases(args.data), key=lambda f: f.case_id)[:args.cases]:
        case = load_case(files, load_annotation=False, warn=None)
        label = np.asarray(case.label.array) > 0
        for kind in ("extreme_points", "box"):
            annotation = simulate_clicks(label, case.image.geometry, seed=0, config=ClickSimulationConfig(kind=kind))
            row = {"case": files.case_id, "kind": kind, "objects": len(annotation.objects)}
            for name, working in (("grid_2mm", 2.0), ("native", None)):
                start = time.perf_counter()
                labels = pseudo_label_map(case.image, annotation, random_walker={"working_spacing_mm": working})
                row[f"{name}_s"] = round(time.perf_counter() - start, 3)
                row[f"{name}_dice"] = round(_dice(labels == 1, label), 4)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    summary = {"cases": args.cases, "spacing_mm": list(case.image.geometry.spacing), "rows": rows, "mean": {
        kind: {key: round(float(np.mean([r[key] for r in rows if r["kind"] == kind])), 4)
               for key in ("grid_2mm_s", "grid_2mm_dice", "native_s", "native_dice")}
        for kind in ("extreme_points", "box")}}
    if args.out:
        atomic_write_json(args.out, summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
