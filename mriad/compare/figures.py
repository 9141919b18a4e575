"""Figures for `mriad compare` and `mriad report`, drawn with matplotlib's object API on Agg.

No pyplot: pyplot keeps global state and picks a GUI backend, which a command-line tool (often on a
headless server) must not touch. matplotlib is imported inside the functions so `mriad --help` and
the statistics stay fast.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mriad.compare.tables import Group, metric_header, metric_info
from mriad.contracts.run_folder import CONFIG, REC_SUFFIX, RECON, RunFolder
from mriad.infra.io import atomic_path
from mriad.infra.paths import is_identifier

_DPI = 110


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure bound to the Agg canvas (no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def save_png(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)
    return path


def metric_boxplot(groups: Sequence[Group], subjects: Sequence[str], metric: str, baseline: str) -> Any:
    """Per-subject values (averaged over folds) per model: a box with every subject as a dot."""
    info = metric_info(metric)
    figure = new_figure(max(4.0, 1.2 * len(groups) + 1.5), 4.0)
    axes = figure.add_subplot()
    data = []
    for group in groups:
        values = group.subject_values(metric, subjects) * info.scale
        data.append(values[np.isfinite(values)])
    positions = np.arange(1, len(groups) + 1)
    axes.boxplot(data, positions=positions, widths=0.55, showfliers=False, medianprops={"color": "black"})
    rng = np.random.default_rng(0)  # fixed jitter: the same inputs always give the same picture
    for position, values in zip(positions, data, strict=True):
        jitter = rng.uniform(-0.18, 0.18, size=values.size)
        axes.scatter(position + jitter, values, s=9, alpha=0.55, linewidths=0)
    names = [group.name + ("\n(baseline)" if group.name == baseline else "") for group in groups]
    axes.set_xticks(positions, names, rotation=20 if len(groups) > 4 else 0)
    axes.set_ylabel(metric_header(metric))
    axes.set_title(f"{info.title} per subject (mean over folds)")
    axes.grid(axis="y", alpha=0.3)
    return figure


def _axial_slice(seg: np.ndarray | None, image: np.ndarray) -> int:
    """The axial slice (last axis) with the most lesion voxels, else the most brain."""
    source = seg if seg is not None and np.any(seg) else (image > 0)
    return int(np.argmax(source.reshape(-1, source.shape[-1]).sum(axis=0)))


def _show(axes: Any, image: np.ndarray, title: str, **kwargs: Any) -> None:
    # data[x, y] in RAS: transpose and origin="lower" puts anterior up and the subject's right on the right.
    axes.imshow(image.T, origin="lower", interpolation="nearest", **kwargs)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def recon_grid(
    subject: str,
    image: np.ndarray,
    seg: np.ndarray | None,
    reconstructions: Sequence[tuple[str, np.ndarray]],
) -> Any:
    """Input, each model's reconstruction (with its residual |x - x̂| below) and the ground truth."""
    z = _axial_slice(seg, image)
    columns = len(reconstructions) + 2
    figure = new_figure(1.9 * columns, 4.2)
    grid = figure.subplots(2, columns, squeeze=False)
    for axes in grid.ravel():
        axes.set_axis_off()
    x = image[:, :, z]
    _show(grid[0, 0], x, f"input {subject}\nslice {z}", cmap="gray", vmin=0, vmax=max(float(x.max()), 1e-6))
    grid[0, 0].set_axis_on()
    peak = max([float(np.abs(x - rec[:, :, z]).max()) for _, rec in reconstructions] + [1e-6])
    for column, (name, rec) in enumerate(reconstructions, start=1):
        _show(grid[0, column], rec[:, :, z], name, cmap="gray", vmin=0, vmax=max(float(x.max()), 1e-6))
        _show(grid[1, column], np.abs(x - rec[:, :, z]), "|x - x̂|", cmap="inferno", vmin=0, vmax=peak)
        grid[0, column].set_axis_on()
        grid[1, column].set_axis_on()
    last = grid[0, columns - 1]
    if seg is not None:
        _show(last, x, "ground truth", cmap="gray", vmin=0, vmax=max(float(x.max()), 1e-6))
        overlay = np.ma.masked_where(seg[:, :, z] <= 0, seg[:, :, z])
        last.imshow(overlay.T, origin="lower", cmap="autumn", alpha=0.6, interpolation="nearest")
    else:
        _show(last, np.zeros_like(x), "no lesion mask", cmap="gray", vmin=0, vmax=1)
    last.set_axis_on()
    return figure


