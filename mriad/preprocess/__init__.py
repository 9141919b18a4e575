"""Raw scans -> the paper's 96x96x50 volumes (DESIGN.md section 3), one module per step.

Imports are lazy: a spawned worker process imports this package before it caps its thread pools
(see :mod:`mriad.preprocess.threads`), so nothing heavy may load here.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "preprocess": "mriad.preprocess.pipeline",
    "PreprocessResult": "mriad.preprocess.pipeline",
    "preprocess_subject": "mriad.preprocess.api",
    "Options": "mriad.preprocess.subject",
    "run_steps": "mriad.preprocess.subject",
    "reorient_canonical": "mriad.preprocess.reorient",
    "resample_isotropic": "mriad.preprocess.resample",
    "resample_to_grid": "mriad.preprocess.resample",
    "skull_strip": "mriad.preprocess.skullstrip",
    "to_crop_grid": "mriad.preprocess.crop",
    "n4_correct": "mriad.preprocess.bias",
    "percentile_normalise": "mriad.preprocess.normalise",
    "write_qc": "mriad.preprocess.qc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mriad.preprocess' has no attribute {name!r}")
