"""Accuracy benchmark on ../shared/data/la_heart: the paper's ablation table in one run.

Split (fixed, documented): the 80 case ids sorted by name; the first 60 train (of which the trainer holds
out 20 % = 12 for label-free checkpoint selection: their clicks only), the last 20 are the test set. Clicks
are simulated from the labels with seed 0 (``paseg simulate-clicks`` defaults). Every row trains on the same
60 cases with the same preset and is evaluated on the same 20 test cases at native resolution:

* full supervision (same primary network, dense labels, no regularisers) — the upper bound, once with the
  checkpoint the label-free score selects (as every other row) and once with the last epoch's weights;
* partial loss only; + mCRF; + VM; + both (= stage one);
* stage one of the auxiliary network (Attention U-Net; needed by SCM);
* SCM with λ = 0, 0.5, 1 (primary network), and SCM-E (λ = 0.5, mean of both networks).

Usage::

    python benchmarks/bench_accuracy.py --preset cpu                    # CPU, downsampled (~1 h on 2 cores)
    python benchmarks/bench_accuracy.py --preset paper --device cuda     # full resolution, GPU
    python benchmarks/bench_accuracy.py --quick                         # smoke: 6 cases, 2 epochs
    python benchmarks/bench_accuracy.py --markdown                      # the finished rows as a table

Results accumulate in ``--out`` (default ``bench_output/accuracy_<preset>``): a rerun skips finished rows.
The last stdout line is the JSON summary (rows with mean ± std Dice / ASSD / HD95 and seconds; ratios to
full supervision).
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

from PASegLib.atomic import atomic_write_json  # noqa: E402
from PASegLib.dataset import list_cases  # noqa: E402
from PASegLib.image_io import read_image  # noqa: E402
from PASegLib.metrics import compute_metrics  # noqa: E402
from PASegLib.pipeline import _median_spacing, _simulate_missing_clicks  # noqa: E402
from PASegLib.presets import preset_configs  # noqa: E402

LA_HEART = ROOT.parent / "shared" / "data" / "la_heart"


def _summary(rows):
    out = {}
    for key in ("dice", "assd", "hd95"):
        vals = np.array([r[key] for r in rows], dtype=float)
        finite = vals[np.isfinite(vals)]
        out[key] = {"mean": float(finite.mean()) if finite.size else None,
                    "std": float(finite.std()) if finite.size else None, "n_nonfinite": int((~np.isfinite(vals)).sum())}
    return out


def _history_validation(run: Path):
    events = json.loads((run / "history.json").read_text())["events"]
    return [{k: e.get(k) for k in ("epoch", "score", "dice", "agreement") if k in e}
            for e in events if e["event"] == "validation"]


def markdown_table(results) -> str:
    """The rows of ``results.json`` as the Markdown table of ``docs/BENCHMARKS.md`` (mean ± std)."""
    full = results.get("full supervision", {}).get("summary", {}).get("dice", {}).get("mean")
    lines = ["| row | Dice | ASSD (mm) | HD95 (mm) | Dice / full | train (s) | predict (s) |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = r["summary"]
        cells = [f"{s[k]['mean']:.{p}f} ± {s[k]['std']:.{p}f}" + (f" ({s[k]['n_nonfinite']} inf)"
                 if s[k]["n_nonfinite"] else "") for k, p in (("dice", 3), ("assd", 2), ("hd95", 2))]
        ratio = f"{s['dice']['mean'] / full:.3f}" if full else "–"
        lines.append(f"| {name} | {' | '.join(cells)} | {ratio} | {r['train_s']:.0f} | {r['predict_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="6 cases (4 train / 2 test), 2 epochs: a smoke run")
    parser.add_argument("--stage1-epochs", type=int, default=None)
    parser.add_argument("--scm-epochs", type=int, default=None)
    parser.add_argument("--iterations-per-epoch", type=int, default=None)
    parser.add_argument("--rows", nargs="+", default=None, help="run only these rows")
    parser.add_argument("--markdown", action="store_true", help="only print the finished rows as a Markdown table")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "bench_output" / f"accuracy_{args.preset}{'_quick' if args.quick else ''}"
    if args.markdown:
        if not (out / "results.json").is_file():
            raise SystemExit(f"--markdown: no finished rows yet ({out / 'results.json'} does not exist)")
        print(markdown_table(json.loads((out / "results.json").read_text(encoding="utf-8"))))
        return 0

    from PASegLib.inference import load_predictor, predict_files
    from PASegLib.training.launch import train_from_dataset

    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    ids = sorted(c.case_id for c in list_cases(args.data))
    if args.quick:
        train_ids, test_ids = ids[:4], ids[-2:]
    else:
        if len(ids) != 80:
            raise SystemExit(f"{args.data}: expected the 80 la_heart cases, found {len(ids)}")
        train_ids, test_ids = ids[:60], ids[60:]
    clicks = out / "clicks"
    clicks.mkdir(exist_ok=True)
    files = [f for f in list_cases(args.data) if f.case_id in set(train_ids + test_ids)]
    _simulate_missing_clicks(files, clicks, seed=0)
    by_id = {f.case_id: f for f in list_cases(args.data, annotations_dir=clicks)}
    stage1_extra, scm_extra = {}, {}
    if args.preset == "cpu" and not args.quick:
        stage1_extra, scm_extra = {"iterations_per_epoch": 24}, {"iterations_per_epoch": 24}
    if args.quick:
        stage1_extra = scm_extra = {"epochs": 2, "iterations_per_epoch": 2, "validate_every": 1}
    for extra, value in ((stage1_extra, args.stage1_epochs), (scm_extra, args.scm_epochs)):
        if value:
            extra["epochs"] = value
        if args.iterations_per_epoch:
            extra["iterations_per_epoch"] = args.iterations_per_epoch
    a, b, s = preset_configs(args.preset, _median_spacing([by_id[c] for c in train_ids]), seed=0,
                             device=args.device, stage1_overrides=stage1_extra, scm_overrides=scm_extra)
    stage1 = out / "stage1_both"
    rows = {
        "full supervision": ("train", a.replace(supervision="full", alpha=0.0, beta=0.0), None, False),
        # the label-free score saturates under dense labels and picks an early epoch: the last one as well
        "full supervision, last epoch": ("reuse", None, "full supervision", False),
        "partial loss only": ("train", a.replace(alpha=0.0, beta=0.0), None, False),
        "+ mCRF": ("train", a.replace(beta=0.0), None, False),
        "+ VM": ("train", a.replace(alpha=0.0), None, False),
        "stage one (mCRF + VM)": ("train", a, None, False),
        f"stage one, auxiliary ({b.network})": ("train", b, None, False),
        "SCM λ=0": ("train", s.replace(scm_lambda=0.0), "init", False),
        "SCM λ=0.5": ("train", s, "init", False),
        "SCM λ=1": ("train", s.replace(scm_lambda=1.0), "init", False),
        "SCM-E (λ=0.5)": ("reuse", None, "SCM λ=0.5", True),
    }
    run_dirs = {name: out / ("run_" + "".join(ch if ch.isalnum() else "_" for ch in name).strip("_"))
                for name in rows}
    run_dirs["stage one (mCRF + VM)"] = stage1
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    cache = out / "cache"
    for name, (mode, config, init, ensemble) in rows.items():
        if args.rows and name not in args.rows:
            continue
        if name in results:
            continue
        start = time.monotonic()
        if mode == "train":
            run = run_dirs[name]
            if not (run / "model.json").is_file():
                resume = (run / "checkpoints" / "last.pt").is_file()
                init_runs = [stage1, run_dirs[f"stage one, auxiliary ({b.network})"]] if init else None
                code = train_from_dataset(args.data, run, None if resume else config, annotations_dir=clicks,
                                          case_ids=train_ids, resume=resume, cache_dir=cache, init_runs=init_runs,
                                          stream=open("/dev/null", "w"))  # noqa: SIM115 (progress goes nowhere)
                if code != 0:
                    raise SystemExit(f"row {name!r}: training stopped with exit code {code}")
        else:
            run = run_dirs[init]
        train_s = 0.0
        if mode == "train":  # the trainer's own total (summed over resumed sessions); else this session's time
            recorded = json.loads((run / "model.json").read_text(encoding="utf-8")).get("train_seconds")
            train_s = float(recorded) if recorded is not None else time.monotonic() - start
        t = time.monotonic()
        checkpoint = "last" if name.endswith("last epoch") else "best"
        predictor = load_predictor(run, checkpoint=checkpoint, ensemble=ensemble, device=args.device, verbose=False)
        pred_dir = out / "predictions" / run_dirs[name].name
        predict_files(predictor, [by_id[c] for c in test_ids], pred_dir)
        predict_s = time.monotonic() - t
        per_case = []
        for cid in test_ids:
            label = read_image(by_id[cid].label, role="label")
            pred = read_image(pred_dir / f"{cid}_pred.nii.gz", role="prediction")
            m = compute_metrics(np.asarray(pred.array) > 0, np.asarray(label.array) > 0, spacing=label.geometry.spacing)
            per_case.append({"case": cid, **m})
        results[name] = {"summary": _summary(per_case), "cases": per_case, "train_s": round(train_s, 1),
                         "predict_s": round(predict_s, 1), "run": str(run), "validation": _history_validation(run)}
        results = {**{k: results[k] for k in rows if k in results}, **results}  # table order = row order
        atomic_write_json(results_path, results)
        d = results[name]["summary"]["dice"]
        print(f"{name:40s} Dice {d['mean']:.4f} ± {d['std']:.4f}  train {train_s:.0f} s", file=sys.stderr)
    full = results.get("full supervision", {}).get("summary", {}).get("dice", {}).get("mean")
    table = {name: {**{k: v for k, v in r["summary"].items()}, "train_s": r["train_s"], "predict_s": r["predict_s"],
                    "ratio_to_full": (r["summary"]["dice"]["mean"] / full) if full else None}
             for name, r in results.items()}
    final = {"preset": args.preset, "device": args.device, "train_cases": len(train_ids), "test_cases": len(test_ids),
             "configs": {"stage1": a.to_dict(), "scm": s.to_dict()}, "rows": table}
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
