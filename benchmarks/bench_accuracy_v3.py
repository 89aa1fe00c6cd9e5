"""Accuracy, honestly measured (issue 20): every setting chosen on validation cases drawn from the training
cases, the 20 test cases scored once per headline row, 3 seeds, paired Wilcoxon tests.

Split (fixed): the 80 la_heart case ids sorted by name; the first 60 are the training cases, the last 20 the test
cases. **Tuning** rows train on the first 48 of the 60 and are scored (with their labels) on the other 12 — the
*tuning cases*; the test cases are never read by a tuning row. **Headline** rows train on all 60 and are scored on
the 20 test cases, each with three seeds ``s`` in {0, 1, 2}: the training seed (initial weights, patch order, the
trainer's own held-out fifth for label-free selection) and the click seed (each case's clicks from its own stream,
``case_rng(s, case id)``) are both ``s``.

Tuning rows (seed 0), the choices they make:

* ``tune: full supervision`` — the reference of the tuning cases (run last: no choice rests on it);
* ``tune: stage one, extent auto`` — the chosen stage one with ``extent="auto"`` (the reach-capped label-free
  extent) instead of ε 0.175: whether the auto extent may become the default on la_heart (run late);
* ``tune: stage one, seeds`` vs ``tune: stage one, fill`` — the pseudo labels inside the click box: the expanded
  seeds alone, or the random-walker fill (``ExpansionConfig.fill``). The better mean Dice on the tuning cases is
  the default (**choice 1**);
* from the chosen stage one: ``tune: auxiliary`` (Attention U-Net), then the second-stage candidates —
  ``tune: SCM (paper)`` (the preset's SCM: teachers refreshed every 2 epochs), ``tune: SCM, fixed teachers``
  (teachers stay the stage-one networks, ``refresh_every 0``, 20 epochs), ``tune: refinement round``
  (Going to Extremes §2.4: the stage-one predictions refined by the random walker inside the box become the
  labels of a new stage-one run); each scored with the primary network (and SCM-E, the two networks averaged).
  The best of them on the tuning cases is the default second stage (**choice 2**), if it beats its stage one.

Headline rows (seeds 0, 1, 2): ``full supervision``, ``stage one`` (choice 1) and ``weak final`` (choice 2 from
that stage one), plus ``stage one, click noise 3 mm`` (seed 0). Every row trains with the CPU preset's budget
(full supervision the same). Selection: every weak run logs each label-free criterion at every validation round
on its own held-out fifth (with the labels for diagnosis); the regret of a criterion is the best round's Dice
minus the Dice of the round it picks, averaged over the weak runs.

Usage::

    python benchmarks/bench_accuracy_v3.py --threads 1 --rows "tune: stage one, seeds"   # one row (resumable)
    python benchmarks/bench_accuracy_v3.py --list                                        # rows, in order
    python benchmarks/bench_accuracy_v3.py --summary docs/results/accuracy_v3_cpu.json   # finished → summary
    python benchmarks/bench_accuracy_v3.py --markdown                                    # finished → table

A headline row refuses to run before the tuning rows its choices rest on are finished.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accuracy import LA_HEART, row_run, run_row, slug  # noqa: E402

from PASegLib.annotation.simulation import ClickSimulationConfig  # noqa: E402
from PASegLib.data.dataset import list_cases  # noqa: E402
from PASegLib.pipeline.inputs import median_spacing, simulate_missing_clicks  # noqa: E402
from PASegLib.pipeline.presets import preset_configs  # noqa: E402
from PASegLib.training.selection import CRITERIA, criterion_value  # noqa: E402
from PASegLib.utils.atomic import atomic_write_json  # noqa: E402

SEEDS = (0, 1, 2)
N_TUNE_TRAIN = 48
NOISE_MM = 3.0
FILL = {"fill": "random_walker"}
SEEDS_ONLY = {"fill": "none"}
SECOND = ("SCM (paper)", "SCM, fixed teachers", "refinement round")
#: the fewest weak runs a selection default may rest on (issue 20)
MIN_SELECTION_RUNS = 12


class Plan:
    """The rows: ``{name: spec}`` where spec = (mode, config, train ids, source, options) as in
    ``bench_accuracy.run_row``, with options ``eval`` ("tune" | "test"), ``clicks`` (seed, noise), ``refine_from``."""

    def __init__(self, ids, by_spacing, out: Path, *, quick: bool = False):
        self.ids, self.out = ids, out
        self.train60, self.test = ids[:60], ids[60:]
        self.tune_train, self.tune = ids[:N_TUNE_TRAIN], ids[N_TUNE_TRAIN:60]
        if quick:
            self.train60, self.test, self.tune_train, self.tune = ids[:4], ids[-2:], ids[:3], ids[3:4]
        extra = {"epochs": 2, "iterations_per_epoch": 2, "validate_every": 1} if quick else {}
        self.configs = {}
        for seed in SEEDS:
            self.configs[seed] = preset_configs("cpu", by_spacing, seed=seed, device="cpu",
                                                stage1_overrides={**extra}, scm_overrides={**extra})
        self.quick = quick

    def _done(self, name):
        path = self.out / "rows" / f"{slug(name)}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _mean(self, name, ensemble=False):
        r = self._done(name + (" (SCM-E)" if ensemble else ""))
        return None if r is None else float(np.mean([c["dice"] for c in r["cases"].values()]))

    def choice_fill(self):
        """Choice 1 (``None`` until both rows are finished): True when the fill wins on the tuning cases."""
        seeds, fill = self._mean("tune: stage one, seeds"), self._mean("tune: stage one, fill")
        return None if seeds is None or fill is None else fill > seeds

    def choice_second(self):
        """Choice 2: the best second stage (name, ensemble) on the tuning cases, or ``("none", False)`` when none
        beats its stage one; ``None`` until every candidate is finished."""
        base = self._mean("tune: stage one, chosen")
        scores = {}
        for cand in SECOND:
            for ens in ((False, True) if cand.startswith("SCM") else (False,)):
                scores[(cand, ens)] = self._mean(f"tune: {cand}", ens)
        if base is None or any(v is None for v in scores.values()):
            return None
        best = max(scores, key=scores.get)
        return best if scores[best] > base else ("none", False)

    def rows(self):
        rows = {}
        a0, b0, s0 = self.configs[0]
        full = lambda a: a.replace(supervision="full", alpha=0.0, beta=0.0)  # noqa: E731
        fill_on = self.choice_fill()
        filled = lambda c: c.replace(expansion={**c.expansion, **(FILL if fill_on else SEEDS_ONLY)})  # noqa: E731
        tune = {"eval": "tune", "clicks": (0, 0.0)}
        rows["tune: stage one, seeds"] = ("train", a0.replace(expansion={**a0.expansion, **SEEDS_ONLY}),
                                          self.tune_train, None, tune)
        rows["tune: stage one, fill"] = ("train", a0.replace(expansion={**a0.expansion, **FILL}), self.tune_train,
                                         None, {**tune, "paired_with": "tune: stage one, seeds"})
        if fill_on is None:
            for seed in SEEDS:  # the choices' filler: full supervision depends on none of them
                rows[f"full supervision, seed {seed}"] = ("train", full(self.configs[seed][0]), self.train60, None,
                                                          {"eval": "test", "clicks": (seed, 0.0), "seed": seed})
            rows["tune: full supervision"] = ("train", full(a0), self.tune_train, None, tune)
            return rows
        chosen = "tune: stage one, fill" if fill_on else "tune: stage one, seeds"
        rows["tune: stage one, chosen"] = ("reuse", None, self.tune_train, chosen, {**tune, "paired_with": chosen})
        rows["tune: auxiliary"] = ("train", filled(b0), self.tune_train, None, tune)
        scm_init = {**tune, "init": (chosen, "tune: auxiliary"), "paired_with": chosen}
        rows["tune: SCM (paper)"] = ("train", filled(s0), self.tune_train, None, scm_init)
        rows["tune: SCM, fixed teachers"] = ("train", filled(s0).replace(refresh_every=0, epochs=2 if self.quick
                                                                         else 20), self.tune_train, None, scm_init)
        for cand in ("SCM (paper)", "SCM, fixed teachers"):
            rows[f"tune: {cand} (SCM-E)"] = ("reuse", None, self.tune_train, f"tune: {cand}",
                                             {**tune, "ensemble": True, "paired_with": chosen})
        rows["tune: refinement round"] = ("train", filled(a0), self.tune_train, None,
                                          {**tune, "refine_from": chosen, "paired_with": chosen})
        second = self.choice_second()
        for seed in SEEDS:
            a, b, s = self.configs[seed]
            test = {"eval": "test", "clicks": (seed, 0.0), "seed": seed}
            rows[f"stage one, seed {seed}"] = ("train", filled(a), self.train60, None, test)
        for seed in SEEDS:
            a, b, s = self.configs[seed]
            test = {"eval": "test", "clicks": (seed, 0.0), "seed": seed}
            one = f"stage one, seed {seed}"
            if second is None:
                continue
            cand, ens = second
            fin = f"weak final, seed {seed}"
            if cand == "none":
                rows[fin] = ("reuse", None, self.train60, one, {**test, "paired_with": one})
            elif cand == "refinement round":
                rows[fin] = ("train", filled(a), self.train60, None, {**test, "refine_from": one, "paired_with": one})
            else:
                aux = f"auxiliary, seed {seed}"
                rows[aux] = ("train", filled(b), self.train60, None, test)
                scm = filled(s) if cand == "SCM (paper)" else filled(s).replace(refresh_every=0,
                                                                                 epochs=2 if self.quick else 20)
                trained = f"weak final (trained), seed {seed}"
                rows[trained] = ("train", scm, self.train60, None, {**test, "init": (one, aux), "paired_with": one})
                rows[fin] = ("reuse", None, self.train60, trained, {**test, "ensemble": ens, "paired_with": one})
        for seed in SEEDS:
            rows[f"full supervision, seed {seed}"] = ("train", full(self.configs[seed][0]), self.train60, None,
                                                      {"eval": "test", "clicks": (seed, 0.0), "seed": seed})
        rows["tune: stage one, extent auto"] = ("train", filled(a0).replace(
            expansion={**filled(a0).expansion, "extent": "auto"}), self.tune_train, None, {**tune, "paired_with":
                                                                                            chosen})
        rows["tune: full supervision"] = ("train", full(a0), self.tune_train, None, tune)
        rows["stage one, click noise 3 mm, seed 0"] = ("train", filled(a0), self.train60, None,
                                                       {"eval": "test", "clicks": (0, NOISE_MM), "seed": 0,
                                                        "paired_with": "stage one, seed 0"})
        return rows


def la_heart_ids(data: Path, *, quick: bool = False):
    """``(ids, median spacing of the 60 training cases)``: the 80 la_heart case ids sorted (the first 6 with
    ``quick``); exits naming the folder when it does not hold 80 cases."""
    files = list_cases(data)
    ids = sorted(f.case_id for f in files)
    if quick:
        ids = ids[:6]
    elif len(ids) != 80:
        raise SystemExit(f"{data}: expected the 80 la_heart cases, found {len(ids)}")
    return ids, median_spacing([f for f in files if f.case_id in set(ids[:60])])


def clicks_dir(out: Path, files, seed: int, noise: float, kind: str = "seven_points") -> Path:
    """The folder of the per-case clicks of ``kind`` with ``seed`` (and click noise ``noise`` mm, Gaussian RMS),
    each case from its own stream, simulated once (cases already there are kept)."""
    prefix = "clicks" if kind == "seven_points" else f"clicks_{kind}"
    d = out / f"{prefix}_s{seed}" if noise == 0 else out / f"{prefix}_s{seed}_noise{noise:g}mm"
    d.mkdir(parents=True, exist_ok=True)
    simulate_missing_clicks(files, d, seed=seed, config=ClickSimulationConfig(kind=kind, click_noise_mm=noise))
    return d


def ensure_refined(out: Path, rows, source: str, data: Path, clicks: Path, train_ids, device: str) -> Path:
    """The random-walker refinement of row ``source``'s predictions of its training cases (written once)."""
    from PASegLib.pipeline.refine import refine_pseudo_labels

    run = row_run(out, source, rows)
    target = out / f"refined_{run.name}"
    if not (target / "done.json").is_file():
        files = {f.case_id: f for f in list_cases(data, annotations_dir=clicks)}
        t = time.monotonic()
        stats = refine_pseudo_labels(run, [files[c] for c in train_ids], target, device=device)
        atomic_write_json(target / "done.json", {"source": str(run), "seconds": round(time.monotonic() - t, 1),
                                                 "cases": stats})
    return target


