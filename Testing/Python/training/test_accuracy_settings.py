"""The accuracy work's training settings: data terms, ramp-up as a budget fraction, mCRF image smoothing, validation
diagnostics, selection criteria and their judge, patch boxes, presets."""

import math

import numpy as np
import pytest
import torch

from PASegLib.losses.partial import DATA_TERMS, PartialCEDiceLoss, data_term_options, partial_ce_dice_terms
from PASegLib.losses.smoothing import masked_gaussian_smooth
from PASegLib.pipeline.presets import preset_configs
from PASegLib.training import config as config_module
from PASegLib.training.config import TrainConfig
from PASegLib.training.engine import label_diagnostics
from PASegLib.training.selection import CRITERIA, criterion_value, selection_quality


# -- data terms -------------------------------------------------------------------------------------------------
def _two_voxel_case():
    # voxel 0 labeled background with p_fg = 0.2, voxel 1 labeled foreground with p_fg = 0.6, voxel 2 unlabeled
    p = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    logits = torch.stack([torch.zeros(3, dtype=torch.float64), torch.log(p / (1 - p))])[None, :, :, None, None]
    labels = torch.tensor([0, 1, 2])[None, None, :, None, None]
    return logits, labels


def test_data_terms_hand_values():
    logits, labels = _two_voxel_case()
    ce = (-math.log(0.8) - math.log(0.6)) / 2
    # Dice with the p² + q² denominator over the two labeled voxels
    dice_fg = 1 - 2 * 0.6 / (0.2 ** 2 + 0.6 ** 2 + 1)
    dice_bg = 1 - 2 * 0.8 / (0.8 ** 2 + 0.4 ** 2 + 1)
    paper = partial_ce_dice_terms(logits, labels, eps=0, **data_term_options("paper"))
    official = partial_ce_dice_terms(logits, labels, eps=0, **data_term_options("official"))
    assert float(paper["ce"]) == pytest.approx(ce) and float(paper["dice"]) == pytest.approx(dice_fg)
    assert float(paper["loss"]) == pytest.approx((ce + dice_fg) / 2)
    assert float(official["dice"]) == pytest.approx((dice_fg + dice_bg) / 2)
    assert float(official["loss"]) == pytest.approx(ce + (dice_fg + dice_bg) / 2)
    module = PartialCEDiceLoss(eps=0, **data_term_options("official"))
    assert float(module(logits, labels)) == pytest.approx(float(official["loss"]))
    assert "combine='sum'" in repr(module)


def test_data_term_errors_and_config_names_agree():
    assert set(DATA_TERMS) == set(config_module.DATA_TERMS)
    with pytest.raises(ValueError, match="data_term must be one of paper, official, got 'x'"):
        data_term_options("x")
    logits, labels = _two_voxel_case()
    with pytest.raises(ValueError, match="combine must be 'mean' or 'sum', got 'max'"):
        partial_ce_dice_terms(logits, labels, combine="max")
    with pytest.raises(ValueError, match="data_term must be one of official, paper, got 'x'"):
        TrainConfig(data_term="x")


# -- ramp-up as a fraction of the budget ------------------------------------------------------------------------
def test_rampup_fraction_of_the_budget():
    assert TrainConfig(epochs=30, rampup_epochs=10).rampup_length == 10
    assert TrainConfig(epochs=30, rampup_fraction=0.5).rampup_length == 15
    assert TrainConfig(epochs=300, rampup_fraction=0.5).rampup_length == 150  # long and short runs ramp alike
    assert TrainConfig(epochs=30, rampup_fraction=0.0).rampup_length == 0
    with pytest.raises(ValueError, match="rampup_fraction"):
        TrainConfig(rampup_fraction=1.5)


def test_stage1_weights_follow_the_fraction():
    from PASegLib.losses import Stage1LossWeights

    c = TrainConfig(epochs=40, rampup_fraction=0.25, alpha=1.0, beta=0.1)
    w = Stage1LossWeights(alpha=c.alpha, beta=c.beta, rampup_length=c.rampup_length)
    assert w.regularizer_weights(5.0) == pytest.approx((math.exp(-1.25), 0.1 * math.exp(-1.25)))  # t = T/2
    assert w.regularizer_weights(10.0) == pytest.approx((1.0, 0.1))


