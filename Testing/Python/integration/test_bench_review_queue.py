"""benchmarks/bench_review_queue.py: the rows (ranked from the queue, random from a seeded nested draw), the summary
(ranked vs random per k, the corrected cases' base Dice, how each row ran) and its Markdown, from hand-made results."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest
from conftest import load_benchmark

from PASegLib.training.config import TrainConfig

POOL = [f"p{i:02d}" for i in range(20)]


def _queue():
    rows = [{"case": c, "rank": n, "score": 1.0 - n / 40, "base_dice": round(0.5 + n / 50, 4)}
            for n, c in enumerate(reversed(POOL), 1)]
    return {"signal": "flip", "signal_description": "flips", "flips": ["i", "j", "k"], "cases": rows, "rank_s": 9.0,
            "spearman_score_vs_base_dice": -1.0}


def test_rows_ranked_from_the_queue_and_random_from_a_nested_seeded_draw():
    bench = load_benchmark("bench_review_queue")
    a = TrainConfig(epochs=6, iterations_per_epoch=24)
    assert bench.random_draw(POOL, 3) == bench.random_draw(POOL, 6)[:3] == bench.random_draw(POOL, 12)[:3]
    assert bench.random_draw(POOL, 6, seed=1) != bench.random_draw(POOL, 6)
    rows = bench.row_table(a, POOL + ["v1"], POOL, None)
    assert sorted(rows) == ["base", "random_12", "random_3", "random_6"]  # no ranked rows before the queue
    rows = bench.row_table(a, POOL + ["v1"], POOL, _queue())
    assert rows["ranked_3"][4]["dense"] == ["p19", "p18", "p17"] and rows["ranked_12"][4]["order"] == "ranked"
    assert rows["random_6"][4]["dense"] == bench.random_draw(POOL, 6) and rows["base"][4] == {"kind": "seven_points"}
    assert all(spec[1] is a and spec[2] == POOL + ["v1"] for spec in rows.values())  # one budget, one cohort


def test_summary_compares_ranked_and_random_per_k(tmp_path):
    bench = load_benchmark("bench_review_queue")
    a = TrainConfig(epochs=6, iterations_per_epoch=24)
    queue = _queue()
    rows = bench.row_table(a, POOL, POOL, queue)
    (tmp_path / "rows").mkdir()
    dice = {"base": 0.70, "random_3": 0.72, "ranked_3": 0.75, "random_6": 0.74, "ranked_6": 0.73}
    for name, mean in dice.items():
        result = {"run": f"/runs/{name}", "train_s": 60.0, "predict_s": 5.0, "best_epoch": 6, "epochs": 6,
                  "train_cases": 20, "validation": [], "options": {k: v for k, v in rows[name][4].items()},
                  "cases": {f"t{i}": {"dice": mean + d, "assd": 1.0, "hd95": 5.0} for i, d in enumerate((-0.01, 0.01))},
                  "cases_last": {f"t{i}": mean + d for i, d in enumerate((-0.01, 0.01))}}
        (tmp_path / "rows" / f"{name}.json").write_text(json.dumps(result))
    args = Namespace(threads=1, device_note="test", budget_note="smaller", common={"epochs": 6}, other_budget=[],
                     summary=tmp_path / "summary.json", markdown=False)
    assert bench.report(args, tmp_path, a, rows, queue, POOL, ["t0", "t1"], ["v1"], POOL) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ranked_vs_random"]["3"]["ranked_minus_random"] == pytest.approx(0.03)
    assert summary["ranked_vs_random"]["6"]["ranked_better_cases"] == 0 and "12" not in summary["ranked_vs_random"]
    ranked3 = summary["rows"]["ranked_3"]
    assert ranked3["base_dice_of_corrected"] == pytest.approx((0.52 + 0.54 + 0.56) / 3)  # the three worst-ranked
    assert ranked3["paired"]["against"] == "base" and ranked3["paired"]["mean_diff"] == pytest.approx(0.05)
    assert ranked3["how"]["iterations"] == 144 and ranked3["how"]["threads"] == 1 and ranked3["k"] == 3
    assert summary["rows"]["base"]["k"] == 0 and "base_dice_of_corrected" not in summary["rows"]["base"]
    assert not summary["rows"]["base"]["collapsed_to_background"] and "other_budgets" not in summary
    assert summary["ranking"]["signal"] == "flip" and summary["ranking"]["queue"][0]["case"] == "p19"
    assert summary["budget"] == {"overrides": {"epochs": 6}, "note": "smaller"}
    table = bench.markdown(summary)
    assert "| ranked_3 | 3 | 0.540 | 0.750 ± 0.010 | +0.050 (2/2) | 60 |" in table
    assert "Spearman(score, base Dice) on the 20 pool cases: -1.000" in table
