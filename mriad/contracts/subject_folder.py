"""The preprocessed subject folder ``OUT/<dataset>/<subject>/``: the one module that knows its files.

``preprocess`` writes ``image.nii.gz``, ``mask.nii.gz`` (``seg.nii.gz`` for lesion subjects;
``ignore.nii.gz`` where the data set's labels mark voxels no metric may count, e.g. WMH's label 2),
``qc.png``, ``timings.json``, the way back to the scan (``transform.json``, ``transform.mat``) and,
last, the ``done.json`` marker; ``synth --preprocessed`` writes the three volumes. The dataset and
subject names come from raw folders and CSV files, so they are checked before they become a path
(:mod:`mriad.infra.paths`): ``../other/brats/BraTS2021_00000`` can never address another subject.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mriad.infra.paths import check_identifier, child

IMAGE = "image.nii.gz"
MASK = "mask.nii.gz"
SEG = "seg.nii.gz"
IGNORE = "ignore.nii.gz"  # voxels scored neither as lesion nor as healthy
QC = "qc.png"
TIMINGS = "timings.json"
TRANSFORM_JSON = "transform.json"
TRANSFORM_MAT = "transform.mat"
DONE = "done.json"
# Everything a finished subject folder may hold; a failed subject's are removed again.
OUTPUTS = (IMAGE, MASK, SEG, IGNORE, QC, TIMINGS, TRANSFORM_JSON, TRANSFORM_MAT, DONE)
VOLUMES = {"image": IMAGE, "mask": MASK, "seg": SEG, "ignore": IGNORE}  # manifest column -> file


@dataclass(frozen=True)
class SubjectFolder:
    """The files of one preprocessed subject."""

    root: Path

    @classmethod
    def of(cls, out: str | os.PathLike[str], dataset: str, subject: str) -> SubjectFolder:
        """``out/<dataset>/<subject>``; names that are not safe identifiers are refused."""
        dataset = check_identifier(dataset, "dataset", out)
        subject = check_identifier(subject, "subject_id", out)
        return cls(child(out, dataset, subject))

    @property
    def image(self) -> Path:
        return self.root / IMAGE

    @property
    def mask(self) -> Path:
        return self.root / MASK

    @property
    def seg(self) -> Path:
        return self.root / SEG

    @property
    def ignore(self) -> Path:
        return self.root / IGNORE

    @property
    def qc(self) -> Path:
        return self.root / QC

    @property
    def timings(self) -> Path:
        return self.root / TIMINGS

    @property
    def done(self) -> Path:
        return self.root / DONE


def subject_dir(out: str | os.PathLike[str], dataset: str, subject: str) -> Path:
    """The folder of one preprocessed subject (see :meth:`SubjectFolder.of`)."""
    return SubjectFolder.of(out, dataset, subject).root


def finished_markers(out: str | os.PathLike[str]) -> list[Path]:
    """Every ``done.json`` directly under ``out/<dataset>/<subject>/``, sorted (not yet verified)."""
    return sorted(Path(out).glob(f"*/*/{DONE}"))
