"""Synthetic cases (an image and its label) for the demo and the tests (numpy, scipy).

* :mod:`.config` — :class:`~.config.SyntheticConfig`: shapes, sizes, noise;
* :mod:`.generator` — :func:`~.generator.write_synthetic_dataset`.
"""
