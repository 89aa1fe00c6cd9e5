"""Seeds: from clicks to partial labels.

* :mod:`.geodesic` — geodesic distance transform (raster scan, numpy / torch), :mod:`.geodesic_reference`
  its exact Dijkstra reference;
* :mod:`.expansion` — seed expansion of seven-point clicks (:class:`~.expansion.ExpansionConfig`,
  :func:`~.expansion.expand_seeds`, seed precision / recall);
* :mod:`.extent` — the label-free foreground extent (``extent="auto"``) and the GeodisTK backend;
* :mod:`.preview` — the PNG preview of an expansion.
* :mod:`.random_walker` — random-walker pseudo labels: "Going to Extremes" extreme-point scribbles and labels,
  the bounding-box protocol, the §2.4 refinement of a prediction (:class:`~.random_walker.RandomWalkerConfig`).

Nothing here imports torch at import time.
"""
