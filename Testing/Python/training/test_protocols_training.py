"""Training per protocol: mixed cohorts, the click channel, PSCV's and Going to Extremes' losses in the
stage-one objective, refinement rounds and ``paseg run`` with other annotation kinds — small synthetic runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from PASegLib.annotation.simulation import ClickSimulationConfig  # noqa: E402
from PASegLib.data.dataset import list_cases, load_case  # noqa: E402
from PASegLib.image.io import read_image, write_image  # noqa: E402
from PASegLib.pipeline.inputs import simulate_missing_clicks  # noqa: E402
from PASegLib.training.config import TrainConfig  # noqa: E402

TINY = dict(epochs=2, iterations_per_epoch=2, batch_size=2, patch_size=(32, 32, 16), validate_every=1,
            device="cpu", num_threads=1, alpha=0.0, beta=0.0, cache_mb=None)


def _events(run: Path):
    return json.loads((run / "history.json").read_text(encoding="utf-8"))["events"]


def _annotate(dataset: Path, folder: Path, kind: str, *, dense_ids=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    simulate_missing_clicks(list_cases(dataset), folder, seed=0, config=ClickSimulationConfig(kind=kind),
                             dense_ids=dense_ids)
    return folder


def _train(dataset, run, config, annotations, **kw):
    from PASegLib.training.launch import train_from_dataset

    with open(run.parent / f"{run.name}.log", "w") as stream:
        return train_from_dataset(dataset, run, config, annotations_dir=annotations, stream=stream, **kw)


@pytest.mark.slow
def test_mixed_cohort_dense_cases_are_fully_supervised_in_stage_one_and_scm(bare, tmp_path):
    from PASegLib.data.prepared import prepare_case
    from PASegLib.data.sampler import PatchSampler

    ids = sorted(f.case_id for f in list_cases(bare))
    clicks = _annotate(bare, tmp_path / "clicks", "seven_points", dense_ids=ids[:2])
    files = {f.case_id: f for f in list_cases(bare, annotations_dir=clicks)}
    config = TrainConfig(**TINY)
    dense = prepare_case(load_case(files[ids[0]]), config)
    weak = prepare_case(load_case(files[ids[2]]), config)
    assert dense.kinds == ["dense"] and weak.kinds is None
    assert set(np.unique(dense.partial)) <= {0, 1}  # every voxel labelled: the dense label itself
    np.testing.assert_array_equal(dense.partial, dense.label)
    assert 2 in np.unique(weak.partial)  # seeds leave voxels unlabeled
    sampler = PatchSampler([dense, weak], config)
    rng = np.random.default_rng(0)
    assert sampler.sample(0, rng)["dense"].tolist() == [1.0] and sampler.sample(1, rng)["dense"].tolist() == [0.0]

    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(bare, a, config, clicks) == 0
    assert _train(bare, b, config.replace(network="attention_unet"), clicks) == 0
    scm = TrainConfig(**{**TINY, "stage": 2, "epochs": 1})
    assert _train(bare, tmp_path / "scm", scm, clicks, init_runs=[a, b]) == 0
    assert any(e["event"] == "validation" for e in _events(tmp_path / "scm"))


def test_scm_keeps_dense_labels_where_given_and_teacher_labels_elsewhere():
    """The pseudo label of a mixed batch: a dense patch keeps its labels, a weak patch takes the teacher's."""
    from PASegLib.training.scm import anchored_pseudo_label

    partial = torch.tensor([1, 0, 2, 1, 0, 2]).reshape(2, 1, 1, 1, 3)
    teacher = torch.zeros(2, 2, 1, 1, 3)
    teacher[:, 1] = 5.0  # the teacher says foreground everywhere
    dense = torch.tensor([[1.0], [0.0]])
    pseudo = anchored_pseudo_label(partial, teacher, dense=dense)
    assert pseudo[0].flatten().tolist() == [1, 0, 1] and pseudo[1].flatten().tolist() == [1, 1, 1]
    anchored = anchored_pseudo_label(partial, teacher, dense=dense, seed_anchor=True)  # every patch's seeds
    assert anchored[1].flatten().tolist() == [1, 0, 1]
    assert anchored_pseudo_label(partial, teacher) is None


