"""The scans `detect` is given: NIfTI files, folders of them, BIDS data sets, or CSV lists.

Discovery is the preprocess stage's own (:mod:`mriad.preprocess.datasets`): a folder finds
``<name>_seg.nii.gz`` beside a scan as its ground truth, a BIDS data set its ``*_lesion*`` masks, a
CSV its ``seg`` column. Names become output file names, so they are checked; a name used twice
keeps its first scan and the others are reported.
"""

from __future__ import annotations

from pathlib import Path

from mriad.infra.paths import is_identifier
from mriad.preprocess.datasets import Problem, Subject, discover
from mriad.preprocess.datasets.base import is_nifti, stem


def find_scans(paths: list[Path], modality: str = "t2") -> tuple[list[Subject], list[Problem]]:
    """Every scan named by ``paths`` (in order), and the ones that cannot be used."""
    subjects: list[Subject] = []
    problems: list[Problem] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            problems.append(Problem(stem(path), str(path), f"{path}: not found"))
        elif path.is_file() and is_nifti(path):
            subjects.append(Subject(stem(path), path))
        elif path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
            found = discover("generic", path, modality)
            subjects += found.subjects
            problems += found.problems
        elif path.is_dir():
            dataset = "bids" if (path / "dataset_description.json").is_file() else "generic"
            found = discover(dataset, path, modality)
            subjects += found.subjects
            problems += [Problem(p.subject, p.file, f"{p.file}: {p.reason}") for p in found.problems]
        else:
            problems.append(Problem(path.name, str(path), f"{path}: not a NIfTI scan, a folder or a CSV"))
    kept: list[Subject] = []
    seen: set[str] = set()
    for subject in subjects:
        name = subject.subject_id
        if not is_identifier(name):
            problems.append(
                Problem(
                    name,
                    str(subject.image),
                    f"{subject.image}: the name {name!r} cannot be an "
                    "output file name (letters, digits, '.', '_', '-', '+')",
                )
            )
        elif name in seen:
            problems.append(Problem(name, str(subject.image), f"{subject.image}: a second scan named {name}"))
        else:
            seen.add(name)
            kept.append(subject)
    return kept, problems
