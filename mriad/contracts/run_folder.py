"""The run folder ``runs/<name>/``: the one module that knows its layout (docs/CONTRACTS.md).

``train`` writes ``config.json``, ``metrics.csv`` and ``checkpoints/{last,best}.pt``; ``reconstruct``
writes ``recon/<split>/<subject>_{rec,score}.nii.gz`` and, after both maps, ``<subject>.json``, the
record of what made them (:mod:`mriad.contracts.recon_records`); ``evaluate`` writes
``eval/<split>/{per_subject.csv,summary.json,figures/}`` (``evaluate --shard i/n`` writes
``eval/<split>/shards/{calibration.json,<i>-of-<n>.npz}``, which ``evaluate --merge`` turns into
those files); ``report`` writes ``report.html``.
``train --checkpoint-every N`` also keeps ``checkpoints/step-K.pt``; ``evaluate --checkpoint step-K``
works in ``checkpoint-views/step-K/``, a run folder of its own (the run's config.json, that checkpoint
as its best.pt, its own recon/ and eval/), so the best checkpoint's maps and numbers are never
overwritten. Every other module asks :class:`RunFolder` for these paths, and every split or subject
name that becomes part of one is checked (:mod:`mriad.infra.paths`), so a name read from a manifest
can never address a file outside the folder.

Everything is written atomically, and an existing run is never silently overwritten: continuing it
needs ``--resume``, replacing it ``--force``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mriad.infra.digests import file_sha256, text_sha256
from mriad.infra.errors import InputError, MriadError
from mriad.infra.paths import check_identifier, child

# mriad.infra.io and .locking (numpy) are imported where used: the CLI takes this module's names for
# its --help texts, and --help must stay instant.

CONFIG = "config.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAMES = ("last", "best")
STEP_PREFIX = "step-"  # checkpoints/step-K.pt (train --checkpoint-every)
VIEWS = "checkpoint-views"  # checkpoint-views/step-K/: a non-default checkpoint's own run folder
RECON = "recon"
EVAL = "eval"
REPORT = "report.html"
PER_SUBJECT = "per_subject.csv"
SUMMARY = "summary.json"
FIGURES = "figures"
FAILURES = "failures.csv"
EVAL_SHARDS = "shards"  # eval/<split>/shards/: evaluate --shard's calibration.json and <i>-of-<n>.npz
CALIBRATION = "calibration.json"
PARTIAL_SUFFIX = ".npz"
REC_SUFFIX = "_rec.nii.gz"
SCORE_SUFFIX = "_score.nii.gz"
RECORD_SUFFIX = ".json"

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "seconds", "loss_normalisation"]
# What --force removes: the run's own files and everything derived from the old weights.
_RUN_FILES = (CONFIG, METRICS)
_RUN_DIRS = (CHECKPOINTS, RECON, EVAL, VIEWS)

LAYOUT = (
    f"{CONFIG}, {METRICS}, {CHECKPOINTS}/{{last,best}}.pt, {RECON}/<split>/<subject>{{_rec,_score}}.nii.gz, "
    f"{EVAL}/<split>/{{{PER_SUBJECT},{SUMMARY},{FIGURES}/}}"
)


class RunFolder:
    """Paths of one run folder. Split and subject names are checked before they become paths."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # ---- what train writes -------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>.pt`` for ``which`` in ``last``, ``best`` or ``step-K``."""
        if which not in CHECKPOINT_NAMES and step_of(which) is None:
            raise MriadError(f"--checkpoint {which!r}: expected one of {', '.join(CHECKPOINT_NAMES)} or step-K")
        return self.checkpoints / f"{which}.pt"

    def step_checkpoint(self, step: int) -> Path:
        """``checkpoints/step-K.pt``: the weights after ``step`` optimisation steps."""
        return self.checkpoint(f"{STEP_PREFIX}{int(step)}")

    def step_checkpoints(self) -> dict[int, Path]:
        """The kept ``step-K`` checkpoints by step, in step order."""
        found = {step_of(p.stem): p for p in self.checkpoint_files()}
        return {k: found[k] for k in sorted(k for k in found if k is not None)}

    def checkpoint_view(self, which: str) -> RunFolder:
        """The run folder in which checkpoint ``which`` (``step-K``) is evaluated: it holds a copy of
        config.json and that checkpoint as ``best.pt`` (made by :func:`make_checkpoint_view`)."""
        if step_of(which) is None:
            raise MriadError(f"--checkpoint {which!r}: only step-K checkpoints have a view of their own")
        return RunFolder(self.root / VIEWS / which)

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.checkpoints.glob("*.pt")) if self.checkpoints.is_dir() else []

    def model_checkpoint(self, which: str = "best") -> Path | None:
        """The checkpoint a model is loaded from: ``<which>.pt``, ``best`` falling back to ``last``
        (a run without validation has no best.pt); None when neither exists."""
        path = self.checkpoint(which)
        if not path.is_file() and which == "best":
            path = self.last
        return path if path.is_file() else None

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def lock(self) -> Path:
        from mriad.infra.locking import LOCK_NAME

        return self.root / LOCK_NAME

    # ---- what reconstruct writes -------------------------------------------------------------------
    def recon_dir(self, split: str) -> Path:
        return child(self.root, RECON, check_identifier(split, "split", self.root))

    def recon_files(self, split: str, subject: str) -> tuple[Path, Path]:
        """A subject's reconstruction and score map."""
        folder, name = self.recon_dir(split), check_identifier(subject, "subject_id", self.root)
        return child(folder, name + REC_SUFFIX), child(folder, name + SCORE_SUFFIX)

    def recon_record(self, split: str, subject: str) -> Path:
        """The record of what made a subject's maps (written after both maps)."""
        name = check_identifier(subject, "subject_id", self.root)
        return child(self.recon_dir(split), name + RECORD_SUFFIX)

    def remove_recon(self, split: str, subject: str) -> None:
        """Drop a subject's maps, record first (a crash half-way leaves maps without a record: redone)."""
        record = self.recon_record(split, subject)
        record.unlink(missing_ok=True)
        for path in self.recon_files(split, subject):
            path.unlink(missing_ok=True)

    def recon_failures(self, split: str) -> Path:
        return self.recon_dir(split) / FAILURES

    def recon_splits(self) -> list[str]:
        """Splits with a reconstruction folder, sorted."""
        folder = self.root / RECON
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def reconstructed_subjects(self, split: str) -> list[str]:
        """Subjects with a reconstruction on disk (records are not checked: for listing only)."""
        folder = self.recon_dir(split)
        names = sorted(p.name for p in folder.glob("*" + REC_SUFFIX)) if folder.is_dir() else []
        return [name[: -len(REC_SUFFIX)] for name in names]

    # ---- what evaluate writes ----------------------------------------------------------------------
    def eval_dir(self, split: str) -> Path:
        return child(self.root, EVAL, check_identifier(split, "split", self.root))

    def per_subject(self, split: str) -> Path:
        return self.eval_dir(split) / PER_SUBJECT

    def summary(self, split: str) -> Path:
        return self.eval_dir(split) / SUMMARY

    def figures(self, split: str) -> Path:
        return self.eval_dir(split) / FIGURES

    def eval_failures(self, split: str) -> Path:
        return self.eval_dir(split) / FAILURES

    # ---- what evaluate --shard i/n writes (merged by evaluate --merge) ------------------------------
    def eval_shards(self, split: str) -> Path:
        """``eval/<split>/shards/``: the calibration and the shards' partial results."""
        return self.eval_dir(split) / EVAL_SHARDS

    def eval_calibration(self, split: str) -> Path:
        """``eval/<split>/shards/calibration.json``: the threshold (and healthy reference) every
        shard of the split scores with, calibrated once by the first shard."""
        return self.eval_shards(split) / CALIBRATION

    def eval_partial(self, split: str, index: int, count: int) -> Path:
        """``eval/<split>/shards/<i>-of-<n>.npz``: shard ``i`` of ``n``'s per-subject rows and pooled counts."""
        if not 0 <= int(index) < int(count):
            raise MriadError(f"--shard {index}/{count}: i must be in 0..n-1")
        return self.eval_shards(split) / f"{int(index)}-of-{int(count)}{PARTIAL_SUFFIX}"

    def eval_partials(self, split: str) -> dict[tuple[int, int], Path]:
        """The partial results on disk, by (i, n)."""
        folder = self.eval_shards(split)
        found: dict[tuple[int, int], Path] = {}
        for path in sorted(folder.glob(f"*-of-*{PARTIAL_SUFFIX}")) if folder.is_dir() else []:
            index, _, count = path.name[: -len(PARTIAL_SUFFIX)].partition("-of-")
            if index.isdigit() and count.isdigit() and int(index) < int(count):
                found[(int(index), int(count))] = path
        return found

    def evaluated_splits(self) -> list[str]:
        """Splits with a ``summary.json``, sorted."""
        folder = self.root / EVAL
        return sorted(p.parent.name for p in folder.glob(f"*/{SUMMARY}")) if folder.is_dir() else []

    # ---- config.json -------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict[str, Any]:
        """``config.json``; a folder without one, or a file that is not a JSON object with a ``model``
        entry, is refused with one line naming it."""
        config = self.read_config_if_any()
        if config is None:
            raise InputError(self.root, f"not a run folder (no {CONFIG}); create one with `mriad train`")
        return config

    def read_config_if_any(self) -> dict[str, Any] | None:
        """:meth:`read_config`, but None when there is no ``config.json`` at all."""
        path = self.config
        if not path.is_file():
            return None
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(path, f"unreadable run config ({type(exc).__name__})") from None
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(config, dict):
            raise InputError(path, "expected a JSON object")
        if not config.get("model"):
            raise InputError(path, 'has no "model" entry')
        return config

    # ---- a training's view -------------------------------------------------------------------------
    def describe(self) -> str:
        """ "finished at epoch 1600" / "stopped at epoch 12, step 140" / "without a checkpoint"."""
        from mriad.infra.io import safe_torch_load

        if not self.last.is_file():
            return "without a checkpoint"
        state = safe_torch_load(self.last)
        epochs = int(state.get("config", {}).get("epochs", 0))
        if int(state.get("epoch", 0)) >= epochs > 0:
            return f"finished at epoch {state['epoch']}"
        return f"stopped at epoch {state.get('epoch')}, step {state.get('step')}"

    def clear(self) -> None:
        for name in _RUN_FILES:
            (self.root / name).unlink(missing_ok=True)
        for name in _RUN_DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)


