"""Scores and reports (numpy, scipy, matplotlib; no torch).

* :mod:`.metrics` — Dice, ASSD, HD95 (mm), precision, recall;
* :mod:`.report` — the HTML report of a run;
* :mod:`.figures` — its figures (case slices with contours, loss curves).
"""
