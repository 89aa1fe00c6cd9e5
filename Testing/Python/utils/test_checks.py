"""PASegLib.utils.checks: the shared argument checks (values, conversions and the exact error wording)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from PASegLib.training.config import TrainConfig
from PASegLib.utils.checks import check_int, check_number, check_numbers


def test_check_int():
    assert check_int("n", 3, minimum=1) == 3
    assert type(check_int("n", np.int64(4), minimum=0)) is int
    assert check_int("n", -7) == -7
    for bad in (0, 1.0, True, "2", None):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got "):
            check_int("n", bad, minimum=1)
    with pytest.raises(ValueError, match=r"^radius must be an integer >= 1 \(voxels\), got 0$"):
        check_int("radius", 0, minimum=1, unit="voxels")


def test_check_number_bounds_and_wording():
    assert check_number("x", 0, minimum=0) == 0.0
    assert check_number("x", np.float32(0.5), minimum=0, maximum=1) == 0.5
    assert check_number("x", 1, minimum=0, maximum=1) == 1.0
    cases = [
        (dict(minimum=0), -1e-9, "a finite number >= 0"),
        (dict(minimum=0, open_minimum=True), 0, "a finite number > 0"),
        (dict(maximum=2, open_maximum=True), 2, "a finite number < 2"),
        (dict(minimum=0, maximum=1), 1.5, "a number in [0, 1]"),
        (dict(minimum=0, maximum=1, open_maximum=True), 1, "a number in [0, 1)"),
        (dict(), math.nan, "a finite number"),
        (dict(), math.inf, "a finite number"),
        (dict(), True, "a finite number"),
        (dict(), "1", "a finite number"),
    ]
    for kwargs, value, rule in cases:
        with pytest.raises(ValueError) as err:
            check_number("x", value, **kwargs)
        assert str(err.value) == f"x must be {rule}, got {value!r}"


def test_check_numbers():
    assert check_numbers("p", [1, 2.0, np.int32(3)], length=3, cast=int) == (1, 2, 3)
    assert check_numbers("s", (0.5, 1, 2), length=3, minimum=0, open_minimum=True) == (0.5, 1.0, 2.0)
    bad = [([1, 2], "3 integers"), ([1, 2.5, 3], "3 integers"), ([1, 2, "x"], "3 integers"),
           (5, "3 integers"), ([1, True, 3], "3 integers"), ([0, 1, 2], "3 integers >= 1")]
    for value, rule in bad:
        with pytest.raises(ValueError) as err:
            check_numbers("p", value, length=3, cast=int, minimum=1 if "1" in rule else None)
        assert str(err.value) == f"p must be {rule}, got {value!r}"
    with pytest.raises(ValueError, match=r"^s must be three positive numbers \(mm\), got \[1, 0, 1\]$"):
        check_numbers("s", [1, 0, 1], length=3, minimum=0, open_minimum=True, what="three positive numbers (mm)")
    with pytest.raises(ValueError, match="finite"):
        check_numbers("o", [0, math.nan, 0], length=3)


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "epochs must be an integer >= 1, got 0"),
    ("seed", -1, "seed must be an integer >= 0, got -1"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("beta", -0.1, "beta must be a finite number >= 0, got -0.1"),
    ("scm_lambda", 1.5, "scm_lambda must be a number in [0.0, 1.0], got 1.5"),
    ("sw_overlap", 1.0, "sw_overlap must be a number in [0.0, 1.0), got 1.0"),
    ("patch_size", [64, 64], "patch_size must be three integers >= 1 (I, J, K), got [64, 64]"),
    ("target_spacing_mm", [2, 2, -1], "target_spacing_mm must be three positive numbers (mm), got [2, 2, -1]"),
])
def test_train_config_errors_name_the_setting(field, value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig.from_dict({field: value})
    assert str(err.value) == message
