"""Energy ordering on ../shared/data/la_heart: does the stage-one loss prefer the ground truth to the seeds?

No training. For each case (prepared exactly as training prepares it: CPU-preset 2 mm grid, clicks simulated
from the labels with seed 0 as ``bench_accuracy.py`` does, seeds expanded, image z-scored in the valid region)
a few candidate masks are scored by the stage-one loss at full weight::

    L(p) = L_data(p; seeds) + α · L_mCRF(p; image smoothed by crf_image_sigma) + β · L_VM(p) [+ γ · L_box(p)]

with ``p`` the mask softened to ``(soft, 1 − soft)`` (default ``soft = 0.01``: ``--soft``), exactly as
validation's ``heldout_loss`` scores a probability map (:class:`~PASegLib.training.objective.Stage1Objective`;
``L_box`` when ``box_prior_weight > 0``). A setting under which the objective prefers the seeds to the truth
cannot train well.

Candidates (on the training grid): ``gt``; ``gt_dilated_2mm``; ``gt_eroded_2mm``; ``gt_eroded_4mm`` (binary
morphology with an ellipsoidal ball of radius ``r / spacing`` voxels per axis, rounded: on the 2 mm grid 2 mm
is a 1-voxel ball = the 6-neighbourhood, 4 mm a 2-voxel ball); ``seeds_fg`` (the expanded foreground seeds
only); ``click_box`` (the union of the objects' inclusive click boxes).

Cases: the first ``--cases`` (default 20) of the 60 training ids of ``bench_accuracy.py`` (ids sorted).
Configs: ``--configs NAME:key=value,...`` groups applied on top of the CPU preset's stage-one config (values
are JSON, else strings: ``data_term=paper``); the default grid holds the first accuracy table's settings and
the second's candidates (:data:`DEFAULT_GRID`, every loss setting spelled out).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_energy.py --summary docs/results/energy_cpu.json
    python benchmarks/bench_energy.py --cases 5 --configs "base:" "beta1:beta=1.0" \\
        "smooth:crf_image_sigma=1.0,crf_sigma_intensity=0.05"

Output: per config a per-case table (loss of every candidate, rank of ``gt``) and the summary table on
stderr; the JSON (summary + per-case values) is the last stdout line and, with ``--summary PATH``, written there.

The loss is :class:`PASegLib.training.objective.Stage1Objective` — the one training and validation use.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_accuracy import BASE, ISSUE5, LA_HEART, PLAIN_SEEDS  # noqa: E402

#: the stage-one settings that change the loss (the ones a grid entry spells out)
LOSS_KEYS = ("data_term", "alpha", "beta", "crf_sigma_xy", "crf_sigma_intensity", "crf_radius", "crf_downsample_to",
             "crf_image_sigma", "box_prior_weight", "box_prior_shrink")
CANDIDATES = ("gt", "gt_dilated_2mm", "gt_eroded_2mm", "gt_eroded_4mm", "seeds_fg", "click_box")
#: the ground truth and its ±2 mm neighbours ("GT or near")
NEAR = ("gt", "gt_dilated_2mm", "gt_eroded_2mm")
SOFT = 0.01
N_TRAIN = 60


def _spec(name: str, settings: Dict[str, Any]) -> str:
    return name + ":" + ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in settings.items())


_ISSUE5_LOSS = {k: ISSUE5[k] for k in ("data_term", "alpha", "beta", "crf_sigma_intensity", "crf_image_sigma",
                                       "box_prior_weight")}
_OFFICIAL = {k: BASE[k] for k in ("data_term", "alpha", "beta", "crf_sigma_intensity", "crf_image_sigma",
                                  "box_prior_weight")}
#: the default grid: the first accuracy table's settings, then the official data term and its candidate changes
DEFAULT_GRID = [
    _spec("issue5 (paper, σ_I 0.1, β 0.1)", _ISSUE5_LOSS),
    _spec("official", _OFFICIAL),
    _spec("official β 0.5", {**_OFFICIAL, "beta": 0.5}),
    _spec("official β 1", {**_OFFICIAL, "beta": 1.0}),
    _spec("official smooth 1 σ_I 0.05", {**_OFFICIAL, "crf_image_sigma": 1.0, "crf_sigma_intensity": 0.05}),
    _spec("official smooth 1 σ_I 0.1", {**_OFFICIAL, "crf_image_sigma": 1.0, "crf_sigma_intensity": 0.1}),
    _spec("official smooth 1.5 σ_I 0.05", {**_OFFICIAL, "crf_image_sigma": 1.5, "crf_sigma_intensity": 0.05}),
    _spec("official smooth 1 σ_I 0.05 β 0.5", {**_OFFICIAL, "crf_image_sigma": 1.0, "crf_sigma_intensity": 0.05,
                                                "beta": 0.5}),
    _spec("official α 0.5 β 0.05", {**_OFFICIAL, "alpha": 0.5, "beta": 0.05}),
]


def parse_config_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``"NAME:key=value,key=value"`` → ``(NAME, {key: value})``; values are JSON (``1.0``, ``null``,
    ``[64, 64, 48]``), else kept as strings (``data_term=paper``). ``"NAME:"`` = no override."""
    name, sep, rest = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"config {spec!r}: expected NAME:key=value,... (NAME: alone for no override)")
    overrides: Dict[str, Any] = {}
    for item in (p.strip() for p in re.split(r",(?![^\[]*\])", rest)):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"config {name!r}: {item!r} is not key=value")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return name, overrides


