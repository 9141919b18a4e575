"""`mriad bundle export RUN FILE.zip` and `mriad bundle import FILE.zip [--to DIR]`.

Export turns a run's checkpoint into safetensors (no pickle), adds the hyperparameters, the calibrated
thresholds, the training data's preprocessing settings, the evaluation results with their protocol and
a model card, and lists every member's SHA-256 in ``bundle.json``. The zip is reproducible: members in a
fixed order with a fixed timestamp, so the same run exports to the same bytes. Import verifies all of it
(:func:`mriad.bundle.format.read_bundle`) before writing anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import zipfile
from pathlib import Path
from typing import Any

from mriad.bundle import format as fmt
from mriad.infra.errors import MriadError

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=list) + "\n").encode("utf-8")


def _weights_bytes(state_dict: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    # safetensors refuses tensors that share memory; a contiguous copy of each is the same values.
    return save(
        {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}, metadata={"format": "pt"}
    )


def bundle_members(run: str | Path, which: str = "best") -> dict[str, bytes]:
    """Every member of the bundle of ``run`` (``bundle.json`` last, with the others' checksums)."""
    from mriad.bundle.card import evaluation_records, model_card, training_data
    from mriad.contracts.run_folder import versions
    from mriad.detect.source import from_run
    from mriad.models.registry import get_model_class

    source = from_run(run, which)
    run_config = source.provenance.get("run_config", {})
    cls: Any = get_model_class(source.model_name)
    members: dict[str, bytes] = {}
    if source.state_dict is not None:
        members[fmt.WEIGHTS] = _weights_bytes(source.state_dict)
    members[fmt.MODEL] = _json_bytes(
        {
            "model": source.model_name,
            "config": source.model_config,
            "checkpoint": which,
            "epoch": source.provenance.get("epoch"),
            "step": source.provenance.get("step"),
            "weights_sha256": source.weights_sha256(),
        }
    )
    thresholds = {
        split: {k: v for k, v in entry.items() if k != "summary"} for split, entry in source.thresholds.items()
    }
    members[fmt.THRESHOLDS] = _json_bytes(thresholds)
    members[fmt.PREPROCESSING] = _json_bytes(
        {
            "options": source.preprocessing,
            "note": "the options of `mriad preprocess` the training data was made with (null: not recorded; "
            "`mriad detect` then uses preprocess's defaults)",
        }
    )
    evaluations = evaluation_records(Path(run))
    members[fmt.EVALUATION] = _json_bytes(evaluations)
    checksums = {name: {"sha256": fmt.sha256_bytes(data), "size": len(data)} for name, data in members.items()}
    card = model_card(
        model=source.model_name,
        paper=cls.paper,
        summary=cls.summary,
        config=source.model_config,
        run_config=run_config,
        data=training_data(Path(run), run_config),
        evaluations=evaluations,
        thresholds=thresholds,
        preprocessing=source.preprocessing,
        checksums=checksums,
        versions=versions(),
    )
    members[fmt.CARD] = card.encode("utf-8")
    checksums[fmt.CARD] = {"sha256": fmt.sha256_bytes(members[fmt.CARD]), "size": len(members[fmt.CARD])}
    members[fmt.INDEX] = _json_bytes(
        {
            "format": fmt.FORMAT,
            "version": fmt.FORMAT_VERSION,
            "model": source.model_name,
            "created": run_config.get("created"),
            "exported_by": versions(),
            "members": checksums,
        }
    )
    return members


def export_bundle(run: str | Path, file: str | Path, *, which: str = "best", force: bool = False) -> dict[str, Any]:
    """Write the bundle of ``run`` to ``file`` (a .zip); returns what was written."""
    from mriad.infra.io import atomic_path

    file = Path(file)
    if file.suffix.lower() != ".zip":
        raise MriadError(f"{file}: a bundle is a .zip file")
    if file.exists() and not force:
        raise MriadError(f"{file}: exists; pass --force to replace it")
    members = bundle_members(run, which)
    with atomic_path(file) as tmp:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(members, key=lambda n: (n != fmt.INDEX, n)):
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, members[name])
    bundle = fmt.read_bundle(file)  # what was written verifies, or nothing is claimed
    return {
        "file": str(file),
        "sha256": bundle.sha256,
        "members": sorted(members),
        "bytes": file.stat().st_size,
        "model": json.loads(members[fmt.MODEL])["model"],
    }


def import_bundle(file: str | Path, to: str | Path | None = None, *, force: bool = False) -> dict[str, Any]:
    """Verify ``file`` and unpack it into ``to`` (default: a folder named after the file, beside it in
    the current folder); an existing non-empty folder is refused unless ``force``."""
    from mriad.infra.io import atomic_write_bytes
    from mriad.infra.paths import child

    file = Path(file)
    bundle = fmt.read_bundle(file)
    if bundle.source.is_dir():
        raise MriadError(f"{file}: already an imported bundle folder (use it with `mriad detect --bundle`)")
    target = Path(to) if to is not None else Path(file.stem)
    if target.exists() and not target.is_dir():
        raise MriadError(f"{target}: exists and is not a folder; choose another --to")
    present = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    others = [name for name in present if name not in fmt.MEMBERS]
    if others:
        raise MriadError(f"{target}: holds other files ({', '.join(others[:3])}); choose another --to")
    if present and not force:
        raise MriadError(f"{target}: already holds a bundle; pass --force to replace it")
    target.mkdir(parents=True, exist_ok=True)
    stale = [p for p in target.iterdir() if p.is_file() and p.name in fmt.MEMBERS and p.name not in bundle.members]
    for path in stale:  # a member of an older bundle that this one does not carry
        path.unlink()
    for name in sorted(bundle.members, key=lambda n: (n == fmt.INDEX, n)):  # the index last
        atomic_write_bytes(child(target, name), bundle.members[name])
    fmt.read_bundle(target)
    imported = {
        "file": str(file),
        "to": str(target),
        "sha256": bundle.sha256,
        "members": sorted(bundle.members),
        "model": bundle.model.get("model"),
        "imported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return imported
