"""Interoperability with other tools (numpy, SimpleITK; torch where weights are read or run, through
:mod:`PASegLib.training` and :mod:`PASegLib.inference`).

* :mod:`.nnunet` — an nnU-Net v2 raw dataset of a PASeg dataset's pseudo labels (``paseg export nnunet``);
* :mod:`.package` — one-file model packages: writing, checking, extracting, loading (``paseg export model``);
* :mod:`.model_card` — the model card of a package (``card.json``; ``paseg show-model``);
* :mod:`.dicom_seg` — a prediction as a DICOM Segmentation of its source series (``paseg predict --dicom-seg``;
  needs the optional extra ``dicom``).
"""
