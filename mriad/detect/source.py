"""Where `detect` (and `bundle export`) get a model: a run folder or a verified bundle.

Both give the same things: the model's name and hyperparameters, its weights, the thresholds
``evaluate`` calibrated, and the preprocessing settings the training data was made with. Weights are
identified by :func:`weights_sha256`, a digest of the tensors themselves, so a run and the bundle
exported from it name the same model with the same digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mriad.infra.errors import InputError, MriadError


@dataclass
class ModelSource:
    """A model ready to be built, and what was recorded with it."""

    kind: str  # "run" or "bundle"
    path: Path
    model_name: str
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor] | None
    thresholds: dict[str, dict[str, Any]]
    preprocessing: dict[str, Any] | None
    provenance: dict[str, Any] = field(default_factory=dict)
    bundle_sha256: str | None = None

    def build(self, device: Any = "cpu") -> Any:
        """The model in eval mode on ``device`` (weights loaded when it has any)."""
        from mriad.models.registry import build_model

        model = build_model(self.model_name, **self.model_config)
        if self.state_dict is not None:
            try:
                model.load_state_dict(self.state_dict)
            except RuntimeError as exc:
                raise InputError(
                    self.path, f"weights do not fit model {self.model_name!r}: {str(exc).splitlines()[0][:160]}"
                ) from None
        return model.to(device).eval()

    def weights_sha256(self) -> str:
        if "weights_sha256" not in self.provenance:  # hashing a paper-size model takes a moment: once
            self.provenance["weights_sha256"] = weights_sha256(self.model_name, self.model_config, self.state_dict)
        return str(self.provenance["weights_sha256"])

    def threshold(self, val_split: str | None) -> tuple[float, dict[str, Any]] | None:
        """The calibrated threshold of ``val_split`` (or the only one recorded); None when there is none."""
        if not self.thresholds:
            return None
        if val_split is None:
            if len(self.thresholds) > 1:
                raise MriadError(
                    f"{self.path}: thresholds were calibrated on {', '.join(sorted(self.thresholds))}; "
                    "choose one with --val-split"
                )
            val_split = next(iter(self.thresholds))
        if val_split not in self.thresholds:
            raise MriadError(
                f"--val-split {val_split}: {self.path} has thresholds for "
                f"{', '.join(sorted(self.thresholds)) or 'no split'}"
            )
        entry = self.thresholds[val_split]
        return float(entry["threshold"]), {"val_split": val_split, **entry}


def weights_sha256(name: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor] | None) -> str:
    """SHA-256 over the model name, its hyperparameters and every tensor (name, dtype, shape, bytes)."""
    import json

    digest = hashlib.sha256()
    digest.update(json.dumps({"model": name, "config": config}, sort_keys=True, default=list).encode())
    for key in sorted(state_dict or {}):
        tensor = state_dict[key].detach().cpu().contiguous()  # type: ignore[index]
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def from_run(run: str | Path, which: str = "best") -> ModelSource:
    """A run folder's model (its ``<which>.pt`` checkpoint, loaded with ``weights_only``) and records."""
    from mriad.contracts.run_folder import RunFolder, calibrated_thresholds, model_identity
    from mriad.infra.io import safe_torch_load
    from mriad.models.registry import get_model_class, test_time_config

    folder = RunFolder(run)
    config = folder.read_config()
    name = str(config["model"])
    state_dict = None
    cls: Any = get_model_class(name)
    if cls.trainable:
        path = folder.model_checkpoint(which)
        if path is None:
            raise InputError(folder.root, f"no checkpoint ({which}.pt or last.pt); train the run first")
        checkpoint = safe_torch_load(path)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise InputError(path, "not an mriad checkpoint (no state_dict)")
        if checkpoint.get("model") != name:
            raise InputError(path, f"checkpoint holds model {checkpoint.get('model')!r}, expected {name!r}")
        model_config = test_time_config(name, dict(checkpoint.get("config", {})), config)
        state_dict = dict(checkpoint["state_dict"])
        progress = {"epoch": checkpoint.get("epoch"), "step": checkpoint.get("step")}
    else:
        model_config, progress = dict(config.get("options", {})), {}
    return ModelSource(
        kind="run",
        path=folder.root,
        model_name=name,
        model_config=model_config,
        state_dict=state_dict,
        thresholds=calibrated_thresholds(folder.root),
        preprocessing=training_preprocessing(folder.root, config),
        provenance={"checkpoint": model_identity(folder.root, which), **progress, "run_config": config},
    )


def from_bundle(path: str | Path) -> ModelSource:
    """A verified bundle's model (see :mod:`mriad.bundle.format`)."""
    from mriad.bundle.format import read_bundle

    bundle = read_bundle(path)
    model = bundle.model
    if not isinstance(model.get("model"), str) or not isinstance(model.get("config"), dict):
        raise InputError(bundle.source, 'member model.json: needs "model" (a name) and "config" (an object)')
    return ModelSource(
        kind="bundle",
        path=bundle.source,
        model_name=model["model"],
        model_config=dict(model["config"]),
        state_dict=bundle.state_dict(),
        thresholds=bundle.thresholds,
        preprocessing=bundle.preprocessing,
        provenance={"index": bundle.index},
        bundle_sha256=bundle.sha256,
    )


def training_preprocessing(run: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``preprocess`` options the run's training subjects were made with (their ``done.json``), or
    None when they carry no record (``synth --preprocessed`` data, or the manifest is gone)."""
    from mriad.contracts.manifest import read_manifest
    from mriad.contracts.run_folder import resolve_manifest
    from mriad.infra.console import warn
    from mriad.preprocess import markers

    manifest = resolve_manifest(run, config, None)
    if not Path(manifest).is_file():
        return None
    try:
        frame = read_manifest(manifest)
    except MriadError:
        return None
    dataset = config.get("dataset")
    if dataset:
        frame = frame[frame["dataset"].astype(str) == str(dataset)]
    found: list[dict[str, Any]] = []
    for image in frame["image"]:
        record = markers.read_done(Path(str(image)).parent, verify="size")
        options = record.get("options") if record else None
        if isinstance(options, dict) and options not in found:
            found.append(options)
    if len(found) > 1:
        warn(f"{manifest}: the training data was preprocessed with {len(found)} different settings; using the first")
    return found[0] if found else None
