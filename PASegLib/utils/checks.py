"""Argument checks shared by the configs, losses and generators: one wording for every ``ValueError``.

Each check returns the value converted (``int`` / ``float`` / ``tuple``) and raises ``ValueError`` naming the
argument, the rule and the bad value, e.g. ``"epochs must be an integer >= 1, got 0"``; a long value is
shortened in the message (:func:`short_repr`), so a 100 MB setting is not echoed in full. Booleans are never
accepted as numbers. numpy only.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Tuple

import numpy as np

__all__ = ["check_int", "check_number", "check_numbers", "check_spacing", "dataclass_from_dict", "short_repr"]

#: Characters of a value shown in an error message (:func:`short_repr`).
SHORT_REPR_LIMIT = 200


def short_repr(value: Any, limit: int = SHORT_REPR_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with a note of the full length when longer (error messages
    echo the bad value; a huge one must not flood the terminal or the error event)."""
    if isinstance(value, (str, bytes)) and len(value) > limit:  # without copying a huge string
        return f"{repr(value[:limit])[: limit - 1]}… ({len(value)} characters)"
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested value
        return f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def check_int(name: str, value: Any, *, minimum: Optional[int] = None, unit: str = "") -> int:
    """``value`` as an ``int`` (Python or numpy integer, not bool), at least ``minimum`` when given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (minimum is not None and value < minimum):
        rule = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (f" ({unit})" if unit else "")
        raise ValueError(f"{name} must be {rule}, got {short_repr(value)}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 open_minimum: bool = False, open_maximum: bool = False) -> float:
    """``value`` as a finite ``float`` (int or float, not bool) inside the given bounds.

    Args:
        minimum, maximum: the bounds (``None``: unbounded on that side).
        open_minimum, open_maximum: exclude the bound itself (``> minimum`` rather than ``>= minimum``).
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if open_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if open_maximum else value <= maximum
    if not ok:
        if minimum is not None and maximum is not None:
            rule = f"a number in {'(' if open_minimum else '['}{minimum}, {maximum}{')' if open_maximum else ']'}"
        elif minimum is not None:
            rule = f"a finite number {'>' if open_minimum else '>='} {minimum}"
        elif maximum is not None:
            rule = f"a finite number {'<' if open_maximum else '<='} {maximum}"
        else:
            rule = "a finite number"
        raise ValueError(f"{name} must be {rule}, got {short_repr(value)}")
    return float(value)


def check_numbers(name: str, value: Any, *, length: int, cast: Callable[[Any], Any] = float,
                  minimum: Optional[float] = None, open_minimum: bool = False, what: str = "") -> Tuple[Any, ...]:
    """``value`` as a tuple of ``length`` finite numbers converted by ``cast`` (``int`` or ``float``).

    With ``cast=int`` a non-integral number (``2.5``) is refused rather than truncated. ``what`` describes the
    rule in the message (default: "``length`` integers/numbers [>= minimum]").
    """
    try:
        items = tuple(value)
        out = tuple(cast(v) for v in items)
        ok = len(out) == length and all(not isinstance(v, bool) and math.isfinite(float(v)) for v in items)
        if ok and cast is int:
            ok = all(float(o) == float(v) for o, v in zip(out, items))
        if ok and minimum is not None:
            ok = all(o > minimum if open_minimum else o >= minimum for o in out)
    except (TypeError, ValueError, OverflowError, RecursionError):
        ok = False
    if not ok:
        if not what:
            what = f"{length} {'integers' if cast is int else 'finite numbers'}"
            if minimum is not None:
                what += f" {'>' if open_minimum else '>='} {minimum}"
        raise ValueError(f"{name} must be {what}, got {short_repr(value)}")
    return out


def check_spacing(value: Any, *, name: str = "spacing") -> Tuple[float, float, float]:
    """A voxel size ``(s_i, s_j, s_k)`` in mm: three positive finite numbers (a sequence or an array)."""
    try:
        values = tuple(float(s) for s in np.asarray(value, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be three positive finite numbers (mm), got {short_repr(value)}")
    return values  # type: ignore[return-value]


def dataclass_from_dict(cls: Any, data: Any, what: str) -> Any:
    """``cls(**data)`` for a dataclass ``cls``; unknown keys raise ``ValueError`` naming them (``what``: e.g.
    "expansion" → "unknown expansion setting(s): …")."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} settings must be a JSON object, got {short_repr(data)}")
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}")
    return cls(**data)
