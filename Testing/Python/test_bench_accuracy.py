"""benchmarks/bench_accuracy.py: the Markdown table written into docs/BENCHMARKS.md, from hand-made results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_accuracy.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(dice, assd, hd95, train_s, nonfinite=0):
    def s(mean, std):
        return {"mean": mean, "std": std, "n_nonfinite": nonfinite}
    return {"summary": {"dice": s(*dice), "assd": s(*assd), "hd95": s(*hd95)}, "train_s": train_s, "predict_s": 12.4}


def test_markdown_table(tmp_path, capsys):
    bench = _module()
    results = {"full supervision": _row((0.8, 0.05), (2.0, 0.5), (10.0, 4.0), 1000.4),
               "SCM λ=0.5": _row((0.76, 0.041), (2.346, 0.6), (12.0, 3.0), 600.0, nonfinite=1)}
    lines = bench.markdown_table(results).splitlines()
    assert lines[0].startswith("| row | Dice | ASSD (mm) | HD95 (mm) | Dice / full |")
    assert lines[2] == "| full supervision | 0.800 ± 0.050 | 2.00 ± 0.50 | 10.00 ± 4.00 | 1.000 | 1000 | 12 |"
    # 0.76 / 0.8 = 0.95; a case without a surface (infinite distance) is counted, not averaged
    assert lines[3] == ("| SCM λ=0.5 | 0.760 ± 0.041 (1 inf) | 2.35 ± 0.60 (1 inf) | 12.00 ± 3.00 (1 inf) | 0.950 "
                        "| 600 | 12 |")
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert bench.main(["--markdown", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines
