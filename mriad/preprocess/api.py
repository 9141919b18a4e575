"""``preprocess_subject``: one scan (and its lesion mask) to the final grid, from Python."""

from __future__ import annotations

from pathlib import Path

from mriad.preprocess.datasets.base import Subject, stem
from mriad.preprocess.pipeline import Outcome, process_subject, resolve_options


def preprocess_subject(
    image: Path | str,
    out_dir: Path | str,
    *,
    seg: Path | str | None = None,
    subject_id: str | None = None,
    dataset: str = "generic",
    modality: str = "t2",
    skull_strip: str | None = None,
    registration: str | None = None,
    device: str = "cpu",
    n4: bool = True,
    qc: bool = True,
) -> Outcome:
    """Write ``image.nii.gz``, ``mask.nii.gz`` (+ ``seg.nii.gz``), ``qc.png``, ``timings.json`` and
    ``done.json`` into ``out_dir``. Steps left ``None`` take the data set's defaults.

    Raises :class:`mriad.infra.errors.InputError` (message starting with the file) for a bad input, unlike the
    batch :func:`mriad.preprocess.preprocess`, which records it and carries on.
    """
    options = resolve_options(dataset, modality, skull_strip, registration, device, n4, qc)
    image = Path(image)
    subject = Subject(subject_id or stem(image), image, Path(seg) if seg else None)
    return process_subject(subject, Path(out_dir), options)
