"""`mriad report`: one self-contained HTML page per run, readable offline and safe to mail around.

Everything is inline: CSS in a <style> block, figures as base64 PNG data URIs, no fonts, no links to
other hosts; the only script is the NiiVue viewer of one evaluated subject (mriad.viewer: inlined, with
its volumes embedded), present when the run has maps and NiiVue is installed. Every value taken from
the run folder is HTML-escaped, because config and CSV files are user data.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mriad.compare.collect import evaluate_hint, read_json
from mriad.compare.tables import fmt_mean_std, metric_header
from mriad.contracts.run_folder import METRICS, RunFolder
from mriad.infra.console import debug
from mriad.infra.errors import InputError

# Figures an evaluation already drew are embedded up to this count and size per split, so a page
# stays small enough to open quickly and to attach to an email.
_MAX_FIGURES_PER_SPLIT = 8
_MAX_FIGURE_BYTES = 4 * 1024 * 1024

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1d1d1f; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f2f2f5; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 0.8rem; overflow-x: auto; font-size: 0.82rem; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4rem 0; }
.note { color: #8a5300; background: #fff6e5; border-left: 4px solid #f0a020; padding: 0.4rem 0.8rem; }
figure { margin: 0.6rem 0; } figcaption { color: #555; font-size: 0.85rem; }
"""

# In the head of every report: `mriad report --out` replaces an existing file only if it carries this.
MARKER = '<meta name="generator" content="mriad report">'


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _overview(run: Path, config: dict[str, Any]) -> str:
    fold = config.get("fold")
    items = [
        ("model", config.get("model")),
        ("fold", "-" if fold is None else fold),
        ("seed", config.get("seed")),
        ("created", config.get("created")),
        ("git commit", config.get("git_commit")),
        ("folder", str(run.resolve())),
    ]
    folder = RunFolder(run)
    for path in folder.checkpoint_files():
        items.append((f"checkpoint {path.name}", f"{path.stat().st_size / 1e6:.1f} MB"))
    for split in folder.recon_splits():
        items.append((f"reconstructions {split}", f"{len(_reconstructed(folder, split))} subjects"))
    rows = [[name, "" if value is None else str(value)] for name, value in items]
    return "<h2>Run</h2>" + _table(["item", "value"], rows)


def _reconstructed(folder: RunFolder, split: str) -> list[str]:
    try:
        return folder.reconstructed_subjects(split)
    except InputError:  # a folder whose name is no split: not ours to describe
        return []


def _training(run: Path) -> str:
    from mriad.compare import figures as fig

    path = RunFolder(run).metrics
    if not path.is_file():
        return "<h2>Training</h2>" + _note(f"no training log ({METRICS}) in this run")
    try:
        log = pd.read_csv(path)
    except Exception as exc:  # a half-written or foreign CSV must not stop the report
        return "<h2>Training</h2>" + _note(f"{METRICS} is not readable ({type(exc).__name__})")
    losses = [c for c in ("train_loss", "val_loss") if c in log.columns]
    axis = "step" if "step" in log.columns else ("epoch" if "epoch" in log.columns else None)
    if log.empty or not losses or axis is None:
        return "<h2>Training</h2>" + _note(f"{METRICS} has no loss values yet")
    xs = pd.to_numeric(log[axis], errors="coerce").to_numpy(np.float64)
    series = [(c, xs, pd.to_numeric(log[c], errors="coerce").to_numpy(np.float64)) for c in losses]
    figure = fig.line_plot(series, axis, "loss", "training curve")
    facts: list[list[str]] = [["logged rows", str(len(log))]]
    if "epoch" in log.columns:
        facts.append(["last epoch", str(log["epoch"].iloc[-1])])
    if "step" in log.columns:
        facts.append(["last step", str(log["step"].iloc[-1])])
    if "val_loss" in log.columns and pd.to_numeric(log["val_loss"], errors="coerce").notna().any():
        values = pd.to_numeric(log["val_loss"], errors="coerce")
        best = int(values.idxmin())
        where = f" (epoch {log['epoch'].iloc[best]})" if "epoch" in log.columns else ""
        facts.append(["best val_loss", f"{values.iloc[best]:.6g}{where}"])
    if "seconds" in log.columns:
        seconds = pd.to_numeric(log["seconds"], errors="coerce").max()
        if math.isfinite(seconds):
            facts.append(["training time", str(_dt.timedelta(seconds=int(seconds)))])
    return "<h2>Training</h2>" + _img(fig.png_bytes(figure), "training curve") + _table(None, facts)


