"""Training losses of PA-Seg and their registry.

* ``partial_ce_dice`` — :class:`~PASegLib.losses.partial.PartialCEDiceLoss`, Eq. 3–5 (labeled voxels only).
* ``variance`` — :class:`~PASegLib.losses.variance.VarianceMinimizationLoss`, Eq. 9–10.
* ``mcrf`` — :class:`~PASegLib.losses.crf.MultiViewCRFLoss`, the multi-view CRF loss (Eq. 6–8); its windowed
  bilateral Potts energy and gradient are computed by :mod:`PASegLib.losses.bilateral` (per offset on a CPU,
  in chunks of offsets on a GPU).
* ``kd`` — :class:`~PASegLib.losses.distillation.KnowledgeDistillationLoss`, Eq. 12–13 (stage 2).
* ``scm`` — :class:`~PASegLib.losses.distillation.SelfCrossMonitoringLoss`, Eq. 14–15 (stage 2; imports
  MONAI when built).
* ``box_prior`` — :class:`~PASegLib.losses.box_prior.BoxTightnessLoss`, optional stage-1 box-tightness prior of
  the click boxes (after Kervadec et al., MIDL 2020).
* ``contrastive_variance`` — :class:`~PASegLib.losses.contrastive_variance.ContrastiveVarianceLoss`, PSCV's
  contrastive variance loss in 3D (En & Guo, "Annotation by Clicks", Eq. 4–8).
* ``extreme_point`` — :class:`~PASegLib.losses.point_loss.ExtremePointLoss`, the point loss of "Going to
  Extremes" (Roth et al., Eq. 6–8); :func:`~PASegLib.data.clickmaps.gaussian_point_heatmap` makes its
  point channel.
* ``soft_ce`` — :class:`~PASegLib.losses.soft_ce.SoftCrossEntropyLoss`, cross-entropy with soft targets: the
  student's term on a teacher's soft pseudo labels (mixed supervision, paper 003).

Every loss names its arguments from one vocabulary — ``logits`` ``[B, C, I, J, K]`` (raw network outputs),
``labels`` ``[B, 1, …]`` (partial label map), ``valid`` ``[B, 1, …]`` (voxels that count), ``image``
``[B, Ch, …]`` (intensities), ``points``, ``boxes`` — and checks them with :mod:`PASegLib.losses.inputs`,
which documents the shapes, axis order and units.

:mod:`PASegLib.losses.schedule` holds the ramp-up and the stage-1 weights (α = 1.0, β = 0.1). Importing this
package imports torch; the top-level :mod:`PASegLib` package does not import it.

Example::

    from PASegLib.losses import LOSSES
    loss_fn = LOSSES.build("partial_ce_dice", ignore_index=2)
    loss = loss_fn(logits, labels, valid)   # logits [B, 2, I, J, K]; labels, valid [B, 1, I, J, K]
"""

from PASegLib.losses.box_prior import BoxTightnessLoss
from PASegLib.losses.contrastive_variance import ContrastiveVarianceLoss, contrastive_variance_terms
from PASegLib.losses.crf import MultiViewCRFLoss
from PASegLib.losses.distillation import KnowledgeDistillationLoss, SelfCrossMonitoringLoss
from PASegLib.losses.partial import PartialCEDiceLoss, partial_ce_dice_terms
from PASegLib.losses.point_loss import ExtremePointLoss, extreme_point_loss
from PASegLib.losses.schedule import Stage1LossWeights, sigmoid_rampup
from PASegLib.losses.soft_ce import SoftCrossEntropyLoss, soft_cross_entropy
from PASegLib.losses.variance import VarianceMinimizationLoss, above_minimum_mask, variance_minimization
from PASegLib.utils.registry import Registry

LOSSES = Registry("loss")
LOSSES.register("partial_ce_dice")(PartialCEDiceLoss)
LOSSES.register("variance")(VarianceMinimizationLoss)
LOSSES.register("mcrf")(MultiViewCRFLoss)
LOSSES.register("kd")(KnowledgeDistillationLoss)
LOSSES.register("scm")(SelfCrossMonitoringLoss)
LOSSES.register("box_prior")(BoxTightnessLoss)
LOSSES.register("contrastive_variance")(ContrastiveVarianceLoss)
LOSSES.register("extreme_point")(ExtremePointLoss)
LOSSES.register("soft_ce")(SoftCrossEntropyLoss)

__all__ = [
    "LOSSES",
    "BoxTightnessLoss",
    "ContrastiveVarianceLoss",
    "ExtremePointLoss",
    "KnowledgeDistillationLoss",
    "MultiViewCRFLoss",
    "PartialCEDiceLoss",
    "SelfCrossMonitoringLoss",
    "SoftCrossEntropyLoss",
    "Stage1LossWeights",
    "VarianceMinimizationLoss",
    "above_minimum_mask",
    "contrastive_variance_terms",
    "extreme_point_loss",
    "partial_ce_dice_terms",
    "sigmoid_rampup",
    "soft_cross_entropy",
    "variance_minimization",
]
