"""Fill ``gpu_pack/`` with what a bare GPU box lacks for ``benchmarks/gpu_check.sh`` (``make gpu-pack``).

The lent GPU machine has Python 3.12 with a CUDA torch, numpy, scipy, scikit-image, matplotlib, tqdm and pytest,
but neither MONAI nor SimpleITK; nothing can be downloaded there, and it receives only a copy of the checkout
(tracked files, untracked files git does not ignore, and up to 8 ignored paths named in ``carry``): 64 MiB in
all, ``../shared`` not included. The pack holds:

* ``wheels/`` — MONAI and SimpleITK wheels for the box's Python and platform (``pip download --no-deps
  --only-binary=:all:``), by default the versions installed here (the ones the tests ran with); never torch;
* ``data/`` — a small real dataset: the first ``--cases`` la_heart cases (sorted ids) of ``--data`` resampled to
  ``--spacing`` mm (intensities linearly, labels by nearest neighbour, the source's integer type kept),
  gzip-compressed NIfTI, with seven-point clicks simulated from the labels (seed 0, ``paseg simulate-clicks``
  defaults) as ``<case>.mrk.json``;
* ``manifest.json`` — what is inside: the wheels (name, version, sha256, bytes, needs), the cases, their split
  (the first ``cases − test`` train, the last ``test`` are scored by Dice), the source, and the sizes measured
  with the checkout.

The pack is built in a temporary sibling folder and moved in only when complete and within ``--limit-mib``
together with the checkout (``git ls-files`` + untracked, not ignored files); otherwise nothing changes and
the command fails naming the sizes. Run it where pip can download (the development machine)::

    make gpu-pack                                     # = python benchmarks/gpu_pack.py --out gpu_pack
    python benchmarks/gpu_pack.py --spacing 2 --cases 8 --out gpu_pack
    python benchmarks/gpu_pack.py --data DIR --no-wheels --out /tmp/pack   # data only (a test's toy pack)

Then on the GPU box (the device tool's ``run`` with ``carry: ["gpu_pack"]``): ``bash benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the real cases (developer and CI machines; see ../shared/data/README.md)
LA_HEART = ROOT.parent / "shared" / "data" / "la_heart"
#: the GPU box's Python (the device tool's KINDS.md: python3 is Python 3.12.3)
BOX_PYTHON = "3.12"
#: the platform tags pip may match for the box (x86-64 Linux, glibc ≥ 2.28)
BOX_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64")
#: the distributions the box lacks (PASegLib's runtime imports that its image does not hold)
BOX_MISSING = ("monai", "SimpleITK")
#: what the device tool carries at most (tracked + untracked-not-ignored files + carried paths)
LIMIT_MIB = 64.0
MANIFEST = "manifest.json"


class PackError(ValueError):
    """Bad input or a pack that cannot be built; the message names the input."""


def default_wheels() -> List[str]:
    """``NAME==VERSION`` of :data:`BOX_MISSING` as installed here (the versions the tests ran with)."""
    specs = []
    for name in BOX_MISSING:
        try:
            specs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise PackError(f"{name} is not installed here, so its version is unknown; give --wheel {name}==VERSION "
                            f"(or run `make setup` first)") from None
    return specs


def _wheel_name(spec: str) -> str:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not match:
        raise PackError(f"--wheel {spec!r} is not a requirement such as monai==1.6.1")
    name = match.group(1)
    if re.sub(r"[-_.]+", "-", name).lower() == "torch":
        raise PackError("--wheel torch: the box has its own CUDA torch; never pack torch")
    return name


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_wheels(specs: Sequence[str], dest: Path, *, python_version: str,
                    platforms: Sequence[str] = BOX_PLATFORMS) -> List[Dict[str, Any]]:
    """``pip download`` one wheel per requirement of ``specs`` into ``dest`` for ``python_version`` and ``platforms``
    (no dependencies: the box has numpy and torch); returns their manifest rows."""
    names = [_wheel_name(s) for s in specs]
    duplicates = sorted({n for n in names if [_normalized(m) for m in names].count(_normalized(n)) > 1})
    if duplicates:
        raise PackError(f"--wheel names {', '.join(duplicates)} more than once (two versions stop the install)")
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "--dest", str(dest)]
    for platform in platforms:
        cmd += ["--platform", platform]
    done = subprocess.run(cmd + list(specs), capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PackError(f"pip download {' '.join(specs)} for Python {python_version} failed (exit {done.returncode}; "
                        f"is the network reachable?):\n{tail}")
    rows = []
    for path in sorted(dest.glob("*.whl")):
        with zipfile.ZipFile(path) as wheel:
            meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            text = wheel.read(meta).decode("utf-8", "replace")
        field = dict(re.findall(r"^(Name|Version): (.+)$", text, flags=re.MULTILINE))
        needs = [r.strip() for r in re.findall(r"^Requires-Dist: (.+)$", text, flags=re.MULTILINE)
                 if "extra ==" not in r]
        rows.append({"file": path.name, "name": field.get("Name", path.name.split("-")[0]),
                     "version": field.get("Version"), "bytes": path.stat().st_size,
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "needs": needs})
    got = {_normalized(r["name"]) for r in rows}
    missing = [n for n in names if _normalized(n) not in got]
    if missing or len(rows) != len(names):
        raise PackError(f"pip download gave {[r['file'] for r in rows]} for {list(specs)}")
    return rows


def pack_dataset(source: Path, dest: Path, *, cases: int, test_cases: int, spacing: Sequence[float],
                 seed: int = 0) -> Dict[str, Any]:
    """Resample the first ``cases`` labelled cases of ``source`` to ``spacing`` mm into ``dest``, simulate their
    clicks, and return the dataset's manifest entry (ids, split, shapes)."""
    import numpy as np

    from PASegLib.data.dataset import DatasetError, list_cases
    from PASegLib.image.io import read_image, write_image
    from PASegLib.image.resample import resample_to_shape, resampled_geometry
    from PASegLib.pipeline.inputs import simulate_missing_clicks

    if not source.is_dir():
        raise PackError(f"--data {source}: folder not found (the la_heart cases are in ../shared/data/la_heart on "
                        f"developer machines; see its README)")
    try:
        labelled = [f for f in list_cases(source) if f.label is not None]
    except DatasetError as exc:
        raise PackError(f"--data {source}: {exc}") from None
    if cases < 2 or not 1 <= test_cases < cases:
        raise PackError(f"--cases {cases} / --test-cases {test_cases}: need at least one training and one test case "
                        f"(1 <= test cases < cases)")
    if len(labelled) < cases:
        raise PackError(f"--data {source} holds {len(labelled)} case(s) with a <case>_label file, --cases asks "
                        f"for {cases}")
    dest.mkdir(parents=True, exist_ok=True)
    shapes = {}
    for files in labelled[:cases]:
        image = read_image(files.image, role="image")
        label = read_image(files.label, role="label")
        geometry = resampled_geometry(image.geometry, spacing)
        values = resample_to_shape(image.array, geometry.shape, order=1)
        if np.issubdtype(image.array.dtype, np.integer):  # keep the source's integer type (MRI bytes stay bytes)
            info = np.iinfo(image.array.dtype)
            values = np.clip(np.rint(values), info.min, info.max).astype(image.array.dtype)
        mask = resample_to_shape(np.asarray(label.array), geometry.shape, order=0)
        if mask.min() >= 0 and mask.max() <= 255:
            mask = mask.astype(np.uint8)
        write_image(dest / f"{files.case_id}_image.nii.gz", values, geometry)
        write_image(dest / f"{files.case_id}_label.nii.gz", mask, geometry)
        shapes[files.case_id] = list(geometry.shape)
    from PASegLib.annotation.simulation import ClickSimulationConfig

    # the committed GPU rows were made with one click stream shared by every case: kept to reproduce them
    simulate_missing_clicks(list_cases(dest), dest, seed=seed, config=ClickSimulationConfig(legacy_shared_stream=True))
    ids = sorted(shapes)
    return {"folder": dest.name, "source": str(source), "cases": ids, "spacing_mm": [float(s) for s in spacing],
            "shapes": shapes, "clicks": f"seven points simulated from the labels, seed {seed}",
            "split": {"train": ids[: cases - test_cases], "test": ids[cases - test_cases:]}}


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def checkout_bytes(root: Path, *, exclude: Optional[Path] = None) -> Optional[int]:
    """Bytes of what the device tool copies without ``carry``: tracked files and untracked files git does not
    ignore (under ``exclude`` left out); ``None`` outside a git checkout."""
    done = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          capture_output=True)
    if done.returncode != 0:
        return None
    total = 0
    for name in {n for n in done.stdout.decode("utf-8", "surrogateescape").split("\0") if n}:
        path = root / name
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        if path.is_symlink() or path.is_file():  # a deleted but still tracked file is not copied
            total += path.lstat().st_size
    return total


