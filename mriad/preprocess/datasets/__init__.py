"""Dataset adapters: ``--dataset`` name -> module with ``NAME``, ``DEFAULTS`` and ``discover()``.

Also ``LABELS`` (the segmentation labels allowed, None: any) and, optionally, ``LESION_LABELS`` (the
ones that are lesion; default every label > 0) and ``IGNORE_LABELS`` (the ones no metric may count,
written to the subject's ``ignore.nii.gz``: WMH's label 2 "other pathology").
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from mriad.infra.errors import MriadError
from mriad.infra.paths import check_identifier, is_identifier
from mriad.preprocess.datasets.base import DatasetDefaults, Discovery, Problem, Subject

__all__ = ["ADAPTERS", "DatasetDefaults", "Discovery", "Problem", "Subject", "adapter", "dataset_name", "discover"]

# Command-line name -> adapter module. BraTS years share one adapter and one manifest name.
ADAPTERS = {
    "ixi": "ixi",
    "brats": "brats",
    "brats18": "brats",
    "brats21": "brats",
    "mslub": "mslub",
    "atlas2": "atlas2",
    "wmh": "wmh",
    "bids": "bids",
    "generic": "generic",
}


def adapter(dataset: str) -> ModuleType:
    key = dataset.lower()
    if key not in ADAPTERS:
        raise MriadError(f"--dataset {dataset}: expected one of ixi, brats21, mslub, atlas2, wmh, bids, generic")
    return importlib.import_module(f"mriad.preprocess.datasets.{ADAPTERS[key]}")


def dataset_name(dataset: str) -> str:
    """The manifest's dataset column: ixi, brats, mslub, else the given name."""
    return adapter(dataset).NAME


def discover(dataset: str, raw: Path, modality: str = "t2", demographics: Path | None = None) -> Discovery:
    """What the adapter found; a subject whose ID cannot name a folder (``../x``, ``a/b``) is a problem.

    A subject's ID becomes ``OUT/<dataset>/<subject>/``: an ID read from a CSV or a file name must never
    address a folder outside OUT (another data set's subjects), so it is refused here, for every adapter.

    A ``modality`` list (``t2,flair``: one multi-channel image per subject) needs an adapter that sets
    ``MULTI_MODALITY`` (BraTS); the others hold or find one scan per subject and refuse it in one line.
    """
    module = adapter(dataset)
    if "," in modality and not getattr(module, "MULTI_MODALITY", False):
        raise MriadError(
            f"--modality {modality}: the {module.NAME} adapter finds one scan per subject; several modalities "
            "per subject (one multi-channel image) need co-registered scans per case: --dataset brats21"
        )
    found = module.discover(Path(raw), modality, demographics)
    safe = []
    for subject in found.subjects:
        if is_identifier(subject.subject_id):
            safe.append(subject)
            continue
        try:
            check_identifier(subject.subject_id, "subject_id")
        except MriadError as exc:
            found.problems.append(Problem(subject.subject_id, str(subject.image), str(exc)))
    found.subjects = safe
    return found
