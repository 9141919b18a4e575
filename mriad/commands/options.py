"""One check for every command-line option's value, before a command runs (issue 14, defect 7).

Typer only checks that a number is a number: ``--volumes-per-batch -3``, ``--threshold nan`` or
``--max-steps -1`` reached the stages, which then did nothing, overwrote a summary or wrote untrained
checkpoints, all with exit 0. Here every option of every command is checked by its type and name:

- a float must be finite; an int must be at least 0, or at least :data:`MINIMUM` for counts;
- options with a known set of values (:data:`CHOICES`) must take one of them;
- names that become parts of paths (``--dataset``) must be identifiers; split names must parse.

A refusal is a click ``BadParameter``, which the CLI prints as one ``error:`` line naming the option
(see :class:`mriad.commands.common.OneLineErrors`). Checks that need data (a fold the manifest lacks,
``--val-split`` equal to ``--split``) belong to the stages; these only need the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

# Counts that must be at least this (ints not listed must be at least 0).
MINIMUM: dict[str, int] = {
    "--epochs": 1,
    "--batch-size": 1,
    "--val-every": 1,
    "--patch-size": 1,
    "--channels": 1,
    "--t-test": 1,
    "--max-steps": 1,
    "--volumes-per-batch": 1,
    "--max-chunk": 1,
    "--jobs": 1,
    "--folds": 2,
    "--resamples": 1,
    "--checkpoint-every": 1,
    "--patience": 1,
}

# Floats with a range beyond finiteness: (low, high, low inclusive, high inclusive).
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "--lr": (0.0, math.inf, False, False),
    "--test-fraction": (0.0, 1.0, True, False),
    "--brats-val": (0.0, 1.0, True, True),
    "--mslub-val": (0.0, 1.0, True, True),
    "--brats-train": (0.0, 1.0, True, True),
    "--min-brain-fraction": (0.0, 1.0, True, True),
}


def _skull_strips() -> Iterable[str]:
    from mriad.preprocess.skullstrip import METHODS

    return METHODS


def _registrations() -> Iterable[str]:
    from mriad.preprocess.register import METHODS

    return METHODS


def _searches() -> Iterable[str]:
    from mriad.evaluate.threshold import SEARCHES

    return SEARCHES


def _adapters() -> Iterable[str]:
    from mriad.preprocess.datasets import ADAPTERS

    return ADAPTERS


def _inference() -> Any:
    from mriad.runtime import inference

    return inference


def _diffusion() -> Any:
    from mriad.models import diffusion

    return diffusion


def _models() -> Iterable[str]:
    from mriad.models.registry import available_models

    return available_models()


# Option (or "command option") -> its allowed values; a callable is asked only when the option is given.
CHOICES: dict[str, Iterable[str] | Callable[[], Iterable[str]]] = {
    "--checkpoint": ("best", "last"),
    "--precision": lambda: _inference().PRECISIONS,
    "--compile": lambda: _inference().COMPILE_MODES,
    "--patch-sampling": ("fixed", "random"),  # as mriad.models.pddpm checks them
    "--loss": ("patch", "full"),
    "--schedule": lambda: _diffusion().SCHEDULES,
    "--noise": lambda: _diffusion().NOISES,
    "--modality": ("t1", "t2", "flair", "pd"),
    "--skull-strip": _skull_strips,
    "--registration": _registrations,
    "--threshold-search": _searches,
    "--model": _models,
    "preprocess --dataset": _adapters,
}

# Options whose value becomes part of a path, or names a split.
IDENTIFIERS = ("--dataset",)
SPLITS = ("--split", "--val-split", "--healthy-split")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


class OptionError(ValueError):
    """A value an option cannot take; the message says why (the option is named by click)."""


def check_value(command: str, option: str, annotation: Any, value: Any) -> None:
    """Raise :class:`OptionError` when ``value`` is not acceptable for ``command``'s ``option``."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_value(command, option, annotation, item)
        return
    if isinstance(value, float):
        _check_float(option, value)
    elif isinstance(value, int):
        low = MINIMUM.get(option, 0)
        if value < low:
            raise OptionError(f"{value} is below the minimum {low}")
    elif isinstance(value, str):
        _check_text(command, option, value)


def _check_float(option: str, value: float) -> None:
    if not math.isfinite(value):
        raise OptionError(f"{value} is not a finite number")
    if option in RANGES:
        low, high, low_in, high_in = RANGES[option]
        inside = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
        if not inside:
            shown = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
            raise OptionError(f"{value:g} is outside {shown}")


