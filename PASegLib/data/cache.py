"""The prepared-data cache: one uncompressed ``.npz`` entry per case, read by memory-mapping its arrays.

An entry ``<cache>/<case>-<key>.npz`` holds ``image`` (float32), ``partial`` (uint8), ``valid`` (bool), the
optional ``label`` (uint8), all ``[I, J, K]`` on the training grid, per object ``clicks_<n>`` (float64
``(7, 3)``) and ``box_<n>`` (int ``(2, 3)``), and ``meta`` (JSON: geometries, number of objects). ``key`` hashes the
input files (resolved path, size, mtime) and every setting that changes the prepared arrays, so an entry is
valid for exactly the inputs and settings it was made from. Entries are written atomically
(:func:`~PASegLib.utils.atomic.atomic_path`): a reader sees a whole entry or none, and two writers of one entry (two
trainers sharing the cache) simply replace each other's identical file.

``np.savez`` stores every array uncompressed (``ZIP_STORED``), so each array's bytes lie contiguously in the
file: :func:`inspect_entry` locates them from the zip directory and the ``.npy`` headers (reading only the
small members: metadata, clicks, boxes) and checks their shapes; :func:`read_entry` memory-maps them
(``numpy.memmap`` at the member's offset) and copies them into memory. ``np.load(mmap_mode=...)`` cannot
map members of an ``.npz``, hence the offsets. A member stored compressed (an entry written by another tool)
is read with ``np.load`` instead. numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from PASegLib.data.dataset import CaseFiles
from PASegLib.data.prepared import PreparedCase
from PASegLib.data.settings import PrepareSettings, as_prepare_settings
from PASegLib.image.geometry import ImageGeometry
from PASegLib.utils.atomic import atomic_path
from PASegLib.utils.version import __version__

__all__ = ["DAMAGED", "EntryInfo", "cache_key", "entry_path", "inspect_entry", "read_entry", "save_entry"]

#: What reading a damaged cache entry can raise (truncated or foreign zip, missing arrays, bad metadata).
DAMAGED = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, struct.error, zipfile.BadZipFile)
#: The large per-voxel arrays of an entry (memory-mapped); everything else is read whole.
VOXEL_ARRAYS = ("image", "partial", "valid", "label")


def _file_key(path: Optional[Path]) -> List:
    if path is None:
        return [None]
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def _expansion_key(expansion) -> object:
    """The expansion settings as the key holds them (plain seeds: without the ``fill*`` keys, as before the fill)."""
    if not isinstance(expansion, dict):
        return expansion
    from PASegLib.seeds.expansion import ExpansionConfig

    try:
        return ExpansionConfig.from_dict(expansion).cache_dict()
    except (TypeError, ValueError):
        return expansion  # preparation names what is wrong with it


def cache_key(files: CaseFiles, config: PrepareSettings) -> str:
    """20 hex digits hashing the case's input files (resolved path, size, mtime) and the preparation settings
    (PASeg version, ``expansion``, ``target_spacing_mm``)."""
    config = as_prepare_settings(config)
    parts = {
        "version": __version__,
        "files": [_file_key(p) for p in (files.image, files.label, files.markups, files.seven_points)],
        "expansion": _expansion_key(config.expansion),  # as preparation reads it (the defaults filled in)
        "target_spacing_mm": config.target_spacing_mm,
    }
    # the settings and files of the other annotation kinds, only where they apply (seven-point keys unchanged):
    # the resolved random-walker settings, so that a change of their defaults is a new entry too
    text = _markups_text(files)
    expansion = _expansion_key(config.expansion)
    fill = isinstance(expansion, dict) and expansion.get("fill", "none") != "none"  # seven points filled by the RW
    if config.random_walker or fill or "pasegKind" in text or '"ROI"' in text:
        from PASegLib.seeds.random_walker import RandomWalkerConfig

        parts["random_walker"] = RandomWalkerConfig.from_dict(config.random_walker).to_dict()
        parts["point_radius_mm"] = config.point_radius_mm
    extra = [_file_key(p) for p in _protocol_files(files, config, text)]
    if extra:
        parts["protocol_files"] = extra
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _markups_text(files: CaseFiles) -> str:
    """The case's markups file as text ("" when it has none), read once per key."""
    if files.markups is None or not Path(files.markups).is_file():
        return ""
    return Path(files.markups).read_text(encoding="utf-8", errors="replace")


def _protocol_files(files: CaseFiles, config: PrepareSettings, text: str) -> List[Path]:
    """Inputs beyond the case files: a previous round's pseudo labels or a teacher's soft labels, a dense object's
    ``pasegLabel`` file (named in the markups ``text``)."""
    out = []
    if config.pseudo_labels is not None:
        for suffix in ("_pseudo.nii.gz", "_soft.nii.gz"):
            pseudo = Path(config.pseudo_labels) / f"{files.case_id}{suffix}"
            if pseudo.is_file():
                out.append(pseudo)
    if "pasegLabel" in text:
        try:
            for markup in json.loads(text).get("markups", []):
                name = markup.get("pasegLabel") if isinstance(markup, dict) else None
                if isinstance(name, str) and (Path(files.markups).parent / name).is_file():
                    out.append(Path(files.markups).parent / name)
        except (ValueError, AttributeError, RecursionError):
            pass  # the reader names what is wrong with the file when the case is prepared
    return out


