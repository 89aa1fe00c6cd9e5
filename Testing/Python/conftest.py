"""Shared fixtures: small volumes with known objects, oblique geometry, the real-data location."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from PASegLib.image.geometry import ImageGeometry
from PASegLib.image.io import Volume

#: ../shared/data relative to the repository root (developers and CI have it; a user's clone does not).
SHARED_DATA = Path(os.environ.get("PASEG_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
LA_HEART = SHARED_DATA / "la_heart"


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3×3 rotation matrix about a world axis ``"x"``, ``"y"`` or ``"z"``."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


@pytest.fixture
def oblique_geometry() -> ImageGeometry:
    """40×36×20 voxels, 0.8×0.9×2.5 mm, rotated 20° about z and 10° about x, origin off zero."""
    direction = rotation("z", 20) @ rotation("x", 10)
    return ImageGeometry((40, 36, 20), (0.8, 0.9, 2.5), (-12.0, 30.5, 7.25), tuple(direction.ravel()))


def ellipsoid(shape, center, radii) -> np.ndarray:
    """Boolean ellipsoid ``[i, j, k]`` with centre and radii in voxels."""
    grid = np.indices(shape, dtype=np.float64)
    r = sum(((grid[a] - center[a]) / radii[a]) ** 2 for a in range(3))
    return r <= 1.0


@pytest.fixture
def blob_case(oblique_geometry):
    """(image Volume, label uint8) with one bright ellipsoid on a noisy, smoothly varying background."""
    rng = np.random.default_rng(3)
    shape = oblique_geometry.shape
    label = ellipsoid(shape, (20, 17, 10), (7, 6, 3)).astype(np.uint8)
    ramp = np.linspace(0, 20, shape[0])[:, None, None]
    image = (60 + ramp + 80 * label + rng.normal(0, 4, shape)).astype(np.float32)
    return Volume(image, oblique_geometry), label


def real_la_cases(n: int):
    """First ``n`` LA case ids, or skip with a message when ../shared/data is absent."""
    if not LA_HEART.is_dir():
        pytest.skip(f"real data not found at {LA_HEART} (../shared/data is only on developer and CI machines)")
    ids = sorted(p.name[: -len("_image.nii.gz")] for p in LA_HEART.glob("*_image.nii.gz"))
    if len(ids) < n:
        pytest.skip(f"{LA_HEART} holds {len(ids)} cases, need {n}")
    return ids[:n]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Four synthetic 48×48×16 oblique, anisotropic cases with simulated clicks (read-only for tests)."""
    from PASegLib.cli.main import main

    root = tmp_path_factory.mktemp("tiny")
    assert main(["synth", str(root), "--cases", "4", "--shape", "48", "48", "16"]) == 0
    assert main(["simulate-clicks", str(root), "--quiet"]) == 0
    return root


