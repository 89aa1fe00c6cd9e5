"""Annotation kinds (issue 13): the protocols a radiologist can annotate with, and their simulation.

* :mod:`.kinds` — :data:`~.kinds.ANNOTATION_KINDS`: ``seven_points`` (PA-Seg), ``extreme_points`` (Going to
  Extremes), ``single_point`` (PSCV), ``box`` (mixed supervision), ``dense``; their point labels, placement
  prompts, click counts, checks and boxes;
* :mod:`.markups` — the kind a markup holds (``pasegKind``) and the box of a Slicer ROI markup;
* :mod:`.simulation` — clicks of every kind simulated from a ground-truth mask
  (:func:`~.simulation.simulate_kind_object`).

The seven-point data model (:mod:`PASegLib.annotations`), the markups reader/writer
(:mod:`PASegLib.markups_io`) and the seven-point simulation (:mod:`PASegLib.simulate`) predate this package
and stay where they are; they dispatch to it for the other kinds. numpy only.
"""

from .kinds import ANNOTATION_KINDS, AnnotationKind, clicks_of, get_kind, kind_names

__all__ = ["ANNOTATION_KINDS", "AnnotationKind", "clicks_of", "get_kind", "kind_names"]
