"""Engine cache: one engine per (device fingerprint, precision, shape profile, ONNX, plugin) key.

Each engine ``<name>.engine`` has a sidecar ``<name>.engine.json`` holding every key field, the build
time and a summary of the engine's layers. Both are written atomically, engine first, so an engine
without a sidecar (a build interrupted between the two writes) is simply rebuilt.

Loading an engine needs a GPU, but whether it can load on this device is decided from the sidecar
alone (:func:`check_engine_compatible`), before any deserialisation.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..utils import atomic_write_json
from .builder import (ShapeProfile, build_engine, find_plugin_library, inspect_onnx, needs_fp16_conversion,
                      onnx_sha256, resolve_build_target, resolve_shapes)
from .flavour import NoCudaDevice, TensorRTFlavour, detect_tensorrt, list_devices
from .python_plugins import plugin_hash

log = logging.getLogger(__name__)

SIDECAR_SCHEMA = 1


class EngineMismatchError(RuntimeError):
    """An engine was built for another GPU architecture or TensorRT version than this device has."""


@dataclass(frozen=True)
class DeviceFingerprint:
    """What an engine is bound to: TensorRT flavour + version and the compute capabilities it runs on.

    ``gpu_name`` is the GPU the engine was tuned on (None for ahead-of-time TensorRT-RTX builds).
    """

    flavour: str
    version: str
    targets: tuple[str, ...]
    gpu_name: str | None = None

    @property
    def target_label(self) -> str:
        return "+".join(self.targets)

    @classmethod
    def current(cls, flavour: TensorRTFlavour | None = None, device_index: int = 0) -> "DeviceFingerprint":
        """The fingerprint of this machine's GPU ``device_index`` and installed TensorRT."""
        flavour = flavour or detect_tensorrt()
        devices = list_devices()
        if device_index >= len(devices):
            raise NoCudaDevice(f"no CUDA device {device_index} on this machine ({len(devices)} found); "
                               "engines can only be loaded on an NVIDIA GPU")
        device = devices[device_index]
        return cls(flavour.name, flavour.version, (device.target,), device.name)

    def to_dict(self) -> dict:
        return {"flavour": self.flavour, "version": self.version, "targets": list(self.targets),
                "gpu_name": self.gpu_name}

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceFingerprint":
        return cls(d["flavour"], d["version"], tuple(d["targets"]), d.get("gpu_name"))


@dataclass(frozen=True)
class EngineKey:
    fingerprint: DeviceFingerprint
    precision: str
    shapes: ShapeProfile
    onnx_sha256: str
    plugin_hash: str
    # What the build does to the graph itself: the FP16 pass's code when it converts the ONNX first.
    conversion_hash: str | None = None

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint.to_dict(), "precision": self.precision,
                "shapes": self.shapes.to_dict(), "onnx_sha256": self.onnx_sha256, "plugin_hash": self.plugin_hash,
                "conversion_hash": self.conversion_hash}

    @classmethod
    def from_dict(cls, d: dict) -> "EngineKey":
        return cls(DeviceFingerprint.from_dict(d["fingerprint"]), d["precision"], ShapeProfile.from_dict(d["shapes"]),
                   d["onnx_sha256"], d["plugin_hash"], d.get("conversion_hash"))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _plugins_hash() -> str:
    """The Python plugin and kernels, plus the C++ plugin library when the build loads one instead."""
    library = find_plugin_library()
    if library is None:
        return plugin_hash()
    return hashlib.sha256((plugin_hash() + hashlib.sha256(library.read_bytes()).hexdigest()).encode()).hexdigest()


def _fp16_pass_hash() -> str:
    from ..export import fp16, graph

    sources = b"".join(Path(module.__file__).read_bytes() for module in (fp16, graph))
    return hashlib.sha256(sources).hexdigest()


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    return Path(f"{engine_path}.json")


def read_sidecar(engine_path: str | os.PathLike) -> dict:
    path = sidecar_path(engine_path)
    try:
        sidecar = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"engine {engine_path} has no sidecar {path.name}; rebuild it with "
                                "edge-derain build so its device and precision are recorded") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"sidecar {path} is not valid JSON ({exc}); delete it and rebuild the engine") from None
    if sidecar.get("schema") != SIDECAR_SCHEMA or "key" not in sidecar:
        raise ValueError(f"sidecar {path} has schema {sidecar.get('schema')!r}, expected {SIDECAR_SCHEMA}; "
                         "rebuild the engine")
    return sidecar