def run_one(plan: Plan, name, rows, data, device, threads):
    mode, config, train_ids, source, options = rows[name]
    seed, noise = options["clicks"]
    files = [f for f in list_cases(data) if f.case_id in set(plan.ids)]
    clicks = clicks_dir(plan.out, files, seed, noise)
    by_id = {f.case_id: f for f in list_cases(data, annotations_dir=clicks)}
    eval_ids = plan.tune if options["eval"] == "tune" else plan.test
    refine_s = 0.0
    if options.get("refine_from"):
        for dep in [options["refine_from"]]:
            if plan._done(dep) is None:
                raise SystemExit(f"row {name!r} needs row {dep!r} first")
        t = time.monotonic()
        target = ensure_refined(plan.out, rows, options["refine_from"], data, clicks, train_ids, device)
        refine_s = json.loads((target / "done.json").read_text(encoding="utf-8"))["seconds"]
        config = config.replace(pseudo_labels=str(target))
        rows = {**rows, name: (mode, config, train_ids, source, options)}
        del t
    for dep in list(options.get("init", ())) + ([source] if mode == "reuse" else []):
        if plan._done(dep) is None:
            raise SystemExit(f"row {name!r} needs row {dep!r} first")
    for dep in list(options.get("init", ())) + [options.get("refine_from")] + ([source] if mode == "reuse" else []):
        done = plan._done(dep) if dep else None
        if done and done.get("restored_from") and not Path(done["run"]).is_dir():
            raise SystemExit(f"row {name!r} builds on the run of row {dep!r}, restored from "
                             f"{done['restored_from']} without its run folder; retrain {dep!r} first (delete "
                             f"{plan.out / 'rows' / (slug(dep) + '.json')})")
    tag = f"clicks_s{seed}" + (f"_noise{noise:g}" if noise else "")
    result = run_row(name, rows[name], rows, plan.out, data, clicks, plan.out / "cache", eval_ids, by_id, device,
                     threads, tag=tag)
    if refine_s:
        stored = plan.out / "rows" / f"{slug(name)}.json"
        result = {**json.loads(stored.read_text(encoding="utf-8")), "refine_s": refine_s}
        atomic_write_json(stored, result)
    return result


