"""Benchmark of the geodesic seed expansion (prints one JSON object as the last stdout line).

Part 1 — speed: PASegLib's vectorised raster scan (numpy and torch, iterated to convergence) against an exact
Dijkstra on the same graph (scipy.sparse.csgraph) and against GeodisTK (the paper's compiled tool, 4
iterations as the official code) when it is importable, on 128×128×48 and 240×240×155 volumes, for the full
volume and for a seven-point box crop. Also reports how far each result is from the exact distance.

Part 2 — the paper's Fig. 5 on real data: expanded-foreground precision/recall against the ground truth for
ε ∈ {0.05 … 0.4} over ``../shared/data/la_heart`` with simulated clicks (seed 0). A grid over λ and the
pre-smoothing σ on the first ``--grid-cases`` cases picks the setting whose best ε reaches precision ≥ 0.90
with the highest recall; the ε table is then computed over all cases for that setting and for the official
one (λ = 0.5, raw intensities).

Usage: ``.venv/bin/python benchmarks/bench_expansion.py [--data DIR] [--cases N] [--grid-cases N] [--skip-speed]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from PASegLib.annotation.simulation import ClickSimulationConfig, simulate_clicks
from PASegLib.annotation.validation import object_box
from PASegLib.image.io import read_image
from PASegLib.seeds.expansion import smoothed_crop
from PASegLib.seeds.geodesic import geodesic_distance
from PASegLib.seeds.geodesic_reference import dijkstra_geodesic_distance

EPSILONS = (0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4)
PAPER_EPSILONS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
PRECISION_BAR = 0.90
DIJKSTRA_MAX_VOXELS = 2_000_000  # 26 edges per voxel: ~0.6 GB of graph at this size


def _timed(fn, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _texture(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.normal(size=shape), 3) * 40 + rng.normal(0, 3, size=shape) + 100
    return img.astype(np.float32)


def speed(lamb: float = 0.5) -> dict:
    import torch

    torch.set_num_threads(2)
    try:
        import GeodisTK  # optional: the paper's compiled tool
    except ImportError:
        GeodisTK = None
    settings = [
        ("128x128x48", (128, 128, 48), (0.5, 0.5, 1.5), (40, 36, 20)),
        ("240x240x155", (240, 240, 155), (1.0, 1.0, 1.0), (90, 100, 80)),
    ]
    rows = []
    for name, shape, spacing, box in settings:
        image = _texture(shape)
        center = tuple(s // 2 for s in shape)
        crops = {"full": tuple(slice(None) for _ in shape)}
        crops["box"] = tuple(slice(c - b // 2, c - b // 2 + b) for c, b in zip(center, box))
        for region, crop in crops.items():
            img = np.ascontiguousarray(image[crop])
            seeds = np.zeros(img.shape, dtype=bool)
            seeds[tuple(s // 2 for s in img.shape)] = True
            row = {"volume": name, "region": region, "shape": list(img.shape)}
            t, (exact, sweeps) = _timed(
                lambda: geodesic_distance(img, seeds, spacing=spacing, lamb=lamb, return_iterations=True)
            )
            row.update(numpy_s=round(t, 3), sweeps=int(sweeps))
            t, dt = _timed(lambda: geodesic_distance(img, seeds, spacing=spacing, lamb=lamb, backend="torch"))
            row.update(torch_cpu_s=round(t, 3), torch_max_abs_diff=float(np.abs(dt - exact).max()))
            if img.size <= DIJKSTRA_MAX_VOXELS:
                t, dd = _timed(lambda: dijkstra_geodesic_distance(img, seeds, spacing=spacing, lamb=lamb))
                rel = float(np.abs(dd - exact).max() / max(float(dd.max()), 1e-12))
                row.update(dijkstra_s=round(t, 3), dijkstra_max_rel_diff=rel)
            else:
                row["dijkstra_s"] = f"skipped: {img.size} voxels, graph of ~{img.size * 26 * 24 / 1e9:.1f} GB"
            if GeodisTK is not None:
                seeds_u8 = seeds.astype(np.uint8)
                t, dg = _timed(lambda: GeodisTK.geodesic3d_raster_scan(img, seeds_u8, list(spacing), lamb, 4))
                row.update(geodistk_4it_s=round(t, 3), geodistk_4it_max_excess=float((dg - exact).max()))
                row["geodistk_4it_frac_voxels_above_exact"] = float(np.mean(dg > exact * (1 + 1e-4) + 1e-4))
            else:
                row["geodistk_4it_s"] = "skipped: GeodisTK not importable (pip install '.[geodistk]', see README)"
            if "cuda" in sys.argv or torch.cuda.is_available():
                t, _ = _timed(lambda: geodesic_distance(img, seeds, spacing=spacing, lamb=lamb, backend="torch",
                                                        device="cuda"), repeats=2)  # fmt: skip
                row["torch_cuda_s"] = round(t, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"lamb": lamb, "rows": rows}


def load_cases(data: Path, n: int):
    ids = sorted(p.name[: -len("_image.nii.gz")] for p in data.glob("*_image.nii.gz"))[:n]
    for case_id in ids:
        image = read_image(data / f"{case_id}_image.nii.gz")
        label = read_image(data / f"{case_id}_label.nii.gz")
        case = simulate_clicks(label.array, image.geometry, seed=0, config=ClickSimulationConfig(largest_only=True))
        yield case_id, image, label.array > 0, case.objects[0]


def case_curve(image, gt, obj, lamb, sigma):
    """Precision and recall per ε for one case (one distance map, thresholded at every ε)."""
    g = image.geometry
    lo, hi = object_box(obj, g)
    crop = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
    intensities = smoothed_crop(image.array.astype(np.float32), lo, hi, g.spacing, sigma)
    seeds = np.zeros(intensities.shape, dtype=bool)
    seeds[tuple(g.world_to_voxel(obj.foreground) - lo)] = True
    d = geodesic_distance(intensities, seeds, spacing=g.spacing, lamb=lamb)
    inside, n_gt = gt[crop], float(gt.sum())
    out = []
    for eps in EPSILONS:
        fg = d < eps * d.max()
        tp = float((fg & inside).sum())
        out.append((tp / max(float(fg.sum()), 1.0), tp / n_gt))
    return np.array(out)


def summarise(curves: list) -> list:
    arr = np.stack(curves)  # (cases, eps, 2)
    return [
        {"epsilon": e, "precision": round(float(arr[:, n, 0].mean()), 4), "precision_std": round(float(arr[:, n, 0].std()), 4),
         "recall": round(float(arr[:, n, 1].mean()), 4), "recall_std": round(float(arr[:, n, 1].std()), 4)}
        for n, e in enumerate(EPSILONS)
    ]  # fmt: skip


def best_epsilon(table: list) -> dict:
    ok = [r for r in table if r["precision"] >= PRECISION_BAR]
    return max(ok, key=lambda r: r["recall"]) if ok else {"epsilon": None, "precision": None, "recall": 0.0}


def fig5(data: Path, n_cases: int, grid_cases: int) -> dict:
    cases = list(load_cases(data, n_cases))
    grid = {}
    for lamb in (0.0, 0.5, 1.0):
        for sigma in (0.0, 1.0, 2.0):
            start = time.perf_counter()
            table = summarise([case_curve(im, gt, obj, lamb, sigma) for _, im, gt, obj in cases[:grid_cases]])
            grid[f"lamb={lamb},sigma_mm={sigma}"] = {"lamb": lamb, "sigma_mm": sigma, "best": best_epsilon(table),
                                                      "table": table, "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            print(json.dumps({k: v for k, v in grid[f"lamb={lamb},sigma_mm={sigma}"].items() if k != "table"}), flush=True)
    chosen = max(grid.values(), key=lambda g: g["best"]["recall"])
    full = {}
    for label, lamb, sigma in [("chosen", chosen["lamb"], chosen["sigma_mm"]), ("official", 0.5, 0.0)]:
        start = time.perf_counter()
        table = summarise([case_curve(im, gt, obj, lamb, sigma) for _, im, gt, obj in cases])
        full[label] = {"lamb": lamb, "sigma_mm": sigma, "best": best_epsilon(table), "table": table,
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        print(json.dumps({label: full[label]}), flush=True)
    return {"n_cases": len(cases), "grid_cases": min(grid_cases, len(cases)), "grid": grid, "all_cases": full,
            "default": {"lamb": chosen["lamb"], "sigma_mm": chosen["sigma_mm"], "epsilon": full["chosen"]["best"]["epsilon"]}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "la_heart")
    parser.add_argument("--cases", type=int, default=80)
    parser.add_argument("--grid-cases", type=int, default=10)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-fig5", action="store_true")
    args = parser.parse_args()
    result = {"benchmark": "expansion"}
    if not args.skip_speed:
        result["speed"] = speed()
    if args.skip_fig5:
        pass
    elif args.data.is_dir():
        result["fig5"] = fig5(args.data, args.cases, args.grid_cases)
    else:
        result["fig5"] = f"skipped: {args.data} not found"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
