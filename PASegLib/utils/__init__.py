"""Shared helpers with no PASeg concepts (numpy and the standard library only).

* :mod:`.checks` — argument checks raising ``ValueError`` that name the argument, the value and what was expected;
* :mod:`.registry` — named registries (losses, networks, annotation kinds);
* :mod:`.atomic` — atomic file writes (temporary file + rename), stale temporary files, process liveness;
* :mod:`.version` — the package version.
* :mod:`.requirements` — the torch and MONAI versions PASeg supports (their floors and the check).
"""
