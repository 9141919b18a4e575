"""The viewer section of `mriad report`: one evaluated lesion subject of the run, in NiiVue.

Shown: the subject with the best Dice of the first evaluated split that has maps (its preprocessed
scan, the post-processed anomaly map, the predicted lesion at the split's threshold and the ground
truth), read through the run folder and manifest contracts. A run without maps gets no section.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mriad.infra.console import debug


def report_viewer(run: str | Path) -> str:
    """An HTML fragment with the viewer, or "" when there is nothing to show (or no NiiVue)."""
    try:
        found = _pick(Path(run))
    except Exception as exc:  # the viewer is an extra: a run folder it cannot read still gets its report
        debug(f"report: no viewer ({type(exc).__name__}: {exc})")
        return ""
    return found or ""


def _pick(run: Path) -> str | None:
    import pandas as pd
    import torch

    from mriad.contracts.data import spatial
    from mriad.contracts.manifest import read_manifest
    from mriad.contracts.run_folder import RunFolder, resolve_manifest
    from mriad.evaluate.metrics import remove_small_components
    from mriad.evaluate.postprocess import postprocess
    from mriad.evaluate.run import EROSION_ITERATIONS, MEDIAN_SIZE
    from mriad.infra.io import read_nifti
    from mriad.viewer import niivue_script, viewer_html

    if niivue_script() is None:
        return None
    folder = RunFolder(run)
    if not any(folder.reconstructed_subjects(split) for split in folder.evaluated_splits()):
        return None
    manifest = read_manifest(resolve_manifest(run, folder.read_config(), None)).set_index("subject_id")
    for split in folder.evaluated_splits():
        summary = json.loads(folder.summary(split).read_text())
        per_subject = pd.read_csv(folder.per_subject(split))
        lesions = per_subject[per_subject["label"] == 1].sort_values("dice", ascending=False, na_position="last")
        for subject in lesions["subject_id"].astype(str):
            score_path = folder.recon_files(split, subject)[1]
            if not score_path.is_file() or subject not in manifest.index:
                continue
            row = manifest.loc[subject]
            image = spatial(read_nifti(row["image"], channels=True))  # a multi-channel scan: its first channel
            mask = read_nifti(row["mask"], allow_empty=True).data > 0.5
            truth = read_nifti(row["seg"], allow_empty=True).data > 0 if str(row["seg"]).strip() else None
            score = read_nifti(score_path, allow_empty=True).data
            maps = postprocess(
                torch.from_numpy(score),
                torch.from_numpy(mask),
                erosion_iterations=EROSION_ITERATIONS,
                median_size=MEDIAN_SIZE,
            ).numpy()
            threshold = summary.get("threshold")
            lesion = remove_small_components((maps >= threshold) & mask) if threshold is not None else None
            title = f"{split}: {subject} (best Dice of the split)"
            return "<h2>Viewer</h2>" + (
                viewer_html(
                    image.data,
                    image.affine,
                    maps.astype(np.float32),
                    lesion,
                    truth,
                    threshold=threshold,
                    title=title,
                    fragment=True,
                )
                or ""
            )
    return None
