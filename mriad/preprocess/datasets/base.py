"""What a dataset adapter finds in a raw folder: subjects, their scan of one modality, segmentation, demographics.

Adapters only look at file names and side tables; they never open images (the pipeline validates
those per subject, so one broken file fails one subject, not the discovery of all of them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("t1", "t2", "flair")
NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


@dataclass
class Subject:
    """One scan to preprocess. ``label`` is 1 when a lesion segmentation comes with it.

    ``others``: the subject's scans of the further modalities of a ``--modality`` list (e.g.
    ``t2,flair``: ``image`` is the T2, ``others`` the FLAIR), in the list's order; they must lie on
    ``image``'s grid (co-registered, as BraTS releases them)."""

    subject_id: str
    image: Path
    seg: Path | None = None
    age: float | None = None
    sex: str = ""
    notes: list[str] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)

    @property
    def label(self) -> int:
        return 1 if self.seg is not None else 0


@dataclass
class Problem:
    """A subject the adapter could not use (e.g. its folder lacks the wanted modality)."""

    subject: str
    file: str
    reason: str


@dataclass
class Discovery:
    subjects: list[Subject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetDefaults:
    """The steps a data set needs by default (BraTS: already stripped and in SRI24 space)."""

    skull_strip: str = "hd-bet"
    registration: str = "affine-fast"


def is_nifti(path: Path) -> bool:
    return path.is_file() and bool(NIFTI.search(path.name))


def stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    return NIFTI.sub("", path.name)


def nifti_files(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if is_nifti(p) and not p.name.startswith("."))


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_modality(modality: str, supported: Iterable[str], dataset: str) -> str:
    from mriad.infra.errors import MriadError

    modality = modality.lower()
    supported = tuple(supported)
    if modality not in supported:
        raise MriadError(f"--modality {modality}: the {dataset} data set has {', '.join(supported)}")
    return modality


def modality_list(modality: str) -> list[str]:
    """``"t2,flair"`` -> ``["t2", "flair"]`` (lower case; the first is the reference modality)."""
    from mriad.infra.errors import MriadError

    names = [part.strip().lower() for part in str(modality).split(",")]
    if "" in names or len(set(names)) != len(names):
        raise MriadError(f"--modality {modality}: expected distinct modalities separated by commas, e.g. t2,flair")
    return names


def sex_code(value: object) -> str:
    """Normalise sex to ``M`` / ``F`` (IXI codes 1 = male, 2 = female), else empty."""
    text = str(value).strip().lower()
    if text in {"1", "1.0", "m", "male"}:
        return "M"
    if text in {"2", "2.0", "f", "female"}:
        return "F"
    return ""


def age_value(value: object) -> float | None:
    try:
        age = float(str(value).strip())
    except ValueError:
        return None
    return round(age, 2) if age == age and 0 < age < 130 else None
