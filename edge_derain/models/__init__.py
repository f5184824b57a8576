"""Deraining architectures, one file each, all reachable through ``create_model(name, **config)``."""
from . import efderain  # noqa: F401  (registers the architecture)
from .base import DerainNet, pad_to_multiple
from .registry import ModelEntry, create_model, get_entry, list_models, register_model

__all__ = ["DerainNet", "ModelEntry", "create_model", "get_entry", "list_models", "pad_to_multiple",
           "register_model"]
