"""Packages on demand never fail silently: a failed pip install (offline, behind a proxy)
says what failed and what to do, and a torch older than the minimum is upgraded or refused."""

from __future__ import annotations

import subprocess

import pytest
from PASegSlicer.jobs.dependencies import MINIMUM_TORCH, DependencyChecker, DependencyError, Requirement, versionTuple  # noqa: E501


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
    with pytest.raises(DependencyError, match=r"torch 1.13.1 is installed, but PASeg needs torch 2.1 or newer"):
        _checker(old, _TorchLogic(old), answer=False).ensureTorch()
    logic = _TorchLogic(old)
    checker = _checker(old, logic)
    checker.ensureTorch()
    assert logic.calls == [{"askConfirmation": True, "torchVersionRequirement": f">={MINIMUM_TORCH}"}]
    assert checker.restartNeeded and "Restart Slicer" in checker.restartHint
    failing = {"torch": "1.13.1"}
    with pytest.raises(DependencyError, match="(?s)installing torch failed .*HTTPS_PROXY"):
        _checker(failing, _TorchLogic(failing, error=OSError("proxy refused"))).ensureTorch()
