"""Presets of the end-to-end pipeline: the training settings of both stages, chosen from the data.

* ``cpu`` — finishes in minutes on a 2-core machine: every axis coarsened to at least 2 mm, 48×48×32
  patches, mCRF on the patch grid, a fixed budget of 30 stage-1 epochs × 24 iterations whatever the
  cohort size, and 10 SCM epochs × 24 iterations at lr 1e-3 (refresh every 2 epochs; lr 1e-2 was measured
  worse at this budget), validation every 3 epochs.
* ``paper`` — the paper's settings for a GPU: native resolution; anisotropic data (largest/smallest spacing
  ≥ 2): 2.5D U-Net + Attention U-Net, 128×128×48 patches, mCRF on a 64×64×48 grid, 300 stage-1 epochs;
  isotropic data: 3D U-Net + Attention U-Net, 128×128×128 patches (the BraTS setting), mCRF on 64×64×64,
  500 epochs; an epoch is one iteration per training case but at least 100 (a small cohort trains as
  long as a large one); SCM 100 epochs at lr 1e-2 (the official README command and the paper), T = 4,
  λ = 0.5, refresh every 20 epochs.

Both use the loss settings measured on la_heart (:data:`STAGE1_LOSS`: the official data term, the ramp-up
as a fraction of the budget, the mCRF on a smoothed image; ``docs/BENCHMARKS.md``) and select the last
weights (:data:`SELECTION`: no label-free criterion passed the validation rules there). Every patch size
is divisible by 16, the networks' divisor, so no patch is zero-padded inside the network.

In both, the primary network is the 2.5D U-Net for anisotropic data and the 3D U-Net for isotropic data
(the paper's pairs), the auxiliary network the Attention U-Net. numpy only.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from PASegLib.training.config import TrainConfig

__all__ = ["PRESETS", "is_anisotropic", "preset_configs"]

PRESETS = ("cpu", "paper")
#: stage-1 loss settings shared by both presets (chosen by measurement, docs/BENCHMARKS.md)
STAGE1_LOSS: Dict[str, Any] = {"data_term": "official", "rampup_fraction": 1.0 / 3.0, "crf_image_sigma": 1.0,
                               "crf_sigma_intensity": 0.05, "beta": 0.1}  # β 0.5 collapsed the demo's tumours
#: checkpoint selection of both presets
SELECTION = "last"


def is_anisotropic(spacing: Sequence[float]) -> bool:
    """True when the largest spacing is at least twice the smallest (thick slices)."""
    s = np.asarray(spacing, dtype=float)
    return float(s.max() / s.min()) >= 2.0


def preset_configs(name: str, median_spacing: Sequence[float], *, seed: int = 0, device: str = "auto",
                   overrides: Optional[Dict[str, Any]] = None, stage1_overrides: Optional[Dict[str, Any]] = None,
                   scm_overrides: Optional[Dict[str, Any]] = None) -> Tuple[TrainConfig, TrainConfig, TrainConfig]:
    """``(stage-1 primary, stage-1 auxiliary, SCM)`` configs of preset ``name`` for data of ``median_spacing``.

    Args:
        name: ``"cpu"`` or ``"paper"``.
        median_spacing: the dataset's median voxel spacing ``(s_i, s_j, s_k)`` in mm.
        seed, device: applied to all three.
        overrides: extra :class:`TrainConfig` fields applied to all three (e.g. ``{"patch_size": [32, 32, 16]}``).
        stage1_overrides, scm_overrides: extra fields of the stage-1 configs / of the SCM config.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    spacing = np.asarray(median_spacing, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"median_spacing must be three positive numbers, got {median_spacing!r}")
    aniso = is_anisotropic(spacing)
    primary = "unet2d5" if aniso else "unet3d"
    common: Dict[str, Any] = {"seed": seed, "device": device, "selection": SELECTION}
    if name == "cpu":
        common.update(
            target_spacing_mm=tuple(float(max(s, 2.0)) for s in spacing), patch_size=(48, 48, 32),
            crf_downsample_to=None, validate_every=3, checkpoint_every=3, num_threads=0, iterations_per_epoch=24)
        stage1 = {"epochs": 30, **STAGE1_LOSS}
        scm = {"epochs": 10, "refresh_every": 2, "lr": 1e-3}  # measured: lr 1e-2 loses 0.011 at this budget
    else:
        if aniso:
            common.update(patch_size=(128, 128, 48), crf_downsample_to=(64, 64, 48))
            stage1 = {"epochs": 300, **STAGE1_LOSS}
        else:
            common.update(patch_size=(128, 128, 128), crf_downsample_to=(64, 64, 64))
            stage1 = {"epochs": 500, **STAGE1_LOSS}
        common.update(validate_every=10, checkpoint_every=10, min_iterations_per_epoch=100)
        scm = {"epochs": 100, "refresh_every": 20, "lr": 1e-2}
    extra, extra1, extra2 = dict(overrides or {}), dict(stage1_overrides or {}), dict(scm_overrides or {})
    a = TrainConfig.from_dict({**common, **stage1, "stage": 1, "network": primary, **extra, **extra1})
    b = TrainConfig.from_dict({**common, **stage1, "stage": 1, "network": "attention_unet", **extra, **extra1})
    s = TrainConfig.from_dict({**common, **scm, "stage": 2, "network": a.network, "aux_network": b.network,
                               **extra, **extra2})
    return a, b, s


#: stage-one settings of each annotation kind's protocol (``docs/BENCHMARKS.md`` "Protocols"): PSCV's
#: contrastive variance loss for single points (4 patches per batch: the contrastive term compares the patches of
#: a batch and is 0 with one, so training refuses it below 2; each patch centred on its object's click, the
#: patch's own extent, and one set of flips per batch, so that the patches it compares share one frame),
#: for extreme points the random-walker labels with CE + Dice alone — Going to Extremes' point loss
#: (``point_loss_weight``, normalised by the heatmap mass) is available but off: on the 12 training cases the trainer
#: held out (never the test cases) it lowered the last round's Dice from 0.797 to 0.776 at weight 1, and on the test
#: cases it cost 0.031 (18 of 20 worse; ``benchmarks/bench_protocols.py``),
#: the pseudo labels alone for boxes (the random walker labels every voxel of the box, so mCRF and VM are off);
#: seven points and dense labels keep the preset.
PROTOCOL_SETTINGS: Dict[str, Dict[str, Any]] = {
    "seven_points": {},
    "dense": {},
    "single_point": {"alpha": 0.0, "beta": 0.0, "cv_weight": 0.3, "batch_size": 4, "patch_frame": "click",
                     "batch_flips": True},
    "extreme_points": {"alpha": 0.0, "beta": 0.0},
    "box": {"alpha": 0.0, "beta": 0.0},
}


def protocol_settings(kinds: Sequence[str]) -> Dict[str, Any]:
    """The stage-one settings (:data:`PROTOCOL_SETTINGS`) of a cohort whose objects have ``kinds``: those of its
    one weak kind (dense cases aside); none (the preset) for seven points or a mix of weak kinds."""
    weak = {k for k in kinds if k != "dense"}
    return dict(PROTOCOL_SETTINGS.get(weak.pop(), {})) if len(weak) == 1 else {}
