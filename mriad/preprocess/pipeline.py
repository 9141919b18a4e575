"""``preprocess``: every subject of a raw data set to the final grid, in parallel and resumably.

Per subject, outputs go to ``OUT/<dataset>/<subject>/`` (image, mask, seg, qc.png, timings.json) and the
``done.json`` marker last. A rerun skips subjects whose marker verifies and whose options match; one
bad subject becomes a row of ``failures.csv`` and never stops the others (unless ``fail_fast``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mriad.contracts.subject_folder import SubjectFolder, subject_dir
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import Volume, atomic_write_json, write_nifti
from mriad.preprocess import markers
from mriad.preprocess.datasets import Problem, Subject, adapter
from mriad.preprocess.subject import PIPELINE_REVISION, Options, Timer, load_inputs, load_others, run_steps
from mriad.preprocess.transform import write_sidecar


@dataclass
class Outcome:
    """What happened to one subject: ``done``, ``skipped`` (already complete) or ``failed``."""

    subject_id: str
    status: str
    row: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problem: Problem | None = None


def subject_folder(out: Path, dataset: str, subject_id: str) -> Path:
    return subject_dir(out, dataset, subject_id)


def _row(
    subject: Subject, options: Options, folder: Path, has_seg: bool, warnings: list[str], has_ignore: bool = False
) -> dict[str, Any]:
    source = str(subject.image)
    notes = [*subject.notes, *warnings]
    if notes:
        source += " (warning: " + "; ".join(notes) + ")"
    # The optional manifest column only where there is an ignore volume: other rows stay as they were.
    ignore = {"ignore": str(SubjectFolder(folder).ignore)} if has_ignore else {}
    return {
        "subject_id": subject.subject_id,
        "dataset": options.dataset,
        "split": "",
        "fold": "",
        "label": subject.label,
        "image": str(SubjectFolder(folder).image),
        "mask": str(SubjectFolder(folder).mask),
        "seg": str(SubjectFolder(folder).seg) if has_seg else "",
        "age": "" if subject.age is None else subject.age,
        "sex": subject.sex,
        "source": source,
        **ignore,
        # A --modality list: the image is multi-channel, its channels in this order (docs/CONTRACTS.md).
        **({"channels": options.modality} if "," in options.modality else {}),
    }


def process_subject(subject: Subject, folder: Path, options: Options) -> Outcome:
    """Preprocess one subject into ``folder``; raises :class:`InputError` for a bad input."""
    folder = Path(folder)
    timer = Timer()
    start = time.perf_counter()
    try:
        with timer.step("read"):  # validated before anything is written for the subject
            module = adapter(options.dataset)
            image, seg, ignore = load_inputs(
                subject.image,
                subject.seg,
                labels=module.LABELS,
                lesion_labels=getattr(module, "LESION_LABELS", None),
                ignore_labels=ignore_labels(options.dataset),
            )
            others = load_others(image, subject.others)  # the further modalities of a --modality list
        if folder.exists():
            markers.clear_subject(folder)
        return _process(subject, folder, options, image, seg, timer, start, ignore, others)
    except BaseException:
        # Outputs of an earlier run (other options, --force) are stale now: a failed subject has none.
        if folder.exists():
            markers.remove_outputs(folder)
        raise


def ignore_labels(dataset: str) -> tuple[int, ...] | None:
    """The segmentation labels a data set's adapter marks as scored by no metric (``IGNORE_LABELS``)."""
    return getattr(adapter(dataset), "IGNORE_LABELS", None) or None


