"""Fixtures for capture tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def seeded() -> None:
    torch.manual_seed(0)
