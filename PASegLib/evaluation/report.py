"""Offline HTML report of a PASeg run: metric tables per stage, seed quality, learning curves, case figures.

:func:`write_report` writes ``out_dir/report.html`` (one self-contained page: inline CSS, no script, no
network resource; images are relative links to PNGs, so copy the folder with its PNGs) and
``out_dir/report.json`` with the same numbers, both atomically. The PNGs come from
:mod:`PASegLib.evaluation.figures` (:func:`~PASegLib.evaluation.figures.write_case_figure`,
:func:`~PASegLib.evaluation.figures.write_learning_curve`).

Numbers:

* Metrics are whatever the caller passes (``stages[stage][case][metric]``); the usual ones are those of
  :func:`PASegLib.evaluation.metrics.compute_metrics` (``dice``, ``precision``, ``recall`` as fractions; ``assd``,
  ``hd95`` in mm) and, for the expanded seeds, those of :func:`PASegLib.seeds.expansion.seed_precision_recall`
  (``fg_precision``, ``fg_recall``, ``bg_error``). Known metrics come first in the tables, in
  :data:`METRIC_ORDER`; others follow in first-seen order.
* ``mean ± std`` is over the cases' **finite** values; ``std`` is the population standard deviation
  (``ddof = 0``, ``numpy.std``). Non-finite values (``inf`` HD95 of an empty prediction, ``nan``) are
  counted and shown next to the summary, e.g. ``12.31 ± 4.02 (1 non-finite)``, never silently mixed in.
* Formatting (:func:`format_value`): fractions with 3 decimals, distances (mm) with 2, other metrics with
  4 significant digits; ``inf``/``nan`` as such; a missing value as ``—``.
* ``report.json``: ``{"title", "meta", "stages": {stage: {"cases": {...}, "summary": {metric: {"mean",
  "std", "n", "n_nonfinite"}}}}, "seed_metrics": same or null, "curves", "case_figures"}`` (paths relative to
  ``out_dir``); non-finite numbers are written as ``null`` (strict JSON).

Importing this module imports numpy only; it never imports torch or matplotlib.
"""

from __future__ import annotations

import datetime
import html
import math
import numbers
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional
from urllib.parse import quote

import numpy as np

from PASegLib.jobs.events import json_safe
from PASegLib.utils.atomic import PathLike, atomic_write_json, atomic_write_text
from PASegLib.utils.version import __version__

__all__ = ["METRIC_ORDER", "format_summary", "format_value", "summarize", "summarize_cases", "write_report"]