def _process(
    subject: Subject,
    folder: Path,
    options: Options,
    image: Volume,
    seg: Volume | None,
    timer: Timer,
    start: float,
    ignore: Volume | None = None,
    others: list[Volume] | None = None,
) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    result = run_steps(image, options, seg, timer, ignore=ignore, others=others or ())
    has_ignore = result.ignore is not None and bool(result.ignore.any())
    with timer.step("write"):
        files = SubjectFolder(folder)
        written = [files.image.name, files.mask.name]
        write_nifti(files.image, result.image, result.affine, dtype=np.float32)
        write_nifti(files.mask, result.mask, result.affine, dtype=np.uint8)
        if result.seg is not None:
            write_nifti(files.seg, result.seg, result.affine, dtype=np.uint8)
            written.append(files.seg.name)
        else:
            with contextlib.suppress(FileNotFoundError):
                files.seg.unlink()
        if has_ignore and result.ignore is not None:  # written only where some final-grid voxel is ignored
            write_nifti(files.ignore, result.ignore, result.affine, dtype=np.uint8)
            written.append(files.ignore.name)
        else:
            with contextlib.suppress(FileNotFoundError):
                files.ignore.unlink()
        # The way back to the scan's own grid (what `mriad detect` maps its outputs through).
        written += write_sidecar(folder, image, options.registration, result.matrix, PIPELINE_REVISION)
    if options.qc:
        from mriad.preprocess.qc import write_qc

        with timer.step("qc"):
            title = f"{options.dataset} {subject.subject_id}"
            reference = result.image if result.image.ndim == 3 else result.image[..., 0]  # the first modality
            write_qc(files.qc, reference, result.mask, result.seg, title=title)
            written.append(files.qc.name)
    timings = {**timer.seconds, "total": round(time.perf_counter() - start, 3)}
    atomic_write_json(files.timings, timings)
    written.append(files.timings.name)
    row = _row(subject, options, folder, result.seg is not None, result.warnings, has_ignore)
    relative = {k: (Path(v).name if k in ("image", "mask", "seg", "ignore") and v else v) for k, v in row.items()}
    labels = ignore_labels(options.dataset)
    markers.write_done(
        folder,
        written,
        {
            "subject_id": subject.subject_id,
            "options": options.signature(),
            # Only for adapters that ignore labels: older results of theirs lack it and are redone.
            **({"ignore_labels": list(labels)} if labels else {}),
            "row": relative,
            "timings": timings,
            "source": str(subject.image),
            "warnings": result.warnings,
            "template_to_subject": np.round(result.matrix, 6).tolist(),
        },
    )
    return Outcome(subject.subject_id, "done", row, timings, result.warnings)


def _failure(subject: Subject, exc: BaseException) -> Problem:
    """One line that starts with the offending file."""
    if isinstance(exc, InputError):
        return Problem(subject.subject_id, exc.path, str(exc))
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    reason = f"{subject.image}: {type(exc).__name__}" + (f": {text}" if text else "")
    return Problem(subject.subject_id, str(subject.image), reason)


def run_one(subject: Subject, folder: Path, options: Options) -> Outcome:
    """:func:`process_subject` that turns any error into a failed outcome (what workers run)."""
    try:
        return process_subject(subject, folder, options)
    except Exception as exc:  # one bad subject must not stop the batch, whatever went wrong
        return Outcome(subject.subject_id, "failed", problem=_failure(subject, exc))


def completed(subject: Subject, folder: Path, options: Options) -> Outcome | None:
    """A skipped outcome when ``folder`` holds a verified result made with the same options."""
    record = markers.read_done(folder)
    if record is None or record.get("options") != options.signature():
        return None
    labels = ignore_labels(options.dataset)
    if labels and record.get("ignore_labels") != list(labels):
        return None  # made before the adapter's ignored labels were written out
    stored = record.get("row", {})
    row = _row(subject, options, folder, bool(stored.get("seg")), [], bool(stored.get("ignore")))
    row["source"] = stored.get("source", row["source"])
    return Outcome(subject.subject_id, "skipped", row, record.get("timings", {}))


