"""The model bundle: one zip file that carries a trained model to another machine (docs/bundles.md).

The one module that knows the bundle's members and checks them. A bundle is untrusted input: before
anything is used or written, every member is checked by name (only the names below; nothing with a
folder part, so nothing can land outside the target folder), by size (declared and actual), by content
(no pickle, no zip inside), and by its SHA-256 against ``bundle.json``. A member without a checksum, a
checksum without its member, or a changed byte is refused. Weights are safetensors, never pickles.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mriad.infra.errors import InputError

FORMAT = "mriad-bundle"
FORMAT_VERSION = 1
INDEX = "bundle.json"
WEIGHTS = "weights.safetensors"
MODEL = "model.json"
THRESHOLDS = "thresholds.json"
PREPROCESSING = "preprocessing.json"
EVALUATION = "evaluation.json"
CARD = "MODEL_CARD.md"
REQUIRED = (INDEX, MODEL, THRESHOLDS, PREPROCESSING, CARD)
OPTIONAL = (WEIGHTS, EVALUATION)
MEMBERS = REQUIRED + OPTIONAL
# Per-member limits: weights of the paper's UNet are ~150 MB in fp32; text members are small.
MAX_WEIGHTS_BYTES = 4 << 30
MAX_TEXT_BYTES = 8 << 20
MAX_ENTRIES = 32
# Names that announce pickled programs (torch checkpoints, joblib, numpy object arrays).
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz")


def member_limit(name: str) -> int:
    return MAX_WEIGHTS_BYTES if name == WEIGHTS else MAX_TEXT_BYTES


def sha256_bytes(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass
class Bundle:
    """A verified bundle: its members' bytes and the parsed JSON ones."""

    source: Path
    members: dict[str, bytes]
    sha256: str  # of the zip file (or, for an imported folder, of its bundle.json)
    index: dict[str, Any] = field(default_factory=dict)

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.members[name].decode("utf-8"))
        except (KeyError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(self.source, f"member {name}: not valid JSON ({type(exc).__name__})") from None

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.json(MODEL))

    @property
    def thresholds(self) -> dict[str, dict[str, Any]]:
        return dict(self.json(THRESHOLDS))

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        options = self.json(PREPROCESSING).get("options")
        return dict(options) if isinstance(options, dict) else None

    def state_dict(self) -> dict[str, Any] | None:
        """The weights as CPU tensors (None for a model that is never trained, e.g. Thresh)."""
        if WEIGHTS not in self.members:
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return load(self.members[WEIGHTS])
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise InputError(self.source, f"member {WEIGHTS}: not valid safetensors ({exc})") from None


def check_name(source: Path, name: str) -> None:
    """Refuse names that could escape a folder, pickles by name, and anything not in :data:`MEMBERS`."""
    if not name or "/" in name or "\\" in name or ".." in name or ":" in name or "\x00" in name:
        raise InputError(
            source,
            f"member {name!r}: a path with folders or '..' would be written outside the target "
            "folder (zip-slip); refused",
        )
    if name.lower().endswith(_PICKLE_SUFFIXES):
        raise InputError(source, f"member {name!r}: pickled files are refused (bundles carry safetensors only)")
    if name not in MEMBERS:
        raise InputError(source, f"member {name!r}: unknown member; a bundle holds only {', '.join(MEMBERS)}")


def check_content(source: Path, name: str, payload: bytes) -> None:
    """Refuse pickles and nested archives whatever they are called."""
    if len(payload) >= 2 and payload[0] == 0x80 and 2 <= payload[1] <= 5:
        raise InputError(source, f"member {name}: holds a pickle; refused (bundles carry safetensors only)")
    if payload.startswith(b"PK\x03\x04"):
        raise InputError(source, f"member {name}: holds a zip archive (a torch checkpoint?); refused")
    if name == WEIGHTS:
        _check_safetensors_header(source, payload)


def _check_safetensors_header(source: Path, payload: bytes) -> None:
    if len(payload) < 8:
        raise InputError(source, f"member {WEIGHTS}: too short for safetensors")
    length = int.from_bytes(payload[:8], "little")
    if length > len(payload) - 8 or length > MAX_TEXT_BYTES:
        raise InputError(source, f"member {WEIGHTS}: safetensors header length {length} does not fit the file")
    try:
        header = json.loads(payload[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(source, f"member {WEIGHTS}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise InputError(source, f"member {WEIGHTS}: safetensors header is not a JSON object")


def _read_zip(path: Path) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a readable zip file ({type(exc).__name__})") from None
    members: dict[str, bytes] = {}
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise InputError(path, f"{len(entries)} members; a bundle holds at most {MAX_ENTRIES}")
        for info in entries:
            check_name(path, info.filename)
            if info.filename in members:
                raise InputError(path, f"member {info.filename}: appears twice")
            limit = member_limit(info.filename)
            if info.file_size > limit:
                raise InputError(path, f"member {info.filename}: {info.file_size} bytes, over the limit of {limit}")
            try:
                with archive.open(info) as handle:
                    payload = handle.read(limit + 1)  # bounded: a lying header cannot exhaust memory
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                raise InputError(path, f"member {info.filename}: unreadable ({exc})") from None
            if len(payload) > limit:
                raise InputError(path, f"member {info.filename}: over the limit of {limit} bytes")
            members[info.filename] = payload
    return members


def _read_folder(path: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for entry in sorted(path.iterdir()):
        if entry.name == ".mriad.lock" or (entry.name.startswith(".") and ".tmp" in entry.name):
            continue
        check_name(path, entry.name)
        if not entry.is_file() or entry.is_symlink():
            raise InputError(entry, "not a plain file; refused")
        limit = member_limit(entry.name)
        if entry.stat().st_size > limit:
            raise InputError(entry, f"{entry.stat().st_size} bytes, over the limit of {limit}")
        members[entry.name] = entry.read_bytes()
    return members


def read_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle: a ``.zip`` file, or a folder written by ``mriad bundle import``."""
    path = Path(path)
    if path.is_dir():
        members = _read_folder(path)
    elif path.is_file():
        members = _read_zip(path)
    else:
        raise InputError(path, "bundle not found")
    for name, payload in members.items():
        check_content(path, name, payload)
    missing = [name for name in REQUIRED if name not in members]
    if missing:
        raise InputError(path, f"not a complete mriad bundle: missing {', '.join(missing)}")
    index = _verify_index(path, members)
    digest = sha256_bytes(members[INDEX]) if path.is_dir() else _file_sha256(path)
    return Bundle(path, members, digest, index)


def _verify_index(path: Path, members: dict[str, bytes]) -> dict[str, Any]:
    try:
        index = json.loads(members[INDEX].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(path, f"member {INDEX}: not valid JSON") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise InputError(path, f"member {INDEX}: not an {FORMAT} index")
    if index.get("version") != FORMAT_VERSION:
        raise InputError(path, f"bundle format version {index.get('version')!r}; this mriad reads {FORMAT_VERSION}")
    listed = index.get("members")
    if not isinstance(listed, dict):
        raise InputError(path, f"member {INDEX}: no checksum list")
    for name, payload in members.items():
        if name == INDEX:
            continue
        entry = listed.get(name)
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(expected, str) or len(expected) != 64:
            raise InputError(path, f"member {name}: no SHA-256 in {INDEX}; refused")
        if sha256_bytes(payload) != expected:
            raise InputError(path, f"member {name}: SHA-256 differs from {INDEX} (tampered or corrupt); refused")
    absent = sorted(set(listed) - set(members))
    if absent:
        raise InputError(path, f"{INDEX} lists {', '.join(absent)}, which the bundle does not hold")
    return index


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
