"""The supported torch and MONAI ranges: one home (``PASegLib.utils.requirements``), stated alike in
``pyproject.toml``, the Slicer module's dependency check and the README; older versions are refused by name."""

from __future__ import annotations

import importlib.metadata
import io
import re
import sys
from pathlib import Path

import pytest

from PASegLib.utils.requirements import (
    MINIMUM_MONAI,
    MINIMUM_TORCH,
    MINIMUMS,
    check_supported_versions,
    requirement_spec,
    unsupported_versions,
    version_tuple,
)

ROOT = Path(__file__).resolve().parents[3]


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_declares_the_floors():
    extras = _pyproject()["project"]["optional-dependencies"]["train"]
    assert sorted(extras) == sorted(requirement_spec(name) for name in MINIMUMS) == ["monai>=1.4", "torch>=2.3"]
    # nothing else in the project's dependencies names torch or MONAI with another range
    others = [d for d in _pyproject()["project"]["dependencies"] if re.match(r"(torch|monai)\b", d, re.I)]
    assert others == []


def test_the_slicer_dependency_check_uses_the_floors():
    from PASegSlicer.jobs.dependencies import MINIMUM_MONAI as SLICER_MONAI
    from PASegSlicer.jobs.dependencies import MINIMUM_TORCH as SLICER_TORCH
    from PASegSlicer.jobs.dependencies import TRAINING

    assert (SLICER_TORCH, SLICER_MONAI) == (MINIMUM_TORCH, MINIMUM_MONAI)
    (monai,) = [r for r in TRAINING if r.module == "monai"]
    assert monai.spec == requirement_spec("monai") and monai.minimum == MINIMUM_MONAI


def test_the_readme_states_the_floors():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"**Supported versions: torch ≥ {MINIMUM_TORCH} and MONAI ≥ {MINIMUM_MONAI}**" in readme
    assert 'pip install "PASegLib[train]"' in readme


def test_the_tested_versions_lie_inside_the_ranges():
    """What the development setup pins (requirements-dev.txt) and what is installed satisfy the floors; the
    installed MONAI's own torch floor is met (pip could not have installed it otherwise)."""
    pins = dict(re.findall(r"^(torch|monai)==([\w.+]+)", (ROOT / "requirements-dev.txt").read_text(), re.M))
    assert set(pins) == {"torch", "monai"}
    for name, version in pins.items():
        assert version_tuple(version) >= version_tuple(MINIMUMS[name]), (name, version)
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    assert unsupported_versions() == []
    needs = [r for r in importlib.metadata.requires("monai") or [] if r.startswith("torch") and "extra" not in r]
    for requirement in needs:
        floor = re.search(r">=\s*([\d.]+)", requirement)
        if floor:
            assert version_tuple(importlib.metadata.version("torch")) >= version_tuple(floor.group(1))


def test_the_torch_floor_is_the_first_release_with_the_cuda_grad_scaler():
    torch = pytest.importorskip("torch")
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # what every trainer builds (torch >= 2.3)
    assert not scaler.is_enabled()
    assert version_tuple(MINIMUM_TORCH) == (2, 3)


def test_older_versions_are_named_with_the_reason_and_the_fix():
    installed = {"torch": "2.2.2+cu121", "monai": "1.3.2"}
    problems = unsupported_versions(installed.get)
    assert problems == [
        "torch 2.2.2+cu121 is installed, but PASeg needs torch 2.3 or newer (torch.amp.GradScaler(\"cuda\"), which "
        "training uses, first exists in torch 2.3); upgrade it: pip install 'torch>=2.3'",
        "monai 1.3.2 is installed, but PASeg needs monai 1.4 or newer (MONAI 1.4 is the oldest release PASeg is "
        "tested with); upgrade it: pip install 'monai>=1.4'"]
    with pytest.raises(ValueError, match=r"torch 2\.2\.2\+cu121 is installed.*; monai 1\.3\.2 is installed"):
        check_supported_versions(installed.get)
    assert unsupported_versions({"torch": "2.3.0", "monai": "1.4.0"}.get) == []
    assert unsupported_versions({"torch": "not a version"}.get) == []  # unreadable: not refused
    assert unsupported_versions(lambda name: None) == []  # missing packages are reported elsewhere
    with pytest.raises(ValueError, match="name must be one of torch, monai, got 'numpy'"):
        requirement_spec("numpy")


def test_training_refuses_an_old_torch_before_writing_anything(tiny_dataset, tmp_path, monkeypatch):
    from PASegLib.training.launch import train_from_dataset

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.1.0" if name == "torch" else real(name))
    with pytest.raises(ValueError, match=r"torch 2\.1\.0 is installed, but PASeg needs torch 2\.3 or newer"):
        train_from_dataset(tiny_dataset, tmp_path / "run", stream=io.StringIO())
    assert not (tmp_path / "run").exists()
