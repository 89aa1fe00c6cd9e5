"""benchmarks/bench_accuracy.py: the summary (ratios, paired SCM comparison, selection study) and the Markdown
table of docs/BENCHMARKS.md, from hand-made row results."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


def _module():
    return load_benchmark("bench_accuracy")


def _row(run, dice, last=None, rounds=(), paired=None, assd=2.0, hd95=10.0):
    cases = {f"c{i}": {"dice": d, "assd": assd + i, "hd95": hd95} for i, d in enumerate(dice)}
    return {"run": run, "train_s": 100.4, "predict_s": 9.0, "best_epoch": 30, "epochs": 30, "train_cases": 48,
            "cases": cases, "cases_last": {f"c{i}": d for i, d in enumerate(last or dice)},
            "validation": [{"epoch": e, "score": s, "heldout_loss": h, "flip_agreement": f, "dice": d}
                           for e, (s, h, f, d) in enumerate(rounds, 1)],
            "options": {"paired_with": paired} if paired else {}}


ROUNDS_GOOD = [(0.90, 3.0, 0.5, 0.60), (0.95, 2.0, 0.6, 0.70), (0.97, 1.5, 0.9, 0.74), (0.99, 1.0, 0.7, 0.735)]
ROUNDS_BAD = [(0.99, 3.0, 0.5, 0.60), (0.95, 2.0, 0.6, 0.70), (0.90, 1.5, 0.9, 0.74), (0.91, 1.0, 0.7, 0.72)]


def test_summary_ratios_pairs_and_selection():
    bench = _module()
    results = {
        # full supervision: the last epoch is better than the selected one; the ratio uses the better
        "full supervision": _row("r_full", [0.80, 0.80], last=[0.82, 0.86], rounds=ROUNDS_GOOD),
        "stage one (defaults)": _row("r_s1", [0.70, 0.76], rounds=ROUNDS_BAD),
        "SCM (defaults)": _row("r_scm", [0.72, 0.75], rounds=ROUNDS_GOOD, paired="stage one (defaults)"),
        "SCM-E (defaults)": _row("r_scm", [0.73, 0.77], paired="stage one (defaults)"),
    }
    results["stage one (defaults), same run"] = dict(results["stage one (defaults)"])  # a row sharing a run
    rows = {name: ("reuse" if name.startswith("SCM-E") else "train",) for name in results}
    summary = bench.summarize(results, rows, preset="cpu", split={"train": 2})
    r = summary["rows"]
    assert r["full supervision"]["dice_mean"] == pytest.approx(0.80)
    assert r["full supervision"]["dice_last_mean"] == pytest.approx(0.84)
    assert r["stage one (defaults)"]["ratio_to_full"] == pytest.approx(0.73 / 0.84)
    assert r["stage one (defaults)"]["cases"] == {"c0": 0.7, "c1": 0.76}
    paired = r["SCM (defaults)"]["paired"]
    assert paired["against"] == "stage one (defaults)" and paired["improved"] == 1 and paired["cases"] == 2
    assert paired["mean_diff"] == pytest.approx((0.02 - 0.01) / 2)
    assert (paired["min_diff"], paired["max_diff"]) == pytest.approx((-0.01, 0.02))
    assert r["SCM (defaults)"]["assd"]["mean"] == pytest.approx(2.5)
    # selection: the click score ranks ROUNDS_GOOD perfectly but ROUNDS_BAD backwards; the SCM-E row reuses a
    # run and is not counted again
    click = summary["selection"]["criteria"]["click_score"]
    assert set(click["runs"]) == {"full supervision", "stage one (defaults)", "SCM (defaults)"}
    assert click["runs"]["stage one (defaults)"]["spearman"] == pytest.approx(-1.0)  # ranks (4,3,1,2) vs (1,2,4,3)
    assert click["spearman"] == pytest.approx((0.8 + 0.8 - 1.0) / 3)
    assert click["within_001_share"] == pytest.approx(2 / 3)  # ROUNDS_GOOD picks 0.735 (best 0.74): within
    # the baseline: the last round is within 0.01 of the best for ROUNDS_GOOD (0.735 vs 0.74), not ROUNDS_BAD
    assert summary["selection"]["criteria"]["last"]["within_001_share"] == pytest.approx(2 / 3)
    # flip agreement ranks every run exactly (ρ = 1, picks the best): it passes and becomes the default
    assert summary["selection"]["criteria"]["flip_agreement"]["spearman"] == pytest.approx(1.0)
    assert summary["selection"]["passing"] == ["flip_agreement"]
    assert summary["selection"]["default"] == "flip_agreement"
    assert summary["selection"]["criterion"] == "flip_agreement"  # the headline: the criterion closest to passing
    assert summary["selection"]["spearman"] == pytest.approx(1.0)
    assert summary["selection"]["within_001_share"] == pytest.approx(1.0)
    for rounds in (ROUNDS_GOOD, ROUNDS_BAD):
        rounds_flat = [(s, h, 0.5, d) for s, h, _, d in rounds]  # a constant criterion cannot rank
        results = {"stage one (defaults)": _row("x", [0.7, 0.7], rounds=rounds_flat)}
        none = bench.summarize(results, {"stage one (defaults)": ("train",)}, preset="cpu", split={})
        assert "flip_agreement" not in none["selection"]["criteria"]
    results = {"stage one (defaults)": _row("x", [0.7, 0.7], rounds=ROUNDS_BAD)}
    bad = bench.summarize(results, {"stage one (defaults)": ("train",)}, preset="cpu", split={})
    assert "click_score" not in bad["selection"]["passing"]
    assert (summary["full_supervision"], summary["stage_one"], summary["scm"]) == (
        "full supervision", "stage one (defaults)", "SCM (defaults)")


def test_markdown_table():
    bench = _module()
    results = {"full supervision": _row("a", [0.80, 0.80], last=[0.82, 0.86]),
               "stage one (defaults)": _row("b", [0.70, 0.76])}
    summary = bench.summarize(results, {n: ("train",) for n in results}, preset="cpu", split={})
    lines = bench.markdown_table(summary).splitlines()
    assert lines[0] == "| row | Dice (selected) | Dice (last) | ASSD (mm) | HD95 (mm) | Dice / full | train (s) |"
    assert lines[2] == ("| full supervision | 0.800 ± 0.000 | 0.840 ± 0.020 | 2.50 ± 0.50 | 10.00 ± 0.00 | 0.952 "
                        "| 100 |")
    assert lines[3] == ("| stage one (defaults) | 0.730 ± 0.030 | 0.730 ± 0.030 | 2.50 ± 0.50 | 10.00 ± 0.00 | 0.869 "
                        "| 100 |")
