"""A self-contained HTML page with an interactive NiiVue viewer: scan, anomaly overlay, lesion outlines.

The page works offline from ``file://``: the volumes are embedded (gzipped NIfTI, base64) because
browsers refuse ``file://`` fetches from a local page, and the viewer's script is inlined from the
npm package ``@niivue/niivue`` (BSD-2-Clause, (c) the NiiVue authors) that ``make install`` puts
under ``.venv/niivue/`` (or ``$MRIAD_NIIVUE_JS``); nothing is loaded from a CDN. Without the
package the page is not written and a warning says how to install it.

The scan is embedded as 8-bit intensities (1st-99th percentile inside the head: for display only);
the anomaly map keeps its float32 values. Outlines are the boundary voxels of each mask (the mask
minus its 3D erosion), drawn as their own overlays so they stay visible above the anomaly colours.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
import sys
from pathlib import Path

import numpy as np

NIIVUE_VERSION = "0.69.0"
NIIVUE_ENV = "MRIAD_NIIVUE_JS"
_RELATIVE = Path("niivue") / "node_modules" / "@niivue" / "niivue" / "dist" / "niivue.umd.js"


def niivue_script() -> Path | None:
    """The NiiVue bundle: ``$MRIAD_NIIVUE_JS``, else ``<venv>/niivue/...`` (from ``make install``)."""
    candidates = [os.environ.get(NIIVUE_ENV, "")]
    candidates += [str(Path(sys.prefix) / _RELATIVE), str(Path(__file__).resolve().parents[2] / ".venv" / _RELATIVE)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _nifti_base64(data: np.ndarray, affine: np.ndarray, dtype: type) -> str:
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(data).astype(dtype), np.asarray(affine, dtype=np.float64))
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def _display_scan(scan: np.ndarray) -> np.ndarray:
    values = scan[scan > 0] if np.any(scan > 0) else scan.ravel()
    low, high = np.percentile(values, [1, 99])
    scaled = (np.clip((scan - low) / max(float(high - low), 1e-6), 0, 1) * 255).round()
    return scaled.astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a binary mask (the mask minus its 6-neighbour erosion)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def viewer_html(
    scan: np.ndarray,
    affine: np.ndarray,
    anomaly: np.ndarray,
    lesion: np.ndarray | None,
    truth: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    title: str = "mriad",
    script: Path | None = None,
    fragment: bool = False,
) -> str | None:
    """The page (or, with ``fragment``, a ``<div>`` to place in another page); None without NiiVue."""
    script = script or niivue_script()
    if script is None:
        return None
    top = float(np.max(anomaly)) if np.size(anomaly) else 1.0
    low = (
        float(threshold) * 0.5
        if threshold is not None
        else float(np.percentile(anomaly[anomaly > 0], 90))
        if np.any(anomaly > 0)
        else 0.0
    )
    volumes = _layers(scan, affine, anomaly, lesion, truth, low, top)
    from mriad.viewer.page import TEMPLATE as page

    fractions = _focus_fractions(anomaly, lesion, affine)
    body = page.split("<!--body-->")[1].split("<!--/body-->")[0]
    replacements = {
        "__TITLE__": html.escape(title),
        "__VOLUMES__": json.dumps(volumes),
        "__THRESHOLD__": "null" if threshold is None else repr(float(threshold)),
        "__NIIVUE__": script.read_text(encoding="utf-8").replace("</script", "<\\/script"),
        "__NIIVUE_VERSION__": NIIVUE_VERSION,
        "__FOCUS__": json.dumps([round(f, 4) for f in fractions]),
    }
    text = body if fragment else page
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def _layers(
    scan: np.ndarray,
    affine: np.ndarray,
    anomaly: np.ndarray,
    lesion: np.ndarray | None,
    truth: np.ndarray | None,
    low: float,
    top: float,
) -> list[dict[str, object]]:
    """The embedded volumes in drawing order: scan, anomaly map, lesion outline, ground-truth outline."""
    volumes = [
        {
            "name": "scan.nii.gz",
            "b64": _nifti_base64(_display_scan(scan), affine, np.uint8),
            "colormap": "gray",
            "opacity": 1.0,
            "cal_min": 0,
            "cal_max": 255,
            "colorbar": False,
            "label": "scan",
        },
        {
            "name": "anomaly.nii.gz",
            "b64": _nifti_base64(anomaly, affine, np.float32),
            "colormap": "warm",
            "opacity": 0.75,
            "cal_min": low,
            "cal_max": max(top, low + 1e-6),
            "colorbar": True,
            "label": "anomaly",
        },
    ]
    if lesion is not None:
        volumes.append(_outline_layer("lesion", lesion, affine, "green", "lesion outline (green)"))
    if truth is not None:
        volumes.append(_outline_layer("truth", truth, affine, "blue", "ground truth outline (blue)"))
    return volumes


def _outline_layer(name: str, mask: np.ndarray, affine: np.ndarray, colormap: str, label: str) -> dict[str, object]:
    """A mask drawn as its outline in one colour, without a colour bar."""
    return {
        "name": f"{name}.nii.gz",
        "b64": _nifti_base64(outline(mask), affine, np.uint8),
        "colormap": colormap,
        "opacity": 1.0,
        "cal_min": 0.5,
        "cal_max": 1,
        "colorbar": False,
        "label": label,
    }


def _focus_fractions(anomaly: np.ndarray, lesion: np.ndarray | None, affine: np.ndarray) -> list[float]:
    """Where the viewer opens: the lesion's centre (else the highest score) as NiiVue's crosshair
    fractions, which count along the RAS-ordered voxel axes."""
    from mriad.detect.outputs import canonical, focus

    ras_anomaly, _ = canonical(anomaly, affine)
    ras_lesion = canonical(lesion.astype(np.uint8), affine)[0] > 0 if lesion is not None else None
    where = focus(ras_lesion if ras_lesion is not None else np.zeros(ras_anomaly.shape, bool), ras_anomaly)
    return [(v + 0.5) / n for v, n in zip(where, ras_anomaly.shape)]


def write_viewer(
    path: Path,
    scan: np.ndarray,
    affine: np.ndarray,
    anomaly: np.ndarray,
    lesion: np.ndarray | None,
    truth: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    title: str = "mriad",
) -> Path | None:
    """Write the viewer page atomically; None (with a warning) when NiiVue is not installed."""
    from mriad.infra.io import atomic_write_text

    text = viewer_html(scan, affine, anomaly, lesion, truth, threshold=threshold, title=title)
    if text is None:
        _warn_missing()
        return None
    return atomic_write_text(path, text)


_warned = False


def _warn_missing() -> None:
    global _warned
    if not _warned:
        from mriad.infra.console import warn

        warn(
            f"no NiiVue viewer script (npm @niivue/niivue {NIIVUE_VERSION}): run `make install` with npm on the "
            f"PATH, or set {NIIVUE_ENV}; the viewer page is not written"
        )
        _warned = True
