"""benchmarks/bench_energy.py: candidate ranking by the stage-one loss on a tiny synthetic case.

The case: a bright sphere (radius 5 voxels) with weak noise in a 24×24×16 volume, foreground seeds = a core of
radius 2, background seeds = everything farther than 8 voxels from the centre, click box = the sphere's
bounding box ± 2 voxels. Every candidate except the click box agrees with all seeds, so their data terms are
equal and the regularisers decide.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

pytest.importorskip("torch")
pytest.importorskip("monai")

from PASegLib.data.prepared import PreparedCase  # noqa: E402
from PASegLib.image.geometry import ImageGeometry  # noqa: E402
from PASegLib.training.config import TrainConfig  # noqa: E402


def _module():
    return load_benchmark("bench_energy")


def _case(noise=0.05, seed=0):
    shape = (24, 24, 16)
    idx = np.indices(shape).astype(float)
    centre = np.array([12.0, 12.0, 8.0])
    dist = np.sqrt(sum((idx[a] - centre[a]) ** 2 for a in range(3)))
    label = (dist <= 5.0).astype(np.uint8)
    image = label + np.random.default_rng(seed).normal(0.0, noise, shape)
    image = ((image - image.mean()) / image.std()).astype(np.float32)
    partial = np.full(shape, 2, dtype=np.uint8)
    partial[dist <= 2.0] = 1
    partial[dist > 8.0] = 0
    lo, hi = np.array([5, 5, 1]), np.array([19, 19, 15])
    geometry = ImageGeometry(shape=shape, spacing=(2.0, 2.0, 2.0))
    return PreparedCase("sphere", image, partial, np.ones(shape, dtype=bool), [np.zeros((7, 3))], [(lo, hi)],
                        label, geometry, geometry)


def _config(**kw):
    base = dict(data_term="official", alpha=1.0, beta=0.1, crf_sigma_intensity=0.5, crf_image_sigma=0.0,
                crf_downsample_to=None)
    return TrainConfig(**{**base, **kw})


def test_masks_and_parsing():
    bench = _module()
    case = _case()
    masks = bench.candidate_masks(case)
    assert set(masks) == set(bench.CANDIDATES)
    gt = masks["gt"]
    assert masks["gt_dilated_2mm"].sum() > gt.sum() > masks["gt_eroded_2mm"].sum() > masks["gt_eroded_4mm"].sum() > 0
    assert bench.ball(2.0, (2.0, 2.0, 2.0)).sum() == 7  # 2 mm on a 2 mm grid: the 1-voxel ball (6-neighbourhood)
    assert bench.ball(4.0, (2.0, 2.0, 2.0)).shape == (5, 5, 5)
    assert masks["seeds_fg"].sum() == (case.partial == 1).sum()
    assert masks["click_box"].sum() == 15 * 15 * 15
    assert bench.parse_config_spec("a:data_term=paper,beta=0.5,crf_downsample_to=[8, 8, 8]") == (
        "a", {"data_term": "paper", "beta": 0.5, "crf_downsample_to": [8, 8, 8]})
    assert bench.parse_config_spec("base:") == ("base", {})
    with pytest.raises(ValueError):
        bench.parse_config_spec("nocolon")


def test_gt_ranks_first_under_a_sensible_config():
    bench = _module()
    case = _case()
    r = bench.rank_case(_config(), case)
    terms = r["terms"]
    assert r["gt_rank"] == 1 and r["best"] == "gt"
    # seeds-only and GT both honour every seed: equal data terms, the regularisers make seeds-only worse
    assert terms["seeds_fg"]["data"] == pytest.approx(terms["gt"]["data"], abs=1e-6)
    assert terms["seeds_fg"]["mcrf"] > terms["gt"]["mcrf"] and terms["seeds_fg"]["vm"] > terms["gt"]["vm"]
    assert r["losses"]["seeds_fg"] > r["losses"]["gt"]
    # the box covers background seeds: higher data term
    assert terms["click_box"]["data"] > terms["gt"]["data"] + 0.1
    s = bench.summarize_config({"sphere": r})
    assert s["gt_lowest"] == 1.0 and s["gt_or_near_lowest"] == 1.0 and s["seeds_beat_gt"] == 0.0
    # the total is data + α·mCRF + β·VM
    t = terms["gt"]
    assert t["total"] == pytest.approx(t["data"] + 1.0 * t["mcrf"] + 0.1 * t["vm"], rel=1e-6)


def test_noise_dominated_sigma_removes_the_crf_preference():
    """With σ_I far below the noise (0.66 z-units here), nearly every kernel weight is ~0: the mCRF is ~0 for
    every mask, so without VM the GT and the seeds-only mask nearly tie (equal data terms) where a σ_I above the
    noise separates them clearly; VM alone still prefers the GT."""
    bench = _module()
    case = _case(noise=0.2)
    sensible = bench.rank_case(_config(crf_sigma_intensity=0.5, beta=0.0), case)
    assert sensible["gt_rank"] == 1
    gap = sensible["losses"]["seeds_fg"] - sensible["losses"]["gt"]
    assert gap > 0.05
    tiny = bench.rank_case(_config(crf_sigma_intensity=1e-3, beta=0.0), case)
    assert max(v["mcrf"] for v in tiny["terms"].values()) < 0.03 * sensible["terms"]["gt"]["mcrf"]
    assert abs(tiny["losses"]["seeds_fg"] - tiny["losses"]["gt"]) < 0.02 * gap
    with_vm = bench.rank_case(_config(crf_sigma_intensity=1e-3, beta=0.1), case)
    assert with_vm["losses"]["seeds_fg"] > with_vm["losses"]["gt"] + 0.05


def test_run_grid_summarises_every_config():
    bench = _module()
    case = _case()
    base = _config()
    results = bench.run_grid(base, [case], ["sensible:", "box:box_prior_weight=1.0"], verbose=False)
    assert list(results) == ["sensible", "box"]
    assert results["sensible"]["box_prior_used"] is False and results["box"]["box_prior_used"] is True
    assert results["sensible"]["summary"]["gt_lowest"] == 1.0
    # the same case and loss as rank_case: the totals agree
    direct = bench.rank_case(base, case)
    assert results["sensible"]["cases"][case.case_id]["losses"]["gt"] == pytest.approx(direct["losses"]["gt"])
    assert results["box"]["cases"][case.case_id]["terms"]["gt"]["box"] >= 0.0
