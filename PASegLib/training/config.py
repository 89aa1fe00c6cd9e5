"""Typed, JSON-serialisable configuration of a training run (stage one and stage two / SCM).

A run folder holds ``config.json`` = :meth:`TrainConfig.to_dict`; ``paseg train --config FILE`` reads a
(partial) JSON object of the same keys, unknown keys are refused with their names. Nothing here imports
torch.

Defaults are the paper's / official code's settings (FACTS §1; ``data_term="official"``, β 0.1, σ_I 0.1,
no mCRF smoothing is the official code's combination) except where a field says otherwise; the presets
(:mod:`PASegLib.pipeline.presets`) apply the settings measured on la_heart on top:
SGD lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5, poly decay (power 0.9), batch 1, patches
128×128×48 (axes ``[i, j, k]``), α = 1.0 (mCRF), β = 0.1 (VM), sigmoid ramp-up 30 epochs; SCM T = 4,
λ = 0.5, frozen copies refreshed every 20 epochs.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from PASegLib.data.settings import PrepareSettings, SamplingSettings
from PASegLib.seeds.expansion import ExpansionConfig
from PASegLib.utils.atomic import PathLike, atomic_write_json
from PASegLib.utils.checks import check_int, check_number, check_numbers, short_repr

__all__ = ["LEGACY_DEFAULTS", "LEGACY_EXPANSION", "TrainConfig", "load_config", "load_run_config", "saved_config"]

STAGES = (1, 2)
#: Names registered in :data:`PASegLib.networks.NETWORKS` (kept here so configs validate without torch;
#: a test checks both lists agree).
NETWORK_NAMES = ("unet2d5", "unet3d", "attention_unet")
#: the stage-1 data terms (kept here so configs validate without torch; :mod:`PASegLib.losses.partial`
#: defines them and a test checks both lists agree)
DATA_TERMS = ("official", "paper")
#: checkpoint selection rules (see :mod:`PASegLib.training.selection`)
SELECTIONS = ("last", "click_score", "heldout_loss", "flip_agreement", "pseudo_label_dice", "network_agreement")
DEVICES_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"
#: what the click channel shows (``TrainConfig.click_map``)
CLICK_MAPS = ("heatmap", "box")


def _check_device(device: str) -> None:
    if not isinstance(device, str):
        raise ValueError(f"device must be {DEVICES_HELP}, got {short_repr(device)}")
    if device in ("auto", "cpu", "cuda"):
        return
    if device.startswith("cuda:") and device[5:].isdigit():
        return
    raise ValueError(f"device must be {DEVICES_HELP}, got {short_repr(device)}")


@dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes:
        stage: 1 = training from partial labels (Sec. III-A); 2 = Self and Cross Monitoring (Sec. III-B).
        supervision: ``"partial"`` (the method: expanded seeds, unlabeled voxels ignored) or ``"full"`` (the
            dense ``<case>_label`` maps with every voxel labeled; the upper bound of the accuracy benchmark,
            with ``alpha = beta = 0``).
        network: registered network name (stage 1: the network trained; stage 2: the primary network).
        aux_network: stage 2 only: the auxiliary network (must differ from ``network``).
        epochs: number of epochs.
        iterations_per_epoch: iterations per epoch; 0 = one per training case (the official "epoch").
        batch_size: patches per iteration.
        patch_size: training patch ``(I, J, K)`` in voxels of the (resampled) training grid.
        target_spacing_mm: resample every image to this spacing ``(s_i, s_j, s_k)`` in mm before training
            and prediction (predictions are resampled back); ``None`` keeps each image's own grid.
        lr, momentum, nesterov, weight_decay, poly_power: SGD with poly decay ``lr·(1 − t/T)^power``.
        min_iterations_per_epoch: with ``iterations_per_epoch = 0``, at least this many iterations per epoch
            (a budget floor that does not shrink with the cohort: 6 cases train as long as 60).
        data_term: ``"official"`` (CE + mean of the background and foreground Dice, as the official code) or
            ``"paper"`` ((CE + foreground Dice) / 2, Eq. 3–5 as printed); see
            :data:`PASegLib.losses.partial.DATA_TERMS`.
        alpha, beta, rampup_epochs: stage-1 weights of the mCRF and VM losses and their sigmoid ramp-up.
        rampup_fraction: when set, the ramp-up length is this fraction of the training budget
            (``rampup_fraction · epochs``) instead of ``rampup_epochs``, so short and long runs ramp alike
            (extending ``epochs`` on resume stretches the ramp with the budget, like the poly learning rate).
        crf_sigma_xy, crf_sigma_intensity, crf_radius, crf_downsample_to: mCRF settings (voxels of the
            ``crf_downsample_to`` grid when given; intensities are z-scored).
        crf_image_sigma: Gaussian smoothing (σ in voxels of the training grid, applied before the mCRF's
            own ``crf_downsample_to`` resampling) of the image the mCRF sees (the network input is
            unchanged); 0 = none. Suppresses the voxel noise that otherwise dominates the
            intensity kernel (``docs/BENCHMARKS.md``, energy ordering).
        box_prior_weight, box_prior_shrink, box_prior_min_width, box_prior_extent_weight: the box-tightness
            prior (:class:`~PASegLib.losses.box_prior.BoxTightnessLoss`): its weight (under the same ramp-up as
            α, β; 0 = off), the central share of the box whose lines are constrained, the foreground mass
            (voxels) each line must hold, and the weight of its extent term (central slices).
        temperature, scm_lambda, refresh_every: stage-2 KD temperature T, weight λ of the cross term,
            and the period (epochs) at which the frozen copies are refreshed from the best checkpoints (0: never —
            the teachers stay the stage-one networks).
        scm_seed_anchor: stage 2: the pseudo label of the self-training term keeps the case's pseudo labels where
            they are labeled (the expanded seeds, or with ``expansion.fill`` the filled box: foreground 1,
            background 0, outside the click boxes 0) and takes the frozen
            copy's argmax only on unlabeled voxels — PASeg's addition (the paper uses the argmax everywhere),
            so self-training cannot drift away from the clicks.
        foreground_crop_probability: chance that a patch is centred inside an annotated object's box (else
            uniformly random).
        flip_axes: axes that are randomly flipped (probability 0.5 each).
        validation_fraction: share of the annotated cases held out for label-free model selection
            (at least one when there are two cases or more; 0 disables selection: best = last).
        validate_every: validation period in epochs (the last epoch is always validated).
        selection: which weights ``best.pt`` holds: ``"last"`` (the last epoch's), or the validation epoch
            that is best by a label-free criterion on the held-out cases: ``"click_score"`` (agreement with
            the clicks and seeds), ``"heldout_loss"`` (lowest stage-one loss), ``"flip_agreement"`` (Dice
            between the predictions of the image and of its flipped copy), ``"pseudo_label_dice"`` (Dice against
            the pseudo labels on their labelled voxels) or ``"network_agreement"`` (SCM
            only: Dice between the two networks). See :mod:`PASegLib.training.selection`.
        validation_heldout_loss: also compute the whole-case ``heldout_loss`` at every stage-one validation when
            ``selection`` does not use it (it costs a full-resolution loss evaluation per held-out case; the
            selection benchmark compares every criterion on the same runs).
        checkpoint_every: checkpoint period in epochs (the last epoch and a stop always save).
        sw_overlap: sliding-window overlap of validation and prediction.
        expansion: :class:`~PASegLib.seeds.expansion.ExpansionConfig` fields (seed expansion of the clicks).
        seed: seed of every random generator.
        deterministic: deterministic algorithms (slower on GPU); resume then reproduces an uninterrupted run.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: mixed precision on CUDA (ignored on CPU).
        num_threads: torch CPU threads (0 = torch's default).
        prepare_workers: worker processes that prepare the cases not yet in the prepared-data cache
            (:mod:`PASegLib.data.prepare`); 0 = automatic: as many as the cores this process may use,
            but in this process when less than ~2 million voxels are left to prepare (starting workers
            would cost more than it saves); 1 = in this process.
        cache_mb: training reads the prepared cases from the cache when it needs them and keeps the most
            recently used ones in memory up to this many MiB (:mod:`PASegLib.data.streaming`; a
            cohort that fits stays in memory after its first epoch, a larger one costs this much whatever
            its size); ``None``: every case is read into memory during preparation and kept for the whole
            run (the behaviour before streaming). Hold at least ``prefetch_cases + batch_size`` cases.
        random_walker: :class:`~PASegLib.seeds.random_walker.RandomWalkerConfig` fields (pseudo labels of the
            ``extreme_points`` and ``box`` annotation kinds).
        point_radius_mm: ``single_point`` kind: the clicked voxels are labelled as balls of this radius (mm) so
            that they survive resampling to the training grid (PSCV labels one pixel; 0 = one voxel).
        pseudo_labels: folder of ``<case>_pseudo.nii.gz`` label maps (0 background, 1 foreground, 2 unlabeled, on
            the image's grid) that replace the annotation's generated labels of those cases — the previous
            round's refined labels (:mod:`PASegLib.pipeline.refine`); ``None``: generate them.
        cv_weight / cv_temperature / cv_tv_weight: PSCV's contrastive variance loss (λ_cv, τ, μ; 0 = off;
            :class:`~PASegLib.losses.contrastive_variance.ContrastiveVarianceLoss`). Its contrastive term compares
            the patches of one batch and is exactly 0 with one, so training refuses ``cv_weight > 0`` with fewer
            than 2 patches per batch and process (:meth:`TrainConfig.check_trainable`).
        point_loss_weight: Going to Extremes' point loss weight (0 = off;
            :class:`~PASegLib.losses.point_loss.ExtremePointLoss`); ``point_loss_iterations`` its box filters.
        point_channel: the network also takes the clicks as a second input channel (Gaussian heatmaps of
            ``point_sigma_mm`` at each object's points): a click-conditioned model.
        point_channel_dropout: probability that a training patch gets an empty point channel, so that the
            model also predicts without clicks.
        point_jitter_mm: training patches that carry the clicks (``point_channel`` or a point loss) move each
            point by Gaussian noise of this σ (mm, per axis), drawn anew at every iteration from the training
            generator — Going to Extremes "add[s] some Gaussian noise to the x, y, z point locations at each DL
            training iteration" (after DEXTR) without a magnitude; 2 mm is PASeg's choice (one voxel of the CPU
            preset's grid). The jittered heatmap is both the click channel and the point loss's target (one
            ``G({e})`` as in the paper); validation and prediction use the exact points. 0 = exact points.
        prefetch_cases: while one batch trains, a background thread reads this many of the next cases of the
            epoch from the cache (0 = read each when it is needed). Patches and losses do not depend on it,
            nor on ``cache_mb`` or ``prepare_workers``.
        patch_frame, frame_size_mm, frame_margin_mm: where a training patch is
            (:class:`~PASegLib.data.settings.SamplingSettings`): ``"random"`` (a random patch, the default),
            ``"click"`` (a box of ``frame_size_mm`` — ``None``: the patch's own extent — centred on a random
            object's click) or ``"object"`` (the object's box plus ``frame_margin_mm`` on every side), resampled to
            ``patch_size``: PSCV's common frame, every patch of a batch showing its object at the patch's centre.
        batch_flips: flips drawn once per batch (the same for every patch of it) instead of per patch; a common
            frame needs it or ``flip_axes = []``.
        click_map: what the click channel (``point_channel``) shows: ``"heatmap"`` (the Gaussians above) or
            ``"box"`` — 1 inside every object's box and 0 outside (:func:`~PASegLib.data.clickmaps.box_mask`; a dense
            object's box is its label's extent): the teacher of mixed supervision, told where the object is
            (paper 003, :mod:`PASegLib.pipeline.teacher_student`). ``point_channel_dropout`` applies to it as to
            the heatmap (the teacher uses 0: it always gets the boxes).
        box_channel_margin_mm: ``click_map = "box"``: each training patch's boxes are grown on each side by a margin
            drawn uniformly from this range ``(low, high)`` (mm; one draw per side, per patch), so that a teacher
            trained on the tight boxes of dense labels also reads the loose boxes a person draws (the simulated
            boxes are 2–10 mm loose); validation and prediction use the boxes as given. ``(0, 0)`` = as given.
        soft_label_weight: with ``pseudo_labels``: the weight of the cross-entropy with soft targets
            (:class:`~PASegLib.losses.soft_ce.SoftCrossEntropyLoss`) on the voxels of soft pseudo labels
            (``<case>_soft.nii.gz`` files, :func:`~PASegLib.data.prepared.encode_soft_labels`); the hard labels of
            the other voxels keep the data term. 0 = soft voxels ignored.
    """

    stage: int = 1
    supervision: str = "partial"
    network: str = "unet2d5"
    aux_network: str = "attention_unet"
    epochs: int = 300
    iterations_per_epoch: int = 0
    min_iterations_per_epoch: int = 0
    batch_size: int = 1
    patch_size: Tuple[int, int, int] = (128, 128, 48)
    target_spacing_mm: Optional[Tuple[float, float, float]] = None
    lr: float = 1e-2
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    poly_power: float = 0.9
    data_term: str = "official"
    alpha: float = 1.0
    beta: float = 0.1
    rampup_epochs: float = 30.0
    rampup_fraction: Optional[float] = None
    crf_sigma_xy: float = 6.0
    crf_sigma_intensity: float = 0.1
    crf_radius: int = 5
    crf_downsample_to: Optional[Tuple[int, int, int]] = (64, 64, 48)
    crf_image_sigma: float = 0.0
    box_prior_weight: float = 0.0
    box_prior_shrink: float = 0.5
    box_prior_min_width: float = 1.0
    box_prior_extent_weight: float = 0.0
    temperature: float = 4.0
    scm_lambda: float = 0.5
    refresh_every: int = 20
    scm_seed_anchor: bool = False
    foreground_crop_probability: float = 0.5
    flip_axes: Tuple[int, ...] = (0, 1, 2)
    validation_fraction: float = 0.2
    validate_every: int = 10
    selection: str = "last"
    validation_heldout_loss: bool = False
    checkpoint_every: int = 10
    sw_overlap: float = 0.25
    expansion: Dict[str, Any] = field(default_factory=lambda: ExpansionConfig().to_dict())
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0
    prepare_workers: int = 0
    cache_mb: Optional[float] = 2048.0
    prefetch_cases: int = 2
    random_walker: Dict[str, Any] = field(default_factory=dict)
    point_radius_mm: float = 2.0
    pseudo_labels: Optional[str] = None
    cv_weight: float = 0.0
    cv_temperature: float = 0.07
    cv_tv_weight: float = 1e-5
    point_loss_weight: float = 0.0
    point_loss_iterations: int = 5
    point_sigma_mm: float = 3.0
    point_channel: bool = False
    point_channel_dropout: float = 0.5
    point_jitter_mm: float = 2.0
    patch_frame: str = "random"
    frame_size_mm: Optional[Tuple[float, float, float]] = None
    frame_margin_mm: float = 0.0
    batch_flips: bool = False
    click_map: str = "heatmap"
    box_channel_margin_mm: Tuple[float, float] = (0.0, 0.0)
    soft_label_weight: float = 1.0

    def __post_init__(self) -> None:
        self.patch_size = check_numbers("patch_size", self.patch_size, length=3, cast=int, minimum=1,
                                        what="three integers >= 1 (I, J, K)")
        if self.crf_downsample_to is not None:
            self.crf_downsample_to = check_numbers("crf_downsample_to", self.crf_downsample_to, length=3, cast=int,
                                                   minimum=1, what="three integers >= 1 (I, J, K)")
        if self.target_spacing_mm is not None:
            self.target_spacing_mm = check_numbers("target_spacing_mm", self.target_spacing_mm, length=3,
                                                   minimum=0, open_minimum=True, what="three positive numbers (mm)")
        self.flip_axes = _flip_axes(self.flip_axes)
        for name in ("nesterov", "scm_seed_anchor", "deterministic", "amp", "point_channel", "validation_heldout_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {short_repr(getattr(self, name))}")
        if self.supervision not in ("partial", "full"):
            raise ValueError(f"supervision must be 'partial' or 'full', got {short_repr(self.supervision)}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be 1 or 2, got {short_repr(self.stage)}")
        for name in ("network", "aux_network"):
            if getattr(self, name) not in NETWORK_NAMES:
                raise ValueError(f"{name} must be one of {', '.join(NETWORK_NAMES)}, "
                                 f"got {short_repr(getattr(self, name))}")
        if self.stage == 2 and self.aux_network == self.network:
            raise ValueError(f"stage 2 needs two different architectures; network and aux_network are both "
                             f"{short_repr(self.network)}")
        for name in ("epochs", "batch_size", "validate_every", "checkpoint_every", "crf_radius"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("refresh_every", self.refresh_every, minimum=0)  # 0: fixed stage-one teachers
        if self.data_term not in DATA_TERMS:
            raise ValueError(f"data_term must be one of {', '.join(DATA_TERMS)}, got {short_repr(self.data_term)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {short_repr(self.selection)}")
        if self.selection == "network_agreement" and self.stage != 2:
            raise ValueError("selection 'network_agreement' needs two networks (stage 2 / SCM)")
        if self.selection == "heldout_loss" and self.stage != 1:
            raise ValueError("selection 'heldout_loss' is the stage-one loss; SCM (stage 2) has none")
        if self.rampup_fraction is not None:
            check_number("rampup_fraction", self.rampup_fraction, minimum=0.0, maximum=1.0)
        for name in ("iterations_per_epoch", "min_iterations_per_epoch", "num_threads", "seed", "prepare_workers",
                     "prefetch_cases"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("momentum", "weight_decay", "poly_power", "alpha", "beta", "rampup_epochs", "crf_image_sigma",
                     "box_prior_weight", "box_prior_extent_weight", "point_radius_mm", "cv_weight", "cv_tv_weight",
                     "point_loss_weight", "point_jitter_mm"):
            check_number(name, getattr(self, name), minimum=0)
        for name in ("lr", "crf_sigma_xy", "crf_sigma_intensity", "temperature", "box_prior_min_width",
                     "cv_temperature", "point_sigma_mm"):
            check_number(name, getattr(self, name), minimum=0, open_minimum=True)
        check_int("point_loss_iterations", self.point_loss_iterations, minimum=0)
        if self.stage == 2 and self.point_channel:
            raise ValueError("point_channel (a click-conditioned network) is a stage-one setting; SCM (stage 2) "
                             "trains networks on the image alone")
        if self.pseudo_labels is not None and not (isinstance(self.pseudo_labels, str) and self.pseudo_labels):
            raise ValueError(f"pseudo_labels must be a folder path or null, got {short_repr(self.pseudo_labels)}")
        if not isinstance(self.random_walker, dict):
            raise ValueError(f"random_walker must be a JSON object of random-walker settings, got "
                             f"{short_repr(self.random_walker)}")
        for name in ("scm_lambda", "foreground_crop_probability", "box_prior_shrink", "point_channel_dropout"):
            check_number(name, getattr(self, name), minimum=0.0, maximum=1.0)
        for name in ("validation_fraction", "sw_overlap"):
            check_number(name, getattr(self, name), minimum=0.0, maximum=1.0, open_maximum=True)
        _check_device(self.device)
        if self.cache_mb is not None:
            self.cache_mb = check_number("cache_mb", self.cache_mb, minimum=0)
        if not isinstance(self.expansion, dict):
            raise ValueError(f"expansion must be a JSON object of expansion settings, got {short_repr(self.expansion)}")
        try:
            self.expansion = ExpansionConfig.from_dict(self.expansion).to_dict()
        except (TypeError, ValueError) as exc:  # TypeError: a setting of the wrong type (float([1]))
            raise ValueError(f"expansion: {exc}") from None
        if self.frame_size_mm is not None:
            self.frame_size_mm = check_numbers("frame_size_mm", self.frame_size_mm, length=3, minimum=0,
                                               open_minimum=True, what="three positive numbers (mm) or null")
        self.sampling_settings()  # checks patch_frame, frame_margin_mm, batch_flips and their combination
        if self.click_map not in CLICK_MAPS:
            raise ValueError(f"click_map must be one of {', '.join(CLICK_MAPS)}, got {short_repr(self.click_map)}")
        if self.click_map != "heatmap" and not self.point_channel:
            raise ValueError(f"click_map {self.click_map!r} is what the click channel shows; set point_channel true")
        margin = check_numbers("box_channel_margin_mm", self.box_channel_margin_mm, length=2, minimum=0,
                               what="(low, high) in mm, 0 <= low <= high")
        if margin[0] > margin[1]:
            raise ValueError(f"box_channel_margin_mm must be (low, high) in mm with low <= high, got {list(margin)}")
        self.box_channel_margin_mm = margin
        check_number("soft_label_weight", self.soft_label_weight, minimum=0)

    def check_trainable(self, *, world_size: int = 1) -> None:
        """Raise ``ValueError`` for settings that validate but would not train as asked (called before a training
        run starts, not when a saved run's settings are read: a model trained so still predicts).

        Stage one with ``cv_weight > 0`` needs at least 2 patches per batch and process
        (``batch_size // world_size``): PSCV's contrastive term compares the patches of one batch, and with one it is
        exactly 0 (:mod:`~PASegLib.losses.contrastive_variance`). (SCM, stage 2, has no contrastive term.)
        SCM is refused a ``pseudo_labels`` folder of soft labels (``*_soft.nii.gz``): its self-training term takes
        hard labels.
        """
        per_process = self.batch_size // max(1, int(world_size))
        if self.stage == 1 and self.cv_weight > 0 and per_process < 2:
            split = f" over {world_size} processes ({per_process} per process)" if world_size > 1 else ""
            raise ValueError(f"cv_weight = {self.cv_weight:g} needs batch_size >= 2 per process (PSCV's contrastive "
                             f"term compares the patches of one batch and is exactly 0 with one); got batch_size = "
                             f"{self.batch_size}{split}. Raise batch_size (PSCV trains with 4 or more) or set "
                             f"cv_weight = 0")
        if self.stage == 2 and self.pseudo_labels is not None and any(Path(self.pseudo_labels).glob("*_soft.nii.gz")):
            raise ValueError(f"pseudo_labels {self.pseudo_labels} holds soft labels (*_soft.nii.gz): only stage one "
                             f"trains on them (SCM's self-training term needs hard labels)")

    @property
    def rampup_length(self) -> float:
        """Ramp-up length in epochs: ``rampup_fraction · epochs`` when the fraction is set, else ``rampup_epochs``."""
        return self.rampup_fraction * self.epochs if self.rampup_fraction is not None else self.rampup_epochs

    @property
    def expansion_config(self) -> ExpansionConfig:
        return ExpansionConfig.from_dict(self.expansion)

    def prepare_settings(self) -> PrepareSettings:
        """The settings that change a prepared case (and how the cohort is prepared), handed to ``data/``."""
        return PrepareSettings(expansion=dict(self.expansion), target_spacing_mm=self.target_spacing_mm,
                               random_walker=dict(self.random_walker), point_radius_mm=self.point_radius_mm,
                               pseudo_labels=self.pseudo_labels, prepare_workers=self.prepare_workers,
                               cache_mb=self.cache_mb)

    def sampling_settings(self) -> SamplingSettings:
        """The patch-sampling settings handed to :class:`~PASegLib.data.sampler.PatchSampler`."""
        return SamplingSettings(patch_size=tuple(self.patch_size),
                                foreground_crop_probability=self.foreground_crop_probability,
                                flip_axes=tuple(self.flip_axes), supervision=self.supervision,
                                point_channel=self.point_channel, point_loss_weight=self.point_loss_weight,
                                point_sigma_mm=self.point_sigma_mm, point_channel_dropout=self.point_channel_dropout,
                                point_jitter_mm=self.point_jitter_mm, prefetch_cases=self.prefetch_cases,
                                patch_frame=self.patch_frame, frame_size_mm=self.frame_size_mm,
                                frame_margin_mm=self.frame_margin_mm, batch_flips=self.batch_flips)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TrainConfig:
        """Build from a (partial) dict; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"a training configuration must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            names = ", ".join(short_repr(k, 60) for k in unknown[:10]) + (f" and {len(unknown) - 10} more"
                                                                         if len(unknown) > 10 else "")
            raise ValueError(f"unknown training setting(s): {names} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def save(self, path: PathLike) -> Path:
        """Write ``config.json`` atomically; returns the path."""
        atomic_write_json(path, self.to_dict())
        return Path(path)


def _flip_axes(value: Any) -> Tuple[int, ...]:
    """``flip_axes`` as a tuple of axes among 0, 1, 2 (a list of integers; ``"xyz"``, ``0.5`` or ``true`` are
    refused rather than converted)."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(a, numbers.Integral) and not isinstance(a, bool) and 0 <= a <= 2 for a in value)
    if not ok:
        raise ValueError(f"flip_axes must be a list of axes among 0, 1, 2 (e.g. [0, 1, 2], or [] for no flips), "
                         f"got {short_repr(value)}")
    return tuple(int(a) for a in value)


#: values of settings added after a run folder may have been written, as those runs trained (a config.json
#: without the key resumes as it started, not with today's default)
LEGACY_DEFAULTS: Dict[str, Any] = {"data_term": "paper", "selection": "click_score", "point_jitter_mm": 0.0}


#: the seed expansion's settings added since, as runs saved without them trained (the plain seeds)
LEGACY_EXPANSION: Dict[str, Any] = {"fill": "none"}


def saved_config(data: Dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` saved with a run (its ``config.json``, or the copy in a checkpoint or model package):
    keys it lacks take their :data:`LEGACY_DEFAULTS`, its ``expansion`` keys their :data:`LEGACY_EXPANSION` (a
    config without ``expansion`` trained on the plain seeds too)."""
    data = {**LEGACY_DEFAULTS, **data}
    data["expansion"] = {**LEGACY_EXPANSION, **(data.get("expansion") if isinstance(data.get("expansion"), dict)
                                               else {})}
    return TrainConfig.from_dict(data)


def load_run_config(path: PathLike) -> TrainConfig:
    """The ``config.json`` of an existing run folder; keys it lacks take their :data:`LEGACY_DEFAULTS` (and its
    ``expansion`` settings their :data:`LEGACY_EXPANSION`)."""
    return load_config(path, missing=LEGACY_DEFAULTS, missing_expansion=LEGACY_EXPANSION)


def load_config(path: PathLike, *, missing: Optional[Dict[str, Any]] = None,
                missing_expansion: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Read a JSON training configuration; errors name the file. ``missing``: values of keys it lacks
    (default: the :class:`TrainConfig` defaults); ``missing_expansion``: the same for the keys of its
    ``expansion`` object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"configuration file not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        raise ValueError(f"{path}: not a readable training configuration ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a readable training configuration (JSON nested too deeply)") from None
    try:
        if missing and isinstance(data, dict):
            data = {**missing, **data}
        if missing_expansion and isinstance(data, dict) and isinstance(data.get("expansion"), dict):
            data = {**data, "expansion": {**missing_expansion, **data["expansion"]}}
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
