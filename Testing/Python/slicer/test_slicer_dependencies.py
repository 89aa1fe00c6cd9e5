"""Packages on demand never fail silently: a failed pip install (offline, behind a proxy)
says what failed and what to do, a torch older than the minimum is upgraded or refused, a MONAI older than the
minimum is upgraded with pip, and a GPU that the installed torch cannot use is said before a job starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PASegSlicer.jobs import dependencies, devices
from PASegSlicer.jobs.dependencies import (
    MINIMUM_MONAI,
    MINIMUM_TORCH,
    TRAINING,
    DependencyChecker,
    DependencyError,
    Requirement,
    versionTuple,
)


def _offlinePip(arguments):
    raise subprocess.CalledProcessError(1, ["python", "-m", "pip", "install"] + list(arguments))


def test_a_failed_pip_install_says_what_failed_and_what_to_do():
    checker = DependencyChecker(lambda text: True, _offlinePip, findSpec=lambda name: None)
    with pytest.raises(DependencyError) as caught:
        checker.ensure([Requirement("monai", "monai>=1.3")], "PASeg training")
    text = str(caught.value)
    assert "installing monai>=1.3 failed (CalledProcessError" in text and "returned non-zero exit status 1" in text
    assert "HTTPS_PROXY" in text and "--find-links" in text and "Python Console" in text


class _TorchLogic:
    def __init__(self, versions, result="torch", error=None):
        self.versions, self.result, self.error, self.calls = versions, result, error, []

    def torchInstalled(self):
        return True

    def installTorch(self, **kwargs):
        self.calls.append(kwargs)
        if self.error:
            raise self.error
        self.versions["torch"] = "2.4.1+cu121"
        return self.result


def _checker(versions, logic, answer=True):
    module = type("PyTorchUtils", (), {"PyTorchUtilsLogic": lambda self=None: logic})
    return DependencyChecker(lambda text: answer, _offlinePip, findSpec=lambda name: object(),
                             importModule=lambda name: module, installedVersion=versions.get)  # fmt: skip


def test_an_old_torch_is_upgraded_through_the_extension_or_refused():
    assert versionTuple("2.13.0+cpu") > versionTuple(MINIMUM_TORCH) > versionTuple("1.13.1")
    current = {"torch": "2.13.0+cpu"}
    logic = _TorchLogic(current)
    _checker(current, logic).ensureTorch()
    assert logic.calls == []  # new enough: nothing asked, nothing installed
    old = {"torch": "1.13.1"}
    with pytest.raises(DependencyError, match=rf"torch 1.13.1 is installed, but PASeg needs torch {MINIMUM_TORCH} or "
                                              r"newer"):
        _checker(old, _TorchLogic(old), answer=False).ensureTorch()
    logic = _TorchLogic(old)
    checker = _checker(old, logic)
    checker.ensureTorch()
    assert logic.calls == [{"askConfirmation": True, "torchVersionRequirement": f">={MINIMUM_TORCH}"}]
    assert checker.restartNeeded and "Restart Slicer" in checker.restartHint
    failing = {"torch": "1.13.1"}
    with pytest.raises(DependencyError, match="(?s)installing torch failed .*HTTPS_PROXY"):
        _checker(failing, _TorchLogic(failing, error=OSError("proxy refused"))).ensureTorch()


def test_an_old_monai_is_upgraded_with_pip_like_a_missing_one():
    assert TRAINING[0] == Requirement("monai", f"monai>={MINIMUM_MONAI}", MINIMUM_MONAI)
    versions = {"monai": "1.3.2", "torch": "2.13.0"}
    calls, questions = [], []

    def pip(arguments):
        calls.append(arguments[:-2])
        versions["monai"] = "1.4.0"

    checker = DependencyChecker(lambda text: questions.append(text) or True, pip, findSpec=lambda name: object(),
                                installedVersion=versions.get)
    assert checker.tooOld(TRAINING[0]) == "1.3.2"
    assert checker.ensure(TRAINING, "PASeg training") == [f"monai>={MINIMUM_MONAI}"]
    assert calls == [[f"monai>={MINIMUM_MONAI}"]]
    assert f"not installed or too old: monai>={MINIMUM_MONAI} (1.3.2 is installed)" in questions[0]
    assert checker.ensure(TRAINING, "PASeg training") == [] and len(calls) == 1  # 1.4.0 now: nothing to do
    versions["monai"] = "1.6.1"
    assert checker.missing(TRAINING) == []


#: A ``devices`` event of a computer whose GPU the installed torch was not built for (a Blackwell GPU, cu121).
BLACKWELL = {"event": "devices", "torch": "2.3.1+cu121", "cuda_version": "12.1",
             "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"],
             "cuda": [{"index": 0, "name": "NVIDIA RTX PRO 6000", "memory_gb": 95.0, "capability": "12.0",
                       "supported": False}], "mps": False}


@pytest.fixture
def fresh_gpu_checks(monkeypatch):
    monkeypatch.setattr(dependencies, "_PROBED", {})
    monkeypatch.setattr(dependencies, "_ACCEPTED", set())


def test_a_gpu_the_installed_torch_cannot_use_is_said_before_a_job(fresh_gpu_checks):
    questions, probes = [], []

    def probe():
        probes.append(1)
        return BLACKWELL

    def checker(answer):
        return DependencyChecker(lambda text: questions.append(text) or answer, _offlinePip,
                                 findSpec=lambda name: object(), installedVersion=lambda name: "2.3.1",
                                 probeDevices=probe)

    with pytest.raises(DependencyError, match=r"cancelled: GPU 0 \(NVIDIA RTX PRO 6000, compute capability 12.0\): "
                                              r"the installed torch 2.3.1\+cu121 \(CUDA 12.1\) has no kernels for it "
                                              r"\(built for sm_50–sm_90\), so PASeg runs on the CPU"):
        checker(False).ensureForJobs()
    assert "PyTorch extension" in questions[0] and questions[0].endswith("Continue without this GPU?")
    assert checker(True).ensureForJobs() == [] and len(questions) == 2  # asked again; the user agrees …
    assert checker(True).checkGpus() == "" and len(questions) == 2  # … and is not asked again for this torch
    assert len(probes) == 1  # one child process per torch version and session
    assert "compute capability 12.0" in devices.describeDevices(BLACKWELL)


def test_usable_gpus_ask_nothing(fresh_gpu_checks):
    fine = {**BLACKWELL, "torch": "2.7.0+cu128", "arch_list": BLACKWELL["arch_list"] + ["sm_100", "sm_120"],
            "cuda": [{**BLACKWELL["cuda"][0], "supported": True}]}
    checker = DependencyChecker(lambda text: pytest.fail(text), _offlinePip, findSpec=lambda name: object(),
                                installedVersion=lambda name: "2.7.0", probeDevices=lambda: fine)
    assert checker.ensureForJobs() == [] and checker.checkGpus() == ""
    assert devices.describeDevices(fine) == "GPU 0: NVIDIA RTX PRO 6000 (95.0 GB)"
    two = {**BLACKWELL, "cuda": [BLACKWELL["cuda"][0], {**BLACKWELL["cuda"][0], "index": 1, "name": "NVIDIA A100",
                                                         "capability": "8.0", "supported": True}]}
    line = devices.describeDevices(two)
    assert line.startswith("GPU 1: NVIDIA A100 (95.0 GB); GPU 0 (NVIDIA RTX PRO 6000, compute capability 12.0)")
    assert "so PASeg runs on the other GPUs (or the CPU)" in line


def test_the_real_gpu_probe_runs_paseg_devices_in_a_child_process():
    torch = pytest.importorskip("torch")
    event = devices.probeDevices(sys.executable)
    assert event["event"] == "devices" and event["torch"] == torch.__version__, event
    assert {"cuda_version", "arch_list", "cuda", "mps"} <= set(event)
    assert all({"capability", "supported"} <= set(g) for g in event["cuda"])
    failed = devices.probeDevices(sys.executable, run=lambda *a, **k: (_ for _ in ()).throw(OSError("no python")))
    assert failed["torch"] is None and "no python" in failed["error"]
