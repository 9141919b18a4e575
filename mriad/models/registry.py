"""Models by name. Modules are imported only when a model is asked for, so the CLI stays fast."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mriad.infra.errors import InputError, MriadError

if TYPE_CHECKING:  # the model modules import torch: only when a model is asked for
    import torch

    from mriad.models.base import AnomalyModel

# name -> "module:Class"; the baselines live beside the diffusion models.
_MODELS: dict[str, str] = {
    "pddpm": "mriad.models.pddpm:PatchedDDPM",
    "ddpm": "mriad.models.ddpm:DDPM",
    "cddpm": "mriad.models.cddpm:ConditionalDDPM",
    "thresh": "mriad.models.thresh:Thresh",
    "ae": "mriad.models.ae:AutoEncoder",
    "vae": "mriad.models.vae:VAE",
    "svae": "mriad.models.svae:SequenceVAE",
    "dae": "mriad.models.dae:DenoisingAE",
    "fanogan": "mriad.models.fanogan:FAnoGAN",
}


def available_models() -> list[str]:
    return list(_MODELS)


def get_model_class(name: str) -> type[AnomalyModel]:
    if name not in _MODELS:
        raise MriadError(f"unknown model {name!r}; available: {', '.join(_MODELS)}")
    module_name, class_name = _MODELS[name].split(":")
    model_class: type[AnomalyModel] = getattr(importlib.import_module(module_name), class_name)
    return model_class


def build_model(name: str, **overrides: Any) -> AnomalyModel:
    return get_model_class(name)(**overrides)


def test_time_config(name: str, checkpoint_config: dict[str, Any], run_config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config with the test-time options (``AnomalyModel.test_time_options``) of the
    run's config.json laid over it: the network comes from the checkpoint, how it scores from the run
    (equal for a trained run; different for a ``mriad variant``)."""
    recorded = run_config.get("options")
    options: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    keys = get_model_class(name).test_time_options
    return {**checkpoint_config, **{key: options[key] for key in keys if key in options}}


def load_checkpoint_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    expect_model: str | None = None,
    run_config: dict[str, Any] | None = None,
) -> AnomalyModel:
    """Rebuild a model from a checkpoint (``weights_only`` loading: no code is ever unpickled).

    ``run_config``: the run's config.json, whose test-time options replace the checkpoint's (see
    :func:`test_time_config`)."""
    from mriad.infra.io import safe_torch_load

    checkpoint = safe_torch_load(path, map_location=device)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "state_dict" not in checkpoint:
        raise InputError(path, "not an mriad checkpoint (no model name / state_dict)")
    name = checkpoint["model"]
    if expect_model is not None and name != expect_model:
        raise InputError(path, f"checkpoint holds model {name!r}, expected {expect_model!r}")
    config = checkpoint.get("config", {})
    if not isinstance(config, dict):
        raise InputError(path, f"not an mriad checkpoint (its config is a {type(config).__name__}, not a dict)")
    if run_config:
        config = test_time_config(name, config, run_config)
    try:
        model = build_model(name, **config)
    except MriadError as exc:
        raise InputError(path, f"its stored config is refused: {exc}") from None
    except Exception as exc:  # a value of the wrong type or range deep inside a network constructor
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        reason = f"its stored config cannot build model {name!r} ({type(exc).__name__}: {first})"
        raise InputError(path, reason) from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit model {name!r}: {str(exc).splitlines()[0][:160]}") from None
    return model.to(device).eval()


def load_run_model(run: str | Path, which: str = "best", device: str | torch.device = "cpu") -> AnomalyModel:
    """The model of a run folder: its ``best`` checkpoint (else ``last``, see
    :meth:`~mriad.contracts.run_folder.RunFolder.model_checkpoint`); untrained models need none."""
    from mriad.contracts.run_folder import RunFolder

    folder = RunFolder(run)
    config = folder.read_config()
    cls = get_model_class(config["model"])
    if not cls.trainable:
        return cls(**config.get("options", {})).to(device).eval()
    path = folder.model_checkpoint(which) or folder.checkpoint(which)  # a missing file is refused by name
    return load_checkpoint_model(path, device=device, expect_model=config["model"], run_config=config)
