"""Seconds and peak memory of the Slicer module's expansion preview on a large volume.

What is measured: :meth:`PASegSlicer.annotation.logic.PASegCoreLogic.expansionPreview` end to end in a
:class:`~PASegSlicer.mrml.headless.HeadlessSlicer` scene (real MRML, ``slicer-core`` wheel), and its parts
(``volumeFromNode``, ``pseudoLabelMap``, ``setLabelsToSegmentation``), on a synthetic MR-like int16 volume
(default 512×512×200 voxels ``[i, j, k]`` of 0.8×0.8×1.5 mm, LPS identity directions) holding two ellipsoid
tumours; the seven clicks of each clicked tumour are placed with ``annotation.addObjectNode`` /
``setControlPoint`` as ``PASegSlicer.selftest`` does.

* ``first``: a preview that creates the preview segmentation node (its node is removed before each repeat);
* ``replace``: the auto-preview case: one click (``F`` of tumour 1) moved by one voxel, preview again, so the
  node's three segments are replaced.

Variants, side by side in one run, each in its own child process:

* ``before``: :func:`_setLabelsToSegmentationReference`, a verbatim copy of ``setLabelsToSegmentation`` as it
  was before the preview was made box by box (one full-volume mask, ``np.argwhere`` and ``SetBinaryLabelmapToSegment`` per segment);
* ``after``: the current :func:`PASegSlicer.mrml.segments.setLabelsToSegmentation`.

Times are medians over ``--repeats`` previews after one untimed warm-up. Memory, per child process:
``tracemalloc`` peak (numpy and Python allocations; VTK's are invisible to it) of one preview, and the
process's peak resident set size increase over the preview: the kernel's high-water mark is reset
(``/proc/self/clear_refs``) just before the preview and ``VmHWM`` read after it (``rss_peak_mb``);
``ru_maxrss_delta_mb`` is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after all previews minus before the
first (a lifetime high-water mark: it only shows what rises above building the scene).
The voxel counts of the three segments are compared between the variants.

Readable lines go to stderr, the last stdout line is one JSON object; ``--out`` also writes it to a file.

Usage::

    .venv/bin/python benchmarks/bench_preview.py --out docs/results/preview_cpu.json
    .venv/bin/python benchmarks/bench_preview.py --shape 128 128 60 --repeats 2     # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO_ROOT, "benchmarks"), os.path.join(REPO_ROOT, "PASeg")]
from _child import run_child  # noqa: E402

SEGMENT_NAMES = ["foreground", "background", "unlabeled"]
#: Tumours: centre (fraction of the shape) and radii (mm); the first ``--objects`` of them are clicked.
TUMOURS = [((0.45, 0.55, 0.5), (18.0, 14.0, 12.0)), ((0.7, 0.35, 0.4), (9.0, 8.0, 7.5))]
MARGIN = 3  # voxels between the ellipsoid and its background clicks


# -- the implementation before, verbatim (for the side-by-side measurement) -------------------------
def _orientedImageReference(mask: np.ndarray, geometry):
    """A ``vtkOrientedImageData`` of ``mask`` cropped to its bounding box (extent), on ``geometry``'s grid."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(geometry.index_to_ras_matrix[r, c]))
    image.SetImageToWorldMatrix(matrix)
    nonzero = np.argwhere(mask)
    if nonzero.size == 0:
        image.SetExtent(0, -1, 0, -1, 0, -1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        return image
    lo, hi = nonzero.min(axis=0), nonzero.max(axis=0)
    crop = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].astype(np.uint8)
    image.SetExtent(int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    values = numpy_support.numpy_to_vtk(np.ascontiguousarray(crop.transpose(2, 1, 0)).ravel(), deep=True)
    image.GetPointData().GetScalars().DeepCopy(values)
    return image


def _setLabelsToSegmentationReference(segmentationNode, labels, geometry, segments, referenceVolumeNode=None):
    """Write each ``(value, name, colour)`` of ``segments`` as the segment ``name`` (created or replaced).

    Returns segment name → segment id. Other segments of the node are left alone.
    """
    import slicer

    labels = np.asarray(labels)
    if labels.shape != geometry.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the geometry {geometry.shape}")
    if referenceVolumeNode is not None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentation = segmentationNode.GetSegmentation()
    ids: Dict[str, str] = {}
    for value, name, color in segments:
        segmentId = segmentation.GetSegmentIdBySegmentName(name)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment("", name, list(color))
        segmentation.GetSegment(segmentId).SetColor(*color)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            _orientedImageReference(labels == value, geometry), segmentationNode, segmentId
        )
        if not ok:
            raise RuntimeError(f"could not set the voxels of segment {name!r}")
        ids[name] = segmentId
    return ids