@pytest.fixture(scope="session")
def bare(tiny_dataset, tmp_path_factory) -> Path:
    """The tiny dataset without its seven-point clicks (a test or the pipeline simulates the kind it needs)."""
    import shutil

    root = tmp_path_factory.mktemp("bare")
    for path in tiny_dataset.iterdir():
        if not path.name.endswith(".mrk.json"):
            shutil.copy(path, root / path.name)
    return root


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the Slicer module's tests: real MRML from the slicer-core wheel (PASeg/ is on pytest's pythonpath) -----------
def require_slicer_core():
    """Skip the calling test module unless ``slicer-core`` (a real MRML scene without the application) is
    installed. Returns the ``slicer`` package."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (make setup installs it)")
    if getattr(slicer, "__file__", None) is None:  # a namespace package: e.g. the test folder Testing/Python/slicer
        pytest.skip("slicer-core is not installed (make setup installs it; it needs Python >= 3.10)",
                    allow_module_level=True)
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core (the unrelated PyPI 'slicer' replaced it)",
                    allow_module_level=True)  # fmt: skip
    return slicer


@pytest.fixture
def app():
    """A :class:`PASegSlicer.mrml.headless.HeadlessSlicer` (scene + module logics), closed after the test."""
    require_slicer_core()
    from PASegSlicer.mrml.headless import HeadlessSlicer

    headless = HeadlessSlicer()
    yield headless
    headless.close()


@pytest.fixture
def scene(app):
    """The MRML scene of :func:`app`."""
    return app.scene


@pytest.fixture
def logic(scene):
    """The module's :class:`PASegSlicer.annotation.logic.PASegCoreLogic` on :func:`scene`, cleaned up after the
    test."""
    from PASegSlicer.annotation.logic import PASegCoreLogic

    core = PASegCoreLogic(scene)
    yield core
    core.cleanup()


@pytest.fixture
def fake_python(tmp_path):
    """A ``python`` that runs the fake PASeg CLI of ``slicer/test_slicer_jobs.py`` (``FAKE_PASEG``; the arguments
    are the real ``-m PASegLib …`` ones), for the tests in ``slicer/``."""
    from headlessgui import fakePython
    from test_slicer_jobs import FAKE_PASEG

    return fakePython(tmp_path, FAKE_PASEG)


@pytest.fixture
def model_run(tmp_path):
    """A finished stage-1 model run folder (:func:`headlessgui.modelRun`)."""
    from headlessgui import modelRun

    return modelRun(tmp_path)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (Linux: ``/proc``; a zombie is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def gui(app):
    """What the module gives its panels, headless (:func:`headlessgui.panelServices`, for the tests in
    ``slicer/``): ``(application services, widgets, parameters, {"node": the parameters while shown}, preview
    requests)``. A test module may give its own ``gui`` (e.g. the first three only)."""
    from headlessgui import panelServices

    return panelServices(app)


@pytest.fixture
def panel(gui, logic):
    """The annotation panel on :func:`gui`'s stand-ins (:func:`headlessgui.annotationPanel`), cleaned up after
    the test."""
    from headlessgui import annotationPanel

    with annotationPanel(logic, *gui) as annotations:
        yield annotations


@pytest.fixture
def blob(scene, blob_case):
    """(volume node of :func:`blob_case`'s image, the simulated seven clicks of its tumour)."""
    from PASegSlicer.mrml import volumes

    from PASegLib.annotation.simulation import simulate_clicks

    image, label = blob_case
    return volumes.createVolumeNode(scene, image, "blob"), simulate_clicks(label, image.geometry, seed=1).objects[0]


@contextlib.contextmanager
def reopened_case(dataset: Path, work: Path):
    """The one case of ``dataset`` opened again through the case list in a fresh scene (another Slicer session, work
    folder ``work``): ``(its logic, the volume node, its one tumour node)``; the scene is closed on exit."""
    from PASegSlicer.annotation.logic import PASegCoreLogic
    from PASegSlicer.mrml.headless import HeadlessSlicer

    from PASegLib.data.dataset import list_cases

    fresh = HeadlessSlicer()
    try:
        other = PASegCoreLogic(fresh.scene)
        (files,) = list_cases(dataset)
        reopened = other.openCase(files, work)
        (restored,) = other.objectNodes(reopened)
        yield other, reopened, restored
    finally:
        fresh.close()


# -- the CLI's progress lines and error messages ----------------------------------------------------------------
def progress_events(text: str):
    """The ``PASEG {json}`` events of a captured stdout, in order."""
    from PASegLib.jobs.events import parse_progress_line

    return [e for e in map(parse_progress_line, text.splitlines()) if e is not None]


def cli_error(captured, command: str) -> str:
    """The one error message of a failed ``paseg command`` (no traceback, not an internal error, and a final
    error event carrying the same text); ``captured`` is pytest's ``capsys.readouterr()``."""
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    lines = [x for x in captured.err.splitlines() if x.startswith(f"paseg {command}: error: ")]
    assert len(lines) == 1, captured.err
    message = lines[0].split(": error: ", 1)[1]
    event = progress_events(captured.out)[-1]
    assert event["event"] == "error" and event["message"] == message and not event["internal"]
    return message


# -- a bright sphere on a noisy background, as a Slicer volume node (the annotation-kind and dense-label tests) ---
SPHERE_GEOMETRY = ImageGeometry((28, 28, 20), (1.0, 1.0, 1.5), (5.0, -10.0, 3.0))
SPHERE_CENTER = np.array([14, 14, 10])


def sphere_volume_node(scene):
    """``(volume node, image Volume, mask)``: a sphere of radius 6 mm (intensity 400) at :data:`SPHERE_CENTER` of
    :data:`SPHERE_GEOMETRY` on a noisy background (100 ± 5), as a scalar volume node named "sphere"."""
    from PASegSlicer.mrml import volumes

    grid = np.indices(SPHERE_GEOMETRY.shape, dtype=np.float64) - SPHERE_CENTER[:, None, None, None]
    mm = grid * np.asarray(SPHERE_GEOMETRY.spacing)[:, None, None, None]
    mask = (mm**2).sum(axis=0) <= 36.0
    image = Volume((100 + 300 * mask + np.random.default_rng(0).normal(0, 5, SPHERE_GEOMETRY.shape))
                   .astype(np.float32), SPHERE_GEOMETRY)
    return volumes.createVolumeNode(scene, image, "sphere"), image, mask


def unresolved_references(paths, package: str, root: Path):
    """``package.<module…>.<name>`` references in ``paths`` (text files) that name no existing module or name:
    ``["<file relative to root>: <reference>", …]`` (the longest importable module prefix, then attributes)."""
    import importlib
    import re

    missing = []
    for path in sorted(paths):
        for reference in sorted(set(re.findall(rf"{package}(?:\.\w+)+", Path(path).read_text(encoding="utf-8")))):
            parts = reference.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    target = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for attribute in parts[cut:]:
                    target = getattr(target, attribute, None)
                if target is None:
                    missing.append(f"{Path(path).relative_to(root)}: {reference}")
                break
    return missing


def box_object(name, geometry, lo, hi):
    """Seven clicks whose background points span the inclusive voxel box ``lo..hi`` (F at its centre): an object
    of :func:`PASegLib.annotation.model.make_object` on ``geometry``."""
    from PASegLib.annotation.model import make_object

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    centre = np.rint((lo + hi) / 2)
    background = []
    for axis in range(3):
        for end in (lo, hi):
            point = centre.copy()
            point[axis] = end[axis]
            background.append(geometry.index_to_world(point))
    return make_object(name, foreground=[geometry.index_to_world(centre)], background=background, geometry=geometry)