def dependencies(spec):
    """The rows a row needs finished first (its init runs, the run it reuses, the run its labels refine)."""
    mode, _, _, source, options = spec
    return list(options.get("init", ())) + ([source] if mode == "reuse" else []) + \
        ([options["refine_from"]] if options.get("refine_from") else [])


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def work(plan, data, device, threads, only=None, runner=None) -> None:
    """Run rows until none is left: the first row (in ``plan.rows()`` order) that is not finished, not claimed
    by another live worker and whose dependencies are finished; wait while every remaining row waits on a
    running one. Several workers may run side by side on one ``--out``. ``runner(plan, name, rows, data, device,
    threads)`` trains and scores one row (default :func:`run_one`)."""
    import os

    me = os.getpid()
    while True:
        rows = plan.rows()
        todo = [n for n in rows if plan._done(n) is None and (only is None or n in only)]
        if not todo:
            return
        picked = None
        for name in todo:
            claim = plan.out / "rows" / f"{slug(name)}.running"
            if any(plan._done(d) is None for d in dependencies(rows[name])):
                continue
            if claim.is_file():
                try:
                    holder = int(claim.read_text() or 0)
                except (OSError, ValueError):
                    continue
                if _alive(holder):
                    continue
                claim.unlink(missing_ok=True)  # a killed worker's claim
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue  # another worker claimed it first
            os.write(fd, str(me).encode())
            os.close(fd)
            picked = name
            break
        if picked is None:
            if not any((plan.out / "rows" / f"{slug(n)}.running").is_file() for n in todo):
                raise SystemExit(f"rows {todo} wait on rows that no worker runs")
            time.sleep(20)
            continue
        start = time.monotonic()
        try:
            r = (runner or run_one)(plan, picked, rows, data, device, threads)
        finally:
            (plan.out / "rows" / f"{slug(picked)}.running").unlink(missing_ok=True)
        print(f"{time.strftime('%H:%M:%S')} {picked:45s} Dice {np.mean([c['dice'] for c in r['cases'].values()]):.4f}"
              f"  {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def wilcoxon_p(diff):
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=float)
    if diff.size < 2 or np.all(diff == 0):
        return None
    return float(wilcoxon(diff).pvalue)


