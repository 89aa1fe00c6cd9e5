"""benchmarks/bench_mixed_pipeline.py: the two pipelines' commands and the summary of their validation metrics,
without training."""

from __future__ import annotations

import json

from conftest import load_benchmark


def _pipeline(out, mode, second_stage, stages):
    (out / mode).mkdir(parents=True)
    options = {"mixed": mode, "second_stage": second_stage, "preset": "cpu", "seed": 0, "dense_cases": 12,
               "kind": "seven_points", "test_fraction": 0.2}
    (out / mode / "pipeline.json").write_text(json.dumps({
        "options": options, "split": {"train": ["t"] * 48, "test": ["a", "b", "c"], "predict": ["a", "b", "c"]},
        "durations_s": {"clicks": 1.0, "report": 2.0}}), encoding="utf-8")
    metrics = {s: {c: {"dice": d} for c, d in zip("abc", dice)} for s, dice in stages.items()}
    (out / mode / "metrics.json").write_text(json.dumps({"stages": metrics, "seeds": {}}), encoding="utf-8")


def test_both_modes_hold_out_the_same_cases_and_the_summary_pairs_their_finals(tmp_path):
    bench = load_benchmark("bench_mixed_pipeline")
    commands = [bench.pipeline_command(m, tmp_path / "cohort", tmp_path, 1) for m in bench.MODES]
    for mode, command in zip(bench.MODES, commands):  # only the mode and the output folder differ
        assert command[command.index("--mixed") + 1] == mode and command[command.index("--out") + 1].endswith(mode)
        assert [c for c in command if c not in (mode, str(tmp_path / mode))] == \
            [c for c in commands[0] if c not in ("joint", str(tmp_path / "joint"))]
    assert "--test-fraction" in commands[0] and "--dense-cases" in commands[0]
    _pipeline(tmp_path, "joint", "refine", {"stage 1 (unet3d)": [0.70, 0.70, 0.70],
                                            "refined (unet3d)": [0.72, 0.73, 0.74]})
    _pipeline(tmp_path, "teacher_student", "scm", {"stage 1 (unet3d)": [0.80, 0.80, 0.80],
                                                   "stage 1 (attention_unet)": [0.7, 0.7, 0.7],
                                                   "SCM": [0.71, 0.75, 0.75], "SCM-E": [0.7, 0.7, 0.7]})
    summary = bench.summarize(tmp_path)
    runs = summary["runs"]
    assert runs["joint"]["final"] == "refined (unet3d)" and runs["teacher_student"]["final"] == "SCM"
    assert summary["runs"]["joint"]["total_s"] == 3.0 and summary["runs"]["joint"]["validation_cases"] == 3
    finals, students, student_vs_scm, refinement = summary["paired"]
    assert finals["b"] == "joint: refined (unet3d)" and finals["mean_diff"] == 0.0067 and finals["a_better"] == 2
    assert students["mean_diff"] == 0.1 and student_vs_scm["mean_diff"] == 0.0633 and refinement["a_better"] == 3
