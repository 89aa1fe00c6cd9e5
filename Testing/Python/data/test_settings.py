"""PrepareSettings / SamplingSettings: training's settings handed to data preparation and patch sampling."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from PASegLib.data.cache import cache_key
from PASegLib.data.dataset import list_cases, load_case
from PASegLib.data.prepared import prepare_case
from PASegLib.data.sampler import PatchSampler
from PASegLib.data.settings import PrepareSettings, SamplingSettings, as_prepare_settings, as_sampling_settings
from PASegLib.training.config import TrainConfig


def test_train_config_hands_every_preparation_and_sampling_setting_over():
    config = TrainConfig(target_spacing_mm=(2.0, 2.0, 3.0), random_walker={"beta": 90.0}, point_radius_mm=3.0,
                         pseudo_labels="round1", prepare_workers=2, cache_mb=64.0, patch_size=(32, 32, 16),
                         foreground_crop_probability=0.8, flip_axes=(0,), point_channel=True, prefetch_cases=1)
    prepare = config.prepare_settings()
    for field in dataclasses.fields(PrepareSettings):
        assert getattr(prepare, field.name) == getattr(config, field.name), field.name
    sampling = config.sampling_settings()
    for field in dataclasses.fields(SamplingSettings):
        assert tuple(np.atleast_1d(getattr(sampling, field.name))) == tuple(np.atleast_1d(getattr(config, field.name)))
    assert prepare.expansion_config == config.expansion_config
    assert as_prepare_settings(config) == prepare and as_prepare_settings(prepare) is prepare
    assert as_sampling_settings(config) == sampling and as_sampling_settings(sampling) is sampling
    with pytest.raises(TypeError, match="expected PrepareSettings or an object with prepare_settings"):
        as_prepare_settings({"expansion": {}})


def test_the_cache_key_and_the_prepared_case_are_those_of_the_train_config(tiny_dataset):
    config = TrainConfig(target_spacing_mm=(2.0, 2.0, 2.0))
    files = list_cases(tiny_dataset)[0]
    assert cache_key(files, config) == cache_key(files, config.prepare_settings())
    assert cache_key(files, config) != cache_key(files, TrainConfig().prepare_settings())
    case = load_case(files)
    a, b = prepare_case(case, config), prepare_case(case, config.prepare_settings())
    assert np.array_equal(a.image, b.image) and np.array_equal(a.partial, b.partial)
    sampler = PatchSampler([a], config.sampling_settings())
    assert tuple(sampler.patch) == tuple(config.patch_size)


def test_cache_keys_are_those_of_the_previous_layout(tiny_dataset):
    """The key recomputed by hand as the cache wrote it before PrepareSettings existed (sha256 of the version,
    the input files and the preparation settings): caches written by earlier versions stay valid."""
    import hashlib
    import json
    import os
    from pathlib import Path

    from PASegLib.utils.version import __version__

    def file_key(path):
        if path is None:
            return [None]
        stat = os.stat(path)
        return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]

    files = list_cases(tiny_dataset)[0]
    plain = {**TrainConfig().expansion, "fill": "none"}  # the plain seeds: keys as before the fill existed
    for config in (TrainConfig(expansion=plain),
                   TrainConfig(target_spacing_mm=(2.0, 2.0, 2.0), expansion={"epsilon": 0.2, "fill": "none"})):
        before_fill = {k: v for k, v in config.expansion.items() if not k.startswith("fill")}
        parts = {"version": __version__,
                 "files": [file_key(p) for p in (files.image, files.label, files.markups, files.seven_points)],
                 "expansion": before_fill, "target_spacing_mm": config.target_spacing_mm}
        old = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
        assert cache_key(files, config) == old == cache_key(files, config.prepare_settings())


def test_the_cache_key_of_filled_seven_points_follows_the_random_walker_defaults(tiny_dataset, monkeypatch):
    """Seven points filled by the random walker (``expansion.fill``) use its default settings: a change of those
    defaults must be a new cache entry, while the plain seeds' key stays as it was."""
    from PASegLib.seeds.random_walker import RandomWalkerConfig

    files = list_cases(tiny_dataset)[0]
    plain = TrainConfig(expansion={**TrainConfig().expansion, "fill": "none"}).prepare_settings()
    filled = TrainConfig().prepare_settings()  # the default since issue 20
    assert TrainConfig().expansion["fill"] == "random_walker"
    before = cache_key(files, plain), cache_key(files, filled)
    original = RandomWalkerConfig.to_dict
    monkeypatch.setattr(RandomWalkerConfig, "to_dict", lambda self: {**original(self), "beta": -1.0})
    assert cache_key(files, plain) == before[0]
    assert cache_key(files, filled) != before[1]


def test_a_run_saved_before_the_fill_resumes_with_the_plain_seeds(tmp_path):
    """A run folder's config.json written before ``expansion.fill`` existed trained on the plain seeds: it resumes
    with them (``load_run_config``), while a new config file without the key gets today's default (the fill)."""
    from PASegLib.training.config import load_config, load_run_config

    old = TrainConfig(expansion={"fill": "none"}).to_dict()
    old["expansion"] = {k: v for k, v in old["expansion"].items() if not k.startswith("fill")}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    assert load_run_config(path).expansion["fill"] == "none"
    assert load_config(path).expansion["fill"] == "random_walker"
    saved = TrainConfig(expansion={"fill": "none"})
    assert saved.to_dict()["expansion"]["fill"] == "none"  # a new run says which labels it trained on


def test_the_cache_key_reads_the_expansion_as_preparation_does(tiny_dataset):
    """Settings that leave ``fill`` out prepare filled labels (the default): their key carries the random walker's
    settings like an explicit fill; ``extent="auto"`` keys carry the rule's reach cap."""
    from PASegLib.data.settings import PrepareSettings
    from PASegLib.seeds.expansion import ExpansionConfig

    files = list_cases(tiny_dataset)[0]
    implicit = PrepareSettings(expansion={"epsilon": 0.175})
    explicit = PrepareSettings(expansion={"epsilon": 0.175, "fill": "random_walker"})
    assert cache_key(files, implicit) == cache_key(files, explicit)
    assert cache_key(files, PrepareSettings(expansion={"epsilon": 0.175, "fill": "none"})) != cache_key(files, implicit)
    assert "auto_reach_fraction" in ExpansionConfig(extent="auto").cache_dict()
    assert "auto_reach_fraction" not in ExpansionConfig().cache_dict()


def test_a_config_saved_in_a_checkpoint_reads_as_its_run_trained():
    """A checkpoint's or package's copy of an old run's config (no ``fill``, no ``expansion`` at all, no
    ``data_term``) reads with the legacy values, not today's defaults."""
    from PASegLib.training.config import LEGACY_DEFAULTS, saved_config

    old = TrainConfig().to_dict()
    for key in ("expansion", "data_term", "point_jitter_mm"):
        old.pop(key)
    config = saved_config(old)
    assert config.expansion["fill"] == "none" and config.data_term == LEGACY_DEFAULTS["data_term"]
    assert config.point_jitter_mm == 0.0
    assert saved_config(TrainConfig().to_dict()) == TrainConfig()  # a new config reads back unchanged