def test_click_conditioned_model_trains_and_predicts_with_and_without_clicks(bare, tmp_path):
    from PASegLib.inference.predictor import load_predictor

    clicks = _annotate(bare, tmp_path / "clicks", "extreme_points")
    config = TrainConfig(**TINY, point_channel=True, point_loss_weight=1.0, point_loss_iterations=2)
    run = tmp_path / "run"
    assert _train(bare, run, config, clicks) == 0
    iterations = [e for e in _events(run) if e["event"] == "iteration"]
    assert all("point" in e["losses"] for e in iterations)
    assert all(e["losses"]["point"] <= 0 for e in iterations)  # −mean(g·ĝ) with g, ĝ >= 0
    assert any(e["event"] == "validation" for e in _events(run))  # validation fed the held-out clicks
    case = load_case(list_cases(bare, annotations_dir=clicks)[0])
    with_clicks = load_predictor(run, device="cpu", verbose=False)
    without = load_predictor(run, device="cpu", verbose=False, use_clicks=False)
    first = with_clicks.networks[0]
    conv = next(m for m in first.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.in_channels == 2  # image + click heatmap
    p1 = with_clicks.predict(case.image, annotation=case.annotation).probability
    p0 = without.predict(case.image, annotation=case.annotation).probability
    assert p1.shape == p0.shape == case.image.geometry.shape
    assert not np.allclose(p1, p0)  # the clicks reach the network


def test_click_heatmaps_follow_the_kinds():
    from PASegLib.data.clickmaps import click_heatmap, positive_points

    seven = np.array([[5.0, 5, 5]] + [[0.0, 0, 0]] * 6)
    extreme = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1], [2, 2, 2], [3, 3, 3]])
    single = np.array([[9.0, 9, 9], [0, 0, 0]])
    pts = positive_points([seven, extreme, single, np.zeros((0, 3))], ["seven_points", "extreme_points",
                                                                       "single_point", "dense"])
    # F of the seven points, the six extreme points, F of the single point; no background click, nothing dense
    np.testing.assert_array_equal(pts, np.vstack([seven[:1], extreme, single[:1]]))
    heat = click_heatmap(np.array([[4.0, 4, 4]]), (10, 10, 10), (2.0, 2.0, 2.0), 2.0, offset=(1, 1, 1))
    assert heat[3, 3, 3] == pytest.approx(1.0) and heat[4, 3, 3] == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_single_point_trains_with_the_contrastive_variance_loss(bare, tmp_path):
    clicks = _annotate(bare, tmp_path / "clicks", "single_point")
    run = tmp_path / "run"
    assert _train(bare, run, TrainConfig(**TINY, cv_weight=0.3), clicks) == 0
    losses = [e["losses"] for e in _events(run) if e["event"] == "iteration"]
    assert all(np.isfinite(x["cv"]) and x["cv"] > 0 for x in losses)  # −log(pos/(pos+neg)) > 0 with B = 2


@pytest.mark.slow
def test_refinement_round_writes_labels_that_the_next_round_trains_on(bare, tmp_path):
    from PASegLib.data.cache import cache_key
    from PASegLib.pipeline.refine import refine_pseudo_labels

    clicks = _annotate(bare, tmp_path / "clicks", "box")
    config = TrainConfig(**TINY)
    first = tmp_path / "round1"
    assert _train(bare, first, config, clicks) == 0
    files = list_cases(bare, annotations_dir=clicks)
    refined = tmp_path / "refined"
    rows = refine_pseudo_labels(first, files, refined, device="cpu")
    assert [r["case"] for r in rows] == [f.case_id for f in files]
    for f in files:
        labels = read_image(refined / f"{f.case_id}_pseudo.nii.gz", role="pseudo label")
        assert set(np.unique(np.asarray(labels.array))) <= {0, 1}
        assert labels.geometry.mismatch(read_image(f.image, role="image").geometry) == ""
    second = config.replace(pseudo_labels=str(refined))
    key = cache_key(files[0], second)
    assert key != cache_key(files[0], config)
    assert _train(bare, tmp_path / "round2", second, clicks) == 0
    # the cache keys on the refined file: another round's labels are a different entry
    path = refined / f"{files[0].case_id}_pseudo.nii.gz"
    vol = read_image(path, role="pseudo label")
    write_image(path, np.zeros(vol.geometry.shape, dtype=np.uint8), vol.geometry)
    assert cache_key(files[0], second) != key