def step_of(which: str) -> int | None:
    """``"step-300"`` -> 300; None for anything else (``best``, ``step-x``, ``step--1``)."""
    digits = which[len(STEP_PREFIX) :] if which.startswith(STEP_PREFIX) else ""
    return int(digits) if digits.isdigit() and digits == str(int(digits)) else None


def make_checkpoint_view(run: str | Path, which: str) -> RunFolder:
    """Create or refresh ``checkpoint-views/<which>/`` for evaluating checkpoint ``which``.

    The view's best.pt is a hard link to (or, across file systems, a copy of) the step checkpoint, so
    reconstruct and evaluate treat it as an ordinary run; its records carry that checkpoint's digest.
    """
    from mriad.infra.io import atomic_write_text, link_or_copy

    folder = RunFolder(run)
    source = folder.checkpoint(which)
    if not source.is_file():
        kept = ", ".join(f"{STEP_PREFIX}{k}" for k in folder.step_checkpoints()) or "none"
        raise InputError(source, f"no such checkpoint (kept: {kept}); train with --checkpoint-every N")
    view = folder.checkpoint_view(which)
    config = folder.read_config()
    config["checkpoint"] = which
    view.checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_text(view.config, json.dumps(config, indent=2) + "\n")
    if view.best.is_file() and file_sha256(view.best) == file_sha256(source):
        return view
    view.best.unlink(missing_ok=True)
    link_or_copy(source, view.best)
    return view


