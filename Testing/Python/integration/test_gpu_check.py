"""The prepared GPU check for a bare GPU box: ``benchmarks/gpu_pack.py`` (``make gpu-pack``) builds a pack that
fits the device copy's size limit or nothing, ``benchmarks/gpu_check.sh`` installs its wheels into a temporary
folder and runs every section of ``benchmarks/gpu_suite.py`` (``--dry-run``: on the CPU at toy size), a section
reruns alone with ``--only``, and ``benchmarks/gpu_accuracy.py`` plans the rows it is asked for."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def labelled_dataset(tmp_path_factory) -> Path:
    """Five synthetic 48×48×16 cases with labels (what gpu_pack.py packs; no clicks yet)."""
    from PASegLib.cli.main import main

    root = tmp_path_factory.mktemp("labelled") / "cases"
    assert main(["synth", str(root), "--cases", "5", "--shape", "48", "48", "16"]) == 0
    return root


def _pack(out: Path, data: Path, *extra: str) -> int:
    return load_benchmark("gpu_pack").main(["--out", str(out), "--data", str(data), "--cases", "5", "--test-cases",
                                            "2", "--spacing", "2", "--no-wheels", *extra])


def _probe_wheel(folder: Path) -> Path:
    """A real (tiny) pure-Python wheel, ``pasegprobe 1.0``, to see gpu_check.sh install what the pack holds."""
    files = {"pasegprobe/__init__.py": b"VALUE = 1\n",
             "pasegprobe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pasegprobe\nVersion: 1.0\n",
             "pasegprobe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()}"
                     f",{len(data)}\n" for name, data in files.items())
    files["pasegprobe-1.0.dist-info/RECORD"] = (record + "pasegprobe-1.0.dist-info/RECORD,,\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pasegprobe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def test_gpu_pack_builds_the_dataset_or_nothing(labelled_dataset, tmp_path, capsys):
    from PASegLib.data.dataset import list_cases
    from PASegLib.image.io import read_geometry

    out = tmp_path / "pack"
    assert _pack(out, labelled_dataset) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    data = manifest["dataset"]
    assert manifest["wheels"] == [] and data["folder"] == "data" and len(data["cases"]) == 5
    assert data["split"]["train"] == data["cases"][:3] and data["split"]["test"] == data["cases"][3:]
    cases = list_cases(out / "data")
    assert [c.case_id for c in cases] == data["cases"]
    assert all(c.label is not None and c.markups is not None for c in cases)  # clicks simulated from the labels
    spacing = read_geometry(cases[0].image).spacing
    assert spacing == pytest.approx((2.0, 2.0, 2.0), rel=0.1)
    sizes = manifest["sizes"]
    assert sizes["pack_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert sizes["total_mib"] <= sizes["limit_mib"] == 64.0
    if sizes["checkout_bytes"] is not None:  # a git checkout: the total counts what travels with the pack
        assert sizes["total_mib"] == round((sizes["checkout_bytes"] + sizes["pack_bytes"]) / 2**20, 2)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["total_mib"] == sizes["total_mib"]
    before = (out / "manifest.json").read_text()
    # bad input: an error naming it, the existing pack untouched, no partial folder left
    for extra, data_dir, words in (([], tmp_path / "missing", "missing: folder not found"),
                                   (["--limit-mib", "0.001"], labelled_dataset, "over --limit-mib 0.001"),
                                   (["--wheel", "torch==2.3.0"], labelled_dataset, "never pack torch"),
                                   (["--test-cases", "5"], labelled_dataset, "--test-cases 5"),
                                   (["--spacing", "1", "2"], labelled_dataset, "--spacing must be")):
        args = ["--out", str(out), "--data", str(data_dir), "--cases", "5", "--spacing", "2", *extra]
        if "--wheel" not in extra:
            args.append("--no-wheels")
        if "--test-cases" not in extra:
            args += ["--test-cases", "2"]
        assert load_benchmark("gpu_pack").main(args) == 1
        err = capsys.readouterr().err
        assert "gpu_pack: error:" in err and words in err, err
        assert (out / "manifest.json").read_text() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]


def test_gpu_check_refuses_a_python_without_the_dependencies(tmp_path):
    bare = tmp_path / "python"  # the same interpreter without site-packages: no torch, no MONAI, no SimpleITK
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT), "--pack", str(tmp_path / "none"), "--dry-run"], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": str(bare)}, timeout=60)
    assert done.returncode == 1
    assert "lacks torch, monai, SimpleITK" in done.stderr and "make gpu-pack" in done.stderr, done.stderr
    done = subprocess.run(["bash", str(SCRIPT), "--pack"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--pack needs a folder" in done.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_installs_the_pack_and_runs_every_section(labelled_dataset, tmp_path):
    """About a minute here: every section at toy size on the CPU, on the pack's cases (3 train, 2 test)."""
    pack, out, work = tmp_path / "pack", tmp_path / "check.json", tmp_path / "work"
    assert _pack(pack, labelled_dataset) == 0
    _probe_wheel(pack / "wheels")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    cmd = ["bash", str(SCRIPT), "--pack", str(pack), "--dry-run", "--out", str(out), "--work", str(work)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "installed 1 wheel(s)" in done.stderr
    summary = json.loads(out.read_text())
    suite = load_benchmark("gpu_suite")
    assert summary["dry_run"] and summary["device"].startswith("cpu")
    assert summary["environment"]["pack_wheels"]["pasegprobe"] == {
        "version": "1.0", "location": summary["environment"]["pack_site"], "from_pack": True}
    assert not Path(summary["environment"]["pack_site"]).exists()  # the temporary folder is gone
    for section in suite.SECTIONS:  # every section ran, with its CUDA figures marked as skipped
        assert "error" not in summary[section] and "--dry-run" in summary[section]["skipped"], summary[section]
    assert summary["cuda_tests"]["passed"] and "skipped" in summary["cuda_tests"]["summary"]
    runs = summary["training"]["runs"]
    for name, its in suite.TRAINING_TOY["iterations"].items():
        row = runs[name]
        assert row["iterations"] == its and row["timed_iterations"] == its - suite.TRAINING_TOY["warmup"][name]
        assert row["iterations_per_s"] > 0 and 0 <= row["data_wait_mean"] <= 1 and row["losses_finite"]
        assert row["peak_rss_mb"] > 0 and row["validation_s"] is not None
    assert runs["scm"]["network"] == ["unet2d5", "attention_unet"]
    assert summary["training"]["data"].startswith("gpu_pack: 5 cases") and summary["training"]["settings"][
        "train_cases"] == 3
    row = summary["accuracy_row"]
    assert row["test_cases"] == 2 and set(row["dice"]) == set(json.loads((pack / "manifest.json").read_text())[
        "dataset"]["split"]["test"]) and 0 <= row["dice_mean"] <= 1
    assert summary["ddp"]["backend"] == "gloo" and summary["ddp"]["max_abs_weight_diff"] < 1e-5
    assert summary["ddp"]["runs"]["ddp_gloo_world1"]["processes"] == 1
    # one section again: the others' figures are kept
    done = subprocess.run(cmd + ["--only", "sliding_window"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["kept_from_previous"] == sorted(set(suite.SECTIONS) - {"sliding_window"})
    assert again["training"] == summary["training"] and again["sliding_window"] != summary["sliding_window"]


def test_cuda_tests_are_found_by_their_skip_mark(tmp_path, monkeypatch):
    suite = load_benchmark("gpu_suite")
    folder = tmp_path / "Testing" / "Python"
    folder.mkdir(parents=True)
    (folder / "test_a.py").write_text(
        "import pytest\nimport torch\n"
        "GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')\n\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')\n"
        "@pytest.mark.slow\ndef test_direct():\n    pass\n\n"
        "@GPU\ndef test_named():\n    pass\n\n"
        "def test_cpu():\n    pass\n")
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    monkeypatch.setattr(suite, "TESTS", folder)
    assert suite.cuda_tests() == ["Testing/Python/test_a.py::test_direct", "Testing/Python/test_a.py::test_named"]


def test_gpu_accuracy_plans_the_rows_it_is_asked_for(labelled_dataset, tmp_path, capsys):
    bench = load_benchmark("gpu_accuracy")
    parallel, later = bench.plan(list(bench.PARALLEL_ROWS + bench.LATER_ROWS), tmp_path)
    assert parallel == list(bench.PARALLEL_ROWS) and later == list(bench.LATER_ROWS)
    with pytest.raises(SystemExit, match="unknown row"):
        bench.plan(["stage one"], tmp_path)
    with pytest.raises(SystemExit, match="start from the stage-one rows"):
        bench.plan(["SCM (defaults)"], tmp_path)
    (tmp_path / "rows").mkdir()
    for row in bench.SCM_NEEDS:  # finished stage-one rows: skipped, and SCM may start from them
        (tmp_path / "rows" / f"{bench.slug(row)}.json").write_text("{}")
    assert bench.plan(list(bench.PARALLEL_ROWS + ("SCM (defaults)",)), tmp_path) == (["full supervision"],
                                                                                     ["SCM (defaults)"])
    assert bench.main(["--dry-run", "--out", str(tmp_path), "--data", str(tmp_path / "la"), "--rows",
                       "SCM (defaults)"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "--rows 'SCM (defaults)'" in lines[0] and f"--data {tmp_path / 'la'}" in lines[0]
    with pytest.raises(SystemExit, match=r"holds 5 labelled case\(s\); the benchmark's split needs the 80"):
        bench.check_data(labelled_dataset)
    with pytest.raises(SystemExit, match="folder not found"):
        bench.check_data(tmp_path / "la")
