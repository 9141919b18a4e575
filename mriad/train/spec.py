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
    over; ``resume`` continues it from ``checkpoints/last.pt``.
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

    def __post_init__(self) -> None:
        # Normalised once here, so every reader sees plain types.
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "fold", int(self.fold))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "options", {k: v for k, v in (self.options or {}).items() if v is not None})

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