def paired_comparison(dice: dict, other: dict, against: str) -> dict:
    """Per-case comparison of one row's Dice ``{case: dice}`` with another's (same cases): mean difference, the
    cases it improves, and the Wilcoxon signed-rank p-value."""
    diff = np.array([dice[c] - other[c] for c in dice])
    return {"against": against, "mean_diff": float(diff.mean()), "improved": int((diff > 0).sum()),
            "cases": int(diff.size), "wilcoxon_p": wilcoxon_p(diff)}


def _dice(r):
    return {c: v["dice"] for c, v in r["cases"].items()}


def summarize(plan: Plan, rows) -> dict:
    done = {n: plan._done(n) for n in rows}
    done = {n: r for n, r in done.items() if r is not None}
    table = {}
    for name, r in done.items():
        dice = _dice(r)
        spec = rows[name]
        cfg = spec[1] if spec[0] == "train" else rows[spec[3]][1]
        opts = spec[4]
        entry = {"dice_mean": float(np.mean(list(dice.values()))), "dice_std": float(np.std(list(dice.values()))),
                 "dice_last_mean": float(np.mean(list(r["cases_last"].values()))),
                 "cases": {c: round(v, 4) for c, v in dice.items()},
                 "evaluated_on": opts["eval"], "train_cases": r["train_cases"], "train_s": r["train_s"],
                 "refine_s": r.get("refine_s"), "epochs": r["epochs"], "best_epoch": r["best_epoch"],
                 "train_iterations": (cfg.epochs * cfg.iterations_per_epoch) if cfg is not None else None,
                 "network": cfg.network if cfg is not None else None,
                 "aux_network": cfg.aux_network if cfg is not None and cfg.stage == 2 else None,
                 "batch_size": cfg.batch_size if cfg is not None else None,
                 "selection": cfg.selection if cfg is not None else None,
                 "fill": (cfg.expansion.get("fill", "none") if cfg is not None else None),
                 "click_seed": opts["clicks"][0], "click_noise_mm": opts["clicks"][1],
                 "training_seed": cfg.seed if cfg is not None else None, "ensemble": bool(opts.get("ensemble")),
                 "run": r["run"]}
        paired = opts.get("paired_with")
        if paired in done:
            entry["paired"] = paired_comparison(dice, _dice(done[paired]), paired)
        table[name] = entry
    result = {"tuning": "validation", "seeds": list(SEEDS), "test_cases": plan.test,
              "tuning_cases": plan.tune, "tuning_train_cases": plan.tune_train,
              "split": "la_heart ids sorted; first 60 training (first 48 train the tuning rows, the other 12 score "
                       "them), last 20 test (scored once per headline row)",
              "choices": {"fill": plan.choice_fill(), "second_stage": plan.choice_second()},
              "tuned_on_tuning_cases": ["pseudo labels (seeds vs random-walker fill)",
                                        "second stage (SCM paper / fixed teachers / refinement round; SCM vs SCM-E)"],
              "full_supervision": "full supervision", "stage_one": "stage one", "weak_final": "weak final",
              "rows_per_run": table}
    # the headline rows: per-case Dice averaged over the seeds
    def head_row(head, seeds):
        per = [done[f"{head}, seed {s}"] for s in seeds]
        cases = {c: float(np.mean([_dice(p)[c] for p in per])) for c in plan.test}
        seed_means = {str(s): float(np.mean(list(_dice(p).values()))) for s, p in zip(seeds, per)}
        return {"dice_mean": float(np.mean(list(cases.values()))), "dice_std": float(np.std(list(cases.values()))),
                "seed_std": float(np.std(list(seed_means.values()))), "per_seed": seed_means,
                "seeds_done": list(seeds), "complete": len(seeds) == len(SEEDS),
                "train_iterations": table[f"{head}, seed {seeds[0]}"]["train_iterations"],
                "cases": {c: round(v, 4) for c, v in cases.items()}}

    heads = {}
    for head in ("full supervision", "stage one", "weak final"):
        seeds = [s for s in SEEDS if f"{head}, seed {s}" in done]
        if seeds:  # a row of fewer than 3 seeds says so ("complete": false)
            heads[head] = head_row(head, seeds)
    result["rows"] = heads
    if "full supervision" in heads:
        for head in heads:
            heads[head]["ratio_to_full"] = heads[head]["dice_mean"] / heads["full supervision"]["dice_mean"]

    def paired(a, b):  # per-case Dice averaged over the seeds both rows have, 20 pairs
        seeds = [s for s in heads[a]["seeds_done"] if s in heads[b]["seeds_done"]]
        ra, rb = head_row(a, seeds), head_row(b, seeds)
        diff = np.array([ra["cases"][c] - rb["cases"][c] for c in plan.test])
        return {"gain": float(diff.mean()), "wilcoxon_p": wilcoxon_p(diff),
                "improved_cases": f"{int((diff > 0).sum())}/{diff.size}", "seeds": seeds,
                "ratio": ra["dice_mean"] / rb["dice_mean"]}

    if "stage one" in heads and "weak final" in heads:
        result["second_stage"] = {**paired("weak final", "stage one"), "method": plan.choice_second()}
    if "stage one" in heads and "full supervision" in heads:
        result["stage_one_vs_full"] = paired("stage one", "full supervision")
    if "weak final" in heads and "full supervision" in heads:
        result["weak_final_vs_full"] = paired("weak final", "full supervision")
    result["selection"] = selection_study(done, rows, plan.out)
    return result