# -- the scene ------------------------------------------------------------------------------------------------
def syntheticImage(shape, spacing, seed: int = 0) -> np.ndarray:
    """int16 ``[i, j, k]`` MR-like image: smooth bias + noise, two bright ellipsoids (:data:`TUMOURS`).

    Built slice by slice so that building it does not raise the process's peak memory above the image.
    """
    rng = np.random.default_rng(seed)
    image = np.empty(shape, dtype=np.int16)
    i, j = np.ogrid[: shape[0], : shape[1]]
    bias = 300 + 60 * np.sin(i / shape[0] * 3.0) * np.cos(j / shape[1] * 2.0)
    for k in range(shape[2]):
        slice_ = bias + rng.normal(0, 12, shape[:2])
        for centre, radii in TUMOURS:
            c = [f * n for f, n in zip(centre, shape)]
            r = [mm / s for mm, s in zip(radii, spacing)]
            inside = ((i - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((k - c[2]) / r[2]) ** 2 <= 1
            slice_ = slice_ + 250 * inside
        image[:, :, k] = np.round(slice_)
    return image


def tumourClicks(shape, spacing, index: int) -> Dict[str, tuple]:
    """Voxel index of the seven clicks of tumour ``index`` (identity LPS directions: +i left, +j posterior)."""
    centre, radii = TUMOURS[index]
    c = [int(round(f * n)) for f, n in zip(centre, shape)]
    r = [int(np.ceil(mm / s)) + MARGIN for mm, s in zip(radii, spacing)]
    side = {"R": (0, -1), "L": (0, 1), "A": (1, -1), "P": (1, 1), "I": (2, -1), "S": (2, 1)}
    clicks = {"F": tuple(c)}
    for label, (axis, sign) in side.items():
        point = list(c)
        point[axis] += sign * r[axis]
        clicks[label] = tuple(point)
    return clicks


def buildScene(shape, spacing, objects: int):
    """(app, logic, volume node, object nodes, geometry) with ``objects`` tumours clicked."""
    from PASegSlicer.annotation import objects as annotation
    from PASegSlicer.annotation.logic import PASegCoreLogic
    from PASegSlicer.mrml.headless import HeadlessSlicer
    from PASegSlicer.mrml.volumes import createVolumeNode

    from PASegLib.image.geometry import ImageGeometry
    from PASegLib.image.io import Volume

    app = HeadlessSlicer()
    geometry = ImageGeometry(tuple(shape), tuple(spacing), (-200.0, -180.0, -140.0))
    volumeNode = createVolumeNode(app.scene, Volume(syntheticImage(shape, spacing), geometry), "bench volume")
    logic = PASegCoreLogic(app.scene)
    nodes = []
    for n in range(objects):
        node = logic.addObject(volumeNode)
        for label, index in tumourClicks(shape, spacing, n).items():
            annotation.setControlPoint(node, label, geometry.index_to_world(index, coordinate_system="RAS"))
        nodes.append(node)
    return app, logic, volumeNode, nodes, geometry


# -- one variant in this process -------------------------------------------------------------------------------
def _rssMb() -> Dict[str, float]:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                status[key] = int(value.split()[0]) / 1024
    return status


def _resetPeakRss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def _maxRssMb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Probe:
    """Wraps the parts of the preview: their seconds and, in a memory mode, their own memory peaks.

    ``mode`` ``"rss"``: peak RSS increase (``VmHWM`` after a reset) over the RSS at the start of the part or
    of the whole preview; ``"tracemalloc"``: the same for traced allocations. The whole preview's peak is
    kept across the per-part resets (the maximum of the peaks before each reset and at the end).
    """

    def __init__(self) -> None:
        self.mode = ""
        self.times: Dict[str, List[float]] = {}
        self.parts: Dict[str, float] = {}
        self.whole = 0.0
        self.base = 0.0

    def _level(self):
        if self.mode == "rss":
            status = _rssMb()
            return status["VmRSS"], status["VmHWM"]
        current, peak = tracemalloc.get_traced_memory()
        return current / 2**20, peak / 2**20

    def _reset(self) -> None:
        if self.mode == "rss":
            _resetPeakRss()
        else:
            tracemalloc.reset_peak()

    def start(self, mode: str) -> None:
        self.mode, self.parts, self.whole = mode, {}, 0.0
        if mode == "tracemalloc":
            tracemalloc.start()
        self.base = self._level()[0]
        self._reset()

    def stop(self) -> Dict[str, float]:
        self.whole = max(self.whole, self._level()[1] - self.base)
        if self.mode == "tracemalloc":
            tracemalloc.stop()
        self.mode = ""
        return {"preview": round(self.whole, 1), **{k: round(v, 1) for k, v in self.parts.items()}}

    def wrap(self, name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if self.mode:
                current, peak = self._level()
                self.whole = max(self.whole, peak - self.base)
                self._reset()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times.setdefault(name, []).append(time.perf_counter() - start)
                if self.mode:
                    self.parts[name] = self._level()[1] - current

        return wrapper


def runVariant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Build the scene, then time and measure the previews with the variant ``cfg["variant"]``."""
    from PASegSlicer.annotation import kinds
    from PASegSlicer.annotation import logic as logicModule
    from PASegSlicer.annotation import objects as annotation
    from PASegSlicer.mrml import segments

    setLabels = {"before": _setLabelsToSegmentationReference, "after": segments.setLabelsToSegmentation}
    probe = Probe()
    logicModule.setLabelsToSegmentation = probe.wrap("setLabelsToSegmentation", setLabels[cfg["variant"]])
    kinds.pseudoLabelMap = probe.wrap("pseudoLabelMap", kinds.pseudoLabelMap)
    logicModule.volumeFromNode = probe.wrap("volumeFromNode", logicModule.volumeFromNode)

    shape, spacing = cfg["shape"], cfg["spacing"]
    start = time.perf_counter()
    app, logic, volumeNode, nodes, geometry = buildScene(shape, spacing, cfg["objects"])
    buildSeconds = time.perf_counter() - start
    clickF = geometry.index_to_world(tumourClicks(shape, spacing, 0)["F"], coordinate_system="RAS")
    step = np.asarray(geometry.index_to_ras_matrix)[:3, 0]  # one voxel along i, RAS
    moves = [0]

    def moveClick():
        moves[0] = 1 - moves[0]
        annotation.setControlPoint(nodes[0], "F", clickF + moves[0] * step)

    def removePreview():
        app.scene.RemoveNode(logic.previewSegmentationNode(volumeNode))

    def preview():
        return logic.expansionPreview(volumeNode, epsilon=cfg["epsilon"], lamb=cfg["lamb"])

    scenarios = {"first": removePreview, "replace": moveClick}
    maxRssBefore = _maxRssMb()
    out: Dict[str, Any] = {"variant": cfg["variant"], "build_seconds": round(buildSeconds, 2),
                           "rss_after_build_mb": round(_rssMb()["VmRSS"], 1), "scenarios": {}}  # fmt: skip
    preview()  # warm-up (imports, first conversions)
    for scenario, prepare in scenarios.items():
        row: Dict[str, Any] = {}
        for mode in ("rss", "tracemalloc") if _resetPeakRss() else ("tracemalloc",):
            prepare()
            probe.start(mode)
            preview()
            row[f"{mode}_peak_mb"] = probe.stop()
        probe.times.clear()
        totals = []
        for _ in range(cfg["repeats"]):
            prepare()
            start = time.perf_counter()
            preview()
            totals.append(time.perf_counter() - start)
        row["seconds"] = round(statistics.median(totals), 3)
        row["seconds_all"] = [round(t, 3) for t in totals]
        row["parts_seconds"] = {name: round(statistics.median(v), 3) for name, v in probe.times.items()}
        out["scenarios"][scenario] = row
    out["ru_maxrss_delta_mb"] = round(_maxRssMb() - maxRssBefore, 1)
    node = logic.previewSegmentationNode(volumeNode)
    out["voxel_counts"] = segments.segmentVoxelCounts(node, volumeNode, SEGMENT_NAMES)
    partial = logic.previewLabels(volumeNode)
    out["partial_counts"] = {name: int((partial == value).sum()) for value, name, _ in segments.PARTIAL_SEGMENTS}
    app.close()
    return out


# -- driver ----------------------------------------------------------------------------------------------------
def _line(res: Dict[str, Any]) -> str:
    if "error" in res:
        return f"{res['variant']:7s} error: {res['error']}"
    parts = []
    for scenario, row in res["scenarios"].items():
        p, tm, rss = row["parts_seconds"], row["tracemalloc_peak_mb"], row.get("rss_peak_mb", {})
        name = "setLabelsToSegmentation"
        parts.append(f"{scenario}: {row['seconds']:.3f} s (pseudo labels {p.get('pseudoLabelMap', 0):.3f}, set labels "
                     f"{p.get(name, 0):.3f}) tracemalloc {tm['preview']:.0f} MB (set labels {tm.get(name, 0):.0f}) "
                     f"RSS +{rss.get('preview', float('nan')):.0f} MB (set labels {rss.get(name, float('nan')):.0f})")  # fmt: skip
    return f"{res['variant']:7s} " + " | ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 200], help="voxels [i j k]")
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5], help="mm")
    parser.add_argument("--objects", type=int, default=1, choices=(1, 2), help="clicked tumours (default 1)")
    parser.add_argument("--epsilon", type=float, default=0.175)
    parser.add_argument("--lamb", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5, help="timed previews per scenario (default 5)")
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(runVariant(json.loads(args.child))))
        return 0

    import vtk

    info: Dict[str, Any] = {
        "benchmark": "preview", "shape": args.shape, "spacing": args.spacing, "dtype": "int16",
        "objects": args.objects, "epsilon": args.epsilon, "lamb": args.lamb, "repeats": args.repeats,
        "python": platform.python_version(), "numpy": np.__version__, "vtk": vtk.vtkVersion.GetVTKVersion(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()], "results": [],
    }  # fmt: skip
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        cfg = {"variant": variant, "shape": args.shape, "spacing": args.spacing, "objects": args.objects,
               "epsilon": args.epsilon, "lamb": args.lamb, "repeats": args.repeats}  # fmt: skip
        res = run_child(__file__, cfg)
        res.setdefault("variant", variant)
        info["results"].append(res)
        print(_line(res), file=sys.stderr, flush=True)
    counts = [r.get("voxel_counts") for r in info["results"]]
    info["same_voxel_counts"] = all(c == counts[0] for c in counts) and counts[0] == info["results"][0].get(
        "partial_counts"
    )
    info["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(info)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(info, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
