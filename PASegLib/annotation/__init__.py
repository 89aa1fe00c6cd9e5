"""What a radiologist gives per object, read, written, checked and simulated (numpy only).

* :mod:`.kinds` — pure data: the annotation kinds (:data:`~.kinds.ANNOTATION_KINDS`: ``seven_points`` (PA-Seg),
  ``extreme_points`` (Going to Extremes), ``single_point`` (PSCV), ``box`` (mixed supervision), ``dense``),
  their point labels, prompts and click counts; the side names;
* :mod:`.model` — :class:`~.model.ObjectAnnotation` / :class:`~.model.CaseAnnotation` (points in LPS mm; a box
  optionally oriented, e.g. along an oblique image's index axes), sides ↔ index axes, the point checks that need no
  image;
* :mod:`.validation` — checks against an image, and the voxel box of an object's clicks;
* :mod:`.markups` — Slicer markups JSON (``<case>.mrk.json``) and drafts;
* :mod:`.sevenpoints` — the official PA-Seg ``<case>_7points`` label maps;
* :mod:`.simulation` — clicks of every kind simulated from a ground-truth mask.
"""

from PASegLib.annotation.kinds import ANNOTATION_KINDS, AnnotationKind, get_kind, kind_names
from PASegLib.annotation.model import AnnotationError, CaseAnnotation, ObjectAnnotation, clicks_of

__all__ = ["ANNOTATION_KINDS", "AnnotationError", "AnnotationKind", "CaseAnnotation", "ObjectAnnotation", "clicks_of",
           "get_kind", "kind_names"]
