"""The widget's panels (:mod:`.annotationpanel`, :mod:`.jobpanel`), the loss curve plot (:mod:`.lossplot`) and the
Slicer application services the panels are given (:mod:`.app`). The panels take their collaborators (the logic,
parameter getters, the application services, a job-runner factory, callbacks), never the module widget, so they
run headless in tests. The top layer: imports jobs, annotation and mrml; nothing imports it but ``PASeg.py``."""