def line_plot(series: Sequence[tuple[str, np.ndarray, np.ndarray]], xlabel: str, ylabel: str, title: str) -> Any:
    """Curves over epochs or steps (the training log of `mriad report`); log scale when it spans decades."""
    figure = new_figure(7.0, 3.6)
    axes = figure.add_subplot()
    positive = True
    for name, xs, ys in series:
        keep = np.isfinite(xs) & np.isfinite(ys)
        axes.plot(xs[keep], ys[keep], label=name, marker="o" if keep.sum() < 30 else None, markersize=3)
        positive = positive and bool(np.all(ys[keep] > 0))
        values = ys[keep]
        if positive and values.size and values.max() / max(values.min(), 1e-30) > 100:
            axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(series) > 1:
        axes.legend()
    return figure


@dataclass
class ReconCase:
    """The files of the subject shown side by side: its input, lesion mask and every model's x̂."""

    subject: str
    image: Path
    seg: Path | None
    reconstructions: list[tuple[str, Path]]


def pick_recon_case(groups: Sequence[Group], split: str, manifest: Any, subjects: Sequence[str]) -> ReconCase | str:
    """Choose the subject shown side by side, or say why none can be shown.

    Among subjects reconstructed by every model (first run of each group) and listed in the manifest,
    the one with the largest lesion: the figure is meant to show how each model "heals" a lesion.
    """
    if manifest is None:
        return f'no manifest found for the input images ({CONFIG} "data" or the workspace\'s)'
    rows = manifest.set_index(manifest["subject_id"].astype(str))
    sizes = groups[0].runs[0].per_subject.get("lesion_voxels")
    best: tuple[float, str] | None = None
    for subject in subjects:
        if subject not in rows.index:
            continue
        if not is_identifier(subject) or not all(_rec_path(group, split, subject).is_file() for group in groups):
            continue
        voxels = float(sizes.get(subject, 0.0)) if sizes is not None else 0.0
        voxels = voxels if np.isfinite(voxels) else 0.0
        if best is None or voxels > best[0]:
            best = (voxels, subject)
    if best is None:
        return f"no subject of {split} has a reconstruction ({RECON}/{split}/<subject>{REC_SUFFIX}) in every run"
    subject = best[1]
    row = rows.loc[subject]
    seg = str(row.get("seg", "") or "").strip()
    return ReconCase(
        subject=subject,
        image=Path(str(row["image"])),
        seg=Path(seg) if seg else None,
        reconstructions=[(group.name, _rec_path(group, split, subject)) for group in groups],
    )


def _rec_path(group: Group, split: str, subject: str) -> Path:
    return RunFolder(group.runs[0].path).recon_files(split, subject)[0]


def load_recon_grid(case: ReconCase) -> Any:
    """Read the chosen subject's volumes and draw :func:`recon_grid`; refuses volumes on other grids."""
    from mriad.contracts.data import spatial
    from mriad.infra.errors import InputError
    from mriad.infra.io import read_nifti

    image = spatial(read_nifti(case.image, channels=True))  # multi-channel scans: the first channel
    seg = None
    if case.seg is not None and case.seg.is_file():
        seg_volume = read_nifti(case.seg, allow_empty=True)
        seg = seg_volume.data if seg_volume.shape == image.shape else None
    recs = []
    for name, path in case.reconstructions:
        rec = spatial(read_nifti(path, allow_empty=True, channels=True))
        if rec.shape != image.shape:
            raise InputError(path, f"shape {rec.shape} differs from the input image's {image.shape}")
        recs.append((name, rec.data))
    return recon_grid(case.subject, image.data, seg, recs)