# -- smoothing of the image the mCRF sees ----------------------------------------------------------------------
def test_masked_gaussian_smooth():
    image = torch.full((1, 1, 9, 9, 9), 2.0)
    valid = torch.ones_like(image)
    valid[..., 6:] = 0
    image[..., 6:] = 100.0  # padding value: must not leak into the valid region
    out = masked_gaussian_smooth(image, 1.0, valid)
    assert torch.allclose(out[..., :6], torch.full_like(out[..., :6], 2.0), atol=1e-5)  # constant stays constant
    assert masked_gaussian_smooth(image, 0.0, valid) is image
    spike = torch.zeros(1, 1, 11, 11, 11)
    spike[0, 0, 5, 5, 5] = 1.0
    smooth = masked_gaussian_smooth(spike, 1.0)

    def g(d):  # MONAI's "erf" kernel: the Gaussian integrated over the voxel [d − ½, d + ½], σ = 1
        return 0.5 * (math.erf((d + 0.5) / math.sqrt(2)) - math.erf((d - 0.5) / math.sqrt(2)))

    norm = sum(g(d) for d in range(-4, 5))  # truncated at 4 σ; the whole kernel lies inside the volume
    assert float(smooth[0, 0, 5, 5, 6]) == pytest.approx(g(0) ** 2 * g(1) / norm ** 3, rel=1e-3)
    with pytest.raises(ValueError, match="sigma"):
        masked_gaussian_smooth(spike, -1.0)


# -- validation diagnostics and selection -------------------------------------------------------------------------
def test_label_diagnostics_hand_values():
    pred = np.zeros((4, 4, 4), bool)
    label = np.zeros((4, 4, 4), bool)
    pred[:2] = True  # 32 voxels
    label[1:4] = True  # 48 voxels, overlap 16
    d = label_diagnostics(pred, label)
    assert d == pytest.approx({"dice": 32 / 80, "precision": 0.5, "recall": 1 / 3, "volume_ratio": 32 / 48})
    empty = label_diagnostics(np.zeros_like(pred), label)
    assert empty["precision"] == 1.0 and empty["recall"] == 0.0 and empty["volume_ratio"] == 0.0


def test_criteria_orientation_and_names():
    assert set(CRITERIA) == set(config_module.SELECTIONS) - {"last"}
    assert criterion_value("heldout_loss", {"heldout_loss": 2.5}) == -2.5  # lower loss = better
    assert criterion_value("click_score", {"score": 0.9}) == 0.9
    assert criterion_value("network_agreement", {"score": 0.9}) is None
    with pytest.raises(ValueError, match="selection must be one of"):
        criterion_value("dice", {})
    with pytest.raises(ValueError, match="network_agreement' needs two networks"):
        TrainConfig(selection="network_agreement")


def test_selection_quality_on_scripted_rounds():
    rounds = [{"score": s, "heldout_loss": h, "dice": d} for s, h, d in
              [(0.90, 3.0, 0.60), (0.95, 2.0, 0.70), (0.97, 2.5, 0.74), (0.99, 1.0, 0.73)]]
    q = selection_quality(rounds, "click_score")
    assert q["spearman"] == pytest.approx(0.8)  # ranks (1,2,3,4) vs (1,2,4,3)
    assert q["picked_dice"] == 0.73 and q["best_dice"] == 0.74 and q["within"] == 1.0
    q = selection_quality(rounds, "heldout_loss")  # −loss ranks (1,3,2,4) vs dice (1,2,4,3): ρ = 1 − 6·6/60
    assert q["spearman"] == pytest.approx(0.4) and q["picked_dice"] == 0.73
    assert selection_quality(rounds[:2], "click_score") is None  # too few rounds to rank
    far = [dict(r) for r in rounds]
    far[3]["dice"] = 0.70
    assert selection_quality(far, "click_score")["within"] == 0.0  # picks 0.70, best 0.74


# -- patch boxes --------------------------------------------------------------------------------------------------
def test_sampler_boxes_follow_crop_and_flip():
    from PASegLib.data.prepared import PreparedCase
    from PASegLib.data.sampler import PatchSampler
    from PASegLib.image.geometry import ImageGeometry

    shape = (20, 16, 12)
    image = np.zeros(shape, np.float32)
    lo, hi = np.array([5, 4, 3]), np.array([12, 10, 8])
    image[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 1.0  # the box is marked in the image
    geometry = ImageGeometry(shape=shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    case = PreparedCase("c", image, np.full(shape, 2, np.uint8), np.ones(shape, bool), [np.zeros((7, 3))],
                        [(lo, hi)], None, geometry, geometry)
    for axes in ((), (0, 1, 2)):
        sampler = PatchSampler([case], TrainConfig(patch_size=(16, 16, 8), flip_axes=axes))
        rng = np.random.default_rng(3)
        for _ in range(10):
            patch = sampler.sample(0, rng)
            (plo, phi), = patch["boxes"]
            inside = patch["image"][0]
            # every marked voxel of the patch lies inside the transported box, and the box's in-patch part is marked
            idx = np.argwhere(inside > 0)
            assert np.all(idx >= plo) and np.all(idx <= phi)
            clo, chi = np.maximum(plo, 0), np.minimum(phi, np.array(inside.shape) - 1)
            if np.all(clo <= chi):
                assert np.all(inside[clo[0]:chi[0] + 1, clo[1]:chi[1] + 1, clo[2]:chi[2] + 1] == 1.0)


# -- presets ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,spacing", [("cpu", (0.625, 0.625, 0.625)), ("paper", (0.4, 0.4, 3.0)),
                                            ("paper", (1.0, 1.0, 1.0))])
