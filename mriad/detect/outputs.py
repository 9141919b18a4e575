"""What `detect` writes per scan: the maps on the scan's grid, the summary and the overview picture."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mriad.infra.io import atomic_path, atomic_write_json, read_nifti, write_nifti

if TYPE_CHECKING:
    from mriad.detect.run import DetectSettings
    from mriad.detect.source import ModelSource
    from mriad.preprocess.datasets import Subject
    from mriad.preprocess.transform import Transform


def lesion_statistics(lesion: np.ndarray, voxel_ml: float, connectivity: int) -> dict[str, Any]:
    """Volume and connected components (under the evaluation protocol's connectivity) of a binary mask."""
    from scipy import ndimage

    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    labelled, count = ndimage.label(lesion > 0, structure=ndimage.generate_binary_structure(3, rank))
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    largest = int(sizes.max()) if count else 0
    return {
        "lesion_voxels": int(sizes.sum()),
        "lesion_volume_ml": round(float(sizes.sum()) * voxel_ml, 4),
        "n_components": int(count),
        "largest_component_voxels": largest,
        "largest_component_ml": round(largest * voxel_ml, 4),
        "connectivity": connectivity,
    }


def write_scan_outputs(
    subject: Subject,
    paths: dict[str, Path],
    transform: Transform,
    native: dict[str, np.ndarray],
    final: dict[str, np.ndarray],
    source: ModelSource,
    settings: DetectSettings,
) -> dict[str, Any]:
    """Write maps, overview (and viewer), then the summary last: a scan counts as done with its summary."""
    from mriad.evaluate.metrics import dice_score

    affine = transform.native_affine
    write_nifti(paths["anomaly"], native["anomaly"], affine, dtype=np.float32)
    write_nifti(paths["lesion"], native["lesion"], affine, dtype=np.uint8)
    scan = read_nifti(subject.image)
    truth = None
    summary_truth: dict[str, Any] | None = None
    if subject.seg is not None:
        truth = read_nifti(subject.seg, allow_empty=True).data > 0
        summary_truth = {"file": str(subject.seg), "dice": _rounded(dice_score(native["lesion"] > 0, truth))}
    overview_png(
        paths["overview"],
        scan.data,
        affine,
        native["anomaly"],
        native["lesion"] > 0,
        settings.threshold,
        title=subject.subject_id,
    )
    outputs = {key: str(paths[key]) for key in ("anomaly", "lesion", "summary", "overview")}
    if settings.viewer:
        from mriad.viewer import write_viewer

        written = write_viewer(
            paths["viewer"],
            scan.data,
            affine,
            native["anomaly"],
            native["lesion"] > 0,
            truth,
            threshold=settings.threshold,
            title=f"mriad detect: {subject.subject_id}",
        )
        if written is not None:
            outputs["viewer"] = str(written)
    summary = scan_summary(subject, transform, native, final, source, settings)
    summary.update(ground_truth=summary_truth, outputs=outputs)
    atomic_write_json(paths["summary"], summary)
    return summary


def scan_summary(
    subject: Subject,
    transform: Transform,
    native: dict[str, np.ndarray],
    final: dict[str, np.ndarray],
    source: ModelSource,
    settings: DetectSettings,
) -> dict[str, Any]:
    """``<scan>_summary.json`` without its outputs and ground truth: the lesion, the scores, what made them."""
    from mriad.infra.digests import file_sha256

    affine = transform.native_affine
    protocol = settings.rules()
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    brain = final["mask"]
    values = final["anomaly"][brain] if brain.any() else np.zeros(1, np.float32)
    return {
        "subject_id": subject.subject_id,
        "scan": {
            "file": str(subject.image),
            "sha256": file_sha256(subject.image),
            "shape": list(transform.native_shape),
            "voxel_ml": round(voxel_ml, 6),
        },
        **lesion_statistics(native["lesion"], voxel_ml, protocol.connectivity),
        "score_max": float(values.max()),
        "score_mean": float(values.mean()),
        "score_domain": "post-processed map on the 96x96x50 grid, over the brain mask",
        "threshold": settings.threshold,
        "threshold_source": settings.threshold_source,
        "protocol": protocol.name,
        "prediction": f"{protocol.prediction}; {protocol.components}; clamp {protocol.clamp}; then mapped to the "
        "scan (nearest neighbour)",
        "model": {
            "name": source.model_name,
            "weights_sha256": source.weights_sha256(),
            "source": source.kind,
            "path": str(source.path),
            "bundle_sha256": source.bundle_sha256,
        },
        "preprocessing": {**settings.options.signature(), "origin": settings.origin},
        "registration_matrix": transform.template_to_subject.round(6).tolist(),
        "seed": settings.seed,
        "versions": _versions(),
    }


def _rounded(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def _versions() -> dict[str, str]:
    import torch

    from mriad import __version__

    return {"mriad": __version__, "torch": torch.__version__, "numpy": np.__version__}


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` in RAS voxel order (for display only) and its voxel sizes."""
    from nibabel import orientations

    transform = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("RAS"))
    data = orientations.apply_orientation(array, transform)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[transform[:, 0].astype(int).argsort()]
    return np.ascontiguousarray(data), sizes


def focus(lesion: np.ndarray, anomaly: np.ndarray) -> tuple[int, int, int]:
    """The voxel to show: the centre of the largest lesion component, else the highest score."""
    if lesion.any():
        from scipy import ndimage

        labelled, count = ndimage.label(lesion)
        largest = int(np.argmax(np.bincount(labelled.ravel(), minlength=count + 1)[1:])) + 1
        centre = np.argwhere(labelled == largest).mean(axis=0)
        return tuple(int(round(v)) for v in centre)  # type: ignore[return-value]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(anomaly)), anomaly.shape))  # type: ignore[return-value]


def overview_png(
    path: Path,
    scan: np.ndarray,
    affine: np.ndarray,
    anomaly: np.ndarray,
    lesion: np.ndarray,
    threshold: float,
    *,
    title: str = "",
) -> Path:
    """Axial, coronal and sagittal slices through the lesion: the scan, the anomaly map from half the
    threshold up, the lesion outline. Shown in RAS voxel order (neurological habit: the patient's right
    on the right, anterior and superior up), with the scan's voxel sizes as aspect ratios."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image, sizes = canonical(scan, affine)
    score, _ = canonical(anomaly, affine)
    mask, _ = canonical(lesion.astype(np.uint8), affine)
    x, y, z = focus(mask > 0, score)
    views = [
        ("axial", image[:, :, z], score[:, :, z], mask[:, :, z], sizes[1] / sizes[0]),
        ("coronal", image[:, y, :], score[:, y, :], mask[:, y, :], sizes[2] / sizes[0]),
        ("sagittal", image[x, :, :], score[x, :, :], mask[x, :, :], sizes[2] / sizes[1]),
    ]
    low, high = np.percentile(image[image > 0], [1, 99]) if np.any(image > 0) else (0.0, 1.0)
    top = max(float(anomaly.max()), threshold * 1.5, 1e-6)
    figure = Figure(figsize=(11, 4.2))
    axes = figure.subplots(1, 3)
    shown = None
    for ax, (name, plane, heat, outline, aspect) in zip(axes, views):
        ax.imshow(plane.T, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=aspect)
        overlay = np.ma.masked_less(heat.T, threshold * 0.5)
        shown = ax.imshow(overlay, cmap="inferno", origin="lower", vmin=0, vmax=top, alpha=0.6, aspect=aspect)
        if outline.any():
            ax.contour(outline.T, levels=[0.5], colors="cyan", linewidths=1.0, origin="lower")
        ax.set_title(name)
        ax.set_axis_off()
    if shown is not None:
        figure.colorbar(shown, ax=list(axes), fraction=0.02, label="anomaly score")
    figure.suptitle(f"{title}  (lesion outline cyan; threshold {threshold:.4g})")
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    return path