def is_run_folder(path: str | Path) -> bool:
    return RunFolder(path).is_run()


def read_run_config(run: str | Path) -> dict[str, Any]:
    """The run's ``config.json`` (see :meth:`RunFolder.read_config`)."""
    return RunFolder(run).read_config()


def resolve_manifest(run: str | Path, config: dict[str, Any], data: str | Path | None) -> Path:
    """``--data`` if given, else the run's recorded manifest (relative to the cwd or the run), else the
    workspace's."""
    if data is not None:
        return Path(data)
    recorded = config.get("data")
    if not recorded:
        from mriad.infra.workspace import default_manifest

        return default_manifest()
    path = Path(recorded)
    if not path.is_absolute() and not path.is_file() and (Path(run) / path).is_file():
        path = Path(run) / path
    return path


def check_out_folder(run: RunFolder, model: str, *, resume: bool, force: bool) -> dict[str, Any] | None:
    """Decide what may happen to ``run``; returns the existing config when resuming, else None.

    Refused: a run of another model (always), an existing run without --resume/--force, a non-empty
    folder that is not a run folder (it may be anything, e.g. data).
    """
    if not run.root.exists():
        return None
    if not run.root.is_dir():
        raise MriadError(f"{run.root}: exists and is not a folder; choose another --out")
    config = run.read_config_if_any()
    if config is None:
        others = [p.name for p in run.root.iterdir() if p.name != run.lock.name]
        if others:
            raise MriadError(f"{run.root}: not empty and not a run folder (no {CONFIG}); choose another --out")
        return None
    if config.get("model") != model:
        raise MriadError(
            f"{run.root}: holds a run of model {config.get('model')!r}, not {model!r}; choose another --out"
        )
    if force:
        run.clear()
        return None
    if resume:
        return config
    raise MriadError(
        f"{run.root}: already holds a {model} run ({run.describe()}); pass --resume to continue it, "
        "--force to start over, or choose another --out"
    )


