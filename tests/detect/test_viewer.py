"""The detect viewer page: self-contained (no network), and drawn by NiiVue in headless Chromium."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mriad.viewer import niivue_script, write_viewer

CHROMIUM = shutil.which("chromium")
NIIVUE = niivue_script()
needs_niivue = pytest.mark.skipif(NIIVUE is None, reason="no NiiVue script (make install with npm)")


def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small LPS head: a bright ball (the scan), an anomaly blob and its lesion, a ground truth."""
    shape = (48, 56, 40)
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    head = (grid**2).sum(0) < 18**2
    scan = np.where(head, 100.0 + 20 * np.sin(grid[0] / 3), 0.0).astype(np.float32)
    blob = ((grid - np.array([6, -4, 3])[:, None, None, None]) ** 2).sum(0)
    anomaly = (np.exp(-blob / 18.0) * head).astype(np.float32)
    lesion = anomaly > 0.5
    truth = blob < 16
    affine = np.diag([-2.0, -2.0, 2.5, 1.0])
    affine[:3, 3] = [48, 56, -50]
    return scan, affine, anomaly, lesion, truth


@needs_niivue
def test_the_page_embeds_everything(tmp_path: Path) -> None:
    import nibabel as nib

    scan, affine, anomaly, lesion, truth = _volumes()
    page = write_viewer(tmp_path / "v.html", scan, affine, anomaly, lesion, truth, threshold=0.5, title="t <x>")
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=", text) and not re.search(r"<link[^>]+href=", text)
    assert "t &lt;x&gt;" in text and "niivue" in text.lower()
    volumes = json.loads(re.search(r"const volumes = (\[.*?\]);\n", text).group(1))
    assert [v["name"] for v in volumes] == ["scan.nii.gz", "anomaly.nii.gz", "lesion.nii.gz", "truth.nii.gz"]
    embedded = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(volumes[1]["b64"])))
    assert embedded.shape == anomaly.shape and np.allclose(embedded.affine, affine)
    np.testing.assert_array_equal(np.asarray(embedded.dataobj), anomaly)
    assert volumes[1]["cal_min"] == 0.25  # the anomaly overlay starts at half the threshold


@needs_niivue
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")
def test_the_viewer_draws_offline_and_the_overlay_changes_pixels(tmp_path: Path) -> None:
    from matplotlib.image import imread

    scan, affine, anomaly, lesion, truth = _volumes()
    page = write_viewer(tmp_path / "v.html", scan, affine, anomaly, lesion, truth, threshold=0.5)
    shots = {}
    for label, query in (("on", ""), ("off", "?overlay=off")):
        shot = tmp_path / f"{label}.png"
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / ('profile-' + label)}",
            "--virtual-time-budget=15000",
            f"--screenshot={shot}",
            "--window-size=900,800",
            page.resolve().as_uri() + query,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert shot.is_file(), f"no screenshot; chromium said: {completed.stderr[-800:]}"
        shots[label] = imread(shot)[..., :3]
    # The canvas (below the controls) is drawn: many grey levels, not one background colour.
    canvas = shots["on"][150:700]
    gray = canvas.mean(axis=-1)
    assert gray.std() > 0.05 and np.unique(np.round(gray, 2)).size > 20
    # The anomaly overlay changes pixels: warm colours where it is shown, grey where it is hidden.
    changed = np.abs(shots["on"] - shots["off"]).max(axis=-1) > 0.1
    assert changed.sum() > 500, changed.sum()
    warm = (canvas[..., 0] - canvas[..., 2]) > 0.3
    assert warm.sum() > 200


@needs_niivue
def test_report_shows_the_best_subject_in_the_viewer(training_data: Path, tmp_path: Path) -> None:
    """`mriad report` of a run with maps embeds the viewer on its best evaluated lesion subject."""
    import pandas as pd
    from detect_helpers import write_run

    from mriad.compare.report import build_report
    from mriad.contracts.run_folder import RunFolder
    from mriad.infra.io import read_nifti, write_nifti

    run = write_run(tmp_path / "run", model="thresh", threshold=0.6, data=training_data, dataset="brats")
    row = pd.read_csv(training_data).iloc[0]
    image = read_nifti(training_data.parent / row["image"])
    rec, score = RunFolder(run).recon_files("brats-test", row["subject_id"])
    write_nifti(rec, np.zeros_like(image.data), image.affine)
    write_nifti(score, image.data, image.affine)  # Thresh: the score is the intensity
    pd.DataFrame([{"subject_id": row["subject_id"], "dataset": "brats", "label": 1, "dice": 0.4}]).to_csv(
        RunFolder(run).per_subject("brats-test"), index=False
    )
    page = build_report(run)
    assert page.count('class="mriad-viewer"') == 1 and row["subject_id"] in page
    volumes = json.loads(re.search(r"const volumes = (\[.*?\]);\n", page).group(1))
    assert [v["label"].split()[0] for v in volumes] == ["scan", "anomaly", "lesion", "ground"]
