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

__all__ = ["PrepareSettings", "SamplingSettings", "as_prepare_settings", "as_sampling_settings"]


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
