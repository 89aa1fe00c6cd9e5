"""Accuracy benchmark on ../shared/data/la_heart: full supervision, stage one (with its ablations), SCM.

Split (fixed, documented): the 80 case ids sorted by name; the first 60 train (of which the trainer holds
out 20 % = 12 for validation: their clicks for label-free criteria, their labels for diagnostics only), the
last 20 are the test set. The small-cohort rows train on the first 6 of the 60 (one held out). Clicks are
simulated from the labels with seed 0 (``paseg simulate-clicks`` defaults); seeds use ε = 0.175 (the
expansion default, chosen on this dataset). Every row is evaluated on the same 20 test cases at native
resolution (whole image, no box restriction, no largest component), with the selected (``best.pt``) and
the last (``last.pt``) weights.

Rows are defined by their configs (:func:`row_table`); a run folder is named after a hash of its config and
training cases, so two rows with one config share one run, and a finished run is never retrained. Rows:

* ``full supervision`` — same network and budget, dense labels, no regularisers (the upper bound);
* the stage-one ladder — the first table's settings (``ISSUE5``, the row label kept for the committed results), then each later change added one at a time;
* ``stage one (defaults)`` / ``stage one, auxiliary (defaults)`` — the preset as a user gets it; the same
  with training seed 1 (patch order, initial weights and the held-out 12) measures the run-to-run spread;
* ``stage one (defaults), largest component``: the same model, each prediction reduced to its largest
  connected component (no training; tells apart errors far from the object and errors at its boundary);
* ``SCM (defaults)`` from those two runs (paired per-case comparison with its stage-one start), SCM-E, and
  SCM with seed-anchored pseudo labels (``scm_seed_anchor``);
* small cohort: full supervision and stage one (defaults) from 6 training cases.

Usage::

    python benchmarks/bench_accuracy.py --preset cpu --rows "full supervision"   # one row (resumable)
    python benchmarks/bench_accuracy.py --preset cpu                             # every row
    python benchmarks/bench_accuracy.py --summary docs/results/accuracy_cpu.json # finished rows → summary
    python benchmarks/bench_accuracy.py --markdown                               # finished rows → table
    python benchmarks/bench_accuracy.py --quick                                  # smoke: 6 cases, 2 epochs

Each finished row is stored as ``--out/rows/<row>.json`` (so several processes can run rows side by side);
the last stdout line is the JSON summary (:func:`summarize`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PASegLib.annotation.simulation import ClickSimulationConfig  # noqa: E402
from PASegLib.data.dataset import list_cases  # noqa: E402
from PASegLib.evaluation.metrics import compute_metrics  # noqa: E402
from PASegLib.image.io import read_image  # noqa: E402
from PASegLib.pipeline.inputs import median_spacing, simulate_missing_clicks  # noqa: E402
from PASegLib.pipeline.presets import preset_configs  # noqa: E402
from PASegLib.training.selection import CRITERIA, selection_quality  # noqa: E402
from PASegLib.utils.atomic import atomic_write_json  # noqa: E402

LA_HEART = ROOT.parent / "shared" / "data" / "la_heart"
#: the stage-one settings of the first accuracy table, for the first row of the ladder
ISSUE5 = {"data_term": "paper", "rampup_fraction": None, "rampup_epochs": 10.0, "crf_image_sigma": 0.0,
          "crf_sigma_intensity": 0.1, "alpha": 1.0, "beta": 0.1, "box_prior_weight": 0.0, "patch_size": (48, 48, 24),
          "selection": "click_score"}
#: regulariser settings of the ladder's base (the first table's mCRF and VM with the new data term and patch)
BASE = {"data_term": "official", "rampup_fraction": 1.0 / 3.0, "crf_image_sigma": 0.0, "crf_sigma_intensity": 0.1,
        "alpha": 1.0, "beta": 0.1, "box_prior_weight": 0.0}
SMALL_COHORT = 6
#: the committed rows trained on the plain expanded seeds (before the random-walker fill became the default)
PLAIN_SEEDS = {"expansion": {"fill": "none"}}


def row_table(a, b, s, train_ids):
    """``{row: (mode, config, train ids, source, options)}``; mode "train" or "reuse" (of row ``source``)."""
    base = a.replace(**BASE)
    full = base.replace(supervision="full", alpha=0.0, beta=0.0)
    small = train_ids[:SMALL_COHORT]
    # the mCRF on a smoothed image (σ_I 0.05; docs/results/energy_cpu.json) = the defaults; β 0.5 ranked the
    # truth best and trained best on la_heart but collapses the demo's synthetic tumours to background
    smoothed = base.replace(crf_image_sigma=1.0, crf_sigma_intensity=0.05)
    b05 = smoothed.replace(beta=0.5)
    aux, aux05 = f"stage one, auxiliary ({b.network}, defaults)", f"β 0.5: stage one, auxiliary ({b.network})"
    two = 2 * a.iterations_per_epoch
    init05 = {"init": ("+ β 0.5", aux05), "paired_with": "+ β 0.5"}
    rows = {
        "full supervision": ("train", full, train_ids, None, {}),
        "stage one, issue-5 settings": ("train", a.replace(**ISSUE5), train_ids, None, {}),
        "+ official data term, 48×48×32 patches": ("train", base, train_ids, None, {}),
        "+ mCRF on a smoothed image (σ 1 voxel, σ_I 0.05)": ("train", smoothed, train_ids, None, {}),
        "+ β 0.5": ("train", b05, train_ids, None, {}),
        "β 0.5, + box-tightness prior": ("train", b05.replace(box_prior_weight=1.0), train_ids, None, {}),
        "β 0.5 → β 1": ("train", b05.replace(beta=1.0), train_ids, None, {}),
        "β 0.5, + ramp-up over the whole run": ("train", b05.replace(rampup_fraction=1.0), train_ids, None, {}),
        "β 0.5, + twice the iterations": ("train", b05.replace(iterations_per_epoch=two), train_ids, None, {}),
        "full supervision, twice the iterations": ("train", full.replace(iterations_per_epoch=two), train_ids, None,
                                                   {}),
        "β 0.5, training seed 1": ("train", b05.replace(seed=1), train_ids, None, {}),
        "β 0.5, largest component": ("reuse", None, train_ids, "+ β 0.5",
                                     {"largest_component": True, "paired_with": "+ β 0.5"}),
        aux05: ("train", b.replace(beta=0.5), train_ids, None, {}),
        "β 0.5: SCM": ("train", s, train_ids, None, init05),
        "β 0.5: SCM-E": ("reuse", None, train_ids, "β 0.5: SCM", {"ensemble": True, "paired_with": "+ β 0.5"}),
        "β 0.5: SCM, lr 1e-2": ("train", s.replace(lr=1e-2), train_ids, None, init05),
        "β 0.5: SCM, seeds anchor the pseudo labels": ("train", s.replace(scm_seed_anchor=True), train_ids, None,
                                                       init05),
        "β 0.5: SCM lr 1e-2, seeds anchor the pseudo labels": ("train", s.replace(lr=1e-2, scm_seed_anchor=True),
                                                               train_ids, None, init05),
        "stage one (defaults)": ("train", a, train_ids, None, {}),
        aux: ("train", b, train_ids, None, {}),
        "SCM (defaults)": ("train", s, train_ids, None, {"init": ("stage one (defaults)", aux),
                                                          "paired_with": "stage one (defaults)"}),
        "SCM-E (defaults)": ("reuse", None, train_ids, "SCM (defaults)", {"ensemble": True,
                                                                          "paired_with": "stage one (defaults)"}),
        f"full supervision, {SMALL_COHORT} cases": ("train", full, small, None, {}),
        f"β 0.5, {SMALL_COHORT} cases": ("train", b05, small, None, {}),
    }
    return rows


def run_name(config, train_ids, init_dirs=(), tag=None) -> str:
    """``run_<hash>`` of the config, training cases, init runs and ``tag`` (the annotation set of
    ``bench_protocols.py``; ``None`` = the accuracy benchmark's seven points)."""
    parts = {"config": config.to_dict(), "train": list(train_ids), "init": [str(d) for d in init_dirs]}
    if tag is not None:
        parts["annotations"] = tag
    key = json.dumps(parts, sort_keys=True)
    return "run_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def finished_rows(out: Path, rows, results=None) -> dict:
    """``{row: its JSON}`` of the rows of ``rows`` finished in ``out/rows`` (added to ``results``); exits when none
    is (``results`` included)."""
    results = dict(results or {})
    for name in rows:
        path = out / "rows" / f"{slug(name)}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text(encoding="utf-8"))
    if not results:
        raise SystemExit(f"no finished row yet in {out / 'rows'}")
    return results


def row_run(out: Path, name: str, rows) -> Path:
    """The run folder of row ``name``: the one its finished result names, else the one its config names."""
    done = out / "rows" / f"{slug(name)}.json"
    if done.is_file():
        return Path(json.loads(done.read_text(encoding="utf-8"))["run"])
    return out / run_name(rows[name][1], rows[name][2])


def _summary(values):
    vals = np.array(values, dtype=float)
    finite = vals[np.isfinite(vals)]
    return {"mean": float(finite.mean()) if finite.size else None, "std": float(finite.std()) if finite.size else None,
            "n_nonfinite": int((~np.isfinite(vals)).sum())}


def _validation_rounds(run: Path):
    events = json.loads((run / "history.json").read_text(encoding="utf-8"))["events"]
    return [{k: v for k, v in e.items() if k not in ("event", "time", "best", "elapsed_s")}
            for e in events if e["event"] == "validation"]


def _evaluate(predictor, test_ids, by_id, pred_dir: Path, *, largest_component: bool = False):
    from PASegLib.inference.predictor import predict_files

    predict_files(predictor, [by_id[c] for c in test_ids], pred_dir, largest_component=largest_component)
    per_case = {}
    for cid in test_ids:
        label = read_image(by_id[cid].label, role="label")
        pred = read_image(pred_dir / f"{cid}_pred.nii.gz", role="prediction")
        per_case[cid] = compute_metrics(np.asarray(pred.array) > 0, np.asarray(label.array) > 0,
                                        spacing=label.geometry.spacing)
    return per_case


def run_row(name, spec, rows, out, data, clicks, cache, test_ids, by_id, device, threads, tag=None):
    """Train (or resume) and evaluate one row; returns its result dict (also stored in ``out/rows``).
    ``tag`` names the row's annotation set in its run folder's name (see :func:`run_name`)."""
    from PASegLib.inference.predictor import load_predictor
    from PASegLib.training.launch import train_from_dataset

    mode, config, train_ids, source, options = spec
    if mode == "reuse":
        run = Path(json.loads((out / "rows" / f"{slug(source)}.json").read_text(encoding="utf-8"))["run"])
        train_s = 0.0
    else:
        init_dirs = [row_run(out, r, rows) for r in options.get("init", ())]
        if threads:
            config = config.replace(num_threads=threads)
        run = out / run_name(config.replace(num_threads=0), train_ids, init_dirs, tag)
        if not (run / "model.json").is_file():
            resume = (run / "checkpoints" / "last.pt").is_file()
            code = train_from_dataset(data, run, None if resume else config, annotations_dir=clicks,
                                      case_ids=list(train_ids), resume=resume, cache_dir=cache,
                                      init_runs=init_dirs or None,
                                      stream=open("/dev/null", "w"))  # noqa: SIM115 (progress goes nowhere)
            if code != 0:
                raise SystemExit(f"row {name!r}: training stopped with exit code {code}")
        train_s = float(json.loads((run / "model.json").read_text(encoding="utf-8")).get("train_seconds") or 0.0)
    model = json.loads((run / "model.json").read_text(encoding="utf-8"))
    result = {"run": str(run), "train_s": round(train_s, 1), "best_epoch": model.get("best_epoch"),
              "epochs": model.get("epochs"), "train_cases": len(model.get("train_cases", [])),
              "validation": _validation_rounds(run), "options": {k: v for k, v in options.items() if k != "init"}}
    ensemble, largest = bool(options.get("ensemble")), bool(options.get("largest_component"))
    clicks_in = bool(options.get("use_clicks", True))  # a click-conditioned model: with the test cases' clicks
    t = time.monotonic()
    selected = _evaluate(load_predictor(run, checkpoint="best", ensemble=ensemble, device=device, verbose=False,
                                        use_clicks=clicks_in),
                         test_ids, by_id, out / "predictions" / f"{slug(name)}_best", largest_component=largest)
    result["predict_s"] = round(time.monotonic() - t, 1)
    if model.get("best_epoch") == model.get("epochs"):
        last = selected  # best.pt holds the last epoch's weights
    else:
        last = _evaluate(load_predictor(run, checkpoint="last", ensemble=ensemble, device=device, verbose=False,
                                        use_clicks=clicks_in),
                         test_ids, by_id, out / "predictions" / f"{slug(name)}_last", largest_component=largest)
    result["cases"] = {c: selected[c] for c in test_ids}
    result["cases_last"] = {c: last[c]["dice"] for c in test_ids}
    atomic_write_json(out / "rows" / f"{slug(name)}.json", {"name": name, **result})
    return result


def summarize(results, rows, *, preset, split):
    """The committed summary: per row mean ± std Dice / ASSD / HD95 (selected) and Dice (last), per-case Dice,
    the ratio to full supervision (the better of its selected and last), paired comparisons, selection
    (per criterion; the headline ``spearman`` / ``within_001_share`` are those of the criterion closest
    to passing both rules, ``passing`` those meeting both rules, ``default`` the selection they imply)."""
    table = {}
    for name, r in results.items():
        dice = [r["cases"][c]["dice"] for c in r["cases"]]
        entry = {"dice_mean": _summary(dice)["mean"], "dice_std": _summary(dice)["std"],
                 "dice_last_mean": _summary(list(r["cases_last"].values()))["mean"],
                 "dice_last_std": _summary(list(r["cases_last"].values()))["std"],
                 "assd": _summary([r["cases"][c]["assd"] for c in r["cases"]]),
                 "hd95": _summary([r["cases"][c]["hd95"] for c in r["cases"]]),
                 "best_epoch": r["best_epoch"], "epochs": r["epochs"], "train_cases": r["train_cases"],
                 "train_s": r["train_s"], "predict_s": r["predict_s"],
                 "cases": {c: round(r["cases"][c]["dice"], 4) for c in r["cases"]},
                 "cases_last": {c: round(v, 4) for c, v in r["cases_last"].items()}}
        paired = r.get("options", {}).get("paired_with")
        if paired in results:
            diff = np.array([r["cases"][c]["dice"] - results[paired]["cases"][c]["dice"] for c in r["cases"]])
            entry["paired"] = {"against": paired, "mean_diff": float(diff.mean()), "improved": int((diff > 0).sum()),
                               "cases": int(diff.size), "min_diff": float(diff.min()), "max_diff": float(diff.max())}
        table[name] = entry
    for name, entry in table.items():  # ratios against the matching full supervision (same cohort)
        full = f"full supervision, {SMALL_COHORT} cases" if name.endswith(f"{SMALL_COHORT} cases") else "full supervision"
        if name.endswith("twice the iterations") and "full supervision, twice the iterations" in table:
            entry["ratio_to_full_same_budget"] = entry["dice_mean"] / max(
                table["full supervision, twice the iterations"]["dice_mean"],
                table["full supervision, twice the iterations"]["dice_last_mean"])
        if full in table:
            denom = max(table[full]["dice_mean"], table[full]["dice_last_mean"])
            entry["ratio_to_full"] = entry["dice_mean"] / denom
    selection = {}
    for criterion in CRITERIA:
        runs = {}
        for name, r in results.items():
            if rows.get(name, ("reuse",))[0] != "train" or r["run"] in {x["run"] for x in runs.values()}:
                continue
            q = selection_quality(r["validation"], criterion)
            if q is not None:
                runs[name] = {**q, "run": r["run"]}
        if runs:
            selection[criterion] = {
                "spearman": float(np.mean([q["spearman"] for q in runs.values()])),
                "spearman_min": float(np.min([q["spearman"] for q in runs.values()])),
                "within_001_share": float(np.mean([q["within"] for q in runs.values()])),
                "runs": {n: {k: round(v, 4) for k, v in q.items() if k != "run"} for n, q in runs.items()}}
    passing = [c for c, q in selection.items() if q["spearman"] >= 0.8 and q["within_001_share"] >= 0.8]
    # the baseline every criterion must beat: the last validation round (the last weights)
    last_runs = {}
    for name, r in results.items():
        dice = [v["dice"] for v in r["validation"] if v.get("dice") is not None]
        if r["run"] in {results[n]["run"] for n in last_runs}:
            continue  # two rows of one run count once
        if rows.get(name, ("reuse",))[0] == "train" and len(dice) >= 3:
            last_runs[name] = {"picked_dice": dice[-1], "best_dice": max(dice),
                               "within": float(max(dice) - dice[-1] <= 0.01 + 1e-9)}
    if last_runs:
        selection["last"] = {"within_001_share": float(np.mean([q["within"] for q in last_runs.values()])),
                             "runs": {n: {k: round(v, 4) for k, v in q.items()} for n, q in last_runs.items()}}
    named = {"full_supervision": "full supervision", "stage_one": "stage one (defaults)", "scm": "SCM (defaults)"}
    scored = [c for c in selection if c != "last"]
    # the headline criterion: the one closest to passing both rules (largest min of the two margins)
    best = max(scored, key=lambda c: min(selection[c]["spearman"], selection[c]["within_001_share"]), default=None)
    headline = {"criterion": best, "spearman": selection[best]["spearman"] if best else None,
                "within_001_share": selection[best]["within_001_share"] if best else None}
    return {"preset": preset, "split": split, **{k: v for k, v in named.items()},
            "rows": table, "selection": {**headline, "criteria": selection, "passing": passing,
                                         "default": "last" if not passing else passing[0]}}


def markdown_table(summary) -> str:
    """The summary's rows as the Markdown table of ``docs/BENCHMARKS.md``."""
    lines = ["| row | Dice (selected) | Dice (last) | ASSD (mm) | HD95 (mm) | Dice / full | train (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        ratio = f"{r['ratio_to_full']:.3f}" if r.get("ratio_to_full") is not None else "–"
        lines.append(f"| {name} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | {r['dice_last_mean']:.3f} ± "
                     f"{r['dice_last_std']:.3f} | {r['assd']['mean']:.2f} ± {r['assd']['std']:.2f} | "
                     f"{r['hd95']['mean']:.2f} ± {r['hd95']['std']:.2f} | {ratio} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per training (0 = default)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="6 cases (4 train / 2 test), 2 epochs: a smoke run")
    parser.add_argument("--set", dest="common", type=json.loads, default={}, metavar="JSON",
                        help='TrainConfig overrides of every row, e.g. \'{"patch_size": [96, 96, 48]}\'')
    parser.add_argument("--stage1-set", type=json.loads, default={}, metavar="JSON", help="stage-one overrides")
    parser.add_argument("--scm-set", type=json.loads, default={}, metavar="JSON", help="SCM overrides")
    parser.add_argument("--rows", nargs="+", default=None, help="run only these rows")
    parser.add_argument("--list", action="store_true", help="print the row names and exit")
    parser.add_argument("--summary", type=Path, default=None, help="also write the summary JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the finished rows as a Markdown table")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "bench_output" / f"accuracy_{args.preset}{'_quick' if args.quick else ''}"
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    ids = sorted(c.case_id for c in list_cases(args.data))
    if args.quick:
        train_ids, test_ids = ids[:4], ids[-2:]
    else:
        if len(ids) != 80:
            raise SystemExit(f"{args.data}: expected the 80 la_heart cases, found {len(ids)}")
        train_ids, test_ids = ids[:60], ids[60:]
    (out / "rows").mkdir(parents=True, exist_ok=True)
    clicks = out / "clicks"
    clicks.mkdir(exist_ok=True)
    files = [f for f in list_cases(args.data) if f.case_id in set(train_ids + test_ids)]
    # the committed rows of accuracy_cpu.json were simulated with one stream shared by every case: kept to reproduce
    simulate_missing_clicks(files, clicks, seed=0, config=ClickSimulationConfig(legacy_shared_stream=True))
    by_id = {f.case_id: f for f in list_cases(args.data, annotations_dir=clicks)}
    extra = {"epochs": 2, "iterations_per_epoch": 2, "validate_every": 1} if args.quick else {}
    # every selection criterion is scored on the same runs (the selection-quality table): the held-out loss too
    stage1_extra = {"validation_heldout_loss": True, **extra}
    a, b, s = preset_configs(args.preset, median_spacing([by_id[c] for c in train_ids]), seed=0, device=args.device,
                             overrides={**PLAIN_SEEDS, **args.common},
                             stage1_overrides={**stage1_extra, **args.stage1_set},
                             scm_overrides={**extra, **args.scm_set})
    rows = row_table(a, b, s, train_ids)
    if args.list:
        print("\n".join(rows))
        return 0
    unknown = sorted(set(args.rows or ()) - set(rows))
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {unknown}; --list shows them")
    if not (args.summary or args.markdown):
        for name, spec in rows.items():
            if (args.rows and name not in args.rows) or (out / "rows" / f"{slug(name)}.json").is_file():
                continue
            start = time.monotonic()
            r = run_row(name, spec, rows, out, args.data, clicks, out / "cache", test_ids, by_id, args.device,
                        args.threads)
            dice = np.mean([c["dice"] for c in r["cases"].values()])
            print(f"{name:50s} Dice {dice:.4f} (last {np.mean(list(r['cases_last'].values())):.4f})  "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr)
    results = finished_rows(out, rows)
    split = {"train": len(train_ids), "test": len(test_ids), "validation_fraction": a.validation_fraction,
             "order": "case ids sorted; first train, last test", "clicks_seed": 0,
             "small_cohort": train_ids[:SMALL_COHORT]}
    summary = summarize(results, rows, preset=args.preset, split=split)
    summary["configs"] = {"stage1": a.to_dict(), "auxiliary": b.to_dict(), "scm": s.to_dict()}
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.summary, summary)
    if args.markdown:
        print(markdown_table(summary))
        return 0
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