def run_batch(
    todo: list[tuple[Subject, Path]],
    options: Options,
    *,
    jobs: int = 1,
    fail_fast: bool = False,
    progress: Callable[[Iterator[Outcome], int], Iterator[Outcome]] | None = None,
    outcomes: list[Outcome] | None = None,
) -> list[Outcome]:
    """Process ``todo`` (subject, folder) pairs, ``jobs`` at a time in spawned worker processes.

    Outcomes are appended to ``outcomes`` as they come, so a caller interrupted half-way (Ctrl-C) still
    knows which subjects finished.
    """
    progress = progress or (lambda items, total: items)
    outcomes = [] if outcomes is None else outcomes
    if not todo:
        return outcomes
    if jobs <= 1:

        def sequential() -> Iterator[Outcome]:
            for subject, folder in todo:
                yield run_one(subject, folder, options)

        for outcome in progress(sequential(), len(todo)):
            outcomes.append(outcome)
            if fail_fast and outcome.status == "failed":
                break
        return outcomes
    return _run_pool(todo, options, jobs, fail_fast, progress, outcomes)


def _run_pool(
    todo: list[tuple[Subject, Path]],
    options: Options,
    jobs: int,
    fail_fast: bool,
    progress: Callable[[Iterator[Outcome], int], Iterator[Outcome]],
    outcomes: list[Outcome],
) -> list[Outcome]:
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    from mriad.preprocess.threads import init_worker, thread_env, threads_per_job

    threads = threads_per_job(jobs)
    # Workers start with capped thread pools: the environment is read when their libraries load.
    with _environment(thread_env(threads)):
        executor = ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(threads,),
        )
        futures: dict[Future[Outcome], Subject] = {
            executor.submit(run_one, subject, folder, options): subject for subject, folder in todo
        }

    def finished() -> Iterator[Outcome]:
        for future in as_completed(futures):
            subject = futures[future]
            try:
                yield future.result()
            except BrokenProcessPool:
                yield Outcome(
                    subject.subject_id,
                    "failed",
                    problem=Problem(
                        subject.subject_id, str(subject.image), f"{subject.image}: worker process died (out of memory?)"
                    ),
                )
            except Exception as exc:  # e.g. an unpicklable result
                yield Outcome(subject.subject_id, "failed", problem=_failure(subject, exc))

    try:
        for outcome in progress(finished(), len(todo)):
            outcomes.append(outcome)
            if fail_fast and outcome.status == "failed":
                break
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    # With fail_fast, subjects already running when the failure came still finished: keep them.
    seen = {o.subject_id for o in outcomes}
    for future, subject in futures.items():
        if subject.subject_id not in seen and future.done() and not future.cancelled() and future.exception() is None:
            outcomes.append(future.result())
    return outcomes


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class PreprocessResult:
    """What a batch did. ``failures`` includes subjects the dataset adapter could not use."""

    manifest: Path
    failures_csv: Path
    done: list[str]
    skipped: list[str]
    failures: list[Problem]
    timings: dict[str, dict[str, float]]
    warnings: dict[str, list[str]]
    options: Options
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def check_paths(raw: Path, out: Path) -> None:
    """Refuse a missing RAW and an OUT inside RAW (outputs would be found as inputs next time)."""
    raw, out = Path(raw), Path(out)
    if not raw.exists():
        raise InputError(raw, "raw data not found")
    if raw.is_dir():
        raw_r, out_r = raw.resolve(), out.resolve()
        if out_r == raw_r or out_r.is_relative_to(raw_r):
            raise MriadError(f"{out}: the output folder may not be inside the raw folder {raw}")


def resolve_options(
    dataset: str, modality: str, skull_strip: str | None, registration: str | None, device: str, n4: bool, qc: bool
) -> Options:
    """Fill ``None`` steps with the data set's defaults (BraTS: no skull strip, no registration)."""
    from mriad.preprocess.datasets import adapter

    module = adapter(dataset)
    return Options(
        dataset=module.NAME,
        modality=modality.lower(),
        skull_strip=skull_strip or module.DEFAULTS.skull_strip,
        registration=registration or module.DEFAULTS.registration,
        n4=n4,
        qc=qc,
        device=device,
    )


