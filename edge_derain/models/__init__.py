"""Deraining architectures, one file each, all reachable through ``create_model(name, **config)``."""
# Importing an architecture file registers it.
from . import danet, ddsa, efderain, elf, recanet  # noqa: F401
from .base import DerainNet, pad_to_multiple
from .complexity import conv_macs, parameter_count, thop_parameter_count
from .registry import ModelEntry, create_model, get_entry, list_models, register_model

__all__ = ["DerainNet", "ModelEntry", "conv_macs", "create_model", "get_entry", "list_models", "pad_to_multiple",
           "parameter_count", "register_model", "thop_parameter_count"]
