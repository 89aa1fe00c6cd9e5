"""Slicer markups JSON (``<case>.mrk.json``) ↔ :class:`~PASegLib.annotations.CaseAnnotation`.

One fiducial markup per object, named after the object (``"name"``), with seven control points labelled
``F`` (foreground, inside the object) and ``R``, ``L``, ``A``, ``P``, ``I``, ``S`` (background point on that
side of the object). The file loads in Slicer's Markups module. Reading respects each markup's
``coordinateSystem`` (``LPS`` when absent, as Slicer does) and ``coordinateUnits`` (``mm`` or ``um``);
control points whose ``positionStatus`` is not ``defined`` are ignored. Control points with other labels
are accepted as background points whose side is inferred from the image geometry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .annotations import FOREGROUND, SIDE_NAMES, SIDES, AnnotationError, CaseAnnotation, make_object
from .atomic import PathLike, atomic_write_json
from .geometry import ImageGeometry, lps_to_ras

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
#: Control-point colours (RGB 0–1) of PASeg markups: foreground red-ish, background green.
_COLOR = [0.9, 0.4, 0.2]


def case_to_markups_dict(case: CaseAnnotation, *, coordinate_system: str = "LPS") -> Dict[str, Any]:
    """Markups JSON document (a ``dict``) for ``case``; positions in ``coordinate_system`` (LPS or RAS)."""
    cs = coordinate_system.upper()
    if cs not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    markups = []
    for obj in case.objects:
        points = []
        for n, (label, lps) in enumerate(obj.points().items(), start=1):
            position = lps if cs == "LPS" else lps_to_ras(lps)
            description = (
                "foreground: inside the object"
                if label == FOREGROUND
                else f"background: {SIDE_NAMES[label]} of the object"
            )
            points.append(
                {
                    "id": str(n),
                    "label": label,
                    "description": description,
                    "associatedNodeID": "",
                    "position": [float(v) for v in position],
                    "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                    "selected": True,
                    "locked": False,
                    "visibility": True,
                    "positionStatus": "defined",
                }
            )
        markups.append(
            {
                "type": "Fiducial",
                "name": obj.name,
                "coordinateSystem": cs,
                "coordinateUnits": "mm",
                "locked": False,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": len(points),
                "controlPoints": points,
                "measurements": [],
                "display": {"visibility": True, "pointLabelsVisibility": True, "selectedColor": _COLOR},
            }
        )
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}


def write_markups(path: PathLike, case: CaseAnnotation, *, coordinate_system: str = "LPS") -> Path:
    """Write ``case`` as a Slicer markups JSON file, atomically."""
    atomic_write_json(path, case_to_markups_dict(case, coordinate_system=coordinate_system))
    return Path(path)


def case_from_markups_dict(doc: Any, geometry: ImageGeometry, *, source: str = "markups") -> CaseAnnotation:
    """Parse a markups JSON document into a :class:`CaseAnnotation` (not yet validated against the image).

    Args:
        doc: the decoded JSON document.
        geometry: geometry of the annotated image; used to infer sides of unlabelled background points.
        source: name used in error messages (usually the file path).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("markups"), list):
        raise AnnotationError(f"{source}: not a Slicer markups JSON file (no 'markups' list)")
    objects = []
    for n, markup in enumerate(doc["markups"], start=1):
        if not isinstance(markup, dict):
            raise AnnotationError(f"{source}: markup #{n} is not an object")
        if markup.get("type", "Fiducial") != "Fiducial":
            raise AnnotationError(
                f"{source}: markup #{n} is a {markup.get('type')!r}; PASeg reads point lists (Fiducial)"
            )
        name = str(markup.get("name") or f"object {n}")
        cs = str(markup.get("coordinateSystem", "LPS")).upper()
        if cs not in ("LPS", "RAS"):
            raise AnnotationError(f"{source}: markup {name!r} has unknown coordinateSystem {cs!r}")
        units = markup.get("coordinateUnits", "mm")
        units = units[0] if isinstance(units, list) and units else units
        scale = {"mm": 1.0, "um": 1e-3}.get(str(units))
        if scale is None:
            raise AnnotationError(f"{source}: markup {name!r} has unsupported coordinateUnits {units!r}")
        fg: List[np.ndarray] = []
        bg: List[np.ndarray] = []
        sides: List[Optional[str]] = []
        for cp in markup.get("controlPoints", []):
            if cp.get("positionStatus", "defined") != "defined":
                continue
            try:
                pos = np.asarray(cp["position"], dtype=np.float64) * scale
            except (KeyError, TypeError, ValueError):
                raise AnnotationError(
                    f"{source}: markup {name!r} has a control point without a valid position"
                ) from None
            if pos.shape != (3,) or not np.all(np.isfinite(pos)):
                raise AnnotationError(
                    f"{source}: markup {name!r} has a control point with position {cp.get('position')!r}"
                )
            lps = pos if cs == "LPS" else lps_to_ras(pos)
            label = str(cp.get("label", "")).strip()
            if label == FOREGROUND:
                fg.append(lps)
            else:
                bg.append(lps)
                sides.append(label if label in SIDES else None)
        objects.append(make_object(name, foreground=fg, background=bg, geometry=geometry, sides=sides))
    return CaseAnnotation(objects)


def read_markups(path: PathLike, geometry: ImageGeometry) -> CaseAnnotation:
    """Read a ``.mrk.json`` file written by PASeg or Slicer (see module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"annotation file not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{p}: not valid JSON ({exc})") from None
    return case_from_markups_dict(doc, geometry, source=str(p))