def git_commit() -> str | None:
    """The commit of mriad's source tree, if it is a git checkout (best effort, never fails)."""
    source = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def versions() -> dict[str, str]:
    """Versions of what computes a run's numbers (recorded in config.json and summary.json)."""
    import numpy
    import scipy
    import torch

    from mriad import __version__

    return {
        "mriad": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def write_config(
    run: RunFolder,
    *,
    model: str,
    fold: int,
    data: Path,
    options: dict[str, Any],
    seed: int,
    dataset: str,
    created: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = {
        "model": model,
        "fold": fold,
        "data": str(Path(data).resolve()),
        "options": options,
        "versions": versions(),
        "git_commit": git_commit(),
        "created": created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "dataset": dataset,
        **(extra or {}),
    }
    from mriad.infra.io import atomic_write_json

    atomic_write_json(run.config, config)
    return config


def read_metrics(run: RunFolder) -> list[dict[str, str]]:
    if not run.metrics.is_file():
        return []
    with open(run.metrics, newline="") as handle:
        return list(csv.DictReader(handle))


def write_metrics(run: RunFolder, rows: list[dict[str, Any]]) -> None:
    from mriad.infra.io import atomic_write_text

    lines = [",".join(METRIC_COLUMNS)]
    for row in rows:
        lines.append(",".join(_cell(row.get(column)) for column in METRIC_COLUMNS))
    atomic_write_text(run.metrics, "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact form: resumed and uninterrupted runs compare equal
    return str(value)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    from mriad.infra.io import atomic_torch_save

    atomic_torch_save(path, payload)


def model_identity(run: str | Path, which: str = "best") -> dict[str, Any]:
    """What a map's model is: the digest of the checkpoint it is loaded from, or, for a model that
    is never trained (Thresh), of the options in ``config.json`` it is built from."""
    folder = RunFolder(run)
    path = folder.model_checkpoint(which)
    if path is not None:
        return {"which": which, "checkpoint": path.name, "sha256": file_sha256(path)}
    options = json.dumps(folder.read_config().get("options", {}), sort_keys=True, default=str)
    return {"which": which, "checkpoint": None, "options_sha256": text_sha256(options)}


def evaluation_provenance(run: str | Path, manifest: str | Path, subjects: dict[str, list[str]]) -> dict[str, Any]:
    """What an evaluation scored: the manifest's digest and the checkpoints recorded for the maps of
    ``subjects`` (split -> subject IDs; normally one checkpoint)."""
    from mriad.contracts.recon_records import read_recon_record

    checkpoints: list[dict[str, Any]] = []
    for split, names in subjects.items():
        for subject in names:
            record = read_recon_record(run, split, subject)
            model = record.get("model") if record else None
            if model and model not in checkpoints:
                checkpoints.append(model)
    return {"manifest": {"path": str(manifest), "sha256": file_sha256(manifest)}, "checkpoints": checkpoints}


def calibrated_thresholds(run: str | Path) -> dict[str, dict[str, Any]]:
    """The thresholds ``evaluate`` calibrated, by validation split: ``{"brats-val": {"threshold", "search",
    "val_dice", "evaluated_split", "protocol", "clamp", "summary"}}``. Summaries made with a fixed
    ``--threshold`` are left out; several evaluations calibrated on one validation split give its
    threshold once (the first split's)."""
    folder = RunFolder(run)
    found: dict[str, dict[str, Any]] = {}
    for split in folder.evaluated_splits():
        try:
            summary = json.loads(folder.summary(split).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or summary.get("threshold") is None or not summary.get("val_split"):
            continue
        if summary.get("threshold_search") == "fixed":
            continue
        recorded = summary.get("settings")
        settings: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        found.setdefault(
            str(summary["val_split"]),
            {
                "threshold": float(summary["threshold"]),
                "search": summary.get("threshold_search"),
                "val_dice": summary.get("threshold_val_dice"),
                "evaluated_split": split,
                # The binarisation rule the threshold belongs to; summaries from before protocols: "brain".
                "protocol": summary.get("protocol") or settings.get("protocol") or "brain",
                "clamp": settings.get("clamp"),
                "summary": str(folder.summary(split)),
            },
        )
    return found
