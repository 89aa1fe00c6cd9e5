"""The review queue on ../shared/data/la_heart: correct the top-k ranked cases vs k random cases, then retrain.

Same split, clicks seed, preset and evaluation as ``benchmarks/bench_accuracy.py`` and the earlier protocol rows
(``legacy_rows`` of ``docs/results/protocols_cpu.json``: one click stream shared by every case; the
80 case ids sorted; the first 60 train — the trainer holds 12 of them out for validation —, the last 20 test;
every row evaluated on the 20 test cases at native resolution with its selected weights; CPU preset).

Rows (the summary's keys):

* ``base`` — PA-Seg stage one (CPU preset) from seven points on the 60 training cases;
* the **pool** = the 48 training cases the trainer trains on (its 12 held-out validation cases excluded);
  ``rank``: the base model scores every pool case with the label-free review score
  (:func:`PASegLib.inference.review.review_queue`: 1 − mean Dice between the prediction and its re-predictions
  flipped along i, j and k; the model has one network, so no two-network signal) → ``--out/review_queue.json``,
  with the base model's true Dice of each pool case (of the same prediction, on the 2 mm training grid; for the
  Spearman correlation only, never used to rank or choose);
* ``ranked_3`` / ``ranked_6`` / ``ranked_12`` — the top-k of that queue "corrected" with their dense labels (a
  mixed cohort, exactly like the earlier protocol benchmark's ``mixed_k`` rows: dense for those k, seven points for the
  rest, stage one with the preset, each case supervised by what it has), retrained from scratch;
* ``random_3`` / ``random_6`` / ``random_12`` — the same with k cases of a seeded random draw of the pool
  (seed 0, nested: the 3 are among the 6, the 6 among the 12).

The annotation folder of a mixed row links each case's file of ``clicks_seven_points`` or ``clicks_dense`` (so
the prepared-data cache, keyed by the resolved file, is shared by all rows). Each row's run is named after its
config, cases and annotation set (``bench_accuracy.run_name``): a finished row (``--out/rows/<row>.json``) is
skipped, an interrupted one resumes from its last checkpoint.

Usage::

    python benchmarks/bench_review_queue.py --rows base --threads 1          # one row (resumable)
    python benchmarks/bench_review_queue.py --rows rank --threads 1          # the queue (after base)
    python benchmarks/bench_review_queue.py --rows ranked_3 random_3 ...     # the corrected cohorts
    python benchmarks/bench_review_queue.py --summary docs/results/review_queue_cpu.json --markdown
"""

from __future__ import annotations

import argparse
import json
import os
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

KS = (3, 6, 12)
RANDOM_SEED = 0
FLIPS = ("i", "j", "k")
QUEUE = "review_queue.json"


def simulate(kind: str, out: Path, files, *, legacy_shared_stream: bool) -> Path:
    """``out/clicks_<kind>``: the simulated annotations of ``files`` (seed 0; cases already there are kept).
    ``legacy_shared_stream``: every case drawn from seed 0 alone (the same draws on every case), as the committed
    rows of ``docs/results/review_queue_cpu.json`` were simulated (True to reproduce them); False: each case its own
    stream (``PASegLib.annotation.simulation.case_rng``)."""
    folder = out / f"clicks_{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    simulate_missing_clicks(files, folder, seed=0,
                            config=ClickSimulationConfig(kind=kind, legacy_shared_stream=legacy_shared_stream))
    return folder


def random_draw(pool, k: int, seed: int = RANDOM_SEED):
    """The first ``k`` of a seeded permutation of ``pool`` (nested: the 3 drawn are among the 6 drawn)."""
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:k]]