def input_multiple_of(onnx_metadata: dict) -> int | None:
    """The exporter's ``input_multiple`` metadata prop as an int, None when absent or malformed."""
    try:
        value = int(onnx_metadata["input_multiple"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def check_engine_compatible(sidecar: dict | str | os.PathLike, current: DeviceFingerprint) -> None:
    """Raise EngineMismatchError (one line, with the rebuild command) unless the engine runs on ``current``.

    ``sidecar`` is a sidecar dict or the engine's path. TensorRT engines need the exact TensorRT
    flavour and version they were built with and one of the compute capabilities they were built for.
    A different GPU model of the same compute capability loads, but may run slower: that is logged.
    """
    if not isinstance(sidecar, dict):
        sidecar = read_sidecar(sidecar)
    key = EngineKey.from_dict(sidecar["key"])
    built = key.fingerprint
    device_target = current.targets[0]
    if built.flavour != current.flavour or built.version != current.version or device_target not in built.targets:
        raise EngineMismatchError(
            f"engine built for {built.target_label} / {built.flavour} {built.version} but this device is "
            f"{device_target} / {current.flavour} {current.version}; rebuild with: edge-derain build "
            f"--onnx {sidecar.get('onnx_path', '<model.onnx>')} --precision {key.precision} --device {device_target}")
    if built.gpu_name and current.gpu_name and built.gpu_name != current.gpu_name:
        log.warning("engine was tuned on %s, running on %s: it works but may be slower than a native build",
                    built.gpu_name, current.gpu_name)


@dataclass(frozen=True)
class CachedEngine:
    engine_path: Path
    sidecar: dict
    built: bool  # False: served from the cache

    @property
    def key(self) -> EngineKey:
        return EngineKey.from_dict(self.sidecar["key"])


@dataclass(frozen=True)
class CacheEntry:
    """One sidecar found in the cache directory; ``problem`` says why it is unusable, if it is."""

    engine_path: Path
    sidecar: dict | None
    problem: str | None = None


class EngineCache:
    """Engines under ``root``, named ``<onnx stem>-<precision>-<targets>-<key digest>.engine``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key_for(self, onnx_path: str | os.PathLike, precision: str = "fp32", shapes: ShapeProfile | None = None,
                target: str | Iterable[str] = "auto", flavour: TensorRTFlavour | None = None) -> EngineKey:
        flavour = flavour or detect_tensorrt()
        summary = inspect_onnx(onnx_path)
        shapes = resolve_shapes(summary, shapes)
        build_target = resolve_build_target(flavour, target)
        fingerprint = DeviceFingerprint(flavour.name, flavour.version, build_target.targets, build_target.gpu_name)
        conversion = _fp16_pass_hash() if needs_fp16_conversion(flavour, precision, summary) else None
        return EngineKey(fingerprint, precision, shapes, onnx_sha256(onnx_path), _plugins_hash(), conversion)

    def engine_path(self, onnx_path: str | os.PathLike, key: EngineKey) -> Path:
        name = f"{Path(onnx_path).stem}-{key.precision}-{key.fingerprint.target_label}-{key.digest}.engine"
        return self.root / name

    def lookup(self, onnx_path: str | os.PathLike, key: EngineKey) -> CachedEngine | None:
        path = self.engine_path(onnx_path, key)
        try:
            sidecar = read_sidecar(path)
        except (FileNotFoundError, ValueError):
            return None
        if sidecar["key"] != key.to_dict() or not path.is_file() or path.stat().st_size != sidecar["engine_bytes"]:
            return None
        return CachedEngine(path, sidecar, built=False)

    def get_or_build(self, onnx_path: str | os.PathLike, precision: str = "fp32",
                     shapes: ShapeProfile | None = None, target: str | Iterable[str] = "auto",
                     workspace: int | None = None, verbose_log_path: str | os.PathLike | None = None,
                     rebuild: bool = False, flavour: TensorRTFlavour | None = None) -> CachedEngine:
        """The cached engine for these settings, building it (in a subprocess) when missing or stale."""
        flavour = flavour or detect_tensorrt()
        key = self.key_for(onnx_path, precision, shapes, target, flavour)
        if not rebuild:
            hit = self.lookup(onnx_path, key)
            if hit is not None:
                return hit
        path = self.engine_path(onnx_path, key)
        # Full TensorRT builds for the local GPU only, which "auto" already resolved to.
        targets = list(key.fingerprint.targets) if flavour.supports_targets else "auto"
        result = build_engine(onnx_path, path, precision=precision, shapes=key.shapes, target=targets,
                              workspace=workspace, verbose_log_path=verbose_log_path, flavour=flavour)
        sidecar = {
            "schema": SIDECAR_SCHEMA,
            "key": key.to_dict(),
            "key_digest": key.digest,
            "onnx_path": str(Path(onnx_path).resolve()),
            "engine_file": path.name,
            "engine_bytes": result.engine_bytes,
            "engine_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(result.build_seconds, 3),
            "strongly_typed": result.strongly_typed,
            "builder_flags": list(result.builder_flags),
            "edge_derain_version": __version__,
            "plugins": result.plugins,
            # what a runtime needs from the export: the padding multiple (None if the ONNX lacks it)
            "input_multiple": input_multiple_of(result.onnx_metadata),
            "fp32_nodes": result.fp32_nodes,
            "layer_summary": result.layer_summary(),
            "layers": [layer.to_dict() for layer in result.layers],
        }
        atomic_write_json(sidecar_path(path), sidecar)
        return CachedEngine(path, sidecar, built=True)

    def entries(self) -> list[CacheEntry]:
        """Every engine sidecar under the root, oldest build first (for ``edge-derain info``)."""
        entries = []
        for path in sorted(self.root.glob("*.engine.json")):
            engine = path.with_suffix("")
            try:
                sidecar = read_sidecar(engine)
            except ValueError as exc:
                entries.append(CacheEntry(engine, None, str(exc)))
                continue
            problem = None if engine.is_file() else f"engine file {engine.name} is missing"
            entries.append(CacheEntry(engine, sidecar, problem))
        return sorted(entries, key=lambda e: (e.sidecar or {}).get("built_at", ""))
