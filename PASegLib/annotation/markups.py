"""Slicer markups JSON (``<case>.mrk.json``) ↔ :class:`~PASegLib.annotation.model.CaseAnnotation`.

One fiducial markup per object, named after the object (``"name"``), with seven control points labelled
``F`` (foreground, inside the object) and ``R``, ``L``, ``A``, ``P``, ``I``, ``S`` (background point on that
side of the object). The file loads in Slicer's Markups module. Reading respects each markup's
``coordinateSystem`` (``LPS`` when absent, as Slicer does) and ``coordinateUnits`` (``mm`` or ``um``);
control points whose ``positionStatus`` is not ``defined`` are ignored, but an object left with fewer than
seven placed points is refused (the file and the object are named). Control points with other labels are
accepted as background points whose side is inferred from the image geometry.

Other annotation kinds (:mod:`PASegLib.annotation.kinds`) carry ``"pasegKind"`` on their markup (Slicer ignores
the key; absent = ``seven_points``): extreme points and a single point are fiducial markups whose control points
are labelled as the kind says (``R`` … ``S``; ``F`` and optional ``B``); a box is a Slicer ``ROI`` markup
(``center``, ``size``, ``orientation``: 9 numbers, row-major, whose columns are the box's axes in the markup's
coordinate system, as Slicer writes its ``ObjectToNode`` matrix; ``pasegKind`` optional) or a fiducial markup with
corners ``lo`` / ``hi``. An ROI keeps its orientation (:attr:`ObjectAnnotation.axes`; e.g. aligned with an
oblique image's index axes, so that its voxel box is tight); one without ``orientation``, or axis-aligned, reads
as before: the LPS box ``lo`` / ``hi`` (smallest, largest corner). A dense label is a fiducial markup without
control points whose ``pasegLabel`` names the label file (relative to the markups file; absent = the case's
``<case>_label``).

Drafts (:func:`write_draft_markups` / :func:`read_draft_markups`) are the same format for objects still
being annotated: points not placed yet are kept, as ``"positionStatus": "undefined"``, so a draft loads in
Slicer's Markups module with the points still to place. Training never reads drafts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from PASegLib.annotation.kinds import FOREGROUND, POINT_LABELS, SIDE_NAMES, SIDES, get_kind, kind_names
from PASegLib.annotation.model import (
    AnnotationError,
    CaseAnnotation,
    box_axes,
    box_corners,
    is_axis_aligned,
    make_object,
)
from PASegLib.image.geometry import ImageGeometry, lps_to_ras
from PASegLib.utils.atomic import PathLike, atomic_write_json
from PASegLib.utils.checks import short_repr

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
#: Control-point colours (RGB 0–1) of PASeg markups: foreground red-ish, background green.
_COLOR = [0.9, 0.4, 0.2]


def _control_point(n: int, label: str, position: Optional[np.ndarray], cs: str) -> Dict[str, Any]:
    """One control point; ``position`` (LPS) ``None`` is a point not placed yet (``positionStatus`` undefined)."""
    description = (
        "foreground: inside the object" if label == FOREGROUND
        else f"background: {SIDE_NAMES.get(label, label)} of the object"
    )  # fmt: skip
    placed = position is not None
    value = (position if cs == "LPS" else lps_to_ras(position)) if placed else np.zeros(3)
    return {
        "id": str(n),
        "label": label,
        "description": description,
        "associatedNodeID": "",
        "position": [float(v) for v in value],
        "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
        "selected": True,
        "locked": False,
        "visibility": True,
        "positionStatus": "defined" if placed else "undefined",
    }


def _markup(name: str, points: Sequence[Tuple[str, Optional[np.ndarray]]], cs: str) -> Dict[str, Any]:
    controls = [_control_point(n, label, pos, cs) for n, (label, pos) in enumerate(points, start=1)]
    return {
        "type": "Fiducial",
        "name": name,
        "coordinateSystem": cs,
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(controls),
        "controlPoints": controls,
        "measurements": [],
        "display": {"visibility": True, "pointLabelsVisibility": True, "selectedColor": _COLOR},
    }


def _coordinate_system(coordinate_system: str) -> str:
    cs = coordinate_system.upper()
    if cs not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    return cs


def _roi_markup(name: str, lo: np.ndarray, hi: np.ndarray, cs: str,
                axes: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """A Slicer ROI markup spanning the opposite LPS corners ``lo`` and ``hi``: along ``axes`` (LPS columns; written
    as Slicer's ``orientation``, a rotation: a reflected frame gets its third axis negated, the same box), else
    axis-aligned in ``cs``."""
    frame = np.eye(3) if axes is None else np.asarray(axes, dtype=np.float64).copy()
    if np.linalg.det(frame) < 0:
        frame[:, 2] = -frame[:, 2]
    center = (np.asarray(lo, dtype=np.float64) + np.asarray(hi, dtype=np.float64)) / 2.0
    size = np.abs(frame.T @ (np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)))
    if cs == "RAS":
        center = lps_to_ras(center)
        frame = np.diag([-1.0, -1.0, 1.0]) @ frame if axes is not None else frame  # RAS: rows 0, 1 negated
    doc = _markup(name, [], cs)
    doc.update({"type": "ROI", "pasegKind": "box", "roiType": "Box", "insideOut": False,
                "center": [float(v) for v in center], "size": [float(v) for v in size],
                "orientation": [float(v) for v in frame.ravel()]})
    doc["controlPoints"] = [_control_point(1, "center", center if cs == "LPS" else lps_to_ras(center), cs)]
    doc["controlPoints"][0]["description"] = "ROI centre"
    doc["lastUsedControlPointNumber"] = 1
    return doc


def object_to_markup(obj: Any, cs: str = "LPS") -> Dict[str, Any]:
    """The markup of one object (any kind); positions in ``cs``."""
    if obj.kind == "box":
        return _roi_markup(obj.name, obj.marks["lo"], obj.marks["hi"], cs, obj.axes)
    doc = _markup(obj.name, list(obj.points().items()), cs)
    if obj.kind != "seven_points":
        doc["pasegKind"] = obj.kind
        for cp in doc["controlPoints"]:
            cp["description"] = _kind_description(obj.kind, cp["label"])
    if obj.kind == "dense" and obj.label_file:
        doc["pasegLabel"] = obj.label_file
    return doc


def _kind_description(kind: str, label: str) -> str:
    return get_kind(kind).prompts.get(label, label)


def case_to_markups_dict(case: CaseAnnotation, *, coordinate_system: str = "LPS") -> Dict[str, Any]:
    """Markups JSON document (a ``dict``) for ``case``; positions in ``coordinate_system`` (LPS or RAS)."""
    cs = _coordinate_system(coordinate_system)
    return {"@schema": MARKUPS_SCHEMA, "markups": [object_to_markup(obj, cs) for obj in case.objects]}


def write_markups(path: PathLike, case: CaseAnnotation, *, coordinate_system: str = "LPS") -> Path:
    """Write ``case`` as a Slicer markups JSON file, atomically."""
    atomic_write_json(path, case_to_markups_dict(case, coordinate_system=coordinate_system))
    return Path(path)


def _markup_frame(markup: Any, n: int, source: str) -> Tuple[str, str, float]:
    """(name, coordinate system, scale to mm) of markup ``#n``; raises on what PASeg cannot read."""
    if not isinstance(markup, dict):
        raise AnnotationError(f"{source}: markup #{n} is {_json_type(markup)}, not a JSON object")
    if markup.get("type", "Fiducial") not in ("Fiducial", "ROI"):
        raise AnnotationError(f"{source}: markup #{n} is a {markup.get('type')!r}; PASeg reads point lists (Fiducial) "
                              "and boxes (ROI)")
    name = str(markup.get("name") or f"object {n}")
    cs = str(markup.get("coordinateSystem", "LPS")).upper()
    if cs not in ("LPS", "RAS"):
        raise AnnotationError(f"{source}: markup {name!r} has unknown coordinateSystem {cs!r}")
    units = markup.get("coordinateUnits", "mm")
    units = units[0] if isinstance(units, list) and units else units
    scale = {"mm": 1.0, "um": 1e-3}.get(str(units))
    if scale is None:
        raise AnnotationError(f"{source}: markup {name!r} has unsupported coordinateUnits {units!r}")
    return name, cs, scale


def _position_lps(cp: Any, name: str, cs: str, scale: float, source: str) -> np.ndarray:
    try:
        pos = np.asarray(cp["position"], dtype=np.float64) * scale
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(f"{source}: markup {name!r} has a control point without a valid position") from None
    if pos.shape != (3,) or not np.all(np.isfinite(pos)):
        raise AnnotationError(f"{source}: markup {name!r} has a control point with position {cp.get('position')!r}")
    return pos if cs == "LPS" else lps_to_ras(pos)


def _is_placed(cp: Any) -> bool:
    return isinstance(cp, dict) and cp.get("positionStatus", "defined") == "defined"


def _check_doc(doc: Any, source: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("markups"), list):
        raise AnnotationError(f"{source}: not a Slicer markups JSON file (no 'markups' list)")


def _json_type(value: Any) -> str:
    """A JSON value in a few words: ``null``, ``a number (5)``, ``a string ('x')``, ``a list of 3 items`` …"""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"a number ({short_repr(value, 60)})"
    if isinstance(value, str):
        return f"a string ({short_repr(value, 60)})"
    return f"a list of {len(value)} items" if isinstance(value, list) else "an object"


def _control_points(markup: Dict[str, Any], n: int, name: str, source: str) -> List[Dict[str, Any]]:
    """The control points of markup ``#n``: a list of JSON objects, or an error naming what it is instead."""
    points = markup.get("controlPoints", [])
    where = f"{source}: markup #{n} ({short_repr(name, 60)})"
    if not isinstance(points, list):
        raise AnnotationError(f"{where}: controlPoints is {_json_type(points)}; expected a list of control points")
    for k, point in enumerate(points, start=1):
        if not isinstance(point, dict):
            raise AnnotationError(f"{where}: control point #{k} is {_json_type(point)}, not a JSON object")
    return points


def case_from_markups_dict(doc: Any, geometry: ImageGeometry, *, source: str = "markups") -> CaseAnnotation:
    """Parse a markups JSON document into a :class:`CaseAnnotation` (not yet validated against the image).

    Strict (what training reads): an object whose points are not all placed is refused, naming ``source`` and
    the object. Drafts, which may hold unplaced points, are read by :func:`drafts_from_markups_dict`.

    Args:
        doc: the decoded JSON document.
        geometry: geometry of the annotated image; used to infer sides of unlabelled background points.
        source: name used in error messages (usually the file path).
    """
    _check_doc(doc, source)
    objects = []
    for n, markup in enumerate(doc["markups"], start=1):
        name, cs, scale = _markup_frame(markup, n, source)
        kind = markup_kind(markup, name, source)
        if kind != "seven_points":
            objects.append(_kind_object(markup, kind, n, name, cs, scale, source))
            continue
        fg: List[np.ndarray] = []
        bg: List[np.ndarray] = []
        sides: List[Optional[str]] = []
        unplaced: List[str] = []
        for cp in _control_points(markup, n, name, source):
            if not _is_placed(cp):
                unplaced.append(str(cp.get("label", "?")))
                continue
            lps = _position_lps(cp, name, cs, scale, source)
            label = str(cp.get("label", "")).strip()
            if label == FOREGROUND:
                fg.append(lps)
            else:
                bg.append(lps)
                sides.append(label if label in SIDES else None)
        if unplaced and (len(fg) != 1 or len(bg) != len(SIDES)):
            raise AnnotationError(
                f"{source}: markup {name!r} is incomplete: point(s) {', '.join(unplaced)} not placed "
                f"({len(fg) + len(bg)} of 7 placed); an annotation for training needs all 7 points (finish the "
                "tumor in PASeg: an incomplete one is saved as a draft in the work folder)"
            )
        objects.append(make_object(name, foreground=fg, background=bg, geometry=geometry, sides=sides))
    return CaseAnnotation(objects)


def _kind_object(markup: Dict[str, Any], kind: str, n: int, name: str, cs: str, scale: float, source: str) -> Any:
    """An object of a kind other than seven points (see the module docstring)."""
    from PASegLib.annotation.model import ObjectAnnotation

    spec = get_kind(kind)
    if markup.get("type") == "ROI":
        marks, axes = roi_box(markup, name, cs, scale, source)
        return ObjectAnnotation(name, kind="box", marks=marks, axes=axes)
    points: Dict[str, np.ndarray] = {}
    unplaced: List[str] = []
    for cp in _control_points(markup, n, name, source):
        label = str(cp.get("label", "")).strip() if isinstance(cp, dict) else ""
        if not _is_placed(cp):
            unplaced.append(label or "?")
            continue
        if label not in spec.labels + spec.optional:
            raise AnnotationError(f"{source}: markup {name!r} ({spec.title}): control point label "
                                  f"{short_repr(label, 40)} is not one of {', '.join(spec.labels + spec.optional)}")
        if label in points:
            raise AnnotationError(f"{source}: markup {name!r} ({spec.title}): point {label} is given twice")
        points[label] = _position_lps(cp, name, cs, scale, source)
    missing = [lab for lab in spec.labels if lab not in points]
    if missing:
        raise AnnotationError(f"{source}: markup {name!r} ({spec.title}) is incomplete: point(s) "
                              f"{', '.join(missing)} not placed; it needs {', '.join(spec.labels)}")
    label_file = markup.get("pasegLabel") if kind == "dense" else None
    if label_file is not None and (not isinstance(label_file, str) or not label_file.strip()):
        raise AnnotationError(f"{source}: markup {name!r}: pasegLabel must be a file name, got "
                              f"{_json_type(label_file)}")
    if kind == "single_point":
        bg = {"B": points["B"]} if "B" in points else {}
        return ObjectAnnotation(name, points["F"], bg, kind=kind)
    return ObjectAnnotation(name, kind=kind, marks=points, label_file=label_file)


def _read_json(path: PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"annotation file not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{p}: not valid JSON ({exc})") from None
    except RecursionError:
        raise AnnotationError(f"{p}: not a usable JSON file: it is nested too deeply") from None


def read_markups(path: PathLike, geometry: ImageGeometry) -> CaseAnnotation:
    """Read a ``.mrk.json`` file written by PASeg or Slicer (see module docstring)."""
    return case_from_markups_dict(_read_json(path), geometry, source=str(Path(path)))


# -- drafts: objects whose points may not all be placed yet ------------------------------------------------------
@dataclass
class DraftObject:
    """An object being annotated: label (``F R L A P I S``, or the labels of ``kind``) → LPS position, ``None``
    where not placed yet."""

    name: str
    points: Dict[str, Optional[np.ndarray]]
    kind: str = "seven_points"
    #: A box's orientation (``axes`` of :class:`~PASegLib.annotation.model.ObjectAnnotation`); ``None``: axis-aligned.
    axes: Optional[np.ndarray] = None

    @property
    def placed(self) -> int:
        return sum(p is not None for p in self.points.values())


def drafts_to_markups_dict(objects: Sequence[DraftObject], *, coordinate_system: str = "LPS") -> Dict[str, Any]:
    """Markups JSON for objects in progress: unplaced points are written with ``"positionStatus": "undefined"``
    (Slicer loads them as points still to be placed)."""
    cs = _coordinate_system(coordinate_system)
    markups = []
    for obj in objects:
        labels = _kind_labels(obj.kind)
        points = [(label, obj.points.get(label)) for label in labels]
        points += [(label, pos) for label, pos in obj.points.items() if label not in labels]
        markup = _markup(obj.name, points, cs)
        if obj.kind != "seven_points":
            markup["pasegKind"] = obj.kind
        if obj.kind == "box" and obj.axes is not None and all(obj.points.get(k) is not None for k in ("lo", "hi")):
            markup = _roi_markup(obj.name, obj.points["lo"], obj.points["hi"], cs, obj.axes)  # keeps its axes
        markups.append(markup)
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}


