"""Training of PA-Seg models: configuration, data preparation, stage one, SCM, checkpoints.

:mod:`PASegLib.training.config` is torch-free; the other modules import torch (the top-level package
``PASegLib`` never imports this subpackage).

Example::

    from PASegLib.training.config import TrainConfig
    from PASegLib.training.launch import train_from_dataset
    exit_code = train_from_dataset("cases/", "runs/unet2d5", TrainConfig(epochs=50, patch_size=(96, 96, 32)))
"""