def mixed_folder(out: Path, kind: str, files, dense_ids) -> Path:
    """``out/clicks_<kind>``: per case a link to its seven-point file, or to its dense file for ``dense_ids``."""
    # the committed rows of review_queue_cpu.json were simulated with one stream shared by every case (seed 0)
    base = simulate("seven_points", out, files, legacy_shared_stream=True)
    dense = simulate("dense", out, [f for f in files if f.case_id in set(dense_ids)],
                     legacy_shared_stream=True) if dense_ids else None
    folder = out / f"clicks_{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / f"{f.case_id}.mrk.json"
        if not target.is_symlink() and not target.exists():
            src = (dense if f.case_id in set(dense_ids) else base) / f"{f.case_id}.mrk.json"
            os.symlink(os.path.relpath(src, folder), target)
    return folder


def rank_pool(out: Path, base_run: Path, pool_files, device: str, threads: int) -> dict:
    """The review queue of the pool by the base model (``out/review_queue.json``, resumable), with the base model's
    true per-case Dice and their Spearman correlation with the score. The Dice is that of the very prediction the
    score compared (on the training grid, 2 mm; the label resampled nearest-neighbour to that grid), so the
    ranking costs no extra prediction; it is never used to rank or choose."""
    path = out / QUEUE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    import torch
    from scipy.stats import spearmanr

    from PASegLib.image.io import read_image
    from PASegLib.image.resample import resample_to_shape
    from PASegLib.inference.review import parse_flips, review_queue

    if threads:
        torch.set_num_threads(threads)
    start, masks = time.monotonic(), {}
    queue = review_queue(pool_files, base_run, signal="flip", flips=parse_flips(FLIPS), device=device, masks=masks)
    by_id = {f.case_id: f for f in pool_files}
    for row in queue["cases"]:  # the truth, for the correlation only
        pred = masks[row["case"]]
        label = np.asarray(read_image(by_id[row["case"]].label, role="label").array) > 0
        label = resample_to_shape(label.astype(np.uint8), pred.shape, order=0) > 0
        row["base_dice"] = round(2.0 * np.count_nonzero(pred & label) / max(1, pred.sum() + label.sum()), 4)
    scores = [r["score"] for r in queue["cases"]]
    dice = [r["base_dice"] for r in queue["cases"]]
    queue.update(rank_s=round(time.monotonic() - start, 1), threads=threads,
                 spearman_score_vs_base_dice=float(spearmanr(scores, dice).statistic),
                 note="base_dice (dense labels, on the 2 mm training grid) is reported for the correlation only; "
                      "the ranking never reads it")
    atomic_write_json(path, queue)
    return queue


