"""Training of PA-Seg models (imports torch, except :mod:`.config`).

* :mod:`.config` — :class:`~.config.TrainConfig`: every setting of a run (torch-free; it hands
  :class:`~PASegLib.data.settings.PrepareSettings` to data preparation);
* :mod:`.objective` — the stage-one loss (partial CE + Dice, mCRF, VM and the other protocols' terms);
* :mod:`.engine` — the training loop shared by both stages; :mod:`.stage1` and :mod:`.scm` (Self and Cross
  Monitoring, stage two) build on it; :mod:`.batches` — its batches, cut ahead in a background thread and sent
  to the device;
* :mod:`.validation` / :mod:`.selection` — held-out validation and the checkpoint selection rule;
* :mod:`.checkpoint` — atomic checkpoints and resume; :mod:`.curves` — the loss curves;
* :mod:`.runtime` — devices, seeding, sliding-window inference, stop-checking networks;
* :mod:`.distributed` — ``torch.distributed`` primitives; :mod:`.launch` — a training session (one process
  or the ranks of a process group).

Example::

    from PASegLib.training.config import TrainConfig
    from PASegLib.training.launch import train_from_dataset
    exit_code = train_from_dataset("cases/", "runs/unet2d5", TrainConfig(epochs=50, patch_size=(96, 96, 32)))
"""