def _ignored_by_git(root: Path, path: Path) -> Optional[bool]:
    try:
        relative = path.resolve().relative_to(root)
    except ValueError:
        return None  # outside the checkout: it does not travel
    return subprocess.run(["git", "-C", str(root), "check-ignore", "-q", str(relative) + "/"]).returncode == 0


def build_pack(out: Path, *, data: Path, cases: int, test_cases: int, spacing: Sequence[float],
               wheels: Sequence[str], python_version: str, limit_mib: float) -> Dict[str, Any]:
    """Build the pack in a temporary sibling of ``out`` and move it to ``out`` when complete and small enough;
    returns the manifest. A failure leaves ``out`` as it was."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise PackError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise PackError(f"--out {out} is a non-empty folder without {MANIFEST}: not a pack; choose another --out")
    if _ignored_by_git(ROOT, out) is False:
        raise PackError(f"--out {out} is inside the checkout but not ignored by git: the pack must never be "
                        f"committed (add it to .gitignore)")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(stage, 0o755)  # mkdtemp makes it private; the pack is an ordinary folder
    try:
        manifest: Dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python_version": python_version,
                                    "platforms": list(BOX_PLATFORMS), "wheels": [], "dataset": None}
        if wheels:
            manifest["wheels"] = download_wheels(wheels, stage / "wheels", python_version=python_version)
        manifest["dataset"] = pack_dataset(data, stage / "data", cases=cases, test_cases=test_cases, spacing=spacing)
        checkout = checkout_bytes(ROOT, exclude=out)
        pack = None
        while True:  # the manifest counts too, and holds the sizes: write it until its own size is stable
            measured = folder_bytes(stage)
            if measured == pack:
                break
            pack = measured
            total = pack + (checkout or 0)
            manifest["sizes"] = {"pack_bytes": pack, "wheels_bytes": sum(w["bytes"] for w in manifest["wheels"]),
                                 "data_bytes": folder_bytes(stage / "data"), "checkout_bytes": checkout,
                                 "pack_mib": round(pack / 2**20, 2),
                                 "checkout_mib": None if checkout is None else round(checkout / 2**20, 2),
                                 "total_mib": round(total / 2**20, 2), "limit_mib": limit_mib}
            manifest["build_s"] = round(time.monotonic() - started, 1)
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if total > limit_mib * 2**20:
            raise PackError(f"the pack ({pack / 2**20:.1f} MiB) and the checkout ({(checkout or 0) / 2**20:.1f} MiB) "
                            f"make {total / 2**20:.1f} MiB, over --limit-mib {limit_mib:g}; use fewer --cases or a "
                            f"coarser --spacing")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _spacing(values: Sequence[float]) -> List[float]:
    if len(values) not in (1, 3) or any(not v > 0 for v in values):
        raise PackError(f"--spacing must be one or three positive numbers (mm), got {list(values)}")
    return list(values) * 3 if len(values) == 1 else list(values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="see the module docstring (python -m pydoc) for the pack's layout")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_pack", help="the pack folder (default gpu_pack/)")
    parser.add_argument("--data", type=Path, default=LA_HEART, help="dataset folder with labels (default la_heart)")
    parser.add_argument("--cases", type=int, default=12, help="cases packed (the first, by sorted id; default 12)")
    parser.add_argument("--test-cases", type=int, default=3, help="of those, the last N are scored by Dice (3)")
    parser.add_argument("--spacing", type=float, nargs="+", default=[1.25], metavar="MM",
                        help="resample to this spacing in mm (one or three numbers; default 1.25)")
    parser.add_argument("--wheel", action="append", default=None, metavar="NAME==VERSION",
                        help="a wheel to pack (repeatable; default: MONAI and SimpleITK as installed here)")
    parser.add_argument("--no-wheels", action="store_true", help="pack the data only")
    parser.add_argument("--python-version", default=BOX_PYTHON, help=f"the box's Python (default {BOX_PYTHON})")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB,
                        help=f"the most the checkout and the pack may weigh together (default {LIMIT_MIB:g})")
    args = parser.parse_args(argv)
    try:
        spacing = _spacing(args.spacing)
        wheels = [] if args.no_wheels else (args.wheel or default_wheels())
        manifest = build_pack(args.out, data=args.data, cases=args.cases, test_cases=args.test_cases, spacing=spacing,
                              wheels=wheels, python_version=args.python_version, limit_mib=args.limit_mib)
    except PackError as exc:
        print(f"gpu_pack: error: {exc}", file=sys.stderr)
        return 1
    sizes = manifest["sizes"]
    print(f"gpu_pack: {args.out}: {len(manifest['wheels'])} wheel(s), {len(manifest['dataset']['cases'])} case(s) at "
          f"{manifest['dataset']['spacing_mm']} mm; pack {sizes['pack_mib']} MiB + checkout {sizes['checkout_mib']} "
          f"MiB = {sizes['total_mib']} MiB of {sizes['limit_mib']:g}", file=sys.stderr)
    print(json.dumps({"out": str(args.out), **sizes, "wheels": [w["file"] for w in manifest["wheels"]],
                      "cases": len(manifest["dataset"]["cases"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
