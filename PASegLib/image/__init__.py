"""Images: geometry, files, integrity checks and resampling (numpy, SimpleITK, scipy).

* :mod:`.geometry` — :class:`~.geometry.ImageGeometry`: shape, spacing, origin, direction; index ↔ LPS mm;
* :mod:`.io` — :class:`~.io.Volume` and reading/writing NIfTI, NRRD and MetaImage (arrays ``[i, j, k]``);
* :mod:`.dicom` — reading one DICOM series of a folder into a :class:`~.io.Volume` (SimpleITK's series reader);
* :mod:`.integrity` — truncated or damaged files refused before SimpleITK reads them;
* :mod:`.resample` — resampling to a spacing or shape and intensity normalisation, shared by training and
  prediction.
"""