def _check_text(command: str, option: str, value: str) -> None:
    if option == "--device":
        if not _DEVICE.fullmatch(value):
            raise OptionError(f"{value!r}: expected auto, cpu, cuda or cuda:N")
        return
    if option == "--metric":  # a comma-separated list of metric names
        from mriad.compare.tables import METRICS

        unknown = [name for name in value.split(",") if name.strip() not in METRICS]
        if unknown:
            raise OptionError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
        return
    if command == "evaluate" and option == "--checkpoint":  # best, or a kept step-K (issue 21.3)
        from mriad.contracts.run_folder import step_of

        if value != "best" and step_of(value) is None:
            raise OptionError(f"{value!r}: expected best or step-K (a train --checkpoint-every checkpoint)")
        return
    if option == "--shard":  # i/n, for every sharded stage (evaluate, reconstruct, preprocess): a usage error
        from mriad.infra.errors import MriadError
        from mriad.infra.shards import parse_shard

        try:
            parse_shard(value)
        except MriadError as exc:
            raise OptionError(str(exc).removeprefix(f"--shard {value!r}: ")) from None
        return
    if option == "--modality" and command in ("synth", "preprocess") and "," in value:  # multi-channel: a list
        for item in value.split(","):
            _check_text(command, option, item.strip())
        return
    allowed = CHOICES.get(f"{command} {option}", CHOICES.get(option))
    if allowed is not None:
        values = list(allowed() if callable(allowed) else allowed)
        if value.lower() not in {v.lower() for v in values}:
            raise OptionError(f"{value!r} is not one of {', '.join(values)}")
        return
    if option in IDENTIFIERS:
        from mriad.infra.paths import is_identifier

        if not is_identifier(value):
            raise OptionError(f"{value!r} cannot be used in a file name (letters, digits, '.', '_', '-', '+')")
    elif option in SPLITS:
        from mriad.contracts.manifest import parse_split_name
        from mriad.infra.errors import MriadError

        try:
            dataset, _ = parse_split_name(value)
        except MriadError as exc:
            raise OptionError(str(exc)) from None
        from mriad.infra.paths import is_identifier

        if not is_identifier(value):
            raise OptionError(f"{value!r} cannot be used in a file name (letters, digits, '.', '_', '-', '+')")


def check_model_settings(model: str | None, pairs: Iterable[str]) -> None:
    """``--set key=value``: a known key of ``model`` and a value of its default's type.

    ``--model`` is eager, so its value is known here. An unknown model is left to its own check.
    """
    from mriad.infra.errors import MriadError

    try:
        from mriad.models.registry import get_model_class

        cls: Any = get_model_class(str(model))
    except MriadError:
        return
    defaults = {**cls.common_defaults, **cls.defaults}
    for pair in pairs:
        if "=" not in pair:
            raise OptionError(f"{pair!r}: expected key=value, e.g. --set octaves=4")
        key, text = (part.strip() for part in pair.split("=", 1))
        key = key.replace("-", "_")
        if key not in defaults:
            raise OptionError(f"{pair!r}: {model} has no option {key!r}; known: {', '.join(defaults)}")
        default = defaults[key]
        items = text.split(",") if isinstance(default, tuple | list) else [text]
        kind = type(default[0]) if isinstance(default, tuple | list) and default else type(default)
        for item in items:
            if not _parses_as(kind, item.strip()):
                raise OptionError(
                    f"{pair!r}: {key} takes {_KIND_NAMES.get(kind, kind.__name__)} values (default {default!r})"
                )


_KIND_NAMES = {bool: "true/false", int: "whole-number", float: "finite number"}


def _parses_as(kind: type, text: str) -> bool:
    if kind is bool:
        return text.lower() in ("1", "0", "true", "false", "yes", "no", "on", "off")
    if kind is int:
        try:
            int(text)
        except ValueError:
            return False
        return True
    if kind is float:
        try:
            return math.isfinite(float(text))
        except ValueError:
            return False
    return True


def guard(group: Any) -> None:
    """Attach :func:`check_value` to every option of every command under ``group`` (once)."""
    if getattr(group, "_mriad_guarded", False):
        return
    group._mriad_guarded = True
    for path, command in _walk(group, []):
        for param in command.params:
            _guard_param(" ".join(path), param)


def _walk(command: Any, path: list[str]) -> Iterable[tuple[list[str], Any]]:
    yield path, command  # groups too: `mriad --seed` is the top group's option
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _walk(sub, [*path, name])


def _guard_param(command: str, param: Any) -> None:
    from typer import _click

    names = [name for name in getattr(param, "opts", []) if name.startswith("--")]
    if not names or getattr(param, "is_eager", False) and names[0] in ("--help", "--version"):
        return
    option = names[0]
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    original = param.callback

    def checked(ctx: Any, this: Any, value: Any) -> Any:
        try:
            check_value(command, option, annotation, value)
            if option == "--set" and value:
                check_model_settings(ctx.params.get("model"), value)
        except OptionError as exc:
            raise _click.exceptions.BadParameter(str(exc), ctx=ctx, param=this) from None
        return original(ctx, this, value) if original is not None else value

    param.callback = checked
