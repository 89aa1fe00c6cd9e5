"""Per-case random streams of the click simulation and its click noise (issue 20 item 2, issue 21 item 4).

Before the per-case streams every case's clicks were drawn from the same ``seed``: the "2–10 mm" margins were
the same numbers on almost every case. ``legacy_shared_stream`` keeps that behaviour for the committed results.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from conftest import cli_error, ellipsoid

from PASegLib.annotation.markups import read_markups
from PASegLib.annotation.model import side_axis
from PASegLib.annotation.simulation import ClickSimulationConfig, case_rng, click_offsets, simulate_clicks
from PASegLib.data.dataset import list_cases, load_case
from PASegLib.image.geometry import ImageGeometry
from PASegLib.pipeline.inputs import simulate_missing_clicks

GEOMETRY = ImageGeometry((36, 32, 20), (1.0, 1.25, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
MASK = ellipsoid(GEOMETRY.shape, (18, 16, 10), (8, 6, 4))
CLICK_KINDS = ("seven_points", "extreme_points", "box", "single_point")
#: the clicks (voxel indices) of ``MASK`` for seed 0 as PASeg simulated them before the per-case streams
OLD_SEED_0 = {
    "seven_points": {"F": [18, 16, 10], "R": [8, 17, 11], "L": [33, 17, 10], "A": [20, 2, 9], "P": [16, 29, 11],
                     "I": [20, 16, 4], "S": [18, 14, 16]},
    "extreme_points": {"R": [12, 18, 8], "L": [25, 15, 9], "A": [18, 11, 9], "P": [17, 21, 8], "I": [16, 18, 7],
                       "S": [13, 17, 13]},
    "box": {"lo": [3, 7, 5], "hi": [28, 29, 19]},
    "single_point": {"F": [22, 15, 8], "B": [23, 20, 2]},
}


def _indices(case, geometry=GEOMETRY):
    """``{(object, label): voxel index (continuous)}`` of every point of ``case``."""
    return {(o.name, k): geometry.world_to_index(v) for o in case.objects for k, v in o.points().items()}


def _same(a, b) -> bool:
    pa, pb = _indices(a), _indices(b)
    return pa.keys() == pb.keys() and all(np.allclose(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("kind", CLICK_KINDS)
def test_each_case_gets_its_own_clicks(kind):
    """The same mask under five case ids: five different annotations (every pair differs), each reproducible."""
    config = ClickSimulationConfig(kind=kind)
    cases = {c: simulate_clicks(MASK, GEOMETRY, seed=0, config=config, case_id=c) for c in "abcde"}
    for x, y in itertools.combinations(cases, 2):
        assert not _same(cases[x], cases[y]), (kind, x, y)
    assert _same(cases["a"], simulate_clicks(MASK, GEOMETRY, seed=0, config=config, case_id="a"))
    assert not _same(cases["a"], simulate_clicks(MASK, GEOMETRY, seed=1, config=config, case_id="a"))


def test_seven_point_margins_vary_from_case_to_case():
    """The review's finding: with one shared stream the R margin is the same on every case; per case it varies."""
    lo_r = np.argwhere(MASK)[:, 0].min()  # R is towards -i on an identity LPS image
    assert side_axis(GEOMETRY)["R"] == (0, -1)

    def margins(**settings):
        config = ClickSimulationConfig(**settings)
        return {round(float(lo_r - GEOMETRY.world_to_index(simulate_clicks(
            MASK, GEOMETRY, seed=0, config=config, case_id=f"case{n}").objects[0].background["R"])[0]), 3)
            for n in range(12)}

    assert len(margins(legacy_shared_stream=True)) == 1
    assert len(margins()) >= 4


@pytest.mark.parametrize("kind", CLICK_KINDS)
def test_legacy_shared_stream_gives_the_old_clicks(kind):
    """``legacy_shared_stream``: every case gets the clicks of ``seed`` alone, the numbers of the old simulator
    (pinned from it), as does a call without a case id."""
    config = ClickSimulationConfig(kind=kind, legacy_shared_stream=True)
    for case_id in ("a", "b", None):
        case = simulate_clicks(MASK, GEOMETRY, seed=0, config=config, case_id=case_id)
        got = {k: np.round(v, 6).tolist() for (_, k), v in _indices(case).items()}
        assert got == OLD_SEED_0[kind], (kind, case_id)
    plain = simulate_clicks(MASK, GEOMETRY, seed=0, config=ClickSimulationConfig(kind=kind))
    assert {k: np.round(v, 6).tolist() for (_, k), v in _indices(plain).items()} == OLD_SEED_0[kind]


