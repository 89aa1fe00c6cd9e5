"""The torch and MONAI versions PASeg supports: the one home of the floors (standard library only).

* torch ≥ :data:`MINIMUM_TORCH`: the first release with ``torch.amp.GradScaler("cuda")``, which every trainer
  builds (on the CPU too).
* MONAI ≥ :data:`MINIMUM_MONAI`: the oldest release the test suite has run with. Below it pip could fall back,
  under a constraints file that pins an older torch (as the Slicer module's installs do), to a MONAI that PASeg
  never ran with. MONAI's newer releases need newer torch releases themselves (1.5: torch ≥ 2.4.1, 1.6: torch
  ≥ 2.8), so pip picks the newest MONAI that fits the installed torch.

``pyproject.toml`` (``[project.optional-dependencies] train``, which cannot import this module), the Slicer
module's dependency check and the README state the same ranges; ``Testing/Python/utils/test_requirements.py``
keeps the four in agreement. Versions are read from the installed packages' metadata: nothing here imports torch
or MONAI.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["MINIMUM_MONAI", "MINIMUM_TORCH", "MINIMUMS", "REASONS", "check_supported_versions",
           "installed_version", "requirement_spec", "unsupported_versions", "version_tuple"]

#: The oldest torch PASeg runs with.
MINIMUM_TORCH = "2.3"
#: The oldest MONAI PASeg runs with.
MINIMUM_MONAI = "1.4"
#: Distribution name → the oldest supported version.
MINIMUMS: Dict[str, str] = {"torch": MINIMUM_TORCH, "monai": MINIMUM_MONAI}
#: Why each floor is where it is (said when an older version is found).
REASONS: Dict[str, str] = {
    "torch": 'torch.amp.GradScaler("cuda"), which training uses, first exists in torch 2.3',
    "monai": f"MONAI {MINIMUM_MONAI} is the oldest release PASeg is tested with",
}


def version_tuple(version: str) -> Tuple[int, ...]:
    """``"2.13.0+cu121"`` → ``(2, 13, 0)``: the leading release numbers (enough to compare with a floor).

    Raises:
        ValueError: ``version`` does not start with a release number.
    """
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if not match:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def requirement_spec(name: str) -> str:
    """The pip requirement of ``name`` (``"torch>=2.3"``), as ``pyproject.toml`` declares it."""
    if name not in MINIMUMS:
        raise ValueError(f"name must be one of {', '.join(MINIMUMS)}, got {name!r}")
    return f"{name}>={MINIMUMS[name]}"


def installed_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name`` (from its metadata, without importing it), or ``None``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unsupported_versions(version_of: Callable[[str], Optional[str]] = installed_version) -> List[str]:
    """One message per installed torch / MONAI older than its floor (missing packages are not reported here).

    Args:
        version_of: ``version_of(distribution) -> version or None`` (default: the installed metadata).
    """
    problems = []
    for name, minimum in MINIMUMS.items():
        version = version_of(name)
        if version is None:
            continue
        try:
            old = version_tuple(version) < version_tuple(minimum)
        except ValueError:  # a version we cannot read is not refused
            continue
        if old:
            problems.append(f"{name} {version} is installed, but PASeg needs {name} {minimum} or newer "
                            f"({REASONS[name]}); upgrade it: pip install '{requirement_spec(name)}'")
    return problems


def check_supported_versions(version_of: Callable[[str], Optional[str]] = installed_version) -> None:
    """Raise ``ValueError`` naming every installed torch / MONAI older than its floor (see
    :func:`unsupported_versions`)."""
    problems = unsupported_versions(version_of)
    if problems:
        raise ValueError("; ".join(problems))