def test_presets_patch_divisible_budget_and_scm(preset, spacing):
    a, b, s = preset_configs(preset, spacing)
    for c in (a, b, s):
        assert all(n % 16 == 0 for n in c.patch_size), c.patch_size
        assert c.selection == "last"
    assert a.data_term == "official" and a.rampup_fraction is not None
    assert s.lr == (1e-3 if preset == "cpu" else 1e-2)  # CPU: measured; paper: the paper's and README's
    assert s.epochs % s.refresh_every == 0 and s.epochs // s.refresh_every == 5
    if preset == "cpu":
        assert a.iterations_per_epoch == 24  # a fixed budget whatever the cohort
    else:
        assert a.iterations_per_epoch == 0 and a.min_iterations_per_epoch >= 100


def test_budget_floor_does_not_shrink_with_the_cohort(tiny_dataset, tmp_path):
    from PASegLib.data.dataset import list_cases
    from PASegLib.data.prepare import prepare_cases
    from PASegLib.training.stage1 import Stage1Trainer

    cases = prepare_cases(list_cases(tiny_dataset), TrainConfig(patch_size=(32, 32, 16)))
    small = TrainConfig(patch_size=(32, 32, 16), min_iterations_per_epoch=10, crf_downsample_to=None)
    trainer = Stage1Trainer(small, tmp_path / "r", cases[:2], [], device=torch.device("cpu"))
    assert trainer.iterations_per_epoch == 10
    trainer = Stage1Trainer(small.replace(min_iterations_per_epoch=0), tmp_path / "r2", cases[:2], [],
                            device=torch.device("cpu"))
    assert trainer.iterations_per_epoch == 2


def test_run_config_without_new_keys_resumes_as_it_trained(tmp_path):
    import json

    from PASegLib.training.config import LEGACY_DEFAULTS, load_config, load_run_config

    old = TrainConfig(stage=1).to_dict()
    for key in LEGACY_DEFAULTS:
        old.pop(key)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    legacy = load_run_config(path)
    assert (legacy.data_term, legacy.selection) == ("paper", "click_score")  # as the first table's runs
    assert (load_config(path).data_term, load_config(path).selection) == ("official", "last")  # --config files
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_run_config(path)


def test_stage2_refuses_the_stage1_loss_criterion_and_box_knobs_reach_the_loss():
    from PASegLib.training.objective import Stage1Objective

    with pytest.raises(ValueError, match="'heldout_loss' is the stage-one loss"):
        TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", selection="heldout_loss")
    objective = Stage1Objective(TrainConfig(box_prior_weight=1.0, box_prior_min_width=3.0, box_prior_extent_weight=0.5,
                                            box_prior_shrink=0.25, crf_downsample_to=None))
    assert objective.box.shrink == 0.25
    assert objective.box.min_width == 3.0 and objective.box.extent_weight == 0.5
    with pytest.raises(ValueError, match="box_prior_min_width"):
        TrainConfig(box_prior_min_width=0.0)


# -- fixed teachers, the pseudo-label criterion ------------------------------------------------------------------
def test_refresh_every_zero_keeps_the_stage_one_teachers():
    from types import SimpleNamespace

    from PASegLib.training.scm import SCMTrainer

    assert TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", refresh_every=0).refresh_every == 0
    with pytest.raises(ValueError, match="refresh_every"):
        TrainConfig(stage=2, network="unet3d", aux_network="attention_unet", refresh_every=-1)
    refreshed = []
    for every, epochs in ((0, 6), (2, 6)):
        fake = SimpleNamespace(config=SimpleNamespace(refresh_every=every), best_weights=None,
                               refresh_frozen=lambda e=every: refreshed.append(e), emit=lambda *a, **k: None)
        for epoch in range(1, epochs + 1):
            SCMTrainer.on_epoch_end(fake, epoch)
    assert refreshed == [2, 2, 2]  # never with 0; at epochs 2, 4, 6 with 2


def test_pseudo_label_dice_criterion_reads_the_partial_dice():
    from PASegLib.training.selection import criterion_value

    assert criterion_value("pseudo_label_dice", {"partial_dice": 0.7, "score": 0.1}) == pytest.approx(0.7)
    assert criterion_value("pseudo_label_dice", {"score": 0.1}) is None
    assert TrainConfig(selection="pseudo_label_dice").selection == "pseudo_label_dice"
