"""PSCV's common frame (``patch_frame`` ``"click"`` / ``"object"``, ``batch_flips``): every patch of a batch shows
its object at the same patch voxel, one set of flips per batch, the random stream of a resumed run, the checks."""

from __future__ import annotations

import numpy as np
import pytest

from PASegLib.data.prepared import PreparedCase
from PASegLib.data.sampler import PatchSampler
from PASegLib.data.settings import SamplingSettings
from PASegLib.image.geometry import ImageGeometry
from PASegLib.training.config import TrainConfig

PATCH = (16, 16, 12)


def _case(name, shape, spacing, click, kind="single_point", half_box=None):
    """A case whose object is a Gaussian blob (σ 3 mm) centred on the click ``click`` (continuous indices), with
    a labelled ball of 3 voxels there; its box is the click's voxel (single point) or ``click ± half_box``."""
    geo = ImageGeometry(shape, spacing=spacing)
    grid = np.indices(shape, dtype=float)
    d2 = sum(((grid[a] - click[a]) * spacing[a]) ** 2 for a in range(3))
    image = np.exp(-d2 / (2 * 3.0 ** 2)).astype(np.float32)
    partial = np.full(shape, 2, np.uint8)
    partial[sum((grid[a] - click[a]) ** 2 for a in range(3)) <= 9.0] = 1
    c = np.rint(click).astype(int)
    lo, hi = (c, c.copy()) if half_box is None else (c - half_box, c + half_box)
    clicks = [np.array([click, [0.0, 0.0, 0.0]])]  # F, B
    return PreparedCase(name, image, partial, np.ones(shape, bool), clicks, [(lo, hi)], None, geo, geo,
                        kinds=[kind])


def _cases(kind="single_point"):
    half = np.array([4, 3, 2]) if kind != "single_point" else None
    return [_case("a", (40, 36, 20), (1.0, 1.0, 2.0), np.array([12.0, 20.0, 8.0]), kind, half),
            _case("b", (30, 30, 30), (1.5, 1.5, 1.5), np.array([17.0, 9.0, 14.0]), kind, half),
            _case("c", (24, 50, 16), (2.0, 0.8, 2.5), np.array([4.0, 30.0, 11.0]), kind, half)]  # near a border


def _centroid(image):
    w = np.clip(image, 0, None)
    w = w / w.sum()
    return np.array([(w * np.arange(n).reshape([-1 if d == a else 1 for d in range(3)])).sum()
                     for a, n in enumerate(image.shape)])


@pytest.mark.parametrize("frame, extra, kind", [
    ("click", {}, "single_point"),  # the patch's own extent, copied: centred to the nearest voxel
    ("click", {"frame_size_mm": (40.0, 40.0, 36.0)}, "single_point"),  # a fixed physical size, resampled
    ("object", {"frame_margin_mm": 6.0}, "extreme_points"),  # the object's box plus a margin, resampled
])
def test_every_patch_of_a_batch_has_its_object_at_the_same_patch_voxel(frame, extra, kind):
    cases = _cases(kind)
    config = TrainConfig(patch_size=PATCH, patch_frame=frame, batch_flips=True, point_channel=True,
                         point_channel_dropout=0.0, point_jitter_mm=0.0, **extra)
    sampler = PatchSampler(cases, config)
    rng = np.random.default_rng(0)
    middle = (np.asarray(PATCH) - 1) / 2.0
    for _ in range(4):  # four batches of the three cases
        draws = sampler.draw_batch([0, 1, 2], rng)
        patches = [sampler.cut(d) for d in draws]
        for p in patches:
            assert p["image"].shape == p["partial"].shape == p["valid"].shape == p["points"].shape == (1, *PATCH)
            assert p["image"].dtype == np.float32 and p["partial"].dtype == p["valid"].dtype == np.uint8
            assert p["boxes"].shape == (1, 2, 3) and p["boxes"].dtype == np.int64
            # the blob, the labelled ball, the click heatmap's peak and the box all centred at the patch's centre
            np.testing.assert_allclose(_centroid(p["image"][0]), middle, atol=0.6)
            np.testing.assert_allclose(np.argwhere(p["partial"][0] == 1).mean(axis=0), middle, atol=0.6)
            np.testing.assert_allclose(np.unravel_index(np.argmax(p["points"][0]), PATCH), middle, atol=0.6)
            np.testing.assert_allclose(p["boxes"][0].mean(axis=0), middle, atol=1.0)
        centres = np.array([_centroid(p["image"][0]) for p in patches])
        assert np.ptp(centres, axis=0).max() <= 1.05  # the cases agree within a voxel (±0.5 when copied)


def test_the_padding_of_a_frame_beyond_the_image_is_invalid_and_unlabeled():
    case = _cases()[2]  # its click is 4 voxels from the border along i
    sampler = PatchSampler([case], TrainConfig(patch_size=PATCH, patch_frame="click", frame_size_mm=(40.0, 20, 20),
                                               flip_axes=()))
    patch = sampler.sample(0, np.random.default_rng(0))
    outside = patch["valid"][0] == 0
    assert outside[0].all() and not outside[-1].any()  # i < 0 is beyond the image
    assert (patch["partial"][0][outside] == 2).all() and (patch["image"][0][outside] == 0).all()


