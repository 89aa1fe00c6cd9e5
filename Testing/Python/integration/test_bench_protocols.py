"""benchmarks/bench_protocols.py: the rows it trains (one per annotation protocol, with the settings each
protocol trains with), the annotation cost of a row and the Markdown table, without training."""

from __future__ import annotations

from pathlib import Path

from conftest import load_benchmark

from PASegLib.training.config import TrainConfig


def test_row_table_names_every_protocol_with_its_settings(tmp_path):
    bench = load_benchmark("bench_protocols")
    a, s = TrainConfig(), TrainConfig(stage=2)
    train = [f"c{i:02d}" for i in range(20)]
    rows = bench.row_table(a, s, train, ["c00", "c03"], tmp_path)
    assert set(rows) | set(bench.REUSED) >= {"full", "seven_points", "single_point", "extreme_points", "box",
                                            "mixed_3", "mixed_6", "mixed_12"}
    single, extreme, refined, box = (rows[k][1] for k in ("single_point", "extreme_points", "extreme_points_refined",
                                                          "box"))
    assert single.cv_weight == 0.3 and single.alpha == single.beta == 0.0 and single.batch_size == 4
    assert extreme.point_channel and extreme.point_loss_weight == 1.0 and extreme.alpha == 0.0
    assert refined.pseudo_labels == str(tmp_path / "refined_extreme_points")
    assert rows["extreme_points_refined"][4]["refine_from"] == "extreme_points"
    assert rows["extreme_points_no_clicks"][0] == "reuse" and rows["extreme_points_no_clicks"][4]["use_clicks"] is False
    assert box.alpha == box.beta == 0.0 and box.cv_weight == 0.0 and box.point_loss_weight == 0.0
    # the dense cases of a mixed row are training cases the trainer does not hold out
    assert rows["mixed_3"][4]["dense"] == ["c01", "c02", "c04"] and rows["mixed_3"][1] == a
    assert len(rows["mixed_12"][4]["dense"]) == 12


def test_markdown_shows_clicks_dense_cases_and_pairs():
    bench = load_benchmark("bench_protocols")
    row = {"dice_mean": 0.7712, "dice_std": 0.07, "assd": {"mean": 2.7}, "hd95": {"mean": 10.3}, "train_s": 630.0}
    summary = {"rows": {
        "extreme_points": {**row, "clicks_per_object": 6.0, "ratio_to_full": 0.922},
        "mixed_6": {**row, "clicks_per_object": 7.0, "dense_cases": 6, "contour_slices_per_object": 58.7,
                    "paired": {"against": "seven_points", "mean_diff": 0.0104, "improved": 14, "cases": 20}},
        "full": {**row, "clicks_per_object": None, "dense_cases": 60, "contour_slices_per_object": 59.2}}}
    lines = bench.markdown(summary).splitlines()
    assert lines[2] == "| extreme_points | 6.0 | 0 | 0.771 ± 0.070 | 2.70 | 10.30 | 0.922 | – | 630 |"
    assert lines[3].startswith("| mixed_6 | 7.0 | 6 (59) |") and "seven_points: +0.010 (14/20)" in lines[3]
    assert lines[4].startswith("| full | – | 60 (59) |")


def test_the_committed_summary_has_a_row_per_protocol():
    import json

    summary = json.loads((Path(__file__).resolve().parents[3] / "docs" / "results" / "protocols_cpu.json")
                         .read_text(encoding="utf-8"))
    for name in ("single_point", "extreme_points", "box", "seven_points", "mixed_3", "mixed_6", "mixed_12", "full"):
        assert 0.0 < summary["rows"][name]["dice_mean"] < 1.0
        assert "clicks_per_object" in summary["rows"][name]