def restore(out: Path, summary_path: Path) -> list:
    """Write ``out/rows/<row>.json`` for every run of a committed summary (``rows_per_run``) whose row file is
    missing (a fresh checkout: ``bench_output`` is never committed), so that the rows not yet run can be paired
    with them (per-case Dice, rounded to 4 decimals as committed). A row that trains from a restored row's run
    (``init``, ``refine_from``) is refused: the run folder is not restored. A restored row holds the per-case Dice
    and the run's facts, not its validation rounds (the summary does not keep them): the selection study keeps
    the committed one (``restored_selection.json``, written when rows were restored).
    Rows whose selected and last Dice differ cannot be restored (the summary keeps the per-case Dice of one) and
    are refused. Returns the restored row names."""
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    (out / "rows").mkdir(parents=True, exist_ok=True)
    restored = []
    for name, r in summary["rows_per_run"].items():
        target = out / "rows" / f"{slug(name)}.json"
        if target.is_file():
            continue
        if abs(r["dice_mean"] - r["dice_last_mean"]) > 1e-9:
            raise SystemExit(f"--restore: row {name!r} of {summary_path} has different selected and last Dice; "
                             "its per-case last Dice is not in the summary")
        atomic_write_json(target, {"name": name, "run": r["run"], "train_s": r["train_s"], "refine_s": r["refine_s"],
                                   "best_epoch": r["best_epoch"], "epochs": r["epochs"],
                                   "train_cases": r["train_cases"], "validation": [], "restored_from": str(summary_path),
                                   "cases": {c: {"dice": v} for c, v in r["cases"].items()},
                                   "cases_last": dict(r["cases"])})
        restored.append(name)
    if restored and "selection" in summary and not (out / "restored_selection.json").is_file():
        atomic_write_json(out / "restored_selection.json", {k: v for k, v in summary["selection"].items()
                                                            if k not in ("restored", "later_runs")})
    return restored


