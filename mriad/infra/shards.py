"""``--shard i/n``: which part of a stage's work one process (one Slurm array task) does.

Every sharded stage parses the option here, so ``preprocess``, ``reconstruct`` and the Slurm examples
agree on its meaning: shard ``i`` of ``n`` takes the items ``i, i + n, i + 2n, ...`` of the stage's
ordered list (subjects, or groups of subjects), so the shards are disjoint and together cover the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from mriad.infra.errors import MriadError

T = TypeVar("T")


def parse_shard(text: str, option: str = "--shard") -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``; anything else is a one-line error naming ``option``."""
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise MriadError(f"{option} {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise MriadError(f"{option} {text!r}: i must be in 0..n-1")
    return index, count


def shard_items(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items shard ``(i, n)`` owns (all of them when ``shard`` is None)."""
    if shard is None:
        return list(items)
    index, count = shard
    return list(items[index::count])


def shard_label(shard: tuple[int, int]) -> str:
    """``(1, 4)`` -> ``"1-of-4"``: the name of a shard's files and lock."""
    return f"{shard[0]}-of-{shard[1]}"
