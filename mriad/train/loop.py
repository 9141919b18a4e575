"""The training loop proper: steps, validation, checkpoints, and everything a resume must restore.

Kept apart from :mod:`mriad.train.engine` (which decides what to train, where, and from which state).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mriad.contracts.run_folder import save_checkpoint, write_metrics
from mriad.infra.console import ProgressLine, info, warn
from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.runtime.cost import announce_cpu_cost
from mriad.runtime.inference import training_autocast
from mriad.train import distributed
from mriad.train.sampler import DeviceSlices

if TYPE_CHECKING:
    from mriad.train.engine import _Trainer

VAL_SLICES_PER_VOLUME = 10
VAL_SEED = 20230707  # fixed for every run, so validation losses of different runs compare too
RANK_SEED_STRIDE = 1_000_003  # rank r samples with seed + r * stride: distinct streams per rank
_STATUS_INTERVAL_S = 2.0
# How often the device-side "loss was non-finite" flag is read (one host sync per this many steps).
FINITE_CHECK_EVERY = 50


@dataclass
class FitResult:
    out: Path
    model: AnomalyModel
    step: int
    epoch: int
    best_val: float | None
    finished: bool


class TrainingLoop:
    """The training loop proper, with everything a checkpoint must capture to resume exactly."""

    def __init__(
        self,
        trainer: _Trainer,
        model: AnomalyModel,
        optimizers: list,
        options: dict[str, Any],
        train_data: DeviceSlices,
        val_data: DeviceSlices | None,
    ):
        self.t, self.model, self.optimizers, self.options = trainer, model, optimizers, options
        self.train_data, self.val_data = train_data, val_data
        self.env, self.device = trainer.env, trainer.device
        self.batch_size = int(options["batch_size"])
        self.epochs = int(options["epochs"])
        self.val_every = max(1, int(options["val_every"]))
        self.steps_per_epoch = math.ceil(train_data.volumes / (self.batch_size * self.env.world_size))
        self.volumes = model.batch_kind == "volumes"
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(trainer.seed + RANK_SEED_STRIDE * self.env.rank)
        torch.manual_seed(trainer.seed + RANK_SEED_STRIDE * self.env.rank)
        self.step = self.epoch = self.epoch_step = 0
        self.best_val: float | None = None
        self.stale = 0  # validations in a row since the best one (early stopping)
        self.early_stopped = False
        self.checkpoint_every = trainer.spec.checkpoint_every
        self.patience = trainer.spec.patience
        self.elapsed = 0.0
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        # Step (1-based) of the first non-finite loss, kept on the device so no step waits for the host.
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.rows: list[dict[str, Any]] = []
        self.fresh = True  # a new run (not resumed): starts with a baseline validation
        self.autocast = training_autocast(str(options.get("train_precision", "auto")), self.device)
        if self.env.active and type(model).training_step is not AnomalyModel.training_step:
            raise MriadError(f"model {trainer.name} brings its own training step; train it in a single process")
        self.wrapper = distributed.wrap(model, self.env, self.device)
        self.val_index = None
        if val_data is not None and not self.volumes:
            self.val_index = val_data.evenly_spaced_brain_slices(VAL_SLICES_PER_VOLUME)

    # ---- state -----------------------------------------------------------------------------------
    def restore(self, state: dict[str, Any] | None, rows: list[dict[str, str]]) -> None:
        if state is None:
            return
        self.fresh = False
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.epoch_step = int(state.get("epoch_step", 0))
        self.best_val = state.get("best_val")
        self.stale = int(state.get("stale_validations", 0))
        self.early_stopped = bool(state.get("early_stopped", False))
        self.elapsed = float(state.get("seconds", 0.0))
        self.loss_sum = state["train_loss_sum"].to(self.device, torch.float32).reshape(())
        self.loss_count = int(state["train_loss_count"])
        rng = state["rng"]
        ranks = rng.get("rank_generators") or [rng["generator"]]
        torch_states = rng.get("rank_torch") or [rng["torch"]]
        if len(ranks) == self.env.world_size:
            self.generator.set_state(ranks[self.env.rank])
            torch.set_rng_state(torch_states[self.env.rank])
        elif self.env.is_main:
            warn(f"checkpoint from {len(ranks)} rank(s), now {self.env.world_size}: sampling reseeded (not bit-exact)")
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        # Rows written after the checkpoint belong to the lost future of the interrupted run.
        self.rows = [r for r in rows if r.get("step") and int(r["step"]) <= self.step]

    def _checkpoint(self) -> dict[str, Any]:
        states = distributed.gather_objects((self.generator.get_state(), torch.get_rng_state()), self.env)
        rng: dict[str, Any] = {"generator": states[0][0], "torch": states[0][1]}
        if self.env.active:
            rng["rank_generators"] = [g for g, _ in states]
            rng["rank_torch"] = [t for _, t in states]
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.t.name,
            "config": dict(self.options),
            "state_dict": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "rng": rng,
            "best_val": self.best_val,
            "stale_validations": self.stale,
            "early_stopped": self.early_stopped,
            "train_loss_sum": self.loss_sum.detach().float().cpu(),
            "train_loss_count": self.loss_count,
            "seconds": self.elapsed,
            "world_size": self.env.world_size,
        }

    def _save(self, best: bool = False, step_copy: bool = False) -> None:
        # The last optimiser step may have made weights NaN after the last loss was computed: such
        # weights never replace a checkpoint (one host sync per checkpoint, not per step).
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        if not bool(finite.item()):
            raise MriadError(
                f"{self.t.run_folder.root}: weights became NaN/Inf by step {self.step} (epoch {self.epoch}); "
                f"stopped, {self.t.run_folder.last} keeps the last finite weights; lower --lr or check the inputs"
            )
        payload = self._checkpoint()  # collective under DDP: every rank builds it
        if self.env.is_main:
            run = self.t.run_folder
            save_checkpoint(run.last, payload)
            if best:
                save_checkpoint(run.best, payload)
            if step_copy:
                save_checkpoint(run.step_checkpoint(self.step), payload)

    # ---- loop ------------------------------------------------------------------------------------
    def _batch(self) -> torch.Tensor:
        if self.volumes:
            return self.train_data.sample_volumes(self.batch_size, self.generator)
        batch = self.train_data.sample_slices(self.batch_size, self.generator)
        return batch.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else batch

    def run(self) -> FitResult:
        total = self.epochs * self.steps_per_epoch
        announce = getattr(self.model, "set_total_steps", None)
        if callable(announce):  # models that schedule phases over the run (f-AnoGAN: GAN, then encoder)
            announce(total)
        if self.epoch >= self.epochs:
            if self.env.is_main:
                info(f"{self.t.run_folder.root}: already finished ({self.epoch} epochs); raise --epochs to train on")
            return self._result()
        if self.early_stopped and self.patience is not None and self.stale >= self.patience:
            if self.env.is_main:
                info(f"{self.t.run_folder.root}: already stopped early at step {self.step} (--patience)")
            return self._result()
        self.early_stopped = False
        self._announce()
        if self.fresh and self.val_data is not None:
            self._end_of_period()  # epoch 0: the untrained model's validation loss, as a baseline
        self.model.train()
        progress = ProgressLine(f"train {self.t.name}", total=total) if self.env.is_main else None
        started = time.monotonic() - self.elapsed
        last_status, last_step = time.monotonic(), self.step
        stopped = False
        try:
            while self.epoch < self.epochs:
                while self.epoch_step < self.steps_per_epoch:
                    if self.t.max_steps is not None and self.step >= self.t.max_steps:
                        stopped = True
                        break
                    batch = self._batch()
                    with distributed.route_training_loss(self.model, self.wrapper):
                        out = self.model.training_step(batch, self.optimizers, self.generator, self.autocast)
                    loss = torch.as_tensor(out["loss"], device=self.device).detach().float()
                    self.loss_sum += loss
                    self.loss_count += 1
                    self.step += 1
                    self.epoch_step += 1
                    unseen = ~torch.isfinite(loss) & (self.first_bad < 0)
                    self.first_bad = torch.where(unseen, self.step, self.first_bad)
                    if self.step % FINITE_CHECK_EVERY == 0:
                        self._check_finite()
                    if self.checkpoint_every is not None and self.step % self.checkpoint_every == 0:
                        self._check_finite()
                        self._save(step_copy=True)  # the step-K.pt checkpoint, for learning curves
                    now = time.monotonic()
                    if progress is not None and now - last_status >= _STATUS_INTERVAL_S:
                        rate = (self.step - last_step) * self.batch_size * self.env.world_size / (now - last_status)
                        progress.update(min(self.step, total), self._status(rate))
                        last_status, last_step = now, self.step
                if stopped:
                    break
                self.epoch += 1
                self.epoch_step = 0
                if self.epoch % self.val_every == 0 or self.epoch == self.epochs:
                    self.elapsed = time.monotonic() - started
                    self._end_of_period()
                    if progress is not None:
                        progress.update(min(self.step, total), self._status(None))
                    if self.patience is not None and self.stale >= self.patience:
                        self.early_stopped = True
                        self._save()  # records early_stopped, so a rerun does not train on
                        if self.env.is_main:
                            info(
                                f"stopped early after {self.step} steps: {self.stale} validations without a lower "
                                f"validation loss than {self.best_val:.6g} (--patience {self.patience})"
                            )
                        break
            self.elapsed = time.monotonic() - started
            if stopped:
                self._check_finite()
                self._save()
                if self.env.is_main:
                    info(f"stopped after {self.step} steps (--max-steps); continue with --resume")
        finally:
            if progress is not None:
                progress.close()
        return self._result()

    def _check_finite(self) -> None:
        """Stop with one line when a loss was NaN/Inf since the last check (collective under DDP).

        Checked before anything is saved, so last.pt keeps the last weights that trained on finite losses.
        """
        bad = distributed.all_reduce_sum((self.first_bad >= 0).float(), self.env)
        if bad.item() > 0:
            first = int(self.first_bad.item())
            if first >= 0:
                where = f"at step {first} (epoch {(first - 1) // self.steps_per_epoch + 1})"
            else:
                where = f"on another rank before step {self.step}"
            raise MriadError(
                f"{self.t.run_folder.root}: training loss became NaN/Inf {where}; "
                f"stopped, {self.t.run_folder.last} keeps the last finite weights; lower --lr or check the "
                "inputs, then start over with --force"
            )

    def _end_of_period(self) -> None:
        """Validate, log a metrics row, checkpoint (collectives: every rank takes part)."""
        self._check_finite()
        count = torch.tensor(float(self.loss_count), device=self.device)
        count = distributed.all_reduce_sum(count, self.env)
        summed = distributed.all_reduce_sum(self.loss_sum, self.env)
        train_loss = float((summed / count).item()) if count.item() > 0 else None
        val_loss = self._validate()
        # NaN only: +inf is a model's "not yet comparable" (f-AnoGAN before its encoder phase), and a
        # diverging model is caught by the training-loss and weight checks above.
        if val_loss is not None and math.isnan(val_loss):
            raise MriadError(
                f"{self.t.run_folder.root}: validation loss is {val_loss} at epoch {self.epoch}, step {self.step}; "
                f"stopped, {self.t.run_folder.last} keeps the last finite weights; lower --lr or check the inputs"
            )
        improved = val_loss is not None and (self.best_val is None or val_loss < self.best_val)
        if improved:
            self.best_val = val_loss
            self.stale = 0
        elif val_loss is not None:
            self.stale += 1
        self.rows.append(
            {
                "epoch": self.epoch,
                "step": self.step,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": round(self.elapsed, 3),
                "loss_normalisation": self.model.loss_normalisation(),
            }
        )
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        if self.env.is_main:
            write_metrics(self.t.run_folder, self.rows)
        self._save(best=improved)

    @torch.no_grad()
    def _validate(self) -> float | None:
        if self.val_data is None:
            return None
        self.model.eval()
        if self.volumes or self.val_index is None:
            items = torch.arange(self.val_data.volumes, device=self.device)
        else:
            items = self.val_index
        generator = torch.Generator(device=self.device)
        total = torch.zeros((), device=self.device)
        seen = torch.zeros((), device=self.device)
        for i, start in enumerate(range(0, items.numel(), self.batch_size)):
            if i % self.env.world_size != self.env.rank:
                continue  # ranks share the validation batches
            index = items[start : start + self.batch_size]
            batch = self.val_data.stacks()[index] if self.volumes else self.val_data.slices[index]
            generator.manual_seed(VAL_SEED + i)  # per batch: independent of world size and history
            if self.autocast is not None:
                with self.autocast():
                    loss = self.model.validation_loss(batch, generator)
            else:
                loss = self.model.validation_loss(batch, generator)
            total += torch.as_tensor(loss, device=self.device).float() * index.numel()
            seen += index.numel()
        total = distributed.all_reduce_sum(total, self.env)
        seen = distributed.all_reduce_sum(seen, self.env)
        self.model.train()
        return float((total / seen.clamp_min(1)).item())

    def _status(self, rate: float | None) -> str:
        parts = [f"epoch {min(self.epoch + 1, self.epochs)}/{self.epochs}"]
        if self.loss_count:
            parts.append(f"loss {(self.loss_sum / self.loss_count).item():.4f}")
        if self.best_val is not None:
            parts.append(f"best val {self.best_val:.4f}")
        if rate is not None:
            parts.append(f"{rate:.0f} slices/s")
        return "  ".join(parts)

    def _announce(self) -> None:
        if not self.env.is_main:
            return
        params = sum(p.numel() for p in self.model.parameters())
        val = f"{self.val_data.volumes} validation volumes" if self.val_data is not None else "no validation split"
        ranks = f" x {self.env.world_size} ranks" if self.env.active else ""
        precision = "bf16 autocast" if self.autocast is not None else "fp32"
        where = f"resuming at epoch {self.epoch}, step {self.step}" if self.step else "starting"
        info(
            f"{self.t.name}: {params / 1e6:.2f} M parameters on {self.device} ({precision}); "
            f"{self.train_data.volumes} training volumes ({self.train_data.n_brain_slices} brain slices) of "
            f"{self.t.dataset}-train fold {self.t.fold}, {val}; {self.steps_per_epoch} steps/epoch x "
            f"{self.epochs} epochs, batch {self.batch_size}{ranks}; {where}"
        )
        left = self.epochs * self.steps_per_epoch - self.step
        announce_cpu_cost(self.model, self.batch_size, tuple(self.train_data.slices.shape), left,
                          self.model.batch_kind, self.autocast, depth=self.train_data.depth)  # fmt: skip

    def _result(self) -> FitResult:
        return FitResult(
            self.t.run_folder.root,
            self.model,
            self.step,
            self.epoch,
            self.best_val,
            self.epoch >= self.epochs or self.early_stopped,
        )
