"""Integrity of image files, checked independently of ITK: a file cut short is refused with a message naming it.

ITK alone does not always notice a damaged file. Its NIfTI reader (``nifti1_io``) reads a ``.nii`` or
``.nii.gz`` whose voxel data is cut short without an error (the missing voxels become 0) and replaces NaN/±inf
voxels by 0; its MetaImage reader reports a truncated ``.mha`` as "No such file or directory".

* :func:`verify_nifti` reads a NIfTI file's raw voxel data itself: the header fields that locate the data
  (``sizeof_hdr``, ``dim``, ``datatype``, ``vox_offset``, ``scl_slope``/``scl_inter``; NIfTI-1 and NIfTI-2,
  either byte order), the whole gzip stream (every member's CRC), the byte count the header announces, and
  the positions of non-finite floats, which :func:`~PASegLib.image.io.read_image` puts back into the array
  ITK returns so that the callers' checks refuse them as for every other format.
* :func:`verify_metaimage` compares the byte count a MetaImage header announces with the file's (ITK keeps
  NaN in MHA and NRRD files, and reports truncated NRRD files itself).

Why the standard library (``zlib``, ``struct``) and numpy rather than nibabel: the check needs only those
header fields, which the NIfTI-1/2 standards fix; and ``read_image`` also runs inside Slicer's own Python for
the annotation workflow, where PASeg relies only on what Slicer bundles (numpy, scipy, SimpleITK; nibabel is
not among them), so a new dependency there would stop the annotation of NIfTI images on machines that cannot
install packages. numpy/stdlib only.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["ImageReadError", "verify_metaimage", "verify_nifti"]


class ImageReadError(ValueError):
    """An image file is missing, unreadable, truncated, or not a usable 3D image."""


# -- NIfTI -------------------------------------------------------------------------------
#: NIfTI datatype code → numpy dtype (without byte order) of one voxel; floats are checked for NaN/inf.
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 32: "c8", 64: "f8", 128: "V3", 256: "i1", 512: "u2",
                 768: "u4", 1024: "i8", 1280: "u8", 1536: "V16", 1792: "c16", 2048: "V32", 2304: "V4"}
_CHUNK_VOXELS = 1 << 22


def _nifti_layout(head: bytes, path: Path, role: str) -> Optional[Tuple[int, np.dtype, int, Tuple[float, float]]]:
    """``(data offset, voxel dtype, number of voxels, (scl_slope, scl_inter))`` of a single-file NIfTI-1/2
    header (``head``: the file's first 540 bytes), or ``None`` when it is not one (ITK then decides)."""
    if len(head) < 4:
        return None
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        return None
    if len(head) < size:
        raise ImageReadError(f"{role} file {path} is truncated: its NIfTI header is incomplete "
                             f"({len(head)} of {size} bytes)")
    if size == 348:
        dims = struct.unpack(endian + "8h", head[40:56])
        datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
        offset, slope, inter = struct.unpack(endian + "3f", head[108:120])
        single = head[344:347] == b"n+1"
    else:
        datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
        dims = struct.unpack(endian + "8q", head[16:80])
        offset = struct.unpack(endian + "q", head[168:176])[0]
        slope, inter = struct.unpack(endian + "2d", head[176:192])
        single = head[4:7] == b"n+2"
    if not single or not 1 <= dims[0] <= 7 or min(dims[1 : dims[0] + 1]) < 1:
        return None  # a header/image pair, or an impossible size: ITK reports it
    if datatype in _NIFTI_DTYPES:
        dtype = np.dtype(_NIFTI_DTYPES[datatype]).newbyteorder(endian)
    elif bitpix > 0 and bitpix % 8 == 0:
        dtype = np.dtype(f"V{bitpix // 8}")
    else:
        return None
    n_voxels = math.prod(dims[1 : dims[0] + 1])
    return max(int(offset), size + 4), dtype, n_voxels, (float(slope), float(inter))


class _FileBytes:
    """The bytes of a file, decompressed when it is gzip (every member, the CRC of each checked); ``read(n)``
    returns fewer than ``n`` bytes only at the end, and then ``truncated`` says whether a gzip stream ended
    early. Junk after the last gzip member is ignored, as ITK's reader ignores it."""

    BLOCK = 1 << 22

    def __init__(self, path: Path) -> None:
        self.file = open(path, "rb")
        self.inflater: Optional[Any] = zlib.decompressobj(31) if self.file.read(2) == b"\x1f\x8b" else None
        self.compressed, self.truncated, self.pending, self.buffer = self.inflater is not None, False, b"", b""
        self.file.seek(0)

    def __enter__(self) -> _FileBytes:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()

    def _next(self) -> bytes:
        """The next decompressed block; ``b""`` at the end. Raises ``zlib.error`` for damaged gzip data."""
        if not self.compressed:
            return self.file.read(self.BLOCK)
        while True:
            if not self.pending:
                self.pending = self.file.read(self.BLOCK)
                if not self.pending:
                    self.truncated = self.inflater is not None
                    return b""
            if self.inflater is None:  # between two gzip members
                self.pending = self.pending.lstrip(b"\0")
                if not self.pending:
                    continue
                if self.pending[:2] != b"\x1f\x8b":
                    self.pending = b""
                    return b""
                self.inflater = zlib.decompressobj(31)
            out = self.inflater.decompress(self.pending, self.BLOCK)
            self.pending = self.inflater.unconsumed_tail
            if self.inflater.eof:
                self.pending, self.inflater = self.inflater.unused_data, None
            if out:
                return out

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            block = self._next()
            if not block:
                break
            self.buffer += block
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def skip_to_end(self) -> None:
        """Read to the end (so that every gzip CRC is checked); sets ``truncated``."""
        self.buffer = b""
        while self._next():
            pass


def verify_nifti(path: Path, role: str) -> Optional[Tuple[np.ndarray, np.ndarray, Tuple[float, float]]]:
    """Check that a single-file NIfTI holds all its voxel data (and an intact gzip stream).

    Returns:
        ``None``, or ``(flat indices, values, (scl_slope, scl_inter))`` of its non-finite float voxels; flat
        indices in file order (i fastest), i.e. C order of ``SimpleITK.GetArrayFromImage``'s ``[k, j, i]``.

    Raises:
        ImageReadError: the file is truncated or its gzip stream is damaged (the message says which).
    """
    bad_index, bad_values = [], []
    try:
        with _FileBytes(path) as stream:
            head = stream.read(540)
            layout = _nifti_layout(head, path, role)
            if layout is None:
                return None
            offset, dtype, n_voxels, scaling = layout
            if offset <= len(head):
                stream.buffer = head[offset:] + stream.buffer
            else:
                stream.read(offset - len(head))  # header extensions
            got, nbytes = 0, n_voxels * dtype.itemsize
            floats = dtype.kind == "f" and dtype.itemsize in (4, 8)
            while got < nbytes:
                chunk = stream.read(min(nbytes - got, _CHUNK_VOXELS * dtype.itemsize))
                if floats:
                    values = np.frombuffer(chunk[: len(chunk) - len(chunk) % dtype.itemsize], dtype=dtype)
                    bad = ~np.isfinite(values)
                    if bad.any():
                        bad_index.append(np.flatnonzero(bad) + got // dtype.itemsize)
                        bad_values.append(values[bad])
                got += len(chunk)
                if not chunk:
                    break
            if got < nbytes:
                what = "holds only its header, no voxel data" if got == 0 else \
                    f"holds {got} of the {nbytes} bytes of voxel data"
                raise ImageReadError(f"{role} file {path} is truncated: it {what} (its header announces {n_voxels} "
                                     f"voxels of {dtype.itemsize} bytes)"
                                     + ("; its gzip stream ends early" if stream.truncated else ""))
            stream.skip_to_end()
            if stream.truncated:
                raise ImageReadError(f"{role} file {path} is truncated: its gzip stream ends early (after the "
                                     "voxel data)")
    except zlib.error as exc:
        raise ImageReadError(f"{role} file {path} is damaged: its gzip data is not valid ({exc})") from None
    if not bad_index:
        return None
    return np.concatenate(bad_index), np.concatenate(bad_values).astype(np.float64), scaling


#: MetaImage ``ElementType`` → bytes per value (MetaIO's sizes).
_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def verify_metaimage(path: Path, role: str) -> None:
    """Check that a binary MetaImage (``.mha`` / ``.mhd`` + data file) holds the bytes its header announces."""
    with open(path, "rb") as f:
        text = f.read(1 << 16)
    fields, end = {}, None
    for match in re.finditer(rb"([^\r\n]*)(\r?\n|$)", text):
        key, sep, value = match.group(1).decode("latin-1").partition("=")
        if sep:
            fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            end = match.end()
            break
    if end is None or fields.get("BinaryData", "True").lower() == "false":
        return  # not a MetaImage header PASeg can check: ITK decides
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        expected = math.prod(dims) * channels * _MET_SIZES[fields["ElementType"]]
    except (KeyError, ValueError):
        return
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if compressed:
        try:
            expected = int(fields["CompressedDataSize"])
        except (KeyError, ValueError):
            return
    name = fields["ElementDataFile"]
    if name == "LOCAL":
        data, available = path, path.stat().st_size - end
    elif "%" in name or " " in name or name.upper().startswith("LIST"):
        return
    else:
        data = path.parent / name
        if not data.is_file():
            raise ImageReadError(f"{role} file {path}: its voxel data file {data} is missing")
        available = data.stat().st_size - max(0, int(fields.get("HeaderSize", "0") or 0))
    if available < expected:
        raise ImageReadError(f"{role} file {data} is truncated: it holds {max(available, 0)} of the {expected} "
                             f"bytes of {'compressed ' if compressed else ''}voxel data its header announces")
