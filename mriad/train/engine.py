"""Training any registered model: device-resident data, AMP, exact resume, atomic checkpoints.

The loop is deliberately plain: the whole training split sits on the device and each step draws its
slices there (a volume uniformly with replacement, then one of its brain slices), calls
``model.training_step`` (so a GAN can bring its own step), and keeps the loss on the device; the
host only syncs to print progress and at validations. An "epoch" is counted like the reference code:
one slice per training volume, i.e. ``ceil(volumes / (batch * ranks))`` steps.

Validation is the healthy validation split (``<dataset>-val`` of the fold), a fixed set of slices
(evenly spaced brain slices of each volume) with a freshly seeded generator per batch, so every
validation sees the same noise and the losses are comparable over epochs and runs. The lowest
validation loss gives ``best.pt``; ``last.pt`` is written at every validation and when stopping.

Resuming (``resume=True``) restores weights, optimiser state, step/epoch counters, the running loss
and every random generator, and truncates metrics.csv after the checkpoint: on CPU a resumed run
reproduces the uninterrupted one bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mriad.contracts.run_folder import RunFolder, check_out_folder, read_metrics, write_config
from mriad.infra.console import info, warn
from mriad.infra.errors import ManifestError, MriadError
from mriad.infra.io import remove_temporaries, safe_torch_load
from mriad.models.registry import get_model_class
from mriad.runtime.memory import guard_training
from mriad.train import distributed
from mriad.train.loop import FitResult, TrainingLoop
from mriad.train.sampler import DeviceSlices
from mriad.train.spec import TrainSpec

# Options that may change when a run is resumed (they do not change what was trained so far).
_RESUMABLE_CHANGES = {"epochs", "val_every"}


def train(spec: TrainSpec | str, /, *, device: str | torch.device = "auto", **settings: Any) -> Path:
    """Train ``spec.model`` on ``<dataset>-train`` of ``spec.fold``; returns the run folder ``spec.out``.

    ``spec`` is a :class:`TrainSpec`, or a model name with the spec's fields as keywords
    (``train("pddpm", data=..., out=..., options={...})``). Under torchrun (WORLD_SIZE > 1) this runs
    data-parallel; only rank 0 writes.
    """
    return fit(spec, device=device, **settings).out


def fit(spec: TrainSpec | str, /, *, device: str | torch.device = "auto", **settings: Any) -> FitResult:
    """:func:`train`, returning the trained model and counters as well (for tests and notebooks)."""
    from mriad.infra.device import resolve_device

    spec = TrainSpec.of(spec, **settings)
    env = distributed.detect()
    target = resolve_device(device) if isinstance(device, str) else torch.device(device)
    target = distributed.setup(env, target)
    try:
        return _Trainer(spec, device=target, env=env).run()
    finally:
        distributed.teardown(env)


class _Trainer:
    def __init__(self, spec: TrainSpec, *, device: torch.device, env: distributed.DistEnv):
        self.spec = spec
        self.name, self.cls = spec.model, get_model_class(spec.model)
        self.data, self.fold, self.dataset = spec.data, spec.fold, spec.dataset
        self.run_folder = RunFolder(spec.out)
        self.user_options = dict(spec.options)
        self.device, self.env, self.seed = device, env, spec.seed
        self.resume, self.force, self.compile = spec.resume, spec.force, spec.compile
        self.max_steps, self.deterministic = spec.max_steps, spec.deterministic

    # ---- setup ---------------------------------------------------------------------------------
    def run(self) -> FitResult:
        if self.env.is_main:
            from mriad.infra.locking import folder_lock

            if self.run_folder.root.exists() and not self.run_folder.root.is_dir():
                raise MriadError(f"{self.run_folder.root}: exists and is not a folder; choose another --out")
            with folder_lock(self.run_folder.root, f"train {self.name}"):
                # Checkpoint temporaries a killed run left (last.pt itself is always whole).
                remove_temporaries(self.run_folder.checkpoints)
                return self._run()
        return self._run()

    def _on_main(self, decide: Any) -> Any:
        """Run ``decide()`` on rank 0 only and share its result (or its error) with every rank."""
        outcome: tuple[str, Any] = ("ok", None)
        if self.env.is_main:
            try:
                outcome = ("ok", decide())
            except MriadError as exc:
                outcome = ("error", str(exc))
        outcome = distributed.broadcast_object(outcome, self.env)
        if outcome[0] == "error":
            raise MriadError(outcome[1])
        return outcome[1]

    def _resolve_options(self, existing: dict[str, Any] | None) -> dict[str, Any]:
        if existing is None:
            return self.cls.resolve_config(self.user_options)
        same = {"data": str(self.data.resolve()), "fold": self.fold, "dataset": self.dataset}
        for key, value in same.items():
            if key in existing and existing[key] != value:
                raise MriadError(
                    f"{self.run_folder.root}: the run was trained with {key} {existing[key]!r}, not {value!r}; "
                    "resume it with the same data, or use --force / another --out"
                )
        stored = self.cls.resolve_config(existing.get("options", {}))
        wanted = self.cls.resolve_config({**stored, **self.user_options})
        changed = sorted(k for k in wanted if wanted[k] != stored[k] and k not in _RESUMABLE_CHANGES)
        if changed:
            details = ", ".join(f"{k} {stored[k]!r} -> {wanted[k]!r}" for k in changed)
            raise MriadError(
                f"{self.run_folder.root}: --resume keeps the run's settings, but {details} differ; "
                "only epochs and val_every may change (or use --force / another --out)"
            )
        return wanted

    def _run(self) -> FitResult:
        run = self.run_folder
        # --force replaces the old run only once everything it needs is validated (manifest, splits,
        # files, options, model): a mistyped --data must not cost the old checkpoints. Until then the
        # folder is only checked (same model, a run folder), as a resume would check it.
        existing = self._on_main(
            lambda: check_out_folder(run, self.name, resume=self.resume or self.force, force=False)
        )
        if self.force:
            existing = None
        options = self._resolve_options(existing)
        if self.deterministic:
            from mriad.infra.device import set_deterministic

            set_deterministic(True)
        elif self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True

        if not self.cls.trainable:
            if self.env.is_main:
                from mriad.contracts.manifest import read_manifest

                read_manifest(self.data)
                self._replace_old_run(run)
                self._write_config(run, options)
                info(f"{self.name} has nothing to train: wrote {run.config}")
            return FitResult(run.root, self.cls(**options), 0, 0, None, True)

        train_data, val_data = self._load_data()  # first: the memory check needs the slice size
        options = self._with_channels(options, train_data, val_data, resumed=existing is not None)
        guard_training(self.cls, options, tuple(train_data.slices.shape), self.device, depth=train_data.depth)
        torch.manual_seed(self.seed)  # identical initial weights on every rank
        model = self.cls(**options).to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # untyped overload
        optimizers = model.configure_optimizers()

        state = self._load_state(run, existing)
        if state is not None:
            self._restore_weights(run, model, optimizers, state, options)
        loop = TrainingLoop(self, model, optimizers, options, train_data, val_data)
        loop.restore(state, read_metrics(run) if (state is not None and self.env.is_main) else [])
        # Written only now, when nothing is left to refuse: a refused start leaves no run config
        # that would make the rerun look like a run to --resume.
        created = existing.get("created") if existing else None
        if self.env.is_main:
            self._replace_old_run(run)
            self._write_config(run, options, created)
        if self.compile:
            for child in model.children():
                child.compile()
        return loop.run()

    def _replace_old_run(self, run: RunFolder) -> None:
        """With --force, remove the old run (refused while another process holds a lock inside it)."""
        if self.force:
            from mriad.infra.locking import refuse_live_locks

            refuse_live_locks(run.root, "train --force would delete it")
            run.clear()

    def _restore_weights(
        self, run: RunFolder, model: Any, optimizers: list, state: dict[str, Any], options: dict[str, Any]
    ) -> None:
        """Load last.pt into a model built from the run's config; a mismatch is one line, not a tensor dump."""
        stored: dict[str, Any] = state["config"] if isinstance(state.get("config"), dict) else {}
        differ = sorted(
            k
            for k in options
            if k in stored and _plain(stored[k]) != _plain(options[k]) and k not in _RESUMABLE_CHANGES
        )
        if differ:
            name = run.config.name
            details = ", ".join(f"{k} {stored[k]!r} in the checkpoint, {options[k]!r} in {name}" for k in differ)
            raise MriadError(f"{run.last}: does not match {run.config} ({details}); was {name} edited?")
        try:
            model.load_state_dict(state["state_dict"])
            for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise MriadError(f"{run.last}: does not fit the model described by {run.config} ({first})") from None

    def _write_config(self, run: RunFolder, options: dict[str, Any], created: str | None = None) -> None:
        record = self.spec.training_record()
        write_config(
            run,
            model=self.name,
            fold=self.fold,
            data=self.data,
            options=options,
            seed=self.seed,
            dataset=self.dataset,
            created=created,
            extra={"training": record} if record else None,
        )

    def _load_data(self) -> tuple[DeviceSlices, DeviceSlices | None]:
        from mriad.contracts.data import load_volumes
        from mriad.contracts.manifest import read_manifest, select_split

        frame = read_manifest(self.data)
        train_rows = select_split(frame, f"{self.dataset}-train", self.fold)
        train = self._slices(load_volumes, train_rows, "train")
        if train.n_brain_slices == 0:
            kind = "healthy slice" if self.spec.healthy_slices else "slice with brain"
            raise MriadError(f"{self.data}: {self.dataset}-train fold {self.fold} has no {kind}")
        try:
            val_rows = select_split(frame, f"{self.dataset}-val", self.fold)
        except ManifestError:
            if self.env.is_main:
                warn(f"no {self.dataset}-val split in {self.data}: no validation, no best.pt (use last.pt)")
            return train, None
        val = self._slices(load_volumes, val_rows, "val")
        return train, (val if val.volumes else None)

    def _slices(self, load_volumes: Any, rows: Any, split: str) -> DeviceSlices:
        """A split's slices; with ``healthy_slices``, only the lesion-free ones (see the sampler)."""
        if not self.spec.healthy_slices:
            return DeviceSlices.from_split(load_volumes(rows, device=self.device))
        from mriad.train.sampler import healthy_slice_table

        data = load_volumes(rows, with_seg=True, device=self.device)
        usable = healthy_slice_table(data, self.spec.slice_margin, self.spec.min_brain_fraction)
        if self.env.is_main:
            info(
                f"{self.dataset}-{split}: {int(usable.sum().item())} healthy slices of {len(data.subjects)} "
                f"patient(s) (margin {self.spec.slice_margin} slices from any lesion, brain area >= "
                f"{self.spec.min_brain_fraction:g} of the largest); they come from patients, not healthy subjects"
            )
        return DeviceSlices.from_split(data, usable)

    def _with_channels(
        self, options: dict[str, Any], train: DeviceSlices, val: DeviceSlices | None, *, resumed: bool
    ) -> dict[str, Any]:
        """The data's channel count (T2 + FLAIR: 2) as the model's ``in_channels``, recorded in config.json.

        Refused in one line: multi-channel data for a model without ``in_channels`` (the baselines),
        a validation split with another count, and data that disagree with an explicit
        ``--set in_channels`` or with the run being resumed.
        """
        channels = int(train.slices.shape[1])
        if val is not None and int(val.slices.shape[1]) != channels:
            raise MriadError(
                f"{self.data}: {self.dataset}-val holds {int(val.slices.shape[1])} channel(s), "
                f"{self.dataset}-train {channels}"
            )
        if "in_channels" not in options:
            if channels != 1:
                raise MriadError(
                    f"{self.data}: the images hold {channels} channels, but model {self.name} takes "
                    "single-channel images only (multi-channel models: pddpm, ddpm, cddpm)"
                )
            return options
        wanted = int(options["in_channels"])
        if wanted == channels:
            return options
        if resumed or self.user_options.get("in_channels") is not None:
            source = f"the run {self.run_folder.root} was trained on" if resumed else "--set in_channels asks for"
            raise MriadError(f"{self.data}: the images hold {channels} channel(s), but {source} {wanted}")
        return {**options, "in_channels": channels}

    def _load_state(self, run: RunFolder, existing: dict[str, Any] | None) -> dict[str, Any] | None:
        if existing is None:
            return None
        if not run.last.is_file():
            if self.env.is_main:
                info(f"{run.root}: no checkpoint yet, starting the run from the beginning")
            return None
        state = safe_torch_load(run.last, map_location="cpu")
        if state.get("model") != self.name:
            raise MriadError(f"{run.last}: holds model {state.get('model')!r}, not {self.name!r}")
        return state


def _plain(value: Any) -> str:
    """A comparable form of an option (a tuple from a checkpoint equals the list from the run's config)."""
    import json

    return json.dumps(value, sort_keys=True, default=str)
