"""What to evaluate and how: one typed record shared by `mriad evaluate` and :func:`mriad.evaluate.evaluate`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mriad.contracts.manifest import parse_split_name
from mriad.evaluate.protocol import DEFAULT_PROTOCOL, Protocol, get_protocol
from mriad.evaluate.threshold import SEARCHES
from mriad.infra.errors import MriadError


@dataclass(frozen=True)
class EvalSpec:
    """The settings of one evaluation of a run on ``split``.

    ``data`` overrides the run's manifest and ``fold`` its fold. ``threshold`` fixes the binarisation
    threshold; otherwise it is searched (``threshold_search``: exact or the reference's bisection) on
    ``val_split`` (default: the same data set's val split). ``figures`` draws examples and the PR curve.

    ``protocol`` (:mod:`mriad.evaluate.protocol`): ``reference`` computes what the pDDPM reference
    code computes, ``brain`` restricts every number to the brain mask. ``clamp`` clips the
    reconstruction to [0, 1] before the residual (None: the protocol's choice, no for reference).
    ``healthy_split`` names the healthy split whose maps give the FPR thresholds and the healthy l1
    (None: ``<training dataset>-val`` when its maps exist; otherwise the summary says there was none).
    """

    split: str
    data: Path | None = None
    val_split: str | None = None
    fold: int | None = None
    threshold: float | None = None
    threshold_search: str = "exact"
    figures: bool = True
    protocol: str = DEFAULT_PROTOCOL
    clamp: bool | None = None
    healthy_split: str | None = None

    def __post_init__(self) -> None:
        get_protocol(self.protocol)
        if self.threshold_search not in SEARCHES:
            raise MriadError(f"--threshold-search {self.threshold_search!r}: expected one of {', '.join(SEARCHES)}")
        parse_split_name(self.split)
        for name in (self.val_split, self.healthy_split):
            if name is not None:
                parse_split_name(name)
        if self.val_split is not None and self.val_split == self.split:
            # The threshold would be tuned on the very volumes it is then scored on.
            raise MriadError(f"--val-split {self.val_split}: the threshold must come from another split than --split")
        if self.threshold is not None and not math.isfinite(float(self.threshold)):
            raise MriadError(f"--threshold {self.threshold}: must be a finite number")
        if self.data is not None:
            object.__setattr__(self, "data", Path(self.data))

    @property
    def rules(self) -> Protocol:
        """The protocol, with ``clamp`` applied."""
        protocol = get_protocol(self.protocol)
        return protocol if self.clamp is None else replace(protocol, clamp=bool(self.clamp))

    @classmethod
    def of(cls, spec: EvalSpec | str, **changes: Any) -> EvalSpec:
        """A spec from a spec (fields in ``changes`` replaced) or from a split name and keywords."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise MriadError(f"evaluate: unknown setting(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        if isinstance(spec, EvalSpec):
            return replace(spec, **changes)
        return cls(split=spec, **changes)
