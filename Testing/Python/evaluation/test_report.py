"""The offline HTML report and its figures: files, numbers, escaping, PNG sizes, input errors."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from PASegLib.evaluation.figures import FIGURE_COLORS, object_center, write_case_figure, write_learning_curve
from PASegLib.evaluation.report import format_summary, format_value, summarize, write_report

SHAPE = (40, 36, 12)
SPACING = (0.8, 0.9, 2.5)
CLICKS = [(20, 18, 6), (10, 18, 6), (30, 18, 6), (20, 8, 6), (20, 28, 6), (20, 18, 2), (20, 18, 10)]
CLICK_LABELS = [1, 0, 0, 0, 0, 0, 0]


def _png_size(path: Path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _ellipsoid(center, radii, shape=SHAPE):
    grid = np.indices(shape, dtype=np.float64)
    return sum(((grid[a] - center[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0


@pytest.fixture
def case():
    label = _ellipsoid((20, 18, 6), (8, 7, 3))
    prediction = _ellipsoid((21, 18, 6), (8, 8, 3))
    seeds = np.zeros(SHAPE, np.uint8)
    seeds[10:31, 8:29, 2:11] = 2
    seeds[_ellipsoid((20, 18, 6), (3, 3, 1))] = 1
    image = 50 + 80 * label + np.random.default_rng(0).normal(0, 5, SHAPE)
    return {"image": image, "spacing": SPACING, "clicks_index": CLICKS, "click_labels": CLICK_LABELS,
            "seeds": seeds, "prediction": prediction, "label": label}


def _has_color(png: Path, hex_color: str, tol: float = 0.08) -> bool:
    from matplotlib.image import imread

    rgb = imread(str(png))[..., :3]
    target = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return bool((np.abs(rgb - target).max(axis=-1) < tol).any())


# ---------------------------------------------------------------- case figure


def test_case_figure_is_a_png_of_the_documented_size_with_the_overlay_colors(tmp_path, case):
    path = write_case_figure(tmp_path / "case.png", title="case 1", **case)
    assert path == tmp_path / "case.png"
    assert _png_size(path) == (960, 368)  # 12 x 4.6 inches at 80 dpi
    for key in ("label", "prediction", "seeds", "click_fg", "click_bg"):
        assert _has_color(path, FIGURE_COLORS[key]), key
    # Without a prediction its red is nowhere (neither contour nor legend); zoom and dpi options work.
    no_pred = write_case_figure(tmp_path / "no_pred.png", **{**case, "prediction": None}, crop_margin_mm=4.0, dpi=50)
    assert _png_size(no_pred) == (600, 230)
    assert not _has_color(no_pred, FIGURE_COLORS["prediction"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_case_figure_image_only(tmp_path):
    image = np.zeros((8, 6, 1), np.float32)  # constant image, a single slice
    assert _png_size(write_case_figure(tmp_path / "x.png", image=image, spacing=(1, 1, 3))) == (960, 368)


def test_object_center_is_inside_the_object():
    ring = _ellipsoid((20, 18, 6), (10, 10, 5)) & ~_ellipsoid((20, 18, 6), (6, 6, 5))  # centroid is a hole
    center = object_center(None, ring)
    assert ring[center] and abs(center[0] - 20) <= 10
    assert object_center(_ellipsoid((20, 18, 6), (5, 4, 2))) == (20, 18, 6)
    assert object_center(np.zeros(SHAPE), fallback=(3.4, 4.6, 5.0)) == (3, 5, 5)
    assert object_center(None, shape=(9, 8, 5)) == (4, 4, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prediction": np.zeros((40, 36, 11))}, r"prediction shape \(40, 36, 11\) != image shape \(40, 36, 12\)"),
        ({"label": np.zeros((40, 36))}, "label must be a non-empty 3D array"),
        ({"seeds": np.full(SHAPE, 3)}, "seeds must hold partial labels 0/1/2"),
        ({"image": np.zeros((4, 4))}, "image must be a non-empty 3D array"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"clicks_index": [(20, 18, 6), (45, 0, 0)], "click_labels": [1, 0]}, r"clicks_index\[1\]"),
        ({"clicks_index": [(1, 2)], "click_labels": [1]}, r"clicks_index must be .* \(N, 3\)"),
        ({"click_labels": [1, 0]}, "click_labels must hold 7 values"),
        ({"center": (0, 0, 12)}, "center must be a voxel"),
        ({"crop_margin_mm": -1.0}, "crop_margin_mm"),
        ({"click_tolerance": float("nan")}, "click_tolerance"),
    ],
)
def test_case_figure_errors_name_the_input(tmp_path, case, change, message):
    with pytest.raises(ValueError, match=message):
        write_case_figure(tmp_path / "bad.png", **{**case, **change})
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------- learning curves


def test_learning_curve_from_dict_and_events(tmp_path):
    history = {"epoch": [1, 2, 3, 4], "loss": [1.0, 0.6, None, 0.3], "kd": np.array([0.2, 0.1, 0.05, 0.04])}
    assert _png_size(write_learning_curve(tmp_path / "a.png", history, title="stage 1")) == (560, 320)
    events = [{"event": "epoch", "epoch": e, "loss": 1 / e, "agreement": 0.5 + e / 10, "best": e == 2}
              for e in range(1, 6)]
    path = write_learning_curve(tmp_path / "b.png", events, keys=["loss"], log_y=True, dpi=40)
    assert _png_size(path) == (280, 160)
    # The trainer's progress events: nested "losses" flattened, filtered by event name.
    progress = [{"event": "start", "epochs": 2},
                {"event": "iteration", "epoch": 1, "iteration": 1, "losses": {"kd": 0.2, "self": 0.9}},
                {"event": "validation", "epoch": 1, "score": 0.7, "best": True},
                {"event": "iteration", "epoch": 2, "iteration": 2, "losses": {"kd": 0.1, "self": 0.7}}]
    write_learning_curve(tmp_path / "c.png", progress, event="iteration", keys=["losses.kd", "losses.self"])
    with pytest.raises(ValueError, match=r"keys \['score'\] are not numeric series"):
        write_learning_curve(tmp_path / "d.png", progress, event="iteration", keys=["score"])


@pytest.mark.parametrize(
    ("history", "kwargs", "message"),
    [
        ({}, {}, "history is empty"),
        ([], {}, "history is empty"),
        ({"loss": [1.0, "x"]}, {}, r"history\['loss'\] must hold numbers"),
        ({"epoch": [1, 2, 3], "loss": [1.0, 0.5]}, {}, r"history\['loss'\] has 2 values but history\['epoch'\] has 3"),
        ({"loss": [1.0]}, {"keys": ["kd"]}, r"keys \['kd'\]"),
        ([{"epoch": 1, "note": "start"}], {}, "no numeric series"),
        ([1.0, 2.0], {}, r"history\[0\] must be a dict"),
    ],
)
def test_learning_curve_errors(tmp_path, history, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_learning_curve(tmp_path / "bad.png", history, **kwargs)


# ---------------------------------------------------------------- HTML report

STAGES = {
    "stage 1": {"case <1>": {"dice": 0.91, "assd": 0.8, "hd95": 2.0},
                "case_2": {"dice": 0.84, "assd": 1.6, "hd95": 4.5},
                "case_3": {"dice": 0.70, "assd": 3.1, "hd95": math.inf}},
    "SCM & co": {"case <1>": {"dice": 0.93, "assd": 0.7, "hd95": 1.8},
                 "case_2": {"dice": 0.88, "assd": 1.2, "hd95": 3.25},
                 "case_3": {"dice": 0.79, "assd": 2.2, "hd95": 6.0}},
}  # fmt: skip
SEEDS = {"case <1>": {"fg_precision": 0.99, "fg_recall": 0.31}, "case_2": {"fg_precision": 0.97, "fg_recall": 0.4}}


@pytest.fixture
def report(tmp_path, case):
    out = tmp_path / "run"
    figure = write_case_figure(out / "figures" / "case <1>.png", **case)
    curve = write_learning_curve(out / "curves" / "scm.png", {"loss": [1.0, 0.5, 0.4]})
    html_path = write_report(out, title="Run <A&B>", stages=STAGES, seed_metrics=SEEDS,
                             curves={"SCM loss": curve}, case_figures={"case <1>": figure},
                             meta={"device": "cpu <2 cores>", "preset": "cpu"})  # fmt: skip
    return out, html_path


def test_report_files_and_numbers(report):
    out, html_path = report
    assert html_path == out / "report.html" and (out / "report.json").is_file()
    text = html_path.read_text(encoding="utf-8")
    for stage, cases in STAGES.items():
        for metric, fmt in (("dice", "{:.3f}"), ("assd", "{:.2f}")):
            values = np.array([row[metric] for row in cases.values()])
            assert f"{fmt.format(values.mean())} ± {fmt.format(values.std())}" in text, (stage, metric)
            for value in values:
                assert f"<td>{fmt.format(value)}</td>" in text
    # HD95 of stage 1 over the finite values only, with the infinite case counted.
    assert "3.25 ± 1.25 (1 non-finite)" in text and "<td>inf</td>" in text
    assert "3.68 ± 1.74" in text  # SCM HD95: mean 3.6833, population std 1.7418
    assert "0.980 ± 0.010" in text and "0.355 ± 0.045" in text  # seed precision / recall
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["stages"]["stage 1"]["cases"]["case_3"]["hd95"] is None  # inf → null (strict JSON)
    summary = data["stages"]["SCM & co"]["summary"]["dice"]
    assert summary["mean"] == pytest.approx(np.mean([0.93, 0.88, 0.79]))
    assert summary["std"] == pytest.approx(np.std([0.93, 0.88, 0.79]))
    assert summary["n"] == 3 and summary["n_nonfinite"] == 0
    assert data["stages"]["stage 1"]["summary"]["hd95"]["n_nonfinite"] == 1
    assert data["seed_metrics"]["summary"]["fg_recall"]["mean"] == pytest.approx(0.355)
    assert data["case_figures"] == {"case <1>": "figures/case <1>.png"}
    assert sorted(p.name for p in out.iterdir()) == ["curves", "figures", "report.html", "report.json"]


def test_report_escapes_names_and_is_offline(report):
    out, html_path = report
    text = html_path.read_text(encoding="utf-8")
    for raw, escaped in [("case <1>", "case &lt;1&gt;"), ("SCM & co", "SCM &amp; co"),
                         ("Run <A&B>", "Run &lt;A&amp;B&gt;"), ("cpu <2 cores>", "cpu &lt;2 cores&gt;")]:
        assert escaped in text and raw not in text
    assert 'src="figures/case%20%3C1%3E.png"' in text and 'src="curves/scm.png"' in text
    assert (out / "figures" / "case <1>.png").is_file()
    lowered = text.lower()
    assert "<script" not in lowered and "http://" not in lowered and "https://" not in lowered
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_report_without_optional_parts(tmp_path):
    path = write_report(tmp_path / "r", stages={})
    text = path.read_text(encoding="utf-8")
    assert "No evaluated stage" in text and "<img" not in text
    assert json.loads((tmp_path / "r" / "report.json").read_text())["seed_metrics"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": {"SCM": {"c1": {"dice": "0.9"}}}}, r"stages\['SCM'\]\['c1'\]\['dice'\] must be a number"),
        ({"stages": {"SCM": {"c1": {"dice": True}}}}, r"stages\['SCM'\]\['c1'\]\['dice'\] must be a number"),
        ({"stages": {"SCM": [0.9]}}, r"stages\['SCM'\] must be a dict"),
        ({"stages": [("SCM", {})]}, "stages must be a dict"),
        ({"stages": {}, "seed_metrics": {"c1": 0.5}}, r"seed_metrics\['c1'\]"),
        ({"stages": {}, "case_figures": {"c1": "missing.png"}}, r"case_figures\['c1'\]: no such file"),
        ({"stages": {}, "curves": ["a.png"]}, "curves must be a dict"),
        ({"stages": {}, "meta": "cpu"}, "meta must be a dict"),
    ],
)
def test_report_errors_name_the_input(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_report(tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()  # validated before anything is written


def test_number_formatting_helpers():
    assert format_value("dice", 0.91234) == "0.912" and format_value("hd95", 3.14159) == "3.14"
    assert format_value("loss", 0.000123456) == "0.0001235" and format_value("dice", None) == "—"
    assert format_value("assd", math.inf) == "inf" and format_value("dice", math.nan) == "nan"
    assert summarize([1.0, 3.0, math.nan]) == {"mean": 2.0, "std": 1.0, "n": 2, "n_nonfinite": 1}
    assert format_summary("dice", summarize([])) == "—"
    assert format_summary("dice", summarize([math.inf])) == "— (1 non-finite)"


def test_modules_import_neither_torch_nor_matplotlib():
    code = ("import sys, PASegLib.evaluation.report, PASegLib.evaluation.figures; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'monai') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