def write_draft_markups(path: PathLike, objects: Sequence[DraftObject]) -> Path:
    """Write objects in progress (complete or not) as Slicer markups JSON, atomically (LPS)."""
    atomic_write_json(path, drafts_to_markups_dict(objects))
    return Path(path)


def drafts_from_markups_dict(doc: Any, *, source: str = "markups") -> List[DraftObject]:
    """Parse a draft (or any PASeg markups file): each object's points by label, ``None`` where not placed.

    Every control point needs a label among ``F R L A P I S`` (or those of the markup's ``pasegKind``; each
    once), so that no click is silently lost. A box ROI markup becomes its two corners ``lo`` / ``hi``.
    """
    _check_doc(doc, source)
    objects = []
    for n, markup in enumerate(doc["markups"], start=1):
        name, cs, scale = _markup_frame(markup, n, source)
        kind = markup_kind(markup, name, source)
        if markup.get("type") == "ROI":
            marks, axes = roi_box(markup, name, cs, scale, source)
            objects.append(DraftObject(name, dict(marks), kind="box", axes=axes))
            continue
        points: Dict[str, Optional[np.ndarray]] = {label: None for label in _kind_labels(kind)}
        seen = set()
        for cp in _control_points(markup, n, name, source):
            label = str(cp.get("label", "")).strip()
            if label not in points or label in seen:
                problem = "repeated" if label in seen else "unknown"
                raise AnnotationError(
                    f"{source}: markup {name!r} has a control point with {problem} label {label!r}; "
                    f"a PASeg object has one point of each of {', '.join(_kind_labels(kind))}"
                )
            seen.add(label)
            points[label] = _position_lps(cp, name, cs, scale, source) if _is_placed(cp) else None
        objects.append(DraftObject(name, points, kind=kind))
    return objects


