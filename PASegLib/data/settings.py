"""The settings that change a prepared case, and those of patch sampling, handed from training to data.

:class:`PrepareSettings` holds everything that changes what :func:`~PASegLib.data.prepared.prepare_case` makes of a
case (and therefore the prepared-data cache key), plus how the cohort is prepared (workers, cache memory);
:class:`SamplingSettings` what :class:`~PASegLib.data.sampler.PatchSampler` needs. Training builds both from its
:class:`~PASegLib.training.config.TrainConfig` (``config.prepare_settings()`` / ``config.sampling_settings()``),
as nnU-Net's plans are handed to its preprocessing, so that ``data/`` never imports ``training/``. Every function
of ``data/`` that takes settings also accepts any object with a ``prepare_settings()`` (``sampling_settings()``)
method, such as a ``TrainConfig``. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from PASegLib.seeds.expansion import ExpansionConfig
from PASegLib.utils.checks import check_number, check_numbers, short_repr

__all__ = ["PATCH_FRAMES", "PrepareSettings", "SamplingSettings", "as_prepare_settings", "as_sampling_settings"]

#: how a training patch is placed (:class:`SamplingSettings` ``patch_frame``)
PATCH_FRAMES = ("random", "click", "object")


@dataclass(frozen=True)
class PrepareSettings:
    """What changes a prepared case (the cache key hashes these), and how a cohort is prepared.

    Attributes:
        expansion: :class:`~PASegLib.seeds.expansion.ExpansionConfig` fields (seed expansion of seven points).
        target_spacing_mm: the training grid's spacing ``(s_i, s_j, s_k)`` in mm; ``None`` = each image's own.
        random_walker: :class:`~PASegLib.seeds.random_walker.RandomWalkerConfig` fields (extreme points, boxes).
        point_radius_mm: ``single_point`` kind: radius (mm) of the labelled ball around each click.
        pseudo_labels: folder of ``<case>_pseudo.nii.gz`` label maps that replace the clicks' labels, or ``None``.
        prepare_workers: worker processes preparing the cases not yet cached (0 = automatic, 1 = this process).
        cache_mb: memory (MiB) of the cases read from the cache; ``None`` = keep every case in memory.
    """

    expansion: Dict[str, Any] = field(default_factory=lambda: ExpansionConfig().to_dict())
    target_spacing_mm: Optional[Tuple[float, float, float]] = None
    random_walker: Dict[str, Any] = field(default_factory=dict)
    point_radius_mm: float = 2.0
    pseudo_labels: Optional[str] = None
    prepare_workers: int = 0
    cache_mb: Optional[float] = 2048.0

    @property
    def expansion_config(self) -> ExpansionConfig:
        """``expansion`` as an :class:`~PASegLib.seeds.expansion.ExpansionConfig`."""
        return ExpansionConfig.from_dict(self.expansion)


@dataclass(frozen=True)
class SamplingSettings:
    """What :class:`~PASegLib.data.sampler.PatchSampler` needs.

    Attributes:
        patch_size: patch ``(I, J, K)`` in voxels of the training grid.
        foreground_crop_probability: chance that a patch is centred inside an annotated object's box.
        flip_axes: axes flipped at random (probability 0.5 each).
        supervision: ``"partial"`` (clicks) or ``"full"`` (the ``<case>_label`` files are the labels).
        point_channel: patches carry the clicks' Gaussian heatmaps as a second input channel.
        point_loss_weight: > 0: patches carry the clicks (Going to Extremes' point loss).
        point_sigma_mm: the heatmaps' Gaussian σ (mm).
        point_channel_dropout: probability that a patch gets an empty point channel.
        point_jitter_mm: σ (mm, per axis) of the Gaussian noise that moves each point of a patch's heatmap,
            drawn per patch (0 = the exact points).
        prefetch_cases: cases read ahead in the background while a batch trains.
        patch_frame: where a patch is: ``"random"`` — a random patch of the training grid (inside an object's box
            with ``foreground_crop_probability``), PASeg's default; ``"click"`` — the box of ``frame_size_mm``
            centred on a random object's click (its ``F``; kinds without one: its box centre), resampled to
            ``patch_size``; ``"object"`` — that object's box grown by ``frame_margin_mm`` on every side, resampled
            to ``patch_size``. With ``"click"`` or ``"object"`` every patch of a batch shows its object centred in
            the same frame (PSCV's common frame: its contrastive variance loss compares the patches voxel by voxel)
            and ``foreground_crop_probability`` is not used.
        frame_size_mm: ``"click"``: the box's size ``(i, j, k)`` in mm; ``None`` = the patch's own extent on the
            training grid (``patch_size`` voxels: a patch centred on the click, copied without resampling).
        frame_margin_mm: ``"object"``: margin (mm) added to the object's box on every side (a single point's box is
            its clicked voxel, so its frame is a cube of about twice this margin).
        batch_flips: the flips are drawn once per batch (every patch of a batch flipped along the same axes)
            instead of per patch; a common frame (``patch_frame`` other than ``"random"``) needs it, or no flips.
    """

    patch_size: Tuple[int, int, int] = (128, 128, 48)
    foreground_crop_probability: float = 0.5
    flip_axes: Tuple[int, ...] = (0, 1, 2)
    supervision: str = "partial"
    point_channel: bool = False
    point_loss_weight: float = 0.0
    point_sigma_mm: float = 3.0
    point_channel_dropout: float = 0.5
    point_jitter_mm: float = 0.0
    prefetch_cases: int = 2
    patch_frame: str = "random"
    frame_size_mm: Optional[Tuple[float, float, float]] = None
    frame_margin_mm: float = 0.0
    batch_flips: bool = False

    def __post_init__(self) -> None:
        """Check the patch-frame settings (``ValueError`` naming the bad value)."""
        if self.patch_frame not in PATCH_FRAMES:
            raise ValueError(f"patch_frame must be one of {', '.join(PATCH_FRAMES)}, "
                             f"got {short_repr(self.patch_frame)}")
        if self.frame_size_mm is not None:
            size = check_numbers("frame_size_mm", self.frame_size_mm, length=3, minimum=0, open_minimum=True,
                                 what="three positive numbers (mm) or null")
            object.__setattr__(self, "frame_size_mm", size)
        object.__setattr__(self, "frame_margin_mm", check_number("frame_margin_mm", self.frame_margin_mm, minimum=0))
        if not isinstance(self.batch_flips, bool):
            raise ValueError(f"batch_flips must be true or false, got {short_repr(self.batch_flips)}")
        if self.patch_frame != "random" and self.flip_axes and not self.batch_flips:
            raise ValueError(f"patch_frame {self.patch_frame!r} puts every patch of a batch in one frame, which flips "
                             f"drawn per patch (flip_axes {list(self.flip_axes)}, batch_flips false) would undo: set "
                             f"batch_flips true (one set of flips per batch) or flip_axes [] (no flips)")


def _convert(settings: Any, cls: type, method: str) -> Any:
    if isinstance(settings, cls):
        return settings
    convert = getattr(settings, method, None)
    if not callable(convert):
        raise TypeError(f"expected {cls.__name__} or an object with {method}() (e.g. a TrainConfig), "
                        f"got {type(settings).__name__}")
    return convert()


def as_prepare_settings(settings: Any) -> PrepareSettings:
    """``settings`` as :class:`PrepareSettings`: itself, or the result of its ``prepare_settings()`` method."""
    return _convert(settings, PrepareSettings, "prepare_settings")


def as_sampling_settings(settings: Any) -> SamplingSettings:
    """``settings`` as :class:`SamplingSettings`: itself, or the result of its ``sampling_settings()`` method."""
    return _convert(settings, SamplingSettings, "sampling_settings")
