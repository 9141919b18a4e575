"""Bundles: export/import round trip, bit-identical detection, and every refusal of an untrusted zip."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from detect_helpers import FAST_PREPROCESS, write_run

from mriad.bundle import export_bundle, import_bundle, read_bundle
from mriad.bundle import format as fmt
from mriad.infra.errors import InputError


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundle")
    run = write_run(root / "runs" / "ae", threshold=0.4, protocol="reference")
    file = root / "ae.zip"
    export_bundle(run, file)
    return run, file


def _rewrite(source: Path, target: Path, change) -> Path:
    """Copy a bundle, letting ``change(members)`` edit the members (a dict name -> bytes) first."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(target, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return target


def _reindex(members: dict[str, bytes]) -> None:
    """Recompute every checksum, as an attacker who edits the index too would."""
    index = json.loads(members[fmt.INDEX])
    index["members"] = {
        n: {"sha256": fmt.sha256_bytes(p), "size": len(p)} for n, p in members.items() if n != fmt.INDEX
    }
    members[fmt.INDEX] = json.dumps(index).encode()


def test_export_writes_safetensors_thresholds_and_a_card(exported: tuple[Path, Path]) -> None:
    from safetensors.torch import load

    from mriad.infra.io import safe_torch_load

    run, file = exported
    with zipfile.ZipFile(file) as archive:
        names = sorted(archive.namelist())
        weights = load(archive.read(fmt.WEIGHTS))
        card = archive.read(fmt.CARD).decode()
        index = json.loads(archive.read(fmt.INDEX))
        thresholds = json.loads(archive.read(fmt.THRESHOLDS))
    assert names == sorted(
        [fmt.INDEX, fmt.WEIGHTS, fmt.MODEL, fmt.THRESHOLDS, fmt.PREPROCESSING, fmt.EVALUATION, fmt.CARD]
    )
    checkpoint = safe_torch_load(run / "checkpoints" / "best.pt")
    assert set(weights) == set(checkpoint["state_dict"])
    assert all(np.array_equal(weights[k].numpy(), checkpoint["state_dict"][k].numpy()) for k in weights)
    assert thresholds["brats-val"]["threshold"] == 0.4 and thresholds["brats-val"]["protocol"] == "reference"
    assert set(index["members"]) == set(names) - {fmt.INDEX}
    for name, entry in index["members"].items():  # every member's SHA-256, also in the card
        assert entry["sha256"] in card or name == fmt.CARD
    assert "Model card: ae" in card and "brats-test" in card and "Paper:" in card
    # The same run exports to the same bytes.
    again = file.with_name("again.zip")
    export_bundle(run, again)
    assert again.read_bytes() == file.read_bytes()


def test_import_verifies_and_unpacks(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, file = exported
    result = import_bundle(file, tmp_path / "models" / "ae")
    assert sorted(p.name for p in (tmp_path / "models" / "ae").iterdir()) == result["members"]
    assert read_bundle(tmp_path / "models" / "ae").model["model"] == "ae"
    with pytest.raises(Exception, match="already holds a bundle"):
        import_bundle(file, tmp_path / "models" / "ae")


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("tampered", "SHA-256 differs"),
        ("zip_slip", "zip-slip"),
        ("pickle_named", "pickled files are refused"),
        ("pickle_inside", "holds a pickle"),
        ("missing_checksum", "no SHA-256"),
        ("unknown", "unknown member"),
        ("listed_but_absent", "does not hold"),
    ],
)
def test_import_refuses(exported: tuple[Path, Path], tmp_path: Path, case: str, pattern: str) -> None:
    _, file = exported

    def change(members: dict[str, bytes]) -> None:
        if case == "tampered":  # one weight byte flipped, the index left as it was
            payload = bytearray(members[fmt.WEIGHTS])
            payload[-1] ^= 0x01
            members[fmt.WEIGHTS] = bytes(payload)
        elif case == "zip_slip":
            members["../../evil.json"] = b"{}"
            _reindex(members)
        elif case == "pickle_named":
            members["weights.pt"] = pickle.dumps({"x": 1})
            _reindex(members)
        elif case == "pickle_inside":  # a pickle under the weights' name, with a matching checksum
            members[fmt.WEIGHTS] = pickle.dumps({"state_dict": [1, 2, 3]}, protocol=4)
            _reindex(members)
        elif case == "missing_checksum":
            index = json.loads(members[fmt.INDEX])
            del index["members"][fmt.THRESHOLDS]
            members[fmt.INDEX] = json.dumps(index).encode()
        elif case == "unknown":
            members["notes.txt"] = b"hello"
            _reindex(members)
        elif case == "listed_but_absent":
            del members[fmt.EVALUATION]

    bad = _rewrite(file, tmp_path / "bad.zip", change)
    target = tmp_path / "unpacked"
    with pytest.raises(InputError, match=pattern):
        import_bundle(bad, target)
    assert not target.exists()  # nothing written


def test_oversized_members_are_refused(exported: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    _, file = exported
    monkeypatch.setattr(fmt, "MAX_TEXT_BYTES", 64)
    with pytest.raises(InputError, match="over the limit"):
        read_bundle(file)


def test_a_bundle_detects_bit_identically_to_its_run(exported: tuple[Path, Path], bundle_scan, tmp_path: Path) -> None:
    """detect via --run, via the zip and via the imported folder: the same maps, byte for byte."""
    import shutil

    from mriad.detect import detect

    run, file = exported
    imported = tmp_path / "imported"
    import_bundle(file, imported)
    outputs = {}
    first = None
    for label, kwargs in (("run", {"run": run}), ("zip", {"bundle": file}), ("folder", {"bundle": imported})):
        out = tmp_path / label
        if first is not None:  # the preprocessed scan is reused (checksums verified) to save time
            shutil.copytree(first / "preprocessed", out / "preprocessed")
        result = detect([bundle_scan["scan"]], out, preprocess=FAST_PREPROCESS, viewer=False, **kwargs)
        assert result.ok, result.failures
        first = first or out
        outputs[label] = result.summaries[0]
    name = bundle_scan["scan"].name.split(".")[0]
    for suffix in ("_anomaly.nii.gz", "_lesion.nii.gz"):
        reference = (tmp_path / "run" / f"{name}{suffix}").read_bytes()
        assert (tmp_path / "zip" / f"{name}{suffix}").read_bytes() == reference
        assert (tmp_path / "folder" / f"{name}{suffix}").read_bytes() == reference
    digests = {label: summary["model"]["weights_sha256"] for label, summary in outputs.items()}
    assert len(set(digests.values())) == 1
    assert outputs["zip"]["model"]["bundle_sha256"] is not None and outputs["run"]["model"]["bundle_sha256"] is None
    assert outputs["run"]["score_max"] > 0  # the model did produce a map
    assert {summary["protocol"] for summary in outputs.values()} == {"reference"}  # the bundle keeps it