def test_case_clicks_do_not_depend_on_the_cohort(tiny_dataset, tmp_path):
    """``simulate_missing_clicks`` (``paseg run``, the benchmarks): the same file per case whatever the cohort's
    order, and for a case simulated alone."""
    files = [dataclasses.replace(f, markups=None, seven_points=None) for f in list_cases(tiny_dataset)]
    config = ClickSimulationConfig(click_noise_mm=2.0)
    for name, cohort in (("sorted", files), ("reversed", files[::-1]), ("alone", files[2:3])):
        (tmp_path / name).mkdir()
        assert simulate_missing_clicks(cohort, tmp_path / name, seed=0, config=config) == len(cohort)
    for f in files:
        text = (tmp_path / "sorted" / f"{f.case_id}.mrk.json").read_text()
        assert (tmp_path / "reversed" / f"{f.case_id}.mrk.json").read_text() == text
    alone = files[2].case_id
    assert (tmp_path / "alone" / f"{alone}.mrk.json").read_text() == \
        (tmp_path / "sorted" / f"{alone}.mrk.json").read_text()


def test_case_rng_is_stable_and_validated():
    """Fixed numbers (independent of PYTHONHASHSEED and of the numpy session); bad seeds and ids are named."""
    assert case_rng(0, "case_a").integers(1 << 30) == case_rng(0, "case_a").integers(1 << 30)
    assert case_rng(0, "case_a").integers(1 << 30) != case_rng(0, "case_b").integers(1 << 30)
    assert case_rng(7, "x", legacy_shared_stream=True).integers(1 << 30) == \
        np.random.default_rng(7).integers(1 << 30)
    assert np.random.default_rng([0, 0]).integers(1 << 30) != case_rng(0, "case_a").integers(1 << 30)
    with pytest.raises(ValueError, match="seed.*-1"):
        case_rng(-1, "a")
    with pytest.raises(ValueError, match="case_id"):
        case_rng(0, "")


@pytest.mark.parametrize("kind", CLICK_KINDS)
def test_click_noise_is_reproducible_per_case_and_zero_is_none(kind):
    """Noise 0 = the exact clicks; noise > 0 moves points, the same way for the same case, differently for
    another; every noisy point stays inside the image."""
    exact = simulate_clicks(MASK, GEOMETRY, seed=0, config=ClickSimulationConfig(kind=kind), case_id="a")
    zero = simulate_clicks(MASK, GEOMETRY, seed=0, config=ClickSimulationConfig(kind=kind, click_noise_mm=0.0),
                           case_id="a")
    assert _same(exact, zero)
    noisy = ClickSimulationConfig(kind=kind, click_noise_mm=3.0)
    first = simulate_clicks(MASK, GEOMETRY, seed=0, config=noisy, case_id="a")
    assert _same(first, simulate_clicks(MASK, GEOMETRY, seed=0, config=noisy, case_id="a"))
    assert not _same(first, exact)
    assert not _same(first, simulate_clicks(MASK, GEOMETRY, seed=0, config=noisy, case_id="b"))
    big = simulate_clicks(MASK, GEOMETRY, seed=0, config=ClickSimulationConfig(kind=kind, click_noise_mm=15.0),
                          case_id="a")
    index = np.stack(list(_indices(big).values()))
    assert np.all(index >= 0) and np.all(index <= np.asarray(GEOMETRY.shape) - 1)


@pytest.mark.parametrize("kind, rms", [("gaussian", 1.0), ("uniform", np.sqrt(3 / 5))])
def test_click_offsets_have_the_requested_size(kind, rms):
    """Gaussian: RMS length = the noise; uniform: inside the ball, RMS sqrt(3/5) × radius, an eighth of the draws
    within half the radius (20,000 draws: the tolerances are > 5 standard errors and far below a wrong rule's
    error, e.g. sigma = the noise per axis gives RMS × 1.73)."""
    offsets = click_offsets(np.random.default_rng(0), 20_000, noise_mm=4.0, kind=kind)
    length = np.linalg.norm(offsets, axis=1)
    assert np.sqrt(np.mean(length ** 2)) == pytest.approx(4.0 * rms, rel=0.02)
    assert np.abs(offsets.mean(axis=0)).max() < 0.1  # no bias (standard error ≈ 0.016 mm)
    if kind == "uniform":
        assert length.max() <= 4.0
        assert np.mean(length <= 2.0) == pytest.approx(1 / 8, abs=0.015)