# --------------------------------------------------------------------------------------------------- masks
def ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Ellipsoidal structuring element of ``radius_mm`` on a grid of ``spacing``: radius ``round(r / s)``
    voxels per axis (a 1-voxel radius is the 6-neighbourhood)."""
    radii = [int(round(radius_mm / float(s))) for s in spacing]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    dist = sum((g / max(r, 1e-9)) ** 2 if r > 0 else np.where(g == 0, 0.0, np.inf) for g, r in zip(grids, radii))
    return dist <= 1.0 + 1e-9


def candidate_masks(case, spacing: Optional[Sequence[float]] = None) -> Dict[str, np.ndarray]:
    """The candidate masks (bool, on the case's grid) of :data:`CANDIDATES`."""
    from scipy import ndimage

    spacing = spacing if spacing is not None else case.geometry.spacing
    gt = np.asarray(case.label) > 0
    box = np.zeros(gt.shape, dtype=bool)
    for lo, hi in case.boxes:
        lo = np.clip(np.asarray(lo, dtype=int), 0, np.asarray(gt.shape) - 1)
        hi = np.clip(np.asarray(hi, dtype=int), 0, np.asarray(gt.shape) - 1)
        box[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    b2, b4 = ball(2.0, spacing), ball(4.0, spacing)
    return {"gt": gt,
            "gt_dilated_2mm": ndimage.binary_dilation(gt, structure=b2),
            "gt_eroded_2mm": ndimage.binary_erosion(gt, structure=b2, border_value=0),
            "gt_eroded_4mm": ndimage.binary_erosion(gt, structure=b4, border_value=0),
            "seeds_fg": (np.asarray(case.partial) == 1) & np.asarray(case.valid, dtype=bool),
            "click_box": box}


# ---------------------------------------------------------------------------------------------------- loss
def build_losses(config):
    """The stage-one objective of ``config`` (:class:`~PASegLib.training.objective.Stage1Objective`, exactly what
    training and validation's ``heldout_loss`` use)."""
    from PASegLib.training.objective import Stage1Objective

    return Stage1Objective(config)


def stage1_loss_of_probability(objective, case, prob: np.ndarray) -> Dict[str, float]:
    """``{"data", "mcrf", "vm", "box", "total"}`` of ``prob`` on ``case`` at full weight
    (``total = data + α·mcrf + β·vm + γ·box``; a term of weight 0 is reported as 0)."""
    terms = objective.of_probability(case, prob)
    return {"data": terms["data"], "mcrf": terms["mcrf"], "vm": terms["vm"], "box": terms["box"], "total": terms["loss"]}


def rank_case(config, case, *, soft: float = SOFT, losses=None, masks=None) -> Dict[str, Any]:
    """Loss of every candidate of ``case`` under ``config``; ``gt_rank`` = 1 + candidates with a strictly
    lower loss; ``best`` = the candidate of lowest loss."""
    losses = losses if losses is not None else build_losses(config)
    masks = masks if masks is not None else candidate_masks(case)
    terms = {name: stage1_loss_of_probability(losses, case, np.where(m, 1.0 - soft, soft))
             for name, m in masks.items()}
    totals = {name: v["total"] for name, v in terms.items()}
    best = min(totals, key=totals.get)
    return {"losses": totals, "terms": terms, "best": best,
            "gt_rank": 1 + sum(v < totals["gt"] for k, v in totals.items() if k != "gt")}


def summarize_config(per_case: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Shares over the cases: ``gt_lowest``, ``gt_or_near_lowest`` (gt, ±2 mm), ``seeds_beat_gt``; mean loss
    (and mean terms) per candidate; mean GT rank."""
    rows = list(per_case.values())
    n = len(rows)
    cands = list(rows[0]["losses"]) if rows else []
    return {
        "cases": n,
        "gt_lowest": sum(r["gt_rank"] == 1 for r in rows) / n if n else None,
        "gt_or_near_lowest": sum(r["best"] in NEAR for r in rows) / n if n else None,
        "seeds_beat_gt": sum(r["losses"]["seeds_fg"] < r["losses"]["gt"] for r in rows) / n if n else None,
        "mean_gt_rank": float(np.mean([r["gt_rank"] for r in rows])) if n else None,
        "best_counts": {c: sum(r["best"] == c for r in rows) for c in cands},
        "mean_loss": {c: float(np.mean([r["losses"][c] for r in rows])) for c in cands},
        "mean_terms": {c: {t: float(np.mean([r["terms"][c][t] for r in rows])) for t in ("data", "mcrf", "vm", "box")}
                       for c in cands},
    }


# ------------------------------------------------------------------------------------------------- output
_SHORT = {"gt": "gt", "gt_dilated_2mm": "dil2", "gt_eroded_2mm": "ero2", "gt_eroded_4mm": "ero4",
          "seeds_fg": "seeds", "click_box": "box"}


def case_table(name: str, per_case: Dict[str, Dict[str, Any]]) -> str:
    head = f"{'case':24s} " + " ".join(f"{_SHORT.get(c, c):>8s}" for c in CANDIDATES) + "  rank  best"
    lines = [f"== {name}", head]
    for cid, r in per_case.items():
        lines.append(f"{cid[:24]:24s} " + " ".join(f"{r['losses'][c]:8.4f}" for c in CANDIDATES)
                     + f"  {r['gt_rank']:4d}  {_SHORT.get(r['best'], r['best'])}")
    return "\n".join(lines)


def summary_table(configs: Dict[str, Dict[str, Any]]) -> str:
    width = max([len(n) for n in configs] + [6])
    head = (f"{'config':{width}s}  GT low  GT/near  seeds<GT  " + " ".join(f"{_SHORT.get(c, c):>7s}" for c in CANDIDATES))
    lines = [head, "-" * len(head)]
    for name, entry in configs.items():
        s = entry["summary"]
        lines.append(f"{name:{width}s}  {s['gt_lowest']:6.2f}  {s['gt_or_near_lowest']:7.2f}  {s['seeds_beat_gt']:8.2f}  "
                     + " ".join(f"{s['mean_loss'][c]:7.4f}" for c in CANDIDATES))
    return "\n".join(lines)


def _round(obj, digits=6):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v, digits) for v in obj]
    return obj


def load_cases(data: Path, out: Path, n_cases: int):
    """The first ``n_cases`` training ids prepared on the CPU preset grid (clicks and cache under ``out``);
    returns ``(stage-one preset config, prepared cases)``."""
    from PASegLib.data.dataset import list_cases
    from PASegLib.data.prepare import prepare_cases
    from PASegLib.pipeline.inputs import median_spacing, simulate_missing_clicks
    from PASegLib.pipeline.presets import preset_configs

    ids = sorted(c.case_id for c in list_cases(data))
    train_ids = ids[:N_TRAIN]
    chosen = set(train_ids[:n_cases])
    clicks = out / "clicks"
    clicks.mkdir(parents=True, exist_ok=True)
    from PASegLib.annotation.simulation import ClickSimulationConfig

    # energy_cpu.json was made with one click stream shared by every case: kept to reproduce it
    simulate_missing_clicks([f for f in list_cases(data) if f.case_id in chosen], clicks, seed=0,
                            config=ClickSimulationConfig(legacy_shared_stream=True))
    by_id = {f.case_id: f for f in list_cases(data, annotations_dir=clicks)}
    a, _, _ = preset_configs("cpu", median_spacing([by_id[c] for c in train_ids]), seed=0, device="cpu",
                             overrides=PLAIN_SEEDS)  # the committed results: the plain seeds

    def progress(i, n, cid, cached):
        print(f"\rpreparing {i + 1}/{n} {cid}{' (cached)' if cached else ''}      ", end="", file=sys.stderr)

    cases = prepare_cases([by_id[c] for c in sorted(chosen)], a, cache_dir=out / "cache", on_case=progress)
    print(file=sys.stderr)
    return a, cases


def run_grid(base_config, cases, specs: Sequence[str], *, soft: float = SOFT, verbose: bool = True
             ) -> Dict[str, Dict[str, Any]]:
    """``{config name: {"settings", "summary", "cases"}}`` for the ``NAME:key=value`` specs."""
    masks = {c.case_id: candidate_masks(c) for c in cases}
    results = {}
    for spec in specs:
        name, overrides = parse_config_spec(spec)
        config = base_config.replace(**overrides)
        losses = build_losses(config)
        start = time.monotonic()
        per_case = {c.case_id: rank_case(config, c, soft=soft, losses=losses, masks=masks[c.case_id]) for c in cases}
        entry = {"overrides": overrides, "settings": {k: getattr(config, k) for k in LOSS_KEYS},
                 "box_prior_used": config.box_prior_weight > 0, "summary": summarize_config(per_case),
                 "seconds": round(time.monotonic() - start, 1), "cases": per_case}
        results[name] = json.loads(json.dumps(entry))  # tuples → lists
        if verbose:
            print(case_table(name, per_case) + f"\n({entry['seconds']} s)\n", file=sys.stderr)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LA_HEART)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "energy",
                        help="clicks and prepared-case cache (default bench_output/energy)")
    parser.add_argument("--cases", type=int, default=20, help="first N of the 60 training ids (default 20)")
    parser.add_argument("--configs", nargs="+", default=None, metavar="NAME:key=value,...",
                        help="configs on top of the CPU preset's stage-one config (default: the accuracy grid)")
    parser.add_argument("--soft", type=float, default=SOFT, help="masks become probabilities (soft, 1 - soft)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--summary", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--quiet", action="store_true", help="no per-case tables on stderr")
    args = parser.parse_args(argv)
    if not 0.0 < args.soft < 0.5:
        parser.error("--soft must be in (0, 0.5)")
    if not 1 <= args.cases <= N_TRAIN:
        parser.error(f"--cases must be in 1..{N_TRAIN}")
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"data not found: {args.data}"}))
        return 0
    specs = args.configs or DEFAULT_GRID
    for spec in specs:  # fail on a bad spec before preparing anything
        parse_config_spec(spec)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    base, cases = load_cases(args.data, args.out, args.cases)
    grid = cases[0].geometry.spacing if cases else None
    results = run_grid(base, cases, specs, soft=args.soft, verbose=not args.quiet)
    print(summary_table(results), file=sys.stderr)
    summary = {"dataset": str(args.data.name), "cases": [c.case_id for c in cases],
               "split": f"first {len(cases)} of the {N_TRAIN} training ids (ids sorted), clicks seed 0",
               "grid_spacing_mm": list(grid) if grid is not None else None, "soft": args.soft,
               "candidates": list(CANDIDATES), "near": list(NEAR),
               "morphology": {"gt_dilated_2mm": ball(2.0, grid).sum().item() if grid else None,
                              "gt_eroded_4mm": ball(4.0, grid).sum().item() if grid else None,
                              "note": "ellipsoidal ball of radius round(r/spacing) voxels per axis; footprint sizes "
                                      "in voxels (2 mm on 2 mm = 1-voxel ball, 7 voxels)"},
               "loss": "data + α·mCRF + β·VM (+ γ·box prior) at full weight on the whole case, as "
                       "Stage1Trainer.validation_terms",
               "base_config": base.to_dict(), "seconds": round(time.monotonic() - start, 1),
               "configs": _round(results)}
    if args.summary:
        from PASegLib.utils.atomic import atomic_write_json

        args.summary.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.summary, summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
