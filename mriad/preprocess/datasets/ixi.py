"""IXI: a flat folder (or per-modality folders) of ``IXI012-HH-1211-T2.nii.gz`` /
``IXI012-HH-1211_T1.nii.gz`` scans of healthy adults; age and sex from ``IXI.xls`` (``--demographics``).

The subject ID is ``IXI<id>`` (``IXI012``): the spreadsheet's ``IXI_ID``, unique per person, and the same
ID that T1 and T2 scans of one person share. IXI has no FLAIR.
"""

from __future__ import annotations

import re
from pathlib import Path

from mriad.infra.errors import InputError
from mriad.preprocess.datasets.base import (
    DatasetDefaults,
    Discovery,
    Problem,
    Subject,
    age_value,
    check_modality,
    nifti_files,
    sex_code,
)

NAME = "ixi"
DEFAULTS = DatasetDefaults()
LABELS: tuple[int, ...] | None = None
_FILE = re.compile(r"^(IXI(\d+)-[A-Za-z]+-\d+)[-_](T1|T2|PD)\.nii(\.gz)?$", re.IGNORECASE)


def discover(raw: Path, modality: str = "t2", demographics: Path | None = None) -> Discovery:
    modality = check_modality(modality, ("t1", "t2", "pd"), "IXI")
    table = read_demographics(demographics) if demographics else {}
    found = Discovery()
    seen: set[str] = set()
    for path in nifti_files(raw, recursive=True):
        match = _FILE.match(path.name)
        if not match or match.group(3).lower() != modality:
            continue
        number = int(match.group(2))
        ident = f"IXI{number:03d}"
        if ident in seen:
            found.problems.append(Problem(ident, str(path), f"a second {modality.upper()} scan of {ident}"))
            continue
        seen.add(ident)
        age, sex = table.get(number, (None, ""))
        found.subjects.append(Subject(ident, path, None, age=age, sex=sex))
    return found


def read_demographics(path: Path) -> dict[int, tuple[float | None, str]]:
    """``IXI_ID -> (age, sex)`` from the IXI spreadsheet (.xls/.xlsx) or a CSV/TSV export of it.

    Columns are found by name (``IXI_ID``, ``AGE``, ``SEX_ID (1=m, 2=f)``); rows repeated with an empty
    age (the spreadsheet has some) do not override a filled one.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "demographics file not found")
    try:
        if path.suffix.lower() in (".xls", ".xlsx"):
            frame = pd.read_excel(path, dtype=str)
        else:
            frame = pd.read_csv(path, dtype=str, sep=None, engine="python")
    except ImportError as exc:
        raise InputError(path, f"cannot read this spreadsheet ({exc}); export it as CSV") from None
    except Exception as exc:
        raise InputError(path, f"not a readable table ({str(exc).splitlines()[0][:120]})") from None
    columns = {c.strip().lower(): c for c in frame.columns}
    id_col = next((columns[c] for c in columns if c in ("ixi_id", "id", "subject_id")), None)
    age_col = next((columns[c] for c in columns if c == "age" or c.startswith("age")), None)
    sex_col = next((columns[c] for c in columns if c.startswith("sex")), None)
    if id_col is None:
        raise InputError(path, "no IXI_ID column")
    table: dict[int, tuple[float | None, str]] = {}
    for _, row in frame.iterrows():
        digits = re.search(r"\d+", str(row[id_col]))
        if not digits:
            continue
        key = int(digits.group())
        age = age_value(row[age_col]) if age_col else None
        sex = sex_code(row[sex_col]) if sex_col else ""
        old_age, old_sex = table.get(key, (None, ""))
        table[key] = (age if age is not None else old_age, sex or old_sex)
    return table
