"""Datasets and the prepared cases training and prediction read (numpy only; no torch, no training code).

* :mod:`.dataset` — dataset folders: ``<case>_image``, ``<case>_label``, clicks; :func:`~.dataset.load_case`;
* :mod:`.settings` — :class:`~.settings.PrepareSettings` / :class:`~.settings.SamplingSettings`: what training
  hands to data preparation and patch sampling;
* :mod:`.prepared` — :func:`~.prepared.prepare_case` (clicks → partial labels on the training grid) and
  :func:`~.prepared.preprocess_image` (the network input, identical in training and prediction); the split;
* :mod:`.cache` — the prepared-data cache (entries keyed by the inputs and the settings);
* :mod:`.prepare` — a cohort prepared by worker processes, with progress and stop;
* :mod:`.streaming` — cases read from the cache when needed (bounded memory, prefetch);
* :mod:`.sampler` — random training patches;
* :mod:`.clickmaps` — the clicks as Gaussian heatmaps (the click channel of a click-conditioned network).
"""
