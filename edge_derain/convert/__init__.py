"""Converters from other checkpoint formats into ours (safetensors + JSON sidecar)."""
from .official import convert_official, import_official, load_official_checkpoint

__all__ = ["convert_official", "import_official", "load_official_checkpoint"]