def selection_study(done, rows, out: Path = None) -> dict:
    """Regret of each label-free criterion (and "last") over the weak training runs: best validation-round Dice
    minus the Dice of the round the criterion picks (on each run's own held-out cases). Restored rows (no
    validation rounds, :func:`restore`) count through the committed study in ``out/restored_selection.json``,
    which is returned with the study of the runs trained since under ``later_runs``."""
    if out is not None and (out / "restored_selection.json").is_file():
        later = selection_study({n: r for n, r in done.items() if not r.get("restored_from")}, rows)
        return {**json.loads((out / "restored_selection.json").read_text(encoding="utf-8")),
                "restored": "the committed study (its runs' validation rounds are not in this checkout)",
                "later_runs": later}
    runs = {}
    for name, r in done.items():
        spec = rows[name]
        if spec[0] != "train" or spec[1].supervision == "full" or r["run"] in {x["run"] for x in runs.values()}:
            continue
        rounds = [v for v in r["validation"] if v.get("dice") is not None]
        if len(rounds) >= 3:
            runs[name] = {"run": r["run"], "rounds": rounds}
    out = {}
    for criterion in list(CRITERIA) + ["last"]:
        regrets, within = {}, []
        for name, run in runs.items():
            rounds = run["rounds"]
            best = max(v["dice"] for v in rounds)
            if criterion == "last":
                picked = rounds[-1]["dice"]
            else:
                vals = [criterion_value(criterion, v) for v in rounds]
                if any(v is None for v in vals):
                    continue
                picked = rounds[int(np.argmax(vals))]["dice"]
            regrets[name] = round(best - picked, 4)
            within.append(best - picked <= 0.01 + 1e-9)
        if regrets:
            out[criterion] = {"mean_regret": float(np.mean(list(regrets.values()))),
                              "within_001_share": float(np.mean(within)), "runs": len(regrets), "per_run": regrets}
    # candidates: the criteria measured on every weak run (network agreement exists on SCM runs only, the held-out
    # loss only where it was asked for), compared on the same runs; a default needs at least MIN_SELECTION_RUNS
    common = [c for c in out if out[c]["runs"] == len(runs)]
    best = min(common, key=lambda c: out[c]["mean_regret"]) if common else None
    return {"criterion": best if len(runs) >= MIN_SELECTION_RUNS else None, "best_so_far": best,
            "mean_regret": out[best]["mean_regret"] if best else None,
            "within_001_share": out[best]["within_001_share"] if best else None,
            "runs": len(runs), "enough_runs": len(runs) >= MIN_SELECTION_RUNS, "compared": common,
            "measured_on": "each weak run's own held-out fifth of its training cases (label-free criteria; "
                           "their labels only score the regret)", "criteria": out}


