"""PASegLib — the pure-Python library behind the PASeg 3D Slicer extension.

PA-Seg (Zhai, Wang et al.) trains a 3D segmentation model from seven clicks per object: one point inside
the object and one outside each of its six sides. This package holds everything that does not need Slicer:
annotations and their file formats, geodesic seed expansion, metrics, image I/O, a synthetic data generator,
training and inference, and the ``paseg`` command line.

Conventions used throughout the package (every docstring refers to them):

* Image arrays are indexed ``[i, j, k]`` in ITK index order (``i`` runs along the image's first index
  axis, ``k`` is the slice axis), i.e. the transpose of ``SimpleITK.GetArrayFromImage``.
* World coordinates are millimetres in LPS (ITK/DICOM) unless a function says RAS (Slicer).
* Partial label maps use the official PA-Seg encoding: 0 = background, 1 = foreground, 2 = unlabeled.

Importing the package imports neither torch nor any Slicer module.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
