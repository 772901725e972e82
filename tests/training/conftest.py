"""A small slice of digits so trainer tests stay fast on a shared 2-core machine."""

from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture(scope="session")
def small_digits(digits):
    """400 train / 150 test digits, same classes and spec as the full set."""
    return dataclasses.replace(digits, train=digits.train.subset(400, seed=0),
                               test=digits.test.subset(150, seed=0))
