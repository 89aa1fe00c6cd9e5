"""Weak-label protocols side by side on ../shared/data/la_heart (issue 21): Dice, ASSD, HD95, clicks, and the loss
terms each row credits.

Split and clicks as in ``benchmarks/bench_accuracy_v3.py``: the 80 case ids sorted, the first 60 train (the trainer
holds a fifth of them out for its label-free checkpoint selection), the last 20 test, scored once per row at native
resolution. Every row: training seed 0, click seed 0, **each case's clicks from its own stream**
(``case_rng(0, case id)``), the CPU preset with the kind's protocol settings
(:data:`PASegLib.pipeline.presets.PROTOCOL_SETTINGS`) exactly as ``paseg run --kind …`` trains, 1 thread. No setting
is chosen here: every row runs the product's settings, so the test cases tune nothing.

Rows (the summary's keys; ``*`` = run here, the others are read from a committed summary):

* ``full`` / ``seven_points`` — full supervision and stage one, seed 0 of ``docs/results/accuracy_v3_cpu.json``
  (the same split, click streams and preset);
* ``single_point`` * — PSCV: one click per object and one background click, partial CE + Dice on the clicked
  balls plus the 3D contrastive variance loss (λ_cv 0.3), 4 patches per batch centred on the click in one frame
  with one set of flips per batch; ``single_point_no_cv`` * the same with λ_cv 0 (the ablation);
* ``extreme_points`` * — Going to Extremes round 1: random-walker pseudo labels from the six extreme points,
  CE + Dice + the point loss (weight 1, normalised by the heatmap mass, the points jittered by 2 mm at every
  iteration); ``extreme_points_no_point_loss`` * the same without the point loss — what ``PROTOCOL_SETTINGS``
  trains since these rows (the trainer's held-out training cases preferred it: 0.797 against 0.776);
* ``box`` * — random-walker pseudo labels from a loose box;
* ``seven_points_noise_4mm`` / ``extreme_points_noise_4mm`` / ``box_noise_4mm`` * — the same protocols from clicks
  moved by Gaussian noise of 4 mm RMS (3D); the extreme-point and box random walkers are told to expect that
  error (``RandomWalkerConfig.click_error_mm`` 4: a wider unlabelled shell, background only beyond it). Seven
  points have no such setting (``click_error_mm`` does not act on their expansion or fill): their background
  clicks lie 2–10 mm outside the object, a margin that absorbs part of the noise;
  ``extreme_points_no_point_loss_noise_4mm`` * the extreme points the product trains (no point loss) from the same
  noisy clicks; ``seven_points_noise_2mm`` / ``extreme_points_no_point_loss_noise_2mm`` / ``box_noise_2mm`` * the
  same with 2 mm of noise (``click_error_mm`` 2);
* ``mixed_N_teacher_student`` * (N = 12, 6, 3) — paper 003: N training cases densely labelled (the first N of the
  training cases the trainer does not hold out), seven points for the rest; a teacher trained on the N dense cases
  with the box channel, its soft labels of the weak cases inside their boxes, a student trained on both
  (:mod:`PASegLib.pipeline.teacher_student`); ``mixed_N`` * the joint stage one beside each (``--mixed joint``).

``docs/results/protocols_cpu.json`` also keeps the rows of the earlier protocol benchmark (one click stream
copied to every case, plain seeds, the point loss divided by the patch size, PSCV in random frames) under
``legacy_rows``, for comparison only.

Usage::

    python benchmarks/bench_protocols.py --worker                    # run every row not finished (resumable)
    python benchmarks/bench_protocols.py --list
    python benchmarks/bench_protocols.py --restore docs/results/protocols_cpu.json --worker  # a fresh checkout:
                                                     # the committed rows count as finished, the others run
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accuracy import LA_HEART, run_name, run_row, slug  # noqa: E402
from bench_accuracy_v3 import clicks_dir, la_heart_ids, paired_comparison, work  # noqa: E402

from PASegLib.data.dataset import list_cases  # noqa: E402
from PASegLib.data.prepared import split_cases  # noqa: E402
from PASegLib.pipeline.presets import PROTOCOL_SETTINGS, preset_configs  # noqa: E402
from PASegLib.utils.atomic import atomic_write_json  # noqa: E402

NOISE_MM = 4.0
SMALL_NOISE_MM = 2.0
MIXED = (12, 6, 3)
ACCURACY = ROOT / "docs" / "results" / "accuracy_v3_cpu.json"
#: rows read from the accuracy benchmark's committed summary: (its run, what it is)
EXTERNAL = {"full": "full supervision, seed 0", "seven_points": "stage one, seed 0"}


class ProtocolPlan:
    """The rows ``{name: (mode, config, train ids, source, options)}`` (``bench_accuracy.run_row``'s spec);
    options: ``kind``, ``clicks`` (seed, noise mm), ``dense`` (ids), ``teacher_student``, ``paired_with``."""

    def __init__(self, ids, spacing, out: Path, *, quick: bool = False):
        self.ids, self.out, self.quick = ids, out, quick
        self.train, self.test = (ids[:60], ids[60:]) if not quick else (ids[:4], ids[-2:])
        extra = {"epochs": 2, "iterations_per_epoch": 2, "validate_every": 1} if quick else {}
        self.a = preset_configs("cpu", spacing, seed=0, device="cpu", stage1_overrides=extra)[0]
        _, held = split_cases(self.train, validation_fraction=self.a.validation_fraction, seed=self.a.seed)
        self.usable = [c for c in self.train if c not in set(held)]

    def config(self, kind: str, **changes):
        return self.a.replace(**{**PROTOCOL_SETTINGS[kind], **changes})

    def rows(self):
        rows = {}
        test = lambda kind, noise=0.0, **o: {"kind": kind, "clicks": (0, noise), "eval": "test", **o}  # noqa: E731
        noisy = {"random_walker": {"click_error_mm": NOISE_MM}}
        rows["single_point"] = ("train", self.config("single_point"), self.train, None, test("single_point"))
        # Going to Extremes' round 1 with its point loss (weight 1), as the rows ran; the ablation without it is
        # what PROTOCOL_SETTINGS trains since (chosen on the trainer's held-out training cases, not on these rows)
        rows["extreme_points"] = ("train", self.config("extreme_points", point_loss_weight=1.0), self.train, None,
                                  test("extreme_points"))
        rows["extreme_points_no_point_loss"] = ("train", self.config("extreme_points", point_loss_weight=0.0),
                                                self.train, None, test("extreme_points", paired_with="extreme_points"))
        n = MIXED[0]
        rows[f"mixed_{n}_teacher_student"] = ("train", self.config("seven_points"), self.train, None,
                                              test(f"mixed_{n}", dense=self.usable[:n], teacher_student=True,
                                                   paired_with="seven_points"))
        rows["seven_points_noise_4mm"] = ("train", self.config("seven_points", **noisy), self.train, None,
                                          test("seven_points", NOISE_MM, paired_with="seven_points"))
        rows["extreme_points_noise_4mm"] = ("train", self.config("extreme_points", point_loss_weight=1.0, **noisy),
                                            self.train, None,
                                            test("extreme_points", NOISE_MM, paired_with="extreme_points"))
        rows["box_noise_4mm"] = ("train", self.config("box", **noisy), self.train, None,
                                 test("box", NOISE_MM, paired_with="box"))
        rows["mixed_12"] = ("train", self.config("seven_points"), self.train, None,
                            test("mixed_12", dense=self.usable[:12], paired_with="mixed_12_teacher_student"))
        rows["single_point_no_cv"] = ("train", self.config("single_point", cv_weight=0.0), self.train, None,
                                      test("single_point", paired_with="single_point"))
        rows["box"] = ("train", self.config("box"), self.train, None, test("box"))
        for n in MIXED[1:]:
            rows[f"mixed_{n}_teacher_student"] = ("train", self.config("seven_points"), self.train, None,
                                                  test(f"mixed_{n}", dense=self.usable[:n], teacher_student=True,
                                                       paired_with="seven_points"))
        for n in MIXED[1:]:  # the joint stage one beside each teacher–student row
            rows[f"mixed_{n}"] = ("train", self.config("seven_points"), self.train, None,
                                  test(f"mixed_{n}", dense=self.usable[:n], paired_with=f"mixed_{n}_teacher_student"))
        # the extreme points the product trains (no point loss) with noisy clicks, and 2 mm of noise for each kind;
        # the random walker told to expect the noise, each row paired with its exact-click twin
        no_point_loss = {"point_loss_weight": 0.0}
        for noise, kind, name, paired, changes in (
                (NOISE_MM, "extreme_points", "extreme_points_no_point_loss_noise_4mm", "extreme_points_no_point_loss",
                 no_point_loss),
                (SMALL_NOISE_MM, "seven_points", "seven_points_noise_2mm", "seven_points", {}),
                (SMALL_NOISE_MM, "extreme_points", "extreme_points_no_point_loss_noise_2mm",
                 "extreme_points_no_point_loss", no_point_loss),
                (SMALL_NOISE_MM, "box", "box_noise_2mm", "box", {})):
            rows[name] = ("train", self.config(kind, **changes, random_walker={"click_error_mm": noise}), self.train,
                          None, test(kind, noise, paired_with=paired))
        for name, source in ({} if self.quick else EXTERNAL).items():
            rows[name] = ("external", self.a.replace(supervision="full", alpha=0.0, beta=0.0) if name == "full"
                          else self.a, self.train, source, test("dense" if name == "full" else "seven_points"))
        return rows

    def _done(self, name):
        path = self.out / "rows" / f"{slug(name)}.json"
        if path.is_file():
            return complete_row(self.out, name, json.loads(path.read_text(encoding="utf-8")))
        if name in EXTERNAL and not self.quick and ACCURACY.is_file():
            r = json.loads(ACCURACY.read_text(encoding="utf-8"))["rows_per_run"].get(EXTERNAL[name])
            if r is not None:
                return {"external": f"{ACCURACY.relative_to(ROOT)}: {EXTERNAL[name]}", "train_s": r["train_s"],
                        "train_cases": r["train_cases"], "cases": {c: {"dice": v} for c, v in r["cases"].items()}}
        return None


def clicks_of_row(plan: ProtocolPlan, options, files) -> Path:
    """The annotation folder of a row: its kind's per-case clicks (seed, noise); a mixed row's dense cases get a
    dense object, the other cases seven points."""
    seed, noise = options["clicks"]
    dense = options.get("dense")
    if not dense:
        return clicks_dir(plan.out, files, seed, noise, options["kind"])
    folder = plan.out / f"clicks_{options['kind']}_s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    weak = clicks_dir(plan.out, files, seed, noise, "seven_points")
    full = clicks_dir(plan.out, [f for f in files if f.case_id in set(dense)], seed, noise, "dense")
    for f in files:
        target = folder / f"{f.case_id}.mrk.json"
        if not target.is_file():
            shutil.copyfile((full if f.case_id in set(dense) else weak) / f"{f.case_id}.mrk.json", target)
    return folder


def loss_terms(run: Path) -> dict:
    """Mean of every logged loss term over the whole run and over its last epoch (``history.json``)."""
    from PASegLib.training.curves import epoch_means

    events = json.loads((run / "history.json").read_text(encoding="utf-8"))["events"]
    means = epoch_means(events)
    return {term: {"mean": round(float(np.mean(list(per.values()))), 6),
                   "last_epoch": round(float(per[max(per)]), 6)} for term, per in sorted(means.items())}


def run_protocol_row(plan: ProtocolPlan, name, rows, data, device, threads):
    """Train (or resume) and score one row; a teacher–student row trains its teacher and writes its soft labels
    first (each step resumable)."""
    mode, config, train_ids, source, options = rows[name]
    files = [f for f in list_cases(data) if f.case_id in set(plan.ids)]
    clicks = clicks_of_row(plan, options, files)
    by_id = {f.case_id: f for f in list_cases(data, annotations_dir=clicks)}
    tag = clicks.name
    extra = {}
    if options.get("teacher_student"):
        from PASegLib.pipeline.teacher_student import (
            split_mixed_cohort,
            student_config,
            teacher_config,
            weak_box_margin_mm,
            write_soft_labels,
        )
        from PASegLib.training.launch import train_from_dataset

        dense, weak, kinds = split_mixed_cohort([by_id[c] for c in train_ids])
        teacher_cfg = teacher_config(config, box_margin_mm=weak_box_margin_mm(kinds)).replace(num_threads=threads)
        teacher = plan.out / (run_name(teacher_cfg.replace(num_threads=0), dense, (), tag) + "_teacher")
        t = time.monotonic()
        if not (teacher / "model.json").is_file():
            resume = (teacher / "checkpoints" / "last.pt").is_file()
            code = train_from_dataset(data, teacher, None if resume else teacher_cfg, annotations_dir=clicks,
                                      case_ids=dense, resume=resume, cache_dir=plan.out / "cache",
                                      stream=open("/dev/null", "w"))  # noqa: SIM115
            if code != 0:
                raise SystemExit(f"row {name!r}: the teacher's training stopped with exit code {code}")
        soft = plan.out / f"soft_{teacher.name}"
        write_soft_labels(teacher, [by_id[c] for c in weak], soft, device=device)
        teacher_model = json.loads((teacher / "model.json").read_text(encoding="utf-8"))
        extra = {"teacher": {"run": str(teacher), "dense_cases": len(dense), "weak_cases": len(weak),
                             "train_s": teacher_model.get("train_seconds"), "network": teacher_cfg.network,
                             "box_channel_margin_mm": teacher_cfg.box_channel_margin_mm},
                 "teacher_and_soft_labels_s": round(time.monotonic() - t, 1)}
        config = student_config(config, soft)
        rows = {**rows, name: (mode, config, train_ids, source, options)}
        atomic_write_json(plan.out / "rows" / f"{slug(name)}.teacher.json", extra)  # kept if killed below
    result = run_row(name, rows[name], rows, plan.out, data, clicks, plan.out / "cache", plan.test, by_id, device,
                     threads, tag=tag)
    stored = plan.out / "rows" / f"{slug(name)}.json"
    result = complete_row(plan.out, name, json.loads(stored.read_text(encoding="utf-8")))
    atomic_write_json(stored, result)
    return result


def complete_row(out: Path, name: str, row: dict) -> dict:
    """A finished row with what ``run_row`` does not store: its teacher (written before the student trained) and
    its loss terms (from the run's history), also when a worker was killed between the two writes."""
    teacher = out / "rows" / f"{slug(name)}.teacher.json"
    if "teacher" not in row and teacher.is_file():
        row = {**row, **json.loads(teacher.read_text(encoding="utf-8"))}
    if "loss_terms" not in row and row.get("run") and (Path(row["run"]) / "history.json").is_file():
        row = {**row, "loss_terms": loss_terms(Path(row["run"]))}
    return row


def annotation_cost(kind: str, folder: Path, train_ids, data: Path) -> dict:
    """``clicks_per_object`` over the clicked training cases; for rows with dense cases ``dense_cases`` and
    ``contour_slices_per_object`` (the axial slices a dense object spans: the annotation-time proxy)."""
    from PASegLib.annotation.markups import read_markups
    from PASegLib.annotation.model import clicks_of
    from PASegLib.image.io import read_geometry, read_image

    by_id = {f.case_id: f for f in list_cases(data)}

    def slices(cid):
        label = np.asarray(read_image(by_id[cid].label, role="label").array) > 0
        return int(np.count_nonzero(label.any(axis=(0, 1))))

    if kind == "dense":
        return {"clicks_per_object": None, "dense_cases": len(train_ids),
                "contour_slices_per_object": float(np.mean([slices(c) for c in train_ids]))}
    clicks, dense = [], []
    for cid in train_ids:
        path = folder / f"{cid}.mrk.json"
        if not path.is_file():
            continue
        for obj in read_markups(path, read_geometry(by_id[cid].image, role="image")).objects:
            (dense.append(slices(cid)) if obj.kind == "dense" else clicks.append(clicks_of(obj)))
    cost = {"clicks_per_object": float(np.mean(clicks)) if clicks else None, "dense_cases": len(dense)}
    if dense:
        cost["contour_slices_per_object"] = float(np.mean(dense))
    return cost


def restore(out: Path, summary_path: Path, test_ids) -> list:
    """Write ``out/rows/<row>.json`` for every row a committed summary holds that was trained here (not the
    external rows) and whose row file is missing (a fresh checkout: ``bench_output`` is never committed), so that
    the rows not yet run can be summarised and paired with them. A restored row keeps the committed entry (per-case
    Dice rounded to 4 decimals, the HD95 and ASSD means, the loss terms, how it ran); its run folder is not restored,
    so it is never retrained from. A restored row paired with a restored or an external row keeps its committed test
    (computed from the unrounded Dice); a new row pairs with a restored one through the rounded Dice. A summary of
    other test cases (another split, ``--quick``) is refused, naming the row. Returns the restored row names."""
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    (out / "rows").mkdir(parents=True, exist_ok=True)
    todo = {name: entry for name, entry in summary["rows"].items() if not (
        name in EXTERNAL or entry.get("from") or (out / "rows" / f"{slug(name)}.json").is_file())}
    for name, entry in todo.items():  # every row checked before any is written
        if set(entry["cases"]) != set(test_ids):
            raise SystemExit(f"--restore: row {name!r} of {summary_path} was scored on other test cases than this "
                             f"plan's {len(test_ids)}; restore a summary of the same split")
    restored = []
    for name, entry in todo.items():
        target = out / "rows" / f"{slug(name)}.json"
        kept = {k: v for k, v in entry.items() if k != "ratio_to_full"}
        atomic_write_json(target, {"name": name, "restored_from": str(summary_path), "entry": kept,
                                   "train_s": entry["train_s"], "train_cases": entry["train_cases"],
                                   "cases": {c: {"dice": v} for c, v in entry["cases"].items()}})
        restored.append(name)
    return restored


def row_entry(plan: ProtocolPlan, name, r, rows, data: Path) -> dict:
    """The summary's entry of one finished row (Dice, HD95, ASSD, how it ran, its loss terms and annotation cost);
    a restored row's committed entry as it was (:func:`restore`)."""
    if r.get("entry"):
        return dict(r["entry"])
    mode, cfg, train_ids, source, opts = rows[name]
    if opts.get("teacher_student"):  # the student's settings (the row's config is the cohort's stage one)
        from PASegLib.pipeline.teacher_student import student_config

        if not r.get("teacher"):
            raise SystemExit(f"row {name!r}: its teacher is not recorded (rows/{slug(name)}.teacher.json is "
                             f"missing); delete rows/{slug(name)}.json and run the row again")
        cfg = student_config(cfg, "soft labels")
    dice = {c: v["dice"] for c, v in r["cases"].items()}
    entry = {"dice_mean": float(np.mean(list(dice.values()))), "dice_std": float(np.std(list(dice.values())))}
    for metric in ("assd", "hd95"):
        vals = [v.get(metric) for v in r["cases"].values()]
        if all(v is not None for v in vals):
            finite = [v for v in vals if np.isfinite(v)]
            entry[metric] = {"mean": float(np.mean(finite)) if finite else None, "n_nonfinite": len(vals) - len(finite)}
    teacher = r.get("teacher")
    entry.update({
        "kind": opts["kind"], "network": cfg.network, "batch_size": cfg.batch_size,
        "train_cases": r["train_cases"], "dense_cases": (len(opts.get("dense", ())) if opts["kind"] != "dense"
                                                         else r["train_cases"]),
        "click_noise_mm": opts["clicks"][1], "click_seed": opts["clicks"][0], "training_seed": cfg.seed,
        "seeds": [cfg.seed], "click_stream": "per case (case_rng(seed, case id))",
        "train_iterations": cfg.epochs * cfg.iterations_per_epoch, "selection": cfg.selection,
        "loss_weights": {k: getattr(cfg, k) for k in ("alpha", "beta", "cv_weight", "point_loss_weight",
                                                      "soft_label_weight")},
        "patch_frame": cfg.patch_frame, "batch_flips": cfg.batch_flips, "point_jitter_mm": cfg.point_jitter_mm,
        "random_walker": dict(cfg.random_walker), "mixed": "teacher_student" if opts.get("teacher_student")
        else ("joint" if opts.get("dense") else None),
        "train_s": round(float(r["train_s"]) + float((teacher or {}).get("train_s") or 0.0), 1),
        "cases": {c: round(v, 4) for c, v in dice.items()}})
    if teacher:
        entry["teacher"] = {k: v for k, v in teacher.items() if k != "run"}
    if r.get("loss_terms"):
        entry["loss_terms"] = r["loss_terms"]
    if r.get("external"):
        entry["from"] = r["external"]
    if opts.get("dense"):
        clicks = plan.out / f"clicks_{opts['kind']}_s0"
    else:  # the row's clicks (simulated here for an external row: the same per-case streams)
        clicks = clicks_dir(plan.out, [f for f in list_cases(data) if f.case_id in set(train_ids)],
                            *opts["clicks"], opts["kind"]) if opts["kind"] != "dense" else None
    entry.update(annotation_cost(opts["kind"], clicks, train_ids, data))
    if opts["kind"] == "dense":
        entry["dense_cases"] = r["train_cases"]  # the cases it trained on (the trainer held the rest out)
    return entry


def summarize(plan: ProtocolPlan, rows, data: Path, device_note: str) -> dict:
    done = {n: plan._done(n) for n in rows}
    done = {n: r for n, r in done.items() if r is not None}
    table = {}
    for name, r in done.items():
        entry = row_entry(plan, name, r, rows, data)
        dice = {c: v["dice"] for c, v in r["cases"].items()}
        opts = rows[name][4]
        paired = opts.get("paired_with")
        kept = (entry.get("paired") or {}).get("against") == paired and r.get("entry") and (
            done.get(paired, {}).get("entry") or done.get(paired, {}).get("external"))
        if paired in done and not kept:
            entry["paired"] = paired_comparison(dice, {c: v["dice"] for c, v in done[paired]["cases"].items()},
                                                paired)
        table[name] = entry
    if "full" in table:
        for entry in table.values():
            entry["ratio_to_full"] = entry["dice_mean"] / table["full"]["dice_mean"]
    order = [n for n in ("full", "seven_points") if n in table] + [n for n in table if n not in EXTERNAL]
    summary = {"preset": "cpu", "split": {"train": len(plan.train), "test": len(plan.test),
                                          "order": "case ids sorted; first 60 train, last 20 test",
                                          "held_out_by_the_trainer": len(plan.train) - len(plan.usable)},
               "tuning": "none: every row runs the product's protocol settings (chosen before, on training cases)",
               "rows": {n: table[n] for n in order}, "device": device_note}
    old = ROOT / "docs" / "results" / "protocols_cpu.json"
    if old.is_file():
        previous = json.loads(old.read_text(encoding="utf-8"))
        summary["legacy_rows"] = previous.get("legacy_rows") or legacy(previous)
    return summary


def legacy(previous: dict) -> dict:
    """The earlier benchmark's rows, each with the fields every row now records."""
    note = ("earlier protocol benchmark: one click stream copied to every case, plain seeds for seven points, "
            "the point loss divided by the patch's voxel count, PSCV's patches in random frames and flips; its "
            "run folders are not kept: network and batch are the CPU preset's of the time (unet3d, batch 1; "
            "single_point's contrastive term was inactive at batch 1, issue 21)")
    rows = {}
    for name, r in previous["rows"].items():
        rows[name] = {**r, "network": "unet3d", "batch_size": 1, "click_noise_mm": 0.0, "seeds": [0],
                      "click_stream": "shared (one stream for every case)", "note": note}
    return rows


def markdown(summary) -> str:
    lines = ["| protocol | network | batch | noise (mm) | clicks / object | dense cases | Dice | HD95 (mm) | "
             "Dice / full | paired vs | p | train (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        clicks = f"{r['clicks_per_object']:.1f}" if r.get("clicks_per_object") is not None else "–"
        ratio = f"{r['ratio_to_full']:.3f}" if r.get("ratio_to_full") is not None else "–"
        hd = f"{r['hd95']['mean']:.1f}" if r.get("hd95") and r["hd95"]["mean"] is not None else "–"
        p = r.get("paired")
        paired = f"{p['against']}: {p['mean_diff']:+.3f} ({p['improved']}/{p['cases']})" if p else "–"
        pv = f"{p['wilcoxon_p']:.2g}" if p and p.get("wilcoxon_p") is not None else "–"
        lines.append(f"| {name} | {r['network']} | {r['batch_size']} | {r['click_noise_mm']:g} | {clicks} | "
                     f"{r.get('dense_cases') or 0} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | {hd} | {ratio} | "
                     f"{paired} | {pv} | {r['train_s']:.0f} |")
    return "\n".join(lines)


#: the weight of each extra loss term, and the term's name in the history
EXTRA_TERMS = (("cv_weight", "cv"), ("point_loss_weight", "point"), ("soft_label_weight", "soft_ce"),
               ("alpha", "mcrf"), ("beta", "vm"))


def loss_markdown(summary) -> str:
    """The loss-terms table: each row's mean CE and Dice terms and every extra term it trains with (weight ×
    mean, and that against the data term CE + Dice). Rows without logged terms (the external rows) are left out."""
    lines = ["| row | weights (λ) | CE | Dice | weighted extra term | extra / (CE + Dice) |",
             "|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        terms = {k: v["mean"] for k, v in (r.get("loss_terms") or {}).items()}
        if not terms:
            continue
        data = terms.get("ce", 0.0) + terms.get("dice", 0.0)
        active = [(w, t) for w, t in EXTRA_TERMS if r["loss_weights"].get(w) and t in terms]
        weights = ", ".join(f"{w} {r['loss_weights'][w]:g}" for w, _ in active) or "–"
        extra = "; ".join(f"{t} {r['loss_weights'][w]:g} × {terms[t]:.3f} = {r['loss_weights'][w] * terms[t]:+.3f}"
                          for w, t in active) or "–"
        ratio = "; ".join(f"{r['loss_weights'][w] * terms[t] / data:+.2f}" for w, t in active) if active and data \
            else "–"
        lines.append(f"| {name} | {weights} | {terms.get('ce', 0.0):.3f} | {terms.get('dice', 0.0):.3f} | {extra} | "
                     f"{ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 6 cases, 2 epochs")
    parser.add_argument("--rows", nargs="+", default=None, help="run only these rows (with --worker)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--worker", action="store_true", help="run every row that can run (several workers may "
                        "share one --out)")
    parser.add_argument("--summary", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--restore", type=Path, default=None, help="write the rows of this committed summary back "
                        "as finished rows first (a fresh checkout), so that new rows pair with them")
    parser.add_argument("--device-note", default="2-core shared x86-64 CPU, torch 2.13.0+cpu, no GPU, 1 thread per row")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "bench_output" / ("protocols_v2_quick" if args.quick else "protocols_v2")
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    ids, spacing = la_heart_ids(args.data, quick=args.quick)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    plan = ProtocolPlan(ids, spacing, out, quick=args.quick)
    rows = plan.rows()
    if args.restore:
        print(json.dumps({"restored": restore(out, args.restore, plan.test)}), file=sys.stderr)
    unknown = sorted(set(args.rows or ()) - set(rows))
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {unknown}; rows: {', '.join(rows)}")
    if args.list:
        print("\n".join(f"{n}{'  [done]' if plan._done(n) else ''}" for n in rows))
        return 0
    if args.worker:
        work(plan, args.data, args.device, args.threads, only=set(args.rows) if args.rows else None,
             runner=run_protocol_row)
    summary = summarize(plan, rows, args.data, args.device_note)
    if args.summary:
        atomic_write_json(args.summary, summary)
    if args.markdown:
        print(markdown(summary) + "\n\n" + loss_markdown(summary))
        return 0
    print(json.dumps({n: round(r["dice_mean"], 4) for n, r in summary["rows"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
