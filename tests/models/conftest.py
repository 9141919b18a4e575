"""Model tests run on one thread: the machine is shared and the networks are tiny."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)
