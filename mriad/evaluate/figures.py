"""Figures of an evaluation: example subjects (best / median / worst) and the pooled PR curve.

Figures are drawn with matplotlib's object API on an Agg canvas, never through pyplot, so that the
library does not change the global backend of a notebook or another caller. Files are written
atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mriad.infra.io import atomic_path

if TYPE_CHECKING:  # matplotlib is imported lazily: drawing is the slow, optional part
    from matplotlib.figure import Figure

# Precision-recall curves of pooled test sets have millions of steps; this many points draw the same line.
_MAX_CURVE_POINTS = 4000


@dataclass
class Example:
    """One row of the example grid: axial slices of one subject (2D arrays, same shape)."""

    title: str
    image: np.ndarray
    reconstruction: np.ndarray
    anomaly: np.ndarray
    prediction: np.ndarray | None = None
    truth: np.ndarray | None = None


def lesion_slice(truth: np.ndarray | None, mask: np.ndarray) -> int:
    """The axial slice (last axis) with the most lesion voxels, else the one with the most brain."""
    source = truth if truth is not None and np.any(truth) else mask
    return int(np.argmax(np.asarray(source, dtype=bool).sum(axis=(0, 1))))


def _save(figure: Figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return path


def example_grid(path: Path, examples: list[Example], *, anomaly_max: float | None = None) -> Path:
    """Input / reconstruction / anomaly map / prediction / ground truth, one subject per row.

    Slices are shown in radiological habit (anterior up) by transposing X/Y and flipping.
    All anomaly maps share one colour scale so rows can be compared.
    """
    from matplotlib.figure import Figure

    columns = ["input", "reconstruction", "anomaly map"]
    if any(e.prediction is not None for e in examples):
        columns.append("prediction")
    if any(e.truth is not None for e in examples):
        columns.append("ground truth")
    rows = max(len(examples), 1)
    figure = Figure(figsize=(2.2 * len(columns), 2.4 * rows))
    if anomaly_max is None:
        anomaly_max = max((float(np.max(e.anomaly)) for e in examples), default=1.0) or 1.0
    for r, example in enumerate(examples):
        panels = {
            "input": (example.image, "gray", 0.0, 1.0),
            "reconstruction": (example.reconstruction, "gray", 0.0, 1.0),
            "anomaly map": (example.anomaly, "inferno", 0.0, anomaly_max),
            "prediction": (example.prediction, "gray", 0.0, 1.0),
            "ground truth": (example.truth, "gray", 0.0, 1.0),
        }
        for c, name in enumerate(columns):
            axis = figure.add_subplot(rows, len(columns), r * len(columns) + c + 1)
            data, cmap, vmin, vmax = panels[name]
            if data is not None:
                axis.imshow(np.flipud(np.asarray(data, dtype=np.float32).T), cmap=cmap, vmin=vmin, vmax=vmax)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(name, fontsize=9)
            if c == 0:
                axis.set_ylabel(example.title, fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def pr_curve(path: Path, precision: np.ndarray, recall: np.ndarray, auprc: float, title: str = "") -> Path:
    """The pooled precision-recall curve (step-wise, as average precision integrates it)."""
    from matplotlib.figure import Figure

    precision = np.asarray(precision)
    recall = np.asarray(recall)
    if precision.size > _MAX_CURVE_POINTS:
        keep = np.linspace(0, precision.size - 1, _MAX_CURVE_POINTS).round().astype(int)
        precision, recall = precision[keep], recall[keep]
    figure = Figure(figsize=(4.2, 4.0))
    axis = figure.add_subplot(1, 1, 1)
    axis.step(np.concatenate([[0.0], recall]), np.concatenate([[1.0], precision]), where="post")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(f"{title} pooled AUPRC {auprc:.4f}".strip(), fontsize=10)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)