def entry_path(cache_dir: Path, files: CaseFiles, config: PrepareSettings) -> Path:
    """The cache entry of ``files`` prepared with ``config``: ``cache_dir/<case>-<key>.npz``."""
    config = as_prepare_settings(config)
    return Path(cache_dir) / f"{files.case_id}-{cache_key(files, config)}.npz"


def save_entry(path: Path, case: PreparedCase) -> None:
    """Write ``case`` to the entry ``path`` atomically (uncompressed ``.npz``)."""
    meta = {"case_id": case.case_id, "geometry": case.geometry.to_dict(),
            "source_geometry": case.source_geometry.to_dict(), "n_objects": len(case.clicks)}
    if case.kinds is not None:
        meta["kinds"] = list(case.kinds)
    arrays = {"image": case.image, "partial": case.partial, "valid": case.valid,
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for n, (clicks, (lo, hi)) in enumerate(zip(case.clicks, case.boxes)):
        arrays[f"clicks_{n}"], arrays[f"box_{n}"] = clicks, np.stack([lo, hi])
    if case.label is not None:
        arrays["label"] = case.label
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


@dataclass
class EntryInfo:
    """What :func:`inspect_entry` read of an entry: everything but the voxel arrays, and where those lie.

    Attributes:
        path: the entry.
        clicks, boxes, geometry, source_geometry: as in :class:`~PASegLib.data.prepared.PreparedCase`.
        layout: voxel array name → ``(offset, dtype, shape, fortran_order)`` of its bytes in the file, or
            ``None`` for a member stored compressed (read with ``np.load``).
        nbytes: bytes of the voxel arrays in memory.
    """

    path: Path
    clicks: List[np.ndarray]
    boxes: List[Tuple[np.ndarray, np.ndarray]]
    geometry: ImageGeometry
    source_geometry: ImageGeometry
    layout: Dict[str, Optional[Tuple[int, np.dtype, Tuple[int, ...], bool]]]
    nbytes: int
    kinds: Optional[List[str]] = None

    @property
    def has_label(self) -> bool:
        return "label" in self.layout


def _member_layout(handle, info: zipfile.ZipInfo, size: int) -> Optional[Tuple[int, np.dtype, Tuple[int, ...], bool]]:
    """``(offset, dtype, shape, fortran_order)`` of the array bytes of a stored ``.npy`` member."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    handle.seek(info.header_offset)
    local = handle.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"bad local header of member {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    handle.seek(start)
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    offset = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"member {info.filename} holds Python objects")
    end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end > start + info.file_size or end > size:
        raise ValueError(f"member {info.filename} is truncated")
    return offset, dtype, tuple(int(n) for n in shape), bool(fortran)


def inspect_entry(path: Path) -> EntryInfo:
    """Read an entry's metadata, clicks and boxes and locate its voxel arrays (their bytes are not read).

    Raises:
        One of :data:`DAMAGED` for a damaged entry: not a zip, truncated, members missing, shapes that do not
        match the recorded grid.
    """
    path = Path(path)
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}

        def small(name: str) -> np.ndarray:
            with archive.open(members[name].filename) as member:
                return np.lib.format.read_array(member, allow_pickle=False)

        meta = json.loads(bytes(small("meta")).decode())
        n = int(meta["n_objects"])
        clicks = [small(f"clicks_{i}") for i in range(n)]
        boxes = []
        for i in range(n):
            box = small(f"box_{i}")
            boxes.append((box[0], box[1]))
        geometry = ImageGeometry.from_dict(meta["geometry"])
        source = ImageGeometry.from_dict(meta["source_geometry"])
        layout = {name: _member_layout(handle, members[name], size)
                  for name in VOXEL_ARRAYS if name in members or name != "label"}
    nbytes = 0
    for name, where in layout.items():
        if where is None:
            with np.load(path, allow_pickle=False) as data:
                shape, itemsize = data[name].shape, data[name].dtype.itemsize
        else:
            shape, itemsize = where[2], where[1].itemsize
        if tuple(shape) != tuple(geometry.shape):
            raise ValueError("arrays do not match the recorded grid")
        nbytes += int(np.prod(shape, dtype=np.int64)) * itemsize
    kinds = meta.get("kinds")
    if kinds is None and any(np.shape(c) != (7, 3) for c in clicks):
        raise ValueError("clicks are not (7, 3) arrays")
    if kinds is not None and (len(kinds) != n or any(np.ndim(c) != 2 or np.shape(c)[1] != 3 for c in clicks)):
        raise ValueError("clicks or kinds do not match the objects")
    return EntryInfo(path, clicks, boxes, geometry, source, layout, nbytes, kinds)


def read_entry(info: EntryInfo, case_id: str) -> PreparedCase:
    """The voxel arrays of the entry ``info`` memory-mapped and copied into memory: a :class:`PreparedCase`.

    Raises:
        One of :data:`DAMAGED` when the file changed since it was inspected (shorter, replaced by a damaged one).
    """
    arrays: Dict[str, np.ndarray] = {}
    for name, where in info.layout.items():
        if where is None:
            with np.load(info.path, allow_pickle=False) as data:
                arrays[name] = data[name]
            continue
        offset, dtype, shape, fortran = where
        mapped = np.memmap(info.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                           order="F" if fortran else "C")
        arrays[name] = np.array(mapped, order="C")  # a copy in memory; the mapping is closed with ``mapped``
        del mapped
    return PreparedCase(case_id, arrays["image"], arrays["partial"], arrays["valid"], list(info.clicks),
                        list(info.boxes), arrays.get("label"), info.geometry, info.source_geometry, info.kinds)
