"""The two ``paseg run`` pipelines of a mixed cohort side by side on la_heart's training cases: ``--mixed joint``
(its default second stage, the refinement round) and ``--mixed teacher_student`` (teacher, two students, SCM),
compared on validation cases only.

The cohort is the 60 training cases of ``benchmarks/bench_protocols.py`` (ids sorted, the first 60; the 20 test
cases are never read): a folder of links to them. Each pipeline is ``paseg run`` with seed 0, the CPU preset,
``--kind seven_points --dense-cases 12 --test-fraction 0.2`` and 1 thread, so both hold out the same 12 labelled
cases (the pipeline's own split; the 12 dense cases are never among them) and score every model they train on
those 12 (``metrics.json``). Nothing here is tuned; the comparison decides whether ``--mixed`` should default to the
teacher–student, which is why it reads validation cases and not the test split.

Usage::

    python benchmarks/bench_mixed_pipeline.py --run            # both pipelines, one after the other (resumable)
    python benchmarks/bench_mixed_pipeline.py --summary docs/results/mixed_pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accuracy import LA_HEART  # noqa: E402
from bench_accuracy_v3 import la_heart_ids, wilcoxon_p  # noqa: E402

from PASegLib.utils.atomic import atomic_write_json  # noqa: E402

MODES = ("joint", "teacher_student")
DENSE_CASES = 12


def pipeline_command(mode: str, data: Path, out: Path, threads: int) -> list:
    """The ``paseg run`` command of one mode (rerun it to resume)."""
    return [sys.executable, "-m", "PASegLib", "run", str(data), "--out", str(out / mode), "--kind", "seven_points",
            "--dense-cases", str(DENSE_CASES), "--mixed", mode, "--test-fraction", "0.2", "--preset", "cpu",
            "--device", "cpu", "--seed", "0", "--set", f"num_threads={threads}", "--quiet"]


def training_cohort(data: Path, out: Path) -> Path:
    """A folder of links to the 60 training cases (image and label) of the protocol benchmark's split."""
    ids, _ = la_heart_ids(data)
    cohort = out / "train60"
    cohort.mkdir(parents=True, exist_ok=True)
    for cid in ids[:60]:
        for role in ("image", "label"):
            link = cohort / f"{cid}_{role}.nii.gz"
            if not link.exists():
                link.symlink_to((data / f"{cid}_{role}.nii.gz").resolve())
    return cohort


def summarize(out: Path) -> dict:
    """Per mode: each model's mean Dice on the pipeline's held-out cases, its final model, the time of each step;
    and paired per-case comparisons (Wilcoxon) of the finals and of the teacher–student's student."""
    stages, final, runs = {}, {}, {}
    for mode in MODES:
        state = json.loads((out / mode / "pipeline.json").read_text(encoding="utf-8"))
        stages[mode] = json.loads((out / mode / "metrics.json").read_text(encoding="utf-8"))["stages"]
        final[mode] = "SCM" if state["options"]["second_stage"] == "scm" else next(
            s for s in stages[mode] if s.startswith("refined"))
        runs[mode] = {"options": {k: state["options"][k] for k in ("mixed", "second_stage", "preset", "seed",
                                                                    "dense_cases", "kind", "test_fraction")},
                      "train_cases": len(state["split"]["train"]), "validation_cases": len(state["split"]["test"]),
                      "steps_s": state["durations_s"], "total_s": round(sum(state["durations_s"].values()), 1),
                      "final": final[mode],
                      "dice_mean": {s: round(float(np.mean([v["dice"] for v in c.values()])), 4)
                                    for s, c in stages[mode].items()}}
    cases = sorted(stages["joint"][final["joint"]])

    def paired(mode_a, stage_a, mode_b, stage_b):
        diff = np.array([stages[mode_a][stage_a][c]["dice"] - stages[mode_b][stage_b][c]["dice"] for c in cases])
        return {"a": f"{mode_a}: {stage_a}", "b": f"{mode_b}: {stage_b}", "mean_diff": round(float(diff.mean()), 4),
                "a_better": int((diff > 0).sum()), "cases": len(cases), "wilcoxon_p": wilcoxon_p(diff)}

    student = next(s for s in stages["teacher_student"] if s.startswith("stage 1"))  # the primary student
    first = next(s for s in stages["joint"] if s.startswith("stage 1"))
    return {"cohort": f"la_heart's 60 training cases, {DENSE_CASES} dense, seven points for the rest",
            "validation": "the pipeline's own 12 held-out labelled cases (--test-fraction 0.2, seed 0); the 20 test "
                          "cases are not read",
            "network": "unet3d (primary), attention_unet (auxiliary); CPU preset, batch 1, 1 thread", "seeds": [0],
            "runs": runs,
            "paired": [paired("teacher_student", final["teacher_student"], "joint", final["joint"]),
                       paired("teacher_student", student, "joint", first),
                       paired("teacher_student", student, "teacher_student", final["teacher_student"]),
                       paired("joint", final["joint"], "joint", first)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "mixed_pipeline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", action="store_true", help="run (or resume) both pipelines first")
    parser.add_argument("--summary", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    if args.run:
        cohort = training_cohort(args.data, args.out)
        for mode in MODES:
            subprocess.run(pipeline_command(mode, cohort, args.out, args.threads), check=True, cwd=ROOT)
    summary = summarize(args.out)
    if args.summary:
        atomic_write_json(args.summary, summary)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
