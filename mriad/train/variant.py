"""A run that shares another run's trained network but scores with other test-time settings.

MHD's Mahalanobis scoring, the pDDPM ensemble and AnoDDPM's iterative sampling change only how a
trained diffusion network is used at test time. Training the network again for each of them costs
the whole budget again and, with the same seed, gives the same weights; comparing them on one
network is also the fairer comparison. :func:`make_variant` therefore writes a new run folder whose
checkpoints are the source's (hard links, or copies across file systems: the digests in every map
record and summary show that the network is the same) and whose ``config.json`` differs only in the
options the model lists as ``test_time_options``. Everything downstream (reconstruct, evaluate,
compare, detect, bundle) reads that config as for any run: the network comes from the checkpoint,
how it scores from the config (:func:`mriad.models.registry.test_time_config`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mriad.contracts.run_folder import CHECKPOINT_NAMES, RunFolder
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import atomic_write_json, link_or_copy


def make_variant(source: str | Path, out: str | Path, changes: dict[str, Any]) -> RunFolder:
    """Write run folder ``out``: ``source``'s best.pt, last.pt and metrics, its options with ``changes``.

    ``changes`` may only hold the model's test-time options (values as for ``mriad train --set``);
    a training option, an unknown key or a value the model refuses is one line, before anything is
    written. ``out`` must not exist yet (or be an empty folder); ``source`` is only read.

        >>> make_variant("runs/pddpm", "runs/pddpm-mhd", {"scoring": "mahalanobis"})  # doctest: +SKIP
    """
    from mriad.models.registry import get_model_class

    src, dst = RunFolder(source), RunFolder(out)
    config = src.read_config()
    name = str(config["model"])
    cls = get_model_class(name)
    if not cls.test_time_options:
        raise MriadError(f"{src.root}: model {name} has no test-time options; a variant needs a diffusion model")
    if not changes:
        raise MriadError(f"give the test-time options to change with --set, e.g. --set {cls.test_time_options[0]}=...")
    training = sorted(key for key in changes if key not in cls.test_time_options)
    if training:
        known = set(cls.common_defaults) | set(cls.defaults)
        kind = "training options (they change the network: train a new run)" if set(training) <= known else "unknown"
        raise MriadError(
            f"--set {', '.join(training)}: {kind}; a variant changes only {', '.join(cls.test_time_options)}"
        )
    checkpoints = [src.checkpoint(which) for which in CHECKPOINT_NAMES if src.checkpoint(which).is_file()]
    if not checkpoints:
        raise InputError(src.root, "no checkpoint (best.pt or last.pt): train the run first")
    if dst.root.resolve() == src.root.resolve():
        raise MriadError(f"--out {dst.root}: is the source run; a variant is a new folder")
    if dst.root.exists() and (not dst.root.is_dir() or any(dst.root.iterdir())):
        raise MriadError(f"--out {dst.root}: exists and is not an empty folder; choose a new one")

    options = cls.resolve_config({**config.get("options", {}), **changes})
    cls(**options)  # refuses a value the model cannot use (an unknown scoring, t_test out of range) now
    variant = {
        **config,
        "options": options,
        "variant_of": {"run": str(src.root.resolve()), "changed": {k: options[k] for k in sorted(changes)}},
    }
    dst.checkpoints.mkdir(parents=True, exist_ok=True)
    for path in checkpoints:
        link_or_copy(path, dst.checkpoints / path.name)
    if src.metrics.is_file():  # the training's log: the variant's budget is the source's
        shutil.copyfile(src.metrics, dst.metrics)
    atomic_write_json(dst.config, variant)  # last: only now is the folder a run
    return dst
