"""What to train: one typed record instead of a keyword list copied into every layer.

The CLI (`mriad train`), :func:`mriad.train.train` / :func:`mriad.train.fit` and the trainer all
speak :class:`TrainSpec`; Python users may pass one, or the same fields as keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mriad.infra.errors import MriadError


@dataclass(frozen=True)
class TrainSpec:
    """Everything that decides a training run except the device (resolved per process).

    ``options`` override the model's defaults (None values are ignored). ``max_steps`` stops after
    that many optimisation steps in total (a resumable interruption); ``force`` starts an existing run
    over; ``resume`` continues it from its ``last.pt`` checkpoint. ``checkpoint_every`` keeps a
    ``step-K.pt`` checkpoint every that many steps (learning curves); ``patience`` stops once that
    many validations in a row did not lower the best validation loss (early stopping).
    ``healthy_slices`` trains (and validates) on the lesion-free slices of ``<dataset>-train``
    (``-val``) only: slices at least ``slice_margin`` slices away from any lesion voxel whose brain
    covers at least ``min_brain_fraction`` of the slice's largest brain area in that volume.
    """

    model: str
    data: Path
    out: Path
    fold: int = 0
    dataset: str = "ixi"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resume: bool = False
    force: bool = False
    compile: bool = False
    max_steps: int | None = None
    deterministic: bool = False
    checkpoint_every: int | None = None
    patience: int | None = None
    healthy_slices: bool = False
    slice_margin: int = 2
    min_brain_fraction: float = 0.3

    def __post_init__(self) -> None:
        # Normalised once here, so every reader sees plain types.
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "fold", int(self.fold))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "options", {k: v for k, v in (self.options or {}).items() if v is not None})
        for name in ("checkpoint_every", "patience"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise MriadError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if int(self.slice_margin) < 0:
            raise MriadError(f"--slice-margin {self.slice_margin}: must be 0 or more")
        if not 0.0 <= float(self.min_brain_fraction) <= 1.0:
            raise MriadError(f"--min-brain-fraction {self.min_brain_fraction}: must be in [0, 1]")

    def training_record(self) -> dict[str, Any]:
        """The training-protocol settings that were set, for the run's config (empty: nothing recorded)."""
        record: dict[str, Any] = {}
        if self.checkpoint_every is not None:
            record["checkpoint_every"] = int(self.checkpoint_every)
        if self.patience is not None:
            record["patience"] = int(self.patience)
        if self.max_steps is not None:
            record["max_steps"] = int(self.max_steps)
        if self.healthy_slices:
            record["healthy_slices"] = {
                "slice_margin": int(self.slice_margin),
                "min_brain_fraction": float(self.min_brain_fraction),
            }
        return record

    @classmethod
    def of(cls, spec: TrainSpec | str, **changes: Any) -> TrainSpec:
        """A spec from a spec (fields in ``changes`` replaced) or from a model name and keywords."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise MriadError(f"train: unknown setting(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        if isinstance(spec, TrainSpec):
            return replace(spec, **changes)
        missing = [name for name in ("data", "out") if name not in changes]
        if missing:
            raise MriadError(f"train {spec}: {' and '.join(missing)} must be given")
        return cls(model=spec, **changes)
