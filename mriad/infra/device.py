"""Choosing the torch device and seeding, from the global ``--device`` and ``--seed`` options."""

from __future__ import annotations

from typing import Any


def resolve_device(name: str = "auto") -> Any:
    """``auto`` -> cuda when available, else cpu; ``cuda:N`` is checked to exist."""
    import torch

    from mriad.infra.errors import MriadError

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MriadError(f"--device {name}: no CUDA device is available on this machine")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise MriadError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise MriadError(f"--device {name}: expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Make CUDA kernels deterministic (cuDNN, cuBLAS workspace); CPU runs already are."""
    import os

    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