def test_a_pseudo_label_file_with_bad_values_is_named(bare, tmp_path):
    from PASegLib.data.dataset import DatasetError
    from PASegLib.data.prepared import prepare_case

    clicks = _annotate(bare, tmp_path / "clicks", "extreme_points")
    files = list_cases(bare, annotations_dir=clicks)
    case = load_case(files[0])
    folder = tmp_path / "pseudo"
    write_image(folder / f"{files[0].case_id}_pseudo.nii.gz", np.full(case.image.geometry.shape, 7, np.uint8),
                case.image.geometry)
    with pytest.raises(DatasetError, match=f"{files[0].case_id}_pseudo.nii.gz: pseudo labels must be"):
        prepare_case(case, TrainConfig(**TINY, pseudo_labels=str(folder)))


@pytest.mark.slow
def test_paseg_run_with_extreme_points_and_a_refinement_round(bare, tmp_path):
    from PASegLib.cli.main import main

    data = tmp_path / "data"
    shutil.copytree(bare, data)  # no clicks: the pipeline simulates the kind asked for
    out = tmp_path / "out"
    args = ["run", str(data), "--out", str(out), "--kind", "extreme_points", "--refine-rounds", "1", "--second-stage",
            "scm", "--device",
            "cpu", "--quiet", "--set", "epochs=1", "--set", "iterations_per_epoch=1", "--set", "validate_every=1",
            "--set", "patch_size=[32, 32, 16]", "--set", "num_threads=1"]
    assert main(args) == 0
    state = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert state["done"] == ["clicks", "stage1_primary", "refine_1", "stage1_primary_r1", "stage1_auxiliary", "scm",
                             "predict", "evaluate", "report"]
    config = json.loads((out / "stage1_unet2d5_r1" / "config.json").read_text(encoding="utf-8"))
    assert config["point_loss_weight"] == 0.0 and config["alpha"] == 0.0  # the protocol's settings
    assert config["pseudo_labels"] == str(out / "refined_1")
    assert sorted(p.name for p in (out / "refined_1").glob("*_pseudo.nii.gz")) == sorted(
        f"{f.case_id}_pseudo.nii.gz" for f in list_cases(data))
    kinds = {json.loads(p.read_text(encoding="utf-8"))["markups"][0]["pasegKind"] for p in (out / "clicks").iterdir()}
    assert kinds == {"extreme_points"}
    assert main(args) == 0  # a rerun finds every step done


def test_protocol_settings_and_config_checks():
    from PASegLib.pipeline.presets import protocol_settings

    # the point loss is off: it lowered the held-out training cases' Dice (bench_protocols)
    assert protocol_settings(["extreme_points"] * 3 + ["dense"]) == {"alpha": 0.0, "beta": 0.0}
    assert protocol_settings(["single_point"])["cv_weight"] == 0.3
    assert protocol_settings(["single_point"])["batch_size"] >= 4  # the contrastive term compares 4 patches
    TrainConfig(**protocol_settings(["single_point"])).check_trainable()
    with pytest.raises(ValueError, match="point_jitter_mm must be a finite number >= 0"):
        TrainConfig(point_jitter_mm=-1.0)
    assert protocol_settings(["seven_points", "dense"]) == {}
    assert protocol_settings(["box", "extreme_points"]) == {}  # a mix of weak kinds keeps the preset
    with pytest.raises(ValueError, match="point_channel"):
        TrainConfig(stage=2, network="unet2d5", aux_network="attention_unet", point_channel=True)
    with pytest.raises(ValueError, match="pseudo_labels"):
        TrainConfig(pseudo_labels=3)
    with pytest.raises(ValueError, match="point_channel_dropout"):
        TrainConfig(point_channel_dropout=1.5)


