"""Helpers shared by the detect and bundle tests (imported by name: pytest puts this folder on sys.path;
tests/bundle/conftest.py adds it too).

Runs are written by hand (config.json, a checkpoint of a tiny model with seeded random weights and an
evaluation summary carrying a calibrated threshold), so no test waits for a training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

# A tiny AE: weights to carry, a few milliseconds per 96x96 slice.
TINY_AE = {"base_channels": 4}
# Preprocessing without ANTs registration, skull stripping or N4: a raw synthetic BraTS scan is already
# skull-stripped and on the SRI24 grid, so these are the right settings for it, and they take seconds.
FAST_PREPROCESS = {"skull_strip": "none", "registration": "none", "n4": False}


def synth_brats(out: Path, seed: int = 0) -> dict[str, Path]:
    """One raw synthetic BraTS-like scan (LPS, 240x240x155, skull-stripped) with its lesion and brain masks."""
    from mriad.synth import synthesize

    synthesize(out, healthy=0, lesions=1, layout="brats", preprocessed=False, seed=seed, modality="t2")
    scan = next(out.rglob("*_t2.nii.gz"))
    name = scan.parent.name
    return {
        "scan": scan,
        "seg": scan.parent / f"{name}_seg.nii.gz",
        "brain": out / "_truth" / name / f"{name}_brainmask_gt.nii.gz",
    }


def write_run(
    root: Path,
    *,
    model: str = "ae",
    options: dict[str, Any] | None = None,
    threshold: float | None = 0.5,
    data: Path | None = None,
    dataset: str = "ixi",
    seed: int = 0,
    protocol: str | None = None,
) -> Path:
    """A run folder of ``model`` with seeded random weights and (optionally) an evaluated threshold."""
    from mriad.contracts.run_folder import RunFolder, save_checkpoint, write_config
    from mriad.infra.io import atomic_write_json
    from mriad.models.registry import build_model

    options = dict(TINY_AE if options is None and model == "ae" else options or {})
    folder = RunFolder(root)
    root.mkdir(parents=True, exist_ok=True)
    write_config(
        folder, model=model, fold=0, data=data or root / "no-manifest.csv", options=options, seed=seed, dataset=dataset
    )
    torch.manual_seed(seed)
    network = build_model(model, **options)
    if network.trainable:
        for parameter in network.parameters():  # zero-initialised output layers would make every output equal
            if parameter.dim() > 1:
                torch.nn.init.normal_(parameter, std=0.3)
        save_checkpoint(
            folder.best,
            {"model": model, "config": network.config, "state_dict": network.state_dict(), "step": 1, "epoch": 1},
        )
    if threshold is not None:
        summary: dict[str, Any] = {
            "run": str(root),
            "model": model,
            "fold": 0,
            "split": "brats-test",
            "val_split": "brats-val",
            "threshold": threshold,
            "threshold_search": "exact",
            "threshold_val_dice": 0.5,
            "n_subjects": 2,
            "metrics": {"dice": {"mean": 0.5, "std": 0.1, "n": 2}},
            "settings": {"median_size": 5},
        }
        if protocol is not None:  # summaries from before protocols carry none (they are "brain")
            summary["protocol"] = protocol
            summary["settings"].update(protocol=protocol, clamp=protocol == "brain")
        atomic_write_json(folder.summary("brats-test"), summary)
    return root


def nifti(path: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine, image.get_data_dtype()