def test_one_set_of_flips_per_batch():
    sampler = PatchSampler(_cases(), TrainConfig(patch_size=PATCH, patch_frame="click", batch_flips=True))
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(40):
        draws = sampler.draw_batch([0, 1, 2, 0], rng)
        assert len({d.flips for d in draws}) == 1
        seen.add(draws[0].flips)
    assert len(seen) == 8  # every subset of the three axes, over the batches
    # the flipped patch is the unflipped patch flipped (the draw's other choices kept)
    from dataclasses import replace

    draw = sampler.draw_batch([1], rng)[0]
    flipped, plain = sampler.cut(replace(draw, flips=(0, 2))), sampler.cut(replace(draw, flips=()))
    np.testing.assert_array_equal(flipped["image"][0], plain["image"][0][::-1, :, ::-1])
    # without batch_flips each patch draws its own flips: a batch mixes them
    per_patch = PatchSampler(_cases(), TrainConfig(patch_size=PATCH))
    assert any(len({d.flips for d in per_patch.draw_batch([0, 1, 2, 0], rng)}) > 1 for _ in range(20))


def test_a_random_frame_draws_the_stream_of_before_and_a_resumed_run_draws_the_same_batches():
    cases = _cases()
    plain = PatchSampler(cases, TrainConfig(patch_size=PATCH))
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    # draw_batch without batch_flips = the patches drawn one by one (the training stream of earlier versions)
    assert plain.draw_batch([0, 2, 1], a) == [plain.draw(i, b) for i in (0, 2, 1)]
    framed = PatchSampler(cases, TrainConfig(patch_size=PATCH, patch_frame="click", frame_size_mm=(30.0, 30, 30),
                                             batch_flips=True, point_channel=True, point_jitter_mm=2.0))
    rng = np.random.default_rng(4)
    framed.draw_batch([0, 1], rng)
    state = rng.bit_generator.state  # what a checkpoint saves before the next batch
    first = framed.draw_batch([2, 0, 1], rng)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = state
    again = framed.draw_batch([2, 0, 1], resumed)
    assert again == first
    for x, y in zip(first, again):
        for key, value in framed.cut(x).items():
            np.testing.assert_array_equal(value, framed.cut(y)[key])


def test_batch_maker_draws_one_set_of_flips_for_the_global_batch():
    torch = pytest.importorskip("torch")
    from PASegLib.training.batches import BatchMaker

    sampler = PatchSampler(_cases(), TrainConfig(patch_size=PATCH, patch_frame="click", batch_flips=True))
    ranks = [BatchMaker(sampler, torch.device("cpu"), rank=r, world_size=2, background=False) for r in (0, 1)]
    states = np.random.default_rng(5).bit_generator.state
    draws = []
    for maker in ranks:  # every rank draws the whole global batch from the same generator state
        rng = np.random.default_rng()
        rng.bit_generator.state = states
        draws.append(maker.draw([0, 1, 2, 0], rng))
    assert [len(d) for d in draws] == [2, 2]
    assert len({d.flips for d in draws[0] + draws[1]}) == 1
    batch = ranks[0].cut(draws[0])
    assert tuple(batch["image"].shape) == (2, 1, *PATCH)


def test_settings_and_refusals(tmp_path):
    import json

    from PASegLib.pipeline.presets import protocol_settings
    from PASegLib.training.config import load_run_config

    single = TrainConfig(**protocol_settings(["single_point"]))
    assert single.patch_frame == "click" and single.batch_flips and single.batch_size >= 4
    single.check_trainable()
    sampling = single.sampling_settings()
    assert (sampling.patch_frame, sampling.frame_size_mm, sampling.batch_flips) == ("click", None, True)
    config = TrainConfig(patch_frame="click", frame_size_mm=[60, 60, 40], batch_flips=True)
    assert config.frame_size_mm == (60.0, 60.0, 40.0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="patch_frame must be one of random, click, object, got 'slices'"):
        TrainConfig(patch_frame="slices")
    with pytest.raises(ValueError, match=r"patch_frame 'click' .*flip_axes \[0, 1, 2\], batch_flips false"):
        TrainConfig(patch_frame="click")
    TrainConfig(patch_frame="object", flip_axes=[])  # no flips: nothing to share
    with pytest.raises(ValueError, match="frame_size_mm must be three positive numbers"):
        TrainConfig(patch_frame="click", batch_flips=True, frame_size_mm=[60, 0, 40])
    with pytest.raises(ValueError, match="frame_margin_mm must be a finite number >= 0"):
        TrainConfig(frame_margin_mm=-1)
    with pytest.raises(ValueError, match="batch_flips must be true or false"):
        TrainConfig(batch_flips="yes")
    with pytest.raises(ValueError, match="patch_frame 'object'"):
        SamplingSettings(patch_frame="object")
    # a saved run without these keys resumes with the random patches it trained with
    data = TrainConfig().to_dict()
    for key in ("patch_frame", "frame_size_mm", "frame_margin_mm", "batch_flips"):
        del data[key]
    (tmp_path / "config.json").write_text(json.dumps(data), encoding="utf-8")
    old = load_run_config(tmp_path / "config.json")
    assert (old.patch_frame, old.frame_size_mm, old.frame_margin_mm, old.batch_flips) == ("random", None, 0.0, False)