def test_contrastive_variance_at_one_patch_per_batch_is_refused(tiny_dataset, tmp_path, capsys):
    """``paseg train`` with ``cv_weight > 0`` and batch 1 exits 1 naming both settings (before this check it
    trained, PSCV's contrastive term exactly 0); a saved run with those settings still loads (it predicts)."""
    from PASegLib.cli.main import main

    config = tmp_path / "c.json"
    config.write_text(json.dumps({**TINY, "batch_size": 1, "cv_weight": 0.3}), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--out", str(run), "--config", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cv_weight = 0.3" in err and "batch_size = 1" in err
    assert not run.exists()  # refused before anything was prepared or written
    single = TrainConfig(cv_weight=0.3, batch_size=1)  # validates: an old run's config.json is still readable
    with pytest.raises(ValueError, match=r"cv_weight = 0.3 needs batch_size >= 2 .* got batch_size = 1"):
        single.check_trainable()
    with pytest.raises(ValueError, match=r"got batch_size = 2 over 2 processes \(1 per process\)"):
        single.replace(batch_size=2).check_trainable(world_size=2)
    single.replace(batch_size=2).check_trainable()
    TrainConfig(cv_weight=0.0, batch_size=1).check_trainable()
    TrainConfig(stage=2, cv_weight=0.3, batch_size=1).check_trainable()  # SCM has no contrastive term


def _point_case(kind="single_point", spacing=(2.0, 2.0, 2.0)):
    from PASegLib.data.prepared import PreparedCase
    from PASegLib.image.geometry import ImageGeometry

    shape = (20, 20, 12)
    geo = ImageGeometry(shape, spacing=spacing)
    clicks = [np.array([[10.0, 9.0, 6.0], [1.0, 1.0, 1.0]])]  # F, B of a single-point object
    return PreparedCase("c", np.zeros(shape, np.float32), np.full(shape, 2, np.uint8), np.ones(shape, bool), clicks,
                        [(np.array([8, 8, 4]), np.array([12, 12, 8]))], None, geo, geo, kinds=[kind])


def _jitter_sampler(case, jitter_mm):
    from PASegLib.data.sampler import PatchSampler

    # the patch is the whole case, unflipped: only the jitter can change the heatmap
    return PatchSampler([case], TrainConfig(patch_size=case.image.shape, flip_axes=(), point_channel=True,
                                            point_channel_dropout=0.0, point_jitter_mm=jitter_mm))


def test_click_channel_points_are_jittered_per_iteration_from_the_training_generator():
    from PASegLib.data.clickmaps import click_heatmap, positive_points

    case = _point_case()
    exact = click_heatmap(positive_points(case.clicks, case.kinds), case.image.shape, case.geometry.spacing, 3.0)
    rng = np.random.default_rng(0)
    sampler = _jitter_sampler(case, 2.0)
    first, second = sampler.sample(0, rng)["points"][0], sampler.sample(0, rng)["points"][0]
    assert not np.array_equal(first, second) and not np.array_equal(first, exact)  # two iterations differ
    replay = np.random.default_rng(0)  # the same generator state (a resumed run) draws the same jitter
    np.testing.assert_array_equal(sampler.sample(0, replay)["points"][0], first)
    # jitter 0: the exact points, and no number drawn for them (the patch stream of a run without jitter)
    np.testing.assert_array_equal(_jitter_sampler(case, 0.0).sample(0, rng)["points"][0], exact)
    assert _jitter_sampler(case, 0.0).draw(0, rng).jitter_seed is None
    # σ in mm on the case's grid: the peak's displacement has about the asked spread (2 mm = 1 voxel here)
    peaks = []
    for _ in range(200):
        heat = sampler.sample(0, rng)["points"][0]
        weights = heat / heat.sum()
        peaks.append([float((weights * np.arange(n).reshape([-1 if d == a else 1 for d in range(3)])).sum())
                      for a, n in enumerate(heat.shape)])
    spread = np.std(np.asarray(peaks), axis=0)
    assert np.all((spread > 0.7) & (spread < 1.3)), spread


def test_validation_and_prediction_use_the_exact_points(bare, tmp_path):
    """The jitter is a training augmentation: the trainer's held-out predictions and :class:`Predictor` feed the
    exact click heatmap (two predictions agree, and agree with a run configured without jitter)."""
    from types import SimpleNamespace

    from PASegLib.data.clickmaps import click_heatmap, positive_points
    from PASegLib.inference.predictor import Predictor
    from PASegLib.networks import build_network
    from PASegLib.training.validation import ValidationMixin

    case = _point_case()
    config = TrainConfig(point_channel=True, point_jitter_mm=5.0, patch_size=(32, 32, 16), device="cpu")
    exact = click_heatmap(positive_points(case.clicks, case.kinds), case.image.shape, case.geometry.spacing, 3.0)
    np.testing.assert_array_equal(ValidationMixin.click_channel(SimpleNamespace(config=config), case), exact)
    clicks = _annotate(bare, tmp_path / "clicks", "extreme_points")
    loaded = load_case(list_cases(bare, annotations_dir=clicks)[0])
    torch.manual_seed(0)
    net = build_network("unet3d", in_channels=2, out_channels=2)
    runs = [Predictor([net], c, cpu_bf16=False).predict(loaded.image, annotation=loaded.annotation).probability
            for c in (config, config, config.replace(point_jitter_mm=0.0))]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_label_free_score_uses_the_clicks_each_kind_has():
    from PASegLib.training.selection import label_free_score

    pred = np.zeros((8, 8, 8), dtype=bool)
    pred[2:6, 2:6, 2:6] = True
    partial = np.full(pred.shape, 2, dtype=np.uint8)
    partial[3:5, 3:5, 3:5] = 1
    single = np.array([[3.0, 3, 3], [0, 0, 0]])  # F inside the prediction, B outside: both agree
    extreme = np.array([[2.0, 4, 4], [5, 4, 4], [4, 2, 4], [4, 5, 4], [4, 4, 2], [4, 4, 5]])
    score = label_free_score(pred, partial, [single, extreme], ["single_point", "extreme_points"])
    assert score["foreground_clicks"] == 1.0 and score["background_clicks"] == 1.0
    wrong = np.array([[0.0, 0, 0], [3, 3, 3]])  # F outside, B inside
    score = label_free_score(pred, partial, [wrong], ["single_point"])
    assert score["foreground_clicks"] == 0.0 and score["background_clicks"] == 0.0
    only_extreme = label_free_score(pred, partial, [extreme], ["extreme_points"])
    assert only_extreme["foreground_clicks"] == only_extreme["partial_dice"] == only_extreme["score"]


def test_pipeline_option_checks_of_the_new_kinds(bare, tmp_path):
    from PASegLib.pipeline.run import PipelineOptions, _State, run_pipeline

    out = tmp_path / "out"
    out.mkdir()
    _State(out, PipelineOptions(refine_rounds=2)).finish("clicks", 0.0, split={"train": [], "test": [],
                                                                               "predict": []})
    state = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    state["done"] += ["stage1_primary", "refine_1", "stage1_primary_r1", "refine_2"]
    (out / "pipeline.json").write_text(json.dumps(state), encoding="utf-8")
    # fewer rounds on a folder that finished more is another set of options, not a damaged file
    with pytest.raises(ValueError, match=r"started with other options \(refine_rounds\)"):
        _State(out, PipelineOptions(refine_rounds=1))
    assert _State(out, PipelineOptions(refine_rounds=2)).done("refine_2")
    with pytest.raises(ValueError, match="--dense-cases 9 asks for more dense cases than the 4 labelled"):
        run_pipeline(bare, tmp_path / "dense", PipelineOptions(dense_cases=9, device="cpu"))
    assert not (tmp_path / "dense").exists()  # a failed start leaves nothing


def test_boxless_kinds_cannot_restrict_predictions_to_boxes():
    from PASegLib.annotation.model import CaseAnnotation, ObjectAnnotation
    from PASegLib.inference.postprocess import check_label_options

    single = CaseAnnotation([ObjectAnnotation("t", np.zeros(3), kind="single_point")])
    with pytest.raises(ValueError, match="'t' is a single_point annotation, which has none"):
        check_label_options(0.5, single, True)
    assert check_label_options(0.5, single, False) == 0.5


def test_a_box_or_extreme_points_spanning_the_whole_image_are_refused():
    from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation
    from PASegLib.annotation.validation import validate_case
    from PASegLib.image.geometry import ImageGeometry

    geometry = ImageGeometry((20, 20, 10))
    box = ObjectAnnotation("b", kind="box", marks={"lo": np.array([-5.0, -5, -5]), "hi": np.array([30.0, 30, 30])})
    with pytest.raises(AnnotationError, match="'b': the box spans the whole image"):
        validate_case(CaseAnnotation([box]), geometry)