def discover_subjects(
    raw: Path, dataset: str, options: Options, demographics: Path | None
) -> tuple[list[Subject], list[Problem]]:
    """The data set's subjects in discovery order (duplicate IDs dropped) and the problems found."""
    from mriad.preprocess.datasets import discover

    found = discover(dataset, raw, options.modality, demographics)
    problems = [Problem(p.subject, p.file, f"{p.file}: {p.reason}") for p in found.problems]
    if not found.subjects and not problems:
        raise MriadError(f"{raw}: no {options.modality} scans found for --dataset {dataset}")
    subjects, seen = [], set()
    for subject in found.subjects:
        if subject.subject_id in seen:
            problems.append(
                Problem(
                    subject.subject_id,
                    str(subject.image),
                    f"{subject.image}: duplicate subject ID {subject.subject_id}",
                )
            )
            continue
        seen.add(subject.subject_id)
        subjects.append(subject)
    return subjects, problems


def preprocess(
    raw: Path,
    out: Path,
    *,
    dataset: str,
    modality: str = "t2",
    skull_strip: str | None = None,
    registration: str | None = None,
    jobs: int = 1,
    force: bool = False,
    fail_fast: bool = False,
    demographics: Path | None = None,
    device: str = "cpu",
    n4: bool = True,
    qc: bool = True,
    progress: Callable[[Iterator[Outcome], int], Iterator[Outcome]] | None = None,
    shard: tuple[int, int] | None = None,
) -> PreprocessResult:
    """Preprocess every subject of ``raw`` into ``out`` (see the module docstring); never raises for one
    bad subject: check ``result.failures``.

    ``shard=(i, n)``: only subjects i, i+n, ... (discovery order), side by side with the other shards
    in the same ``out``; the manifest is then a partial one (see :mod:`mriad.preprocess.shards`)."""
    from mriad.infra.locking import folder_lock, shard_lock
    from mriad.infra.shards import shard_items
    from mriad.preprocess.outputs import write_outputs
    from mriad.preprocess.shards import write_partial

    start = time.perf_counter()
    raw, out = Path(raw), Path(out)
    check_paths(raw, out)
    options = resolve_options(dataset, modality, skull_strip, registration, device, n4, qc)
    subjects, problems = discover_subjects(raw, dataset, options, demographics)
    if shard is not None:  # the data set's problems are reported once, by shard 0
        subjects, problems = shard_items(subjects, shard), (problems if shard[0] == 0 else [])
    outcomes: list[Outcome] = []
    lock = (
        folder_lock(out, "preprocess")  # also sweeps temporaries a killed run left in OUT
        if shard is None
        else shard_lock(out, *shard, f"preprocess {options.dataset} shard {shard[0]}/{shard[1]}", options.dataset)
    )
    with lock:
        todo = []
        for subject in subjects:
            folder = subject_folder(out, options.dataset, subject.subject_id)
            skipped = None if force else completed(subject, folder, options)
            if skipped is not None:
                outcomes.append(skipped)
            else:
                todo.append((subject, folder))
        try:
            if not (fail_fast and problems):
                run_batch(todo, options, jobs=jobs, fail_fast=fail_fast, progress=progress, outcomes=outcomes)
        finally:  # also after Ctrl-C: the manifest lists every subject finished so far
            failures = problems + [o.problem for o in outcomes if o.problem is not None]
            rows = [o.row for o in outcomes if o.status in ("done", "skipped")]
            if shard is None:
                manifest, failures_csv = write_outputs(out, options.dataset, rows, failures)
            else:
                manifest, failures_csv = write_partial(out, options.dataset, shard, rows, failures)
    return PreprocessResult(
        manifest=manifest,
        failures_csv=failures_csv,
        done=[o.subject_id for o in outcomes if o.status == "done"],
        skipped=[o.subject_id for o in outcomes if o.status == "skipped"],
        failures=failures,
        timings={o.subject_id: o.timings for o in outcomes if o.status == "done"},
        warnings={o.subject_id: o.warnings for o in outcomes if o.warnings},
        options=options,
        seconds=round(time.perf_counter() - start, 3),
    )