#: Display order and column titles of the known metrics.
METRIC_ORDER: Dict[str, str] = {
    "dice": "Dice", "assd": "ASSD (mm)", "hd95": "HD95 (mm)", "precision": "Precision", "recall": "Recall",
    "fg_precision": "Seed precision", "fg_recall": "Seed recall", "bg_error": "Background error",
}  # fmt: skip
_FRACTIONS = {"dice", "precision", "recall", "fg_precision", "fg_recall", "bg_error", "agreement"}
_MILLIMETRES = {"assd", "hd95", "hd", "hd100", "asd"}
_MISSING = "—"
PerCase = Mapping[str, Mapping[str, float]]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; } tr.summary td { font-weight: bold; background: #fafafa; }
table.meta td, table.meta th { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; } .note { color: #555; font-size: .9em; }
.swatch { display: inline-block; width: 1.4em; height: .25em; vertical-align: middle; margin: 0 .3em; }
"""


# -- numbers -------------------------------------------------------------------------------------------------
def format_value(metric: str, value: Optional[float]) -> str:
    """Table text of one value: fractions ``0.912``, distances ``3.25``, others ``{:.4g}``, ``—`` if None."""
    if value is None:
        return _MISSING
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if metric in _FRACTIONS:
        return f"{v:.3f}"
    if metric in _MILLIMETRES:
        return f"{v:.2f}"
    return f"{v:.4g}"


def summarize(values: Iterable[float]) -> Dict[str, Any]:
    """``{"mean", "std", "n", "n_nonfinite"}`` of ``values``: mean and population std over the finite ones.

    ``mean``/``std`` are ``None`` when no value is finite; ``n`` counts the finite values.
    """
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return {"mean": None, "std": None, "n": 0, "n_nonfinite": int(arr.size)}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size),
            "n_nonfinite": int(arr.size - finite.size)}  # fmt: skip


def format_summary(metric: str, summary: Mapping[str, Any]) -> str:
    """``"0.912 ± 0.034"`` (``" (1 non-finite)"`` appended when values were non-finite); ``—`` without values."""
    bad = int(summary.get("n_nonfinite", 0))
    note = f" ({bad} non-finite)" if bad else ""
    if summary.get("mean") is None:
        return f"{_MISSING}{note}"
    return f"{format_value(metric, summary['mean'])} ± {format_value(metric, summary['std'])}{note}"


def _metric_names(per_case: PerCase) -> List[str]:
    seen: List[str] = []
    for row in per_case.values():
        seen.extend(m for m in row if m not in seen)
    return [m for m in METRIC_ORDER if m in seen] + [m for m in seen if m not in METRIC_ORDER]


def summarize_cases(per_case: PerCase) -> Dict[str, Dict[str, Any]]:
    """:func:`summarize` of every metric of ``{case: {metric: value}}`` (cases lacking a metric are skipped)."""
    return {m: summarize(row[m] for row in per_case.values() if m in row) for m in _metric_names(per_case)}


# -- validation ----------------------------------------------------------------------------------------------
def _check_per_case(name: str, per_case: Any) -> Dict[str, Dict[str, float]]:
    if not isinstance(per_case, Mapping):
        raise ValueError(f"{name} must be a dict {{case: {{metric: value}}}}, got {type(per_case).__name__}")
    out: Dict[str, Dict[str, float]] = {}
    for case, row in per_case.items():
        if not isinstance(case, str) or not isinstance(row, Mapping):
            raise ValueError(f"{name}[{case!r}] must map a case name (str) to {{metric: value}}, got {row!r}")
        for metric, value in row.items():
            if not isinstance(metric, str):
                raise ValueError(f"{name}[{case!r}] has a non-string metric name {metric!r}")
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name}[{case!r}][{metric!r}] must be a number, got {value!r}")
        out[case] = {m: float(v) for m, v in row.items()}
    return out


def _check_links(name: str, links: Optional[Mapping[str, PathLike]], out_dir: Path) -> Dict[str, str]:
    """``{title: path relative to out_dir (posix)}``; relative inputs are relative to the working directory."""
    if links is None:
        return {}
    if not isinstance(links, Mapping):
        raise ValueError(f"{name} must be a dict {{name: PNG path}}, got {type(links).__name__}")
    out: Dict[str, str] = {}
    for title, path in links.items():
        if not isinstance(title, str):
            raise ValueError(f"{name} keys must be strings, got {title!r}")
        png = Path(path)
        if not png.is_file():
            raise ValueError(f"{name}[{title!r}]: no such file {str(png)!r}")
        try:
            out[title] = Path(os.path.relpath(png.resolve(), out_dir.resolve())).as_posix()
        except ValueError:  # another drive (Windows): no relative link exists
            raise ValueError(f"{name}[{title!r}]: {str(png)!r} cannot be linked relative to {str(out_dir)!r}") from None
    return out


# -- HTML ----------------------------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _header(metric: str) -> str:
    return _e(METRIC_ORDER.get(metric, metric))


def _case_table(per_case: Mapping[str, Mapping[str, float]], summary: Mapping[str, Mapping[str, Any]]) -> str:
    metrics = list(summary)
    head = "".join(f"<th>{_header(m)}</th>" for m in metrics)
    rows = [f"<tr><td>{_e(case)}</td>" + "".join(f"<td>{_e(format_value(m, row.get(m)))}</td>" for m in metrics)
            + "</tr>" for case, row in per_case.items()]  # fmt: skip
    rows.append('<tr class="summary"><td>mean ± std</td>'
                + "".join(f"<td>{_e(format_summary(m, summary[m]))}</td>" for m in metrics) + "</tr>")  # fmt: skip
    return f"<table><thead><tr><th>case</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _summary_table(stages: Mapping[str, Mapping[str, Any]]) -> str:
    metrics: List[str] = []
    for stage in stages.values():
        metrics.extend(m for m in stage["summary"] if m not in metrics)
    metrics = [m for m in METRIC_ORDER if m in metrics] + [m for m in metrics if m not in METRIC_ORDER]
    head = "".join(f"<th>{_header(m)}</th>" for m in metrics)
    rows = []
    for name, stage in stages.items():
        cells = "".join(f"<td>{_e(format_summary(m, stage['summary'][m]))}</td>" if m in stage["summary"]
                        else f"<td>{_MISSING}</td>" for m in metrics)  # fmt: skip
        rows.append(f"<tr><td>{_e(name)}</td><td>{len(stage['cases'])}</td>{cells}</tr>")
    return f"<table><thead><tr><th>stage</th><th>cases</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _dice_matrix(stages: Mapping[str, Mapping[str, Any]]) -> str:
    with_dice = [s for s, v in stages.items() if "dice" in v["summary"]]
    if len(with_dice) < 2:
        return ""
    cases: List[str] = []
    for s in with_dice:
        cases.extend(c for c in stages[s]["cases"] if c not in cases)
    head = "".join(f"<th>{_e(s)}</th>" for s in with_dice)
    rows = "".join(f"<tr><td>{_e(c)}</td>" + "".join(
        f"<td>{_e(format_value('dice', stages[s]['cases'].get(c, {}).get('dice')))}</td>" for s in with_dice)
        + "</tr>" for c in cases)  # fmt: skip
    return (f"<h3>Dice per case and stage</h3><table><thead><tr><th>case</th>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _figures(links: Mapping[str, str]) -> str:
    return "".join(f'<figure><img src="{_e(quote(rel))}" alt="{_e(title)}" loading="lazy">'
                   f"<figcaption>{_e(title)}</figcaption></figure>" for title, rel in links.items())  # fmt: skip


def _legend() -> str:
    from PASegLib.evaluation.figures import FIGURE_COLORS

    items = [("label", "ground-truth label"), ("prediction", "prediction"),
             ("seeds", "expanded foreground seeds (dashed: box of the seven clicks, unlabeled inside)"),
             ("click_fg", "foreground click (+)"), ("click_bg", "background clicks (x; faint when off-plane)")]
    spans = "; ".join(f'<span class="swatch" style="background:{_e(FIGURE_COLORS[k])}"></span>{_e(text)}'
                      for k, text in items)  # fmt: skip
    return f'<p class="note">Planes through the object centre in index axes [i, j, k], aspect from the ' \
           f"voxel spacing. {spans}.</p>"


def write_report(
    out_dir: PathLike,
    *,
    title: str = "PASeg report",
    stages: Mapping[str, PerCase],
    seed_metrics: Optional[PerCase] = None,
    curves: Optional[Mapping[str, PathLike]] = None,
    case_figures: Optional[Mapping[str, PathLike]] = None,
    meta: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/report.json`` (atomically) and return the HTML path.

    Args:
        out_dir: report folder (created if needed). Link targets must be reachable from it by a relative
            path; keep the PNGs inside it so the folder can be moved or copied.
        title: page title.
        stages: ``{stage name: {case name: {metric: value}}}`` in display order (e.g. ``"stage 1"``,
            ``"SCM"``, ``"SCM-E"``); distances in mm (see the module docstring).
        seed_metrics: ``{case name: {"fg_precision", "fg_recall", ...}}`` of the expanded seeds, or ``None``.
        curves: ``{caption: PNG path}`` of learning curves, in display order.
        case_figures: ``{case name: PNG path}`` of per-case figures, in display order.
        meta: ``{key: value}`` shown as a table at the top (dataset, preset, device, duration, …); values
            are converted with ``str``.

    Relative PNG paths are taken relative to the current working directory (as every path), and written
    into the page relative to ``out_dir``. Every name and value is HTML-escaped.

    Raises:
        ValueError: a malformed table (the message names the entry, e.g. ``stages['SCM']['case_01']
            ['dice']``), a PNG that does not exist, or a non-string key.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a folder")
    if not isinstance(stages, Mapping):
        raise ValueError(f"stages must be a dict {{stage: {{case: {{metric: value}}}}}}, got {type(stages).__name__}")
    checked: Dict[str, Dict[str, Any]] = {}
    for stage, per_case in stages.items():
        if not isinstance(stage, str):
            raise ValueError(f"stages keys must be stage names (str), got {stage!r}")
        cases = _check_per_case(f"stages[{stage!r}]", per_case)
        checked[stage] = {"cases": cases, "summary": summarize_cases(cases)}
    seeds = None
    if seed_metrics is not None:
        seed_cases = _check_per_case("seed_metrics", seed_metrics)
        seeds = {"cases": seed_cases, "summary": summarize_cases(seed_cases)}
    if meta is not None and not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a dict {{key: value}}, got {type(meta).__name__}")
    meta_text = {str(k): str(v) for k, v in (meta or {}).items()}
    curve_links = _check_links("curves", curves, out)
    figure_links = _check_links("case_figures", case_figures, out)
    out.mkdir(parents=True, exist_ok=True)

    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]  # fmt: skip
    if meta_text:
        parts.append('<table class="meta"><tbody>' + "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta_text.items()) + "</tbody></table>")
    parts.append("<h2>Summary</h2>")
    if checked:
        parts.append('<p class="note">mean ± population std over the cases with a finite value; Dice, precision '
                     "and recall are fractions, ASSD and HD95 millimetres.</p>" + _summary_table(checked)
                     + _dice_matrix(checked))  # fmt: skip
    else:
        parts.append('<p class="note">No evaluated stage (no ground-truth labels).</p>')
    if seeds is not None:
        parts.append("<h2>Expanded seeds</h2><p class=\"note\">Foreground seeds from the geodesic expansion against "
                     "the ground truth.</p>" + _case_table(seeds["cases"], seeds["summary"]))  # fmt: skip
    if curve_links:
        parts.append("<h2>Learning curves</h2>" + _figures(curve_links))
    if checked:
        parts.append("<h2>Per-case results</h2>")
        parts.extend(f"<h3>{_e(s)}</h3>" + _case_table(v["cases"], v["summary"]) for s, v in checked.items())
    if figure_links:
        parts.append("<h2>Cases</h2>" + _legend() + _figures(figure_links))
    parts.append(f'<hr><p class="note">PASegLib {_e(__version__)}, generated {_e(generated)}.</p></body></html>\n')

    payload = {"title": title, "meta": meta_text, "generated": generated, "paseg_version": __version__,
               "stages": checked, "seed_metrics": seeds, "curves": curve_links, "case_figures": figure_links}
    atomic_write_json(out / "report.json", json_safe(payload))
    html_path = out / "report.html"
    atomic_write_text(html_path, "".join(parts))
    return html_path
