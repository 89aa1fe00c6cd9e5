"""benchmarks/bench_accuracy_v3.py: the selection study over weak runs, from hand-made rounds (criteria compared
on the runs they were all measured on; a default needs 12 runs) and the dependencies that order the rows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import load_benchmark


def _spec(supervision="partial"):
    return ("train", SimpleNamespace(supervision=supervision), [], None, {})


def _rounds(dice, score, flip, partial):
    return [{"dice": d, "score": s, "flip_agreement": f, "partial_dice": p}
            for d, s, f, p in zip(dice, score, flip, partial)]


def test_selection_study_compares_criteria_on_common_runs_and_needs_twelve():
    bench = load_benchmark("bench_accuracy_v3")
    dice = [0.60, 0.74, 0.70]  # the best round is the second; "last" loses 0.04
    good = _rounds(dice, score=[0.1, 0.9, 0.5], flip=[0.1, 0.2, 0.9], partial=[0.2, 0.9, 0.1])
    rows, done = {}, {}
    for n in range(12):
        rows[f"w{n}"] = _spec()
        done[f"w{n}"] = {"run": f"r{n}", "validation": good}
    rows["full"] = _spec("full")  # full supervision never counts
    done["full"] = {"run": "rf", "validation": _rounds(dice, [0, 0, 1], [0, 0, 1], [0, 0, 1])}
    rows["scm"] = _spec()  # network agreement only here: reported, never compared
    done["scm"] = {"run": "rs", "validation": [{**r, "agreement": a} for r, a in zip(good, [0.1, 0.9, 0.2])]}
    study = bench.selection_study(done, rows)
    assert study["runs"] == 13 and study["enough_runs"]
    assert study["criteria"]["last"]["mean_regret"] == pytest.approx(0.04)
    assert study["criteria"]["flip_agreement"]["mean_regret"] == pytest.approx(0.04)
    assert study["criteria"]["click_score"]["mean_regret"] == 0.0
    assert "network_agreement" not in study["compared"] and study["criteria"]["network_agreement"]["runs"] == 1
    assert study["criterion"] in ("click_score", "pseudo_label_dice") and study["mean_regret"] == 0.0
    few = bench.selection_study({k: done[k] for k in ("w0", "w1", "w2")}, rows)
    assert few["criterion"] is None and few["best_so_far"] in ("click_score", "pseudo_label_dice")


def test_a_row_waits_for_the_rows_it_reuses_refines_or_starts_from():
    bench = load_benchmark("bench_accuracy_v3")
    assert bench.dependencies(("train", None, [], None, {"init": ("a", "b")})) == ["a", "b"]
    assert bench.dependencies(("reuse", None, [], "src", {})) == ["src"]
    assert bench.dependencies(("train", None, [], None, {"refine_from": "one"})) == ["one"]