def _kind_labels(kind: str) -> Tuple[str, ...]:
    """The point labels of ``kind``, required then optional."""
    if kind == "seven_points":
        return POINT_LABELS
    spec = get_kind(kind)
    return spec.labels + spec.optional


def read_draft_markups(path: PathLike) -> List[DraftObject]:
    """Read a draft written by :func:`write_draft_markups` (or a complete PASeg ``.mrk.json``)."""
    return drafts_from_markups_dict(_read_json(path), source=str(Path(path)))


# -- the markup fields of the annotation kinds: the kind a markup holds, the LPS box of a Slicer ROI --------
def markup_kind(markup: Dict[str, Any], name: str, source: str) -> str:
    kind = markup.get("pasegKind", "box" if markup.get("type") == "ROI" else "seven_points")
    if kind not in kind_names():
        raise AnnotationError(f"{source}: markup {name!r} has unknown pasegKind {short_repr(kind, 60)}; kinds are "
                              f"{', '.join(kind_names())}")
    if markup.get("type") == "ROI" and kind != "box":
        raise AnnotationError(f"{source}: markup {name!r}: a {markup.get('type', 'Fiducial')} markup cannot hold "
                              f"kind {kind!r} (a box is an ROI markup or a fiducial with corners lo/hi)")
    return kind


