"""Models registered by name; see :mod:`mriad.models.registry`."""

from mriad.models.base import AnomalyModel
from mriad.models.registry import available_models, build_model, get_model_class, load_checkpoint_model

__all__ = ["AnomalyModel", "available_models", "build_model", "get_model_class", "load_checkpoint_model"]