def test_simulated_click_noise_has_the_requested_rms():
    """End to end: the seven points of 40 cases moved by noise 3 mm against noise 0 (same case streams): RMS
    distance 3 mm within 10 % (280 points: a standard error of about 2 %), no point clipped."""
    geometry = ImageGeometry((48, 48, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    mask = ellipsoid(geometry.shape, (24, 24, 16), (7, 6, 5))
    moved = []
    for n in range(40):
        exact = simulate_clicks(mask, geometry, seed=0, case_id=f"c{n}")
        noisy = simulate_clicks(mask, geometry, seed=0, case_id=f"c{n}", config=ClickSimulationConfig(click_noise_mm=3))
        a, b = exact.objects[0].points(), noisy.objects[0].points()
        moved += [np.linalg.norm(a[k] - b[k]) for k in a]
    assert np.sqrt(np.mean(np.square(moved))) == pytest.approx(3.0, rel=0.10)


def test_click_noise_keeps_a_persons_errors():
    """A background click may land inside the object (near margins, 4 mm of noise): the noise is not undone."""
    config = ClickSimulationConfig(margin_mm=(0.0, 1.0), bg_jitter=0.0, click_noise_mm=4.0)
    inside = 0
    for n in range(10):
        obj = simulate_clicks(MASK, GEOMETRY, seed=0, case_id=f"c{n}", config=config).objects[0]
        for point in obj.background.values():
            inside += bool(MASK[tuple(np.rint(GEOMETRY.world_to_index(point)).astype(int))])
    assert inside > 0


@pytest.mark.parametrize("settings, named", [({"click_noise_mm": -1.0}, "click_noise_mm"),
                                             ({"click_noise_mm": float("nan")}, "click_noise_mm"),
                                             ({"click_noise": "laplace"}, "laplace"),
                                             ({"legacy_shared_stream": "yes"}, "legacy_shared_stream")])
def test_bad_noise_settings_are_named(settings, named):
    with pytest.raises(ValueError, match=named):
        ClickSimulationConfig(**settings)


def _clicks(folder, tiny_dataset):
    out = {}
    for files in list_cases(tiny_dataset):
        geometry = load_case(files, load_annotation=False).image.geometry
        out[files.case_id] = read_markups(folder / f"{files.case_id}.mrk.json", geometry)
    return out


def test_cli_click_noise(tiny_dataset, tmp_path, capsys):
    """``paseg simulate-clicks --click-noise 2 --click-noise-kind uniform``: every point within 2 mm of the exact
    one, some moved; a negative noise is refused naming the setting."""
    from PASegLib.cli.main import main

    for name, options in (("exact", []), ("noisy", ["--click-noise", "2", "--click-noise-kind", "uniform"])):
        assert main(["simulate-clicks", str(tiny_dataset), "--out", str(tmp_path / name), "--quiet", *options]) == 0
    exact, noisy = _clicks(tmp_path / "exact", tiny_dataset), _clicks(tmp_path / "noisy", tiny_dataset)
    moved = [np.linalg.norm(o.points()[k] - p.points()[k]) for c in exact
             for o, p in zip(exact[c].objects, noisy[c].objects) for k in o.points()]
    assert max(moved) <= 2.0 + 1e-9 and np.mean(moved) > 0.5
    code = main(["simulate-clicks", str(tiny_dataset), "--out", str(tmp_path / "bad"), "--quiet",
                 "--click-noise", "-1"])
    message = cli_error(capsys.readouterr(), "simulate-clicks")
    assert code == 1 and "click_noise_mm" in message and not (tmp_path / "bad").exists(), message


def test_cli_shared_stream(tiny_dataset, tmp_path, capsys):
    """``--shared-stream``: every case's clicks are those of the seed alone (the old behaviour); without it, the
    cases' own streams."""
    from PASegLib.cli.main import main

    for name, options in (("own", []), ("shared", ["--shared-stream"])):
        assert main(["simulate-clicks", str(tiny_dataset), "--out", str(tmp_path / name), "--quiet", "--seed", "3",
                     *options]) == 0
    own, shared = _clicks(tmp_path / "own", tiny_dataset), _clicks(tmp_path / "shared", tiny_dataset)
    differs = 0
    for files in list_cases(tiny_dataset):
        case = load_case(files, load_annotation=False)
        old = simulate_clicks(case.label.array, case.image.geometry, seed=3)
        g = case.image.geometry
        assert all(np.allclose(g.world_to_index(o.points()[k]), g.world_to_index(p.points()[k]), atol=1e-4)
                   for o, p in zip(old.objects, shared[files.case_id].objects) for k in o.points())
        differs += any(not np.allclose(o.points()[k], p.points()[k], atol=1e-3)
                       for o, p in zip(old.objects, own[files.case_id].objects) for k in o.points())
    assert differs >= 3
    capsys.readouterr()