def roi_box(markup: Dict[str, Any], name: str, cs: str, scale: float,
            source: str) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """``({"lo", "hi"}, axes)`` of a Slicer ROI (LPS): an oriented ROI its corners ``−−−`` and ``+++`` along its
    axes and ``axes`` (``(3, 3)``, columns, LPS); an axis-aligned one (or without ``orientation``) its smallest and
    largest corner and ``None``, as :class:`~PASegLib.annotation.model.ObjectAnnotation` stores a box."""
    try:
        center = np.asarray(markup["center"], dtype=np.float64) * scale
        size = np.asarray(markup["size"], dtype=np.float64) * scale
        axes = np.asarray(markup.get("orientation", np.eye(3).ravel()), dtype=np.float64).reshape(3, 3)
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(f"{source}: ROI markup {name!r} needs numeric 'center' (3), 'size' (3) and "
                              "'orientation' (9)") from None
    if center.shape != (3,) or size.shape != (3,) or not np.all(np.isfinite(np.r_[center, size, axes.ravel()])):
        raise AnnotationError(f"{source}: ROI markup {name!r} has a malformed center/size/orientation")
    if np.any(size <= 0):
        raise AnnotationError(f"{source}: ROI markup {name!r} has size {size.tolist()}; every side must be > 0")
    if cs == "RAS":
        center, axes = lps_to_ras(center), np.diag([-1.0, -1.0, 1.0]) @ axes
    try:
        axes = box_axes(axes, f"{source}: ROI markup {name!r} orientation")
    except AnnotationError as exc:
        raise AnnotationError(f"{exc}; Slicer writes a rotation (9 numbers, row-major)") from None
    lo, hi = center - axes @ (size / 2.0), center + axes @ (size / 2.0)
    if is_axis_aligned(axes):
        corners = box_corners(lo, hi, axes)
        return {"lo": corners.min(axis=0), "hi": corners.max(axis=0)}, None
    return {"lo": lo, "hi": hi}, axes
