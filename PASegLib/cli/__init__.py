"""The ``paseg`` command line (``paseg --help``); also runs as ``python -m PASegLib``."""