def row_table(a, train_ids, pool, queue):
    """``{row: (mode, config, train ids, source, options)}`` (``bench_accuracy.row_table``'s form); the ranked
    rows exist once the queue does."""
    rows = {"base": ("train", a, train_ids, None, {"kind": "seven_points"})}
    for k in KS:
        rows[f"random_{k}"] = ("train", a, train_ids, None, {"kind": f"random_{k}", "dense": random_draw(pool, k),
                                                             "order": "random", "k": k, "paired_with": "base"})
    if queue is not None:
        ranked = [r["case"] for r in queue["cases"]]
        for k in KS:
            rows[f"ranked_{k}"] = ("train", a, train_ids, None, {"kind": f"ranked_{k}", "dense": ranked[:k],
                                                                 "order": "ranked", "k": k, "paired_with": "base"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (0 = default)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "review_queue_cpu")
    parser.add_argument("--set", dest="common", type=json.loads, default={}, metavar="JSON",
                        help="TrainConfig overrides of every row (a smaller equal budget, e.g. '{\"epochs\": 15}')")
    parser.add_argument("--budget-note", default=None, help="why --set changed the budget (stored in the summary)")
    parser.add_argument("--other-budget", action="append", default=[], metavar="JSON",
                        help="a summary of this benchmark at another budget, stored under 'other_budgets'")
    parser.add_argument("--rows", nargs="+", default=None, help="rows to run: base, rank, random_K, ranked_K")
    parser.add_argument("--summary", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--device-note", default="2-core shared x86-64 CPU (six agents), torch CPU, no GPU")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    out = args.out.resolve()
    (out / "rows").mkdir(parents=True, exist_ok=True)
    files = list_cases(args.data)
    ids = sorted(c.case_id for c in files)
    if len(ids) != 80:
        raise SystemExit(f"{args.data}: expected the 80 la_heart cases, found {len(ids)}")
    train_ids, test_ids = ids[:60], ids[60:]
    a, _b, _s = preset_configs("cpu", median_spacing([f for f in files if f.case_id in set(train_ids)]), seed=0,
                               device=args.device, overrides={**PLAIN_SEEDS, **args.common})
    _, val_ids = split_cases(train_ids, validation_fraction=a.validation_fraction, seed=a.seed)
    pool = [c for c in train_ids if c not in set(val_ids)]
    queue_path = out / QUEUE
    queue = json.loads(queue_path.read_text(encoding="utf-8")) if queue_path.is_file() else None
    wanted = args.rows or (["base", "rank"] + [f"{o}_{k}" for k in KS for o in ("ranked", "random")])
    known = {"base", "rank"} | {f"{o}_{k}" for k in KS for o in ("ranked", "random")}
    if set(wanted) - known:
        raise SystemExit(f"--rows: unknown row(s) {sorted(set(wanted) - known)}; rows: {', '.join(sorted(known))}")
    if not (args.summary or args.markdown):
        for name in wanted:
            if name == "rank":
                done = out / "rows" / "base.json"
                if not done.is_file():
                    raise SystemExit("the base row must finish before the pool can be ranked (--rows base)")
                base_run = Path(json.loads(done.read_text(encoding="utf-8"))["run"])
                queue = rank_pool(out, base_run, [f for f in files if f.case_id in set(pool)], args.device,
                                  args.threads)
                print(f"ranked {len(queue['cases'])} pool cases in {queue['rank_s']:.0f} s; Spearman(score, base "
                      f"Dice) {queue['spearman_score_vs_base_dice']:+.3f}", file=sys.stderr)
                continue
            if queue is None and queue_path.is_file():  # ranked by another process since this one started
                queue = json.loads(queue_path.read_text(encoding="utf-8"))
            rows = row_table(a, train_ids, pool, queue)
            if name not in rows:
                raise SystemExit(f"row {name!r} needs the review queue first (--rows rank)")
            if (out / "rows" / f"{slug(name)}.json").is_file():
                continue
            spec = rows[name]
            kind = spec[4]["kind"]
            clicks = mixed_folder(out, kind, files, spec[4].get("dense", ())) if name != "base" else \
                simulate("seven_points", out, files, legacy_shared_stream=True)
            by_id = {f.case_id: f for f in list_cases(args.data, annotations_dir=clicks)}
            start = time.monotonic()
            # one prepared-data cache for every row (the mixed folders link the same annotation files)
            r = run_row(name, spec, rows, out, args.data, clicks, out / "cache_seven_points", test_ids, by_id,
                        args.device, args.threads, tag=kind)
            print(f"{name:12s} Dice {np.mean([c['dice'] for c in r['cases'].values()]):.4f}  "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr)
    return report(args, out, a, row_table(a, train_ids, pool, queue), queue, train_ids, test_ids, val_ids, pool)


def report(args, out: Path, a, rows, queue, train_ids, test_ids, val_ids, pool) -> int:
    """The finished rows → summary JSON / Markdown (``bench_accuracy.summarize`` plus the queue's numbers)."""
    results = finished_rows(out, rows)
    summary = summarize(results, rows, preset="cpu",
                        split={"train": len(train_ids), "test": len(test_ids), "validation": len(val_ids),
                               "pool": len(pool), "order": "case ids sorted; first 60 train, last 20 test",
                               "clicks_seed": 0, "random_seed": RANDOM_SEED})
    for key in ("selection", "full_supervision", "stage_one", "scm"):  # the accuracy benchmark's headline keys
        summary.pop(key, None)
    base_dice = {r["case"]: r["base_dice"] for r in queue["cases"]} if queue else {}
    for name, entry in summary["rows"].items():
        options = results[name].get("options", {})
        dense = list(options.get("dense", []))
        entry.update(order=options.get("order"), k=options.get("k", 0), dense_cases=dense,
                     how={"network": a.network, "batch": a.batch_size, "patch": list(a.patch_size),
                          "cases": entry["train_cases"], "validation_cases": len(val_ids), "seed": a.seed,
                          "iterations": a.epochs * a.iterations_per_epoch, "epochs": a.epochs,
                          "threads": args.threads, "train_s": entry["train_s"], "predict_s": entry["predict_s"],
                          "run": results[name]["run"]})
        if dense and base_dice:
            entry["base_dice_of_corrected"] = float(np.mean([base_dice[c] for c in dense]))
        # every test case empty: the run collapsed to background (its last validation says so without labels: click
        # score 1/3, flip agreement 1 on empty predictions)
        entry["collapsed_to_background"] = all(v == 0.0 for v in entry["cases"].values())
        rounds = results[name].get("validation") or []
        if rounds:
            entry["validation_last"] = {k: round(v, 4) for k, v in rounds[-1].items() if isinstance(v, float)}
    comparisons = {}
    for k in KS:
        ranked, rand = summary["rows"].get(f"ranked_{k}"), summary["rows"].get(f"random_{k}")
        if ranked and rand:
            diff = np.array([ranked["cases"][c] - rand["cases"][c] for c in ranked["cases"]])
            comparisons[str(k)] = {"ranked_minus_random": float(diff.mean()), "ranked_better_cases": int((diff > 0).sum()),
                                   "cases": int(diff.size)}
    summary["ranked_vs_random"] = comparisons
    if queue:
        summary["ranking"] = {"signal": queue["signal"], "description": queue["signal_description"],
                              "flips": queue["flips"], "checkpoint": "best (= last: the preset selects the last)",
                              "pool_cases": len(queue["cases"]), "rank_s": queue["rank_s"],
                              "spearman_score_vs_base_dice": queue["spearman_score_vs_base_dice"],
                              "queue": [{k: r[k] for k in ("case", "rank", "score", "base_dice")} for r in queue["cases"]]}
    summary["config"] = a.to_dict()
    summary["device"] = args.device_note
    if args.budget_note or args.common:
        summary["budget"] = {"overrides": args.common, "note": args.budget_note}
    for path in args.other_budget:  # summaries of the same benchmark at other budgets (``--summary`` of each)
        summary.setdefault("other_budgets", {})[Path(path).stem] = json.loads(Path(path).read_text(encoding="utf-8"))
    if args.summary:
        atomic_write_json(args.summary, summary)
    if args.markdown:
        print(markdown(summary))
        return 0
    print(json.dumps(summary))
    return 0


def markdown(summary) -> str:
    """The summary as the Markdown table of ``docs/BENCHMARKS.md``."""
    lines = ["| row | k | corrected cases' base Dice | test Dice | Δ vs base (better cases) | train (s) |",
             "|---|---|---|---|---|---|"]  # "collapsed" marks a run whose every test prediction is empty
    for name, r in summary["rows"].items():
        corrected = f"{r['base_dice_of_corrected']:.3f}" if r.get("base_dice_of_corrected") is not None else "–"
        p = r.get("paired")
        paired = f"{p['mean_diff']:+.3f} ({p['improved']}/{p['cases']})" if p else "–"
        dice = f"{r['dice_mean']:.3f} ± {r['dice_std']:.3f}" + (" (collapsed)" if r.get("collapsed_to_background") else "")
        lines.append(f"| {name} | {r['k']} | {corrected} | {dice} | {paired} | {r['train_s']:.0f} |")
    rk = summary.get("ranking")
    if rk:
        lines.append(f"\nRanking signal: {rk['signal']} ({rk['description']}; flips {', '.join(rk['flips'])}); "
                     f"Spearman(score, base Dice) on the {rk['pool_cases']} pool cases: "
                     f"{rk['spearman_score_vs_base_dice']:+.3f}.")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
