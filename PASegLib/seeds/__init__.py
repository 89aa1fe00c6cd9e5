"""Seeds: from clicks to partial labels (numpy, scipy, scikit-image).

* :mod:`.geodesic` — geodesic distance transform (raster scan, numpy / optional torch backend),
  :mod:`.geodesic_reference` its exact Dijkstra reference;
* :mod:`.expansion` — seed expansion of seven-point clicks (:class:`~.expansion.ExpansionConfig`,
  :func:`~.expansion.expand_seeds`, seed precision / recall);
* :mod:`.extent` — the label-free foreground extent (``extent="auto"``) and the GeodisTK backend;
* :mod:`.masks` — masks, boxes and input checks shared by the random-walker labels;
* :mod:`.random_walker` — the random walker (:class:`~.random_walker.RandomWalkerConfig`) and "Going to
  Extremes" extreme-point scribbles;
* :mod:`.random_walker_labels` — random-walker pseudo labels of extreme points and boxes, and the refinement of
  a prediction;
* :mod:`.pseudo_labels` — :func:`~.pseudo_labels.pseudo_label_map`: every object of a case by its kind;
* :mod:`.preview` — the PNG preview of an expansion.

Nothing here imports torch at import time.
"""
