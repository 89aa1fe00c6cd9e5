"""Annotation on a scene: the annotation kinds on markups nodes (:mod:`.kinds`), a volume's object nodes and their
placement (:mod:`.objects`), dense cases (:mod:`.dense`), a case's annotation file (:mod:`.casefile`), drafts
(:mod:`.drafts`), the dataset's case list (:mod:`.cases`) and the module's logic on a scene (:mod:`.logic`).
Imports :mod:`PASegSlicer.mrml` only (layers: mrml ← annotation ← jobs ← gui)."""