def _summaries(run: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    folder = RunFolder(run)
    for split in folder.evaluated_splits():
        try:
            found.append((split, read_json(folder.summary(split))))
        except InputError as exc:  # also a folder whose name is no split
            debug(f"skipping {split}: {exc}")
    return found


def _evaluation(run: Path) -> str:
    summaries = _summaries(run)
    if not summaries:
        return "<h2>Evaluation</h2>" + _note(
            f"not evaluated yet: run {evaluate_hint(run, 'SPLIT')} (e.g. SPLIT = brats-test)"
        )
    metrics: list[str] = []
    for _, summary in summaries:
        for name in summary.get("metrics") or {}:
            if name not in metrics:
                metrics.append(name)
    rows = []
    for split, summary in summaries:
        values = summary.get("metrics") or {}
        threshold = summary.get("threshold")
        row = [
            split,
            str(summary.get("n_subjects", "")),
            f"{threshold:.4g}" if isinstance(threshold, int | float) else "-",
            str(summary.get("val_split") or "-"),
        ]
        for metric in metrics:
            entry = values.get(metric) or {}
            mean, std = _number(entry.get("mean")), _number(entry.get("std"))
            row.append(fmt_mean_std(metric, mean, std))
        rows.append(row)
    header = ["split", "subjects", "threshold", "threshold from"] + [metric_header(m) + " mean ± std" for m in metrics]
    parts = ["<h2>Evaluation</h2>", _table(header, rows)]
    for split, _ in summaries:
        parts.append(_split_figures(run, split))
    return "".join(parts)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _split_figures(run: Path, split: str) -> str:
    """Figures `mriad evaluate` drew, plus a per-subject Dice histogram when the CSV is there."""
    from mriad.compare import figures as fig

    parts: list[str] = []
    folder = RunFolder(run)
    per_subject = folder.per_subject(split)
    if per_subject.is_file():
        try:
            frame = pd.read_csv(per_subject)
        except Exception:  # shown without the histogram rather than not at all
            frame = pd.DataFrame()
        if "dice" in frame.columns and pd.to_numeric(frame["dice"], errors="coerce").notna().any():
            values = pd.to_numeric(frame["dice"], errors="coerce").dropna().to_numpy(np.float64) * 100
            figure = fig.new_figure(6.0, 3.0)
            axes = figure.add_subplot()
            axes.hist(values, bins=min(30, max(5, values.size // 3)), color="#4c72b0")
            axes.set_xlabel("Dice [%]")
            axes.set_ylabel("subjects")
            axes.set_title(f"{split}: Dice per subject")
            parts.append(_figure(fig.png_bytes(figure), f"{split}: per-subject Dice (n = {values.size})"))
    pngs = sorted(folder.figures(split).glob("*.png"))
    for path in pngs[:_MAX_FIGURES_PER_SPLIT]:
        if path.stat().st_size <= _MAX_FIGURE_BYTES:
            parts.append(_figure(path.read_bytes(), f"{split}: {path.name}"))
    if len(pngs) > _MAX_FIGURES_PER_SPLIT:
        parts.append(_note(f"{len(pngs) - _MAX_FIGURES_PER_SPLIT} more figures in {pngs[0].parent}"))
    if not parts:
        return ""
    return f"<h3>{escape(split)}</h3>" + "".join(parts)


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_img(png, caption)}<figcaption>{escape(caption)}</figcaption></figure>"


def build_report(run: Path) -> str:
    """The whole HTML page as a string (the caller writes it atomically)."""
    from mriad.viewer.report import report_viewer

    run = Path(run)
    if not run.is_dir():
        raise InputError(run, "run folder not found")
    config = RunFolder(run).read_config()
    title = f"{run.resolve().name}: {config.get('model')}"
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _overview(run, config),
        _training(run),
        _evaluation(run),
        report_viewer(run),  # NiiVue on one evaluated subject; "" for runs without maps
        "<h2>Configuration</h2><pre>" + escape(json.dumps(config, indent=2, default=str)) + "</pre>",
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{MARKER}'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="sub">mriad report, written {created}</p>'
        + "".join(sections)
        + "</body></html>\n"
    )