def markdown(summary) -> str:
    lines = ["| row | evaluated on | Dice | Dice (last) | paired vs | Δ | p | train (s) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in summary["rows_per_run"].items():
        p = r.get("paired") or {}
        pv = p.get("wilcoxon_p")
        lines.append(f"| {name} | {r['evaluated_on']} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | "
                     f"{r['dice_last_mean']:.3f} | {p.get('against', '–')} | "
                     f"{p['mean_diff']:+.3f} ({p['improved']}/{p['cases']}) | " if p else
                     f"| {name} | {r['evaluated_on']} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | "
                     f"{r['dice_last_mean']:.3f} | – | – | ")
        lines[-1] += (f"{pv:.3g} | " if pv is not None else "– | ") + f"{r['train_s']:.0f} |"
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 6 cases, 2 epochs")
    parser.add_argument("--rows", nargs="+", default=None)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--worker", action="store_true", help="run every row that can run (several workers may "
                        "share one --out)")
    parser.add_argument("--summary", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--restore", type=Path, default=None, help="a committed summary (docs/results/"
                        "accuracy_v3_cpu.json) whose runs are written as finished rows where --out lacks them")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "bench_output" / ("accuracy_v3_quick" if args.quick else "accuracy_v3")
    if args.restore:
        names = restore(out, args.restore)
        print(f"restored {len(names)} row(s) from {args.restore}", file=sys.stderr)
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    ids, spacing = la_heart_ids(args.data, quick=args.quick)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    plan = Plan(ids, spacing, out, quick=args.quick)
    rows = plan.rows()
    if args.list:
        print("\n".join(f"{n}{'  [done]' if plan._done(n) else ''}" for n in rows))
        return 0
    if args.worker:
        work(plan, args.data, args.device, args.threads, only=set(args.rows) if args.rows else None)
        rows = plan.rows()
    elif not (args.summary or args.markdown):
        wanted = args.rows or list(rows)
        unknown = [r for r in wanted if r not in rows]
        if unknown:
            raise SystemExit(f"--rows: unknown or not yet defined (its choice is pending) row(s) {unknown}; "
                             "--list shows them")
        for name in wanted:
            if plan._done(name):
                continue
            start = time.monotonic()
            r = run_one(plan, name, rows, args.data, args.device, args.threads)
            print(f"{name:50s} Dice {np.mean([c['dice'] for c in r['cases'].values()]):.4f}  "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
            rows = plan.rows()  # a finished tuning row may settle a choice
    summary = summarize(plan, rows)
    if args.summary:
        atomic_write_json(args.summary, summary)
    if args.markdown:
        print(markdown(summary))
        return 0
    print(json.dumps({k: v for k, v in summary.items() if k != "rows_per_run"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
