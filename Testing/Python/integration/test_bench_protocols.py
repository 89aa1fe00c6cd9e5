"""benchmarks/bench_protocols.py: the rows it trains (one per annotation protocol, with the settings the product
trains each protocol with), the Markdown table and the committed summary, without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from PASegLib.pipeline.presets import PROTOCOL_SETTINGS

SUMMARY = Path(__file__).resolve().parents[3] / "docs" / "results" / "protocols_cpu.json"


def _plan(tmp_path):
    bench = load_benchmark("bench_protocols")
    ids = [f"c{i:02d}" for i in range(80)]
    return bench, bench.ProtocolPlan(ids, (1.0, 1.0, 1.0), tmp_path)


def test_every_row_trains_the_protocol_settings_of_the_product(tmp_path):
    bench, plan = _plan(tmp_path)
    rows = plan.rows()
    assert {"single_point", "single_point_no_cv", "extreme_points", "extreme_points_no_point_loss",
            "mixed_12_teacher_student", "mixed_6_teacher_student", "mixed_3_teacher_student", "mixed_12",
            "mixed_6", "mixed_3",
            "seven_points_noise_4mm", "extreme_points_noise_4mm", "box_noise_4mm", "box", "full",
            "seven_points"} <= set(rows)
    single = rows["single_point"][1]
    for key, value in PROTOCOL_SETTINGS["single_point"].items():
        assert getattr(single, key) == value
    assert single.batch_size >= 4 and single.cv_weight > 0 and single.patch_frame == "click" and single.batch_flips
    assert rows["single_point_no_cv"][1] == single.replace(cv_weight=0.0)
    extreme, ablated = rows["extreme_points"][1], rows["extreme_points_no_point_loss"][1]
    assert extreme.point_loss_weight == 1.0 and ablated == extreme.replace(point_loss_weight=0.0)
    assert ablated == plan.config("extreme_points")  # the product trains without the point loss
    assert extreme.point_jitter_mm > 0
    # the noisy rows: clicks moved by 4 mm and the random walker told to expect it (extreme points and boxes;
    # click_error_mm does not act on seven points, whose row carries it unused)
    for name, kind, noise in (("seven_points_noise_4mm", "seven_points", 4.0),
                              ("extreme_points_noise_4mm", "extreme_points", 4.0), ("box_noise_4mm", "box", 4.0),
                              ("extreme_points_no_point_loss_noise_4mm", "extreme_points", 4.0),
                              ("seven_points_noise_2mm", "seven_points", 2.0),
                              ("extreme_points_no_point_loss_noise_2mm", "extreme_points", 2.0),
                              ("box_noise_2mm", "box", 2.0)):
        _, cfg, _, _, options = rows[name]
        assert options["clicks"] == (0, noise) and options["kind"] == kind
        assert cfg.random_walker == {"click_error_mm": noise}
        assert cfg.replace(random_walker={}) == rows[options.get("paired_with") or kind][1]  # only the noise differs
    # the mixed rows: dense cases among the cases the trainer does not hold out, the same 12 in both modes
    for n in (12, 6, 3):
        ts, joint = rows[f"mixed_{n}_teacher_student"][4], rows[f"mixed_{n}"][4]
        assert ts["teacher_student"] and not joint.get("teacher_student") and ts["dense"] == joint["dense"]
        assert joint["paired_with"] == f"mixed_{n}_teacher_student" and len(joint["dense"]) == n
    ts = rows["mixed_12_teacher_student"][4]
    assert len(ts["dense"]) == 12 and set(rows["mixed_3_teacher_student"][4]["dense"]) <= set(ts["dense"])
    assert set(ts["dense"]) <= set(plan.usable) and len(plan.usable) == 48
    # every row trains on the 60 training cases and is scored on the 20 test cases; none is tuned on them
    assert all(spec[2] == plan.train for spec in rows.values()) and plan.test == [f"c{i:02d}" for i in range(60, 80)]


def test_the_external_rows_come_from_the_accuracy_summary(tmp_path):
    bench, plan = _plan(tmp_path)
    accuracy = json.loads(bench.ACCURACY.read_text(encoding="utf-8"))["rows_per_run"]
    for name, source in bench.EXTERNAL.items():
        done = plan._done(name)
        assert done["cases"] == {c: {"dice": v} for c, v in accuracy[source]["cases"].items()}


def test_markdown_shows_network_batch_noise_and_pairs():
    bench = load_benchmark("bench_protocols")
    row = {"dice_mean": 0.7712, "dice_std": 0.07, "hd95": {"mean": 10.34}, "train_s": 630.0, "network": "unet3d",
           "batch_size": 1, "click_noise_mm": 0.0}
    summary = {"rows": {
        "extreme_points": {**row, "clicks_per_object": 6.0, "ratio_to_full": 0.922},
        "box_noise_4mm": {**row, "clicks_per_object": 2.0, "click_noise_mm": 4.0,
                          "paired": {"against": "box", "mean_diff": -0.0104, "improved": 4, "cases": 20,
                                     "wilcoxon_p": 0.0123}},
        "single_point": {**row, "batch_size": 4, "clicks_per_object": 1.0}}}
    lines = bench.markdown(summary).splitlines()
    assert lines[2] == "| extreme_points | unet3d | 1 | 0 | 6.0 | 0 | 0.771 ± 0.070 | 10.3 | 0.922 | – | – | 630 |"
    assert lines[3].startswith("| box_noise_4mm | unet3d | 1 | 4 | 2.0 |")
    assert "box: -0.010 (4/20) | 0.012 |" in lines[3]
    assert lines[4].startswith("| single_point | unet3d | 4 | 0 |")


def test_the_committed_summary_records_how_each_row_ran():
    summary = json.loads(SUMMARY.read_text(encoding="utf-8"))
    for group in ("rows", "legacy_rows"):
        for name, row in summary.get(group, {}).items():
            assert 0.0 < row["dice_mean"] < 1.0, name
            for key in ("batch_size", "network", "click_noise_mm", "seeds", "train_cases"):
                assert key in row, (group, name, key)
    rows = summary["rows"]
    if "single_point" in rows:  # PSCV trained with its contrastive term active
        assert rows["single_point"]["batch_size"] >= 4 and rows["single_point"]["loss_terms"]["cv"]["mean"] > 0


def _committed_plan(tmp_path):
    """A plan whose 20 test cases are those of the committed summary."""
    bench = load_benchmark("bench_protocols")
    committed = json.loads(SUMMARY.read_text(encoding="utf-8"))["rows"]
    test = sorted(next(r for r in committed.values() if not r.get("from"))["cases"])
    return bench, bench.ProtocolPlan([f"a{i:02d}" for i in range(60)] + test, (1.0, 1.0, 1.0), tmp_path), committed


def test_restored_rows_keep_their_committed_entry_and_pair_with_new_rows(tmp_path, monkeypatch):
    bench, plan, committed = _committed_plan(tmp_path)
    restored = bench.restore(tmp_path, SUMMARY, plan.test)
    assert restored and not set(restored) & set(bench.EXTERNAL)
    assert set(restored) == {n for n, r in committed.items() if not r.get("from")}
    assert bench.restore(tmp_path, SUMMARY, plan.test) == []  # a row file that exists is never overwritten
    rows = plan.rows()
    # a new row paired with a restored one: box_noise_2mm (run again if committed) against box's committed Dice
    exact = committed["box"]["cases"]
    (tmp_path / "rows" / "box_noise_2mm.json").write_text(json.dumps(
        {"name": "box_noise_2mm", "train_s": 1.0, "train_cases": 48,
         "cases": {c: {"dice": v - 0.01} for c, v in exact.items()}}), encoding="utf-8")
    monkeypatch.setattr(bench, "annotation_cost", lambda *a, **k: {"clicks_per_object": 2.0, "dense_cases": 0})
    monkeypatch.setattr(bench, "clicks_dir", lambda *a, **k: tmp_path)
    monkeypatch.setattr(bench, "list_cases", lambda *a, **k: [])
    summary = bench.summarize(plan, rows, tmp_path, "test")["rows"]
    for name in set(restored) - {"box_noise_2mm"}:  # the committed entries come back as they were, their pairs too
        assert {k: v for k, v in summary[name].items() if k != "ratio_to_full"} == \
            {k: v for k, v in committed[name].items() if k != "ratio_to_full"}
    pair = summary["box_noise_2mm"]["paired"]
    assert pair["against"] == "box" and abs(pair["mean_diff"] + 0.01) < 1e-9 and pair["improved"] == 0
    # a restored row whose committed pair is against another partner is paired again
    entry = json.loads((tmp_path / "rows" / "box_noise_4mm.json").read_text(encoding="utf-8"))
    entry["entry"]["paired"] = {"against": "seven_points"}
    (tmp_path / "rows" / "box_noise_4mm.json").write_text(json.dumps(entry), encoding="utf-8")
    again = bench.summarize(plan, rows, tmp_path, "test")["rows"]["box_noise_4mm"]["paired"]
    assert again["against"] == "box" and again["improved"] == committed["box_noise_4mm"]["paired"]["improved"]
    # a teacher–student row whose teacher is not recorded is refused, not summarised as a student alone
    (tmp_path / "rows" / "mixed_6_teacher_student.json").write_text(json.dumps(
        {"name": "mixed_6_teacher_student", "train_s": 1.0, "train_cases": 48,
         "cases": {c: {"dice": v} for c, v in exact.items()}}), encoding="utf-8")
    with pytest.raises(SystemExit, match="mixed_6_teacher_student.*teacher is not recorded"):
        bench.summarize(plan, rows, tmp_path, "test")


def test_restore_refuses_a_summary_of_other_test_cases(tmp_path):
    bench, plan = _plan(tmp_path)  # test cases c60 … c79, not the committed ones
    with pytest.raises(SystemExit, match="single_point.*other test cases than this plan's 20"):
        bench.restore(tmp_path, SUMMARY, plan.test)
    assert not list((tmp_path / "rows").glob("*.json"))


def test_a_row_killed_between_its_writes_gets_its_teacher_and_loss_terms_back(tmp_path):
    bench, plan = _plan(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    events = [{"event": "iteration", "epoch": e, "losses": {"ce": v, "soft_ce": v / 2}}
              for e, v in ((1, 0.8), (1, 0.6), (2, 0.2))]
    (run / "history.json").write_text(json.dumps({"events": events}), encoding="utf-8")
    rows = tmp_path / "rows"
    rows.mkdir()
    # run_row stored the student's row; the worker was killed before the teacher and the loss terms were added
    (rows / "mixed_6_teacher_student.json").write_text(json.dumps({"run": str(run), "cases": {}}), encoding="utf-8")
    (rows / "mixed_6_teacher_student.teacher.json").write_text(json.dumps({"teacher": {"dense_cases": 6}}),
                                                               encoding="utf-8")
    done = plan._done("mixed_6_teacher_student")
    assert done["teacher"] == {"dense_cases": 6}
    assert done["loss_terms"]["ce"] == {"mean": 0.45, "last_epoch": 0.2}
    assert done["loss_terms"]["soft_ce"] == {"mean": 0.225, "last_epoch": 0.1}


def test_loss_markdown_weighs_each_extra_term_against_the_data_term():
    bench = load_benchmark("bench_protocols")
    weights = {"alpha": 0.0, "beta": 0.0, "cv_weight": 0.3, "point_loss_weight": 0.0, "soft_label_weight": 1.0}
    terms = {"ce": {"mean": 0.05}, "dice": {"mean": 0.15}, "cv": {"mean": 0.2}, "loss": {"mean": 0.26}}
    summary = {"rows": {"full": {"loss_weights": weights},  # no logged terms (an external row): left out
                        "single_point": {"loss_weights": weights, "loss_terms": terms}}}
    lines = bench.loss_markdown(summary).splitlines()
    # soft_label_weight is 1 in every config but only a row that logs soft_ce trains with it
    assert lines[2:] == ["| single_point | cv_weight 0.3 | 0.050 | 0.150 | cv 0.3 × 0.200 = +0.060 | +0.30 |"]
