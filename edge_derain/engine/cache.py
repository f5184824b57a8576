"""Engine cache: one engine per (device fingerprint, precision, typing, shape profile, ONNX, plugin) key.

The plugin part of the key is the implementation the build really loads: none for a graph without
custom nodes, the C++ library (``$EDGE_DERAIN_PLUGIN_LIB`` or the checkout's CMake build, hashed by its
bytes) when one is found, else the Python plugin and its CUDA kernel sources. The build is handed that
same choice, and its report of the plugin layers is checked against it.

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
from .builder import build_engine, resolve_build_target
from .errors import EngineBuildError
from .layers import EngineLayer, summarize_layers
from .onnx_info import OnnxSummary, input_multiple_of, inspect_onnx, onnx_sha256, resolve_shapes
from .plugin_library import find_plugin_library
from .policy import check_typing, needs_fp16_conversion, plan_precision
from .profile import ShapeProfile
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
    plugin_hash: str | None  # of the plugin implementation below; None when the graph has no plugin nodes
    # What the build does to the graph itself: the FP16 pass's code when it converts the ONNX first.
    conversion_hash: str | None = None
    plugin_implementation: str = "python"  # "none" | "python" | "library" (see PluginUse)
    typing: str | None = None  # "strong" | "weak" as built; None: unknown (an adopted engine)

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint.to_dict(), "precision": self.precision,
                "shapes": self.shapes.to_dict(), "onnx_sha256": self.onnx_sha256, "plugin_hash": self.plugin_hash,
                "conversion_hash": self.conversion_hash, "plugin_implementation": self.plugin_implementation,
                "typing": self.typing}

    @classmethod
    def from_dict(cls, d: dict) -> "EngineKey":
        return cls(DeviceFingerprint.from_dict(d["fingerprint"]), d["precision"], ShapeProfile.from_dict(d["shapes"]),
                   d["onnx_sha256"], d["plugin_hash"], d.get("conversion_hash"),
                   d.get("plugin_implementation", "python"), d.get("typing"))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PluginUse:
    """The plugin implementation that building (or loading) one graph uses, and its hash."""

    implementation: str  # "none" (no custom nodes) | "python" | "library"
    sha256: str | None = None  # Python plugin + kernel sources, or the library's bytes
    library: Path | None = None

    @classmethod
    def for_graph(cls, summary: OnnxSummary, library: str | os.PathLike | None = None) -> "PluginUse":
        """``library`` if given, else :func:`find_plugin_library`'s, else the Python plugin; none without
        custom nodes."""
        if not summary.custom_ops:
            return cls("none")
        library = Path(library) if library is not None else find_plugin_library()
        if library is None:
            return cls("python", plugin_hash())
        if not library.is_file():
            raise FileNotFoundError(f"plugin library {library} does not exist; build it with "
                                    "cmake -S plugins -B build/plugins && cmake --build build/plugins")
        return cls("library", hashlib.sha256(library.read_bytes()).hexdigest(), library.resolve())

    def check_built(self, plugins: list[dict]) -> None:
        """EngineBuildError unless the build's plugin layers all came from this implementation."""
        used = sorted({p["implementation"] for p in plugins}) or ["none"]
        if used != [self.implementation]:
            raise EngineBuildError(f"the build used the {' + '.join(used)} plugin implementation but was asked for "
                                   f"{self.implementation}; another plugin library registered the same creators")


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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"sidecar {path} is not valid JSON ({exc}); delete it and rebuild the engine") from None
    schema = sidecar.get("schema") if isinstance(sidecar, dict) else type(sidecar).__name__
    if schema != SIDECAR_SCHEMA or "key" not in sidecar:
        raise ValueError(f"sidecar {path} has schema {schema!r}, expected {SIDECAR_SCHEMA}; rebuild the engine")
    try:
        key = EngineKey.from_dict(sidecar["key"])
        texts = (key.fingerprint.flavour, key.fingerprint.version, key.precision, *key.fingerprint.targets)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("flavour, version, precision and targets must be text")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"sidecar {path} holds a damaged engine key ({type(exc).__name__}: {exc}); delete it and "
                         "rebuild the engine") from None
    return sidecar


def engine_sidecar(key: EngineKey, onnx_path: str | os.PathLike, engine_path: Path, plugin_use: PluginUse,
                   plugins: list[dict], layers: list[EngineLayer], layer_source: str, onnx_metadata: dict,
                   **build) -> dict:
    """The sidecar of ``engine_path``: its key, file hash, plugin layers and layers, plus ``build`` facts."""
    data = engine_path.read_bytes()
    return {
        "schema": SIDECAR_SCHEMA,
        "key": key.to_dict(),
        "key_digest": key.digest,
        "onnx_path": str(Path(onnx_path).resolve()),
        "engine_file": engine_path.name,
        "engine_bytes": len(data),
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edge_derain_version": __version__,
        **build,
        "plugins": plugins,
        "plugin_library": str(plugin_use.library) if plugin_use.library else None,
        # what a runtime needs from the export: the padding multiple (None if the ONNX lacks it)
        "input_multiple": input_multiple_of(onnx_metadata),
        "layer_summary": summarize_layers(layers, layer_source),
        "layers": [layer.to_dict() for layer in layers],
    }


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
            f"--onnx {sidecar.get('onnx_path', '<model.onnx>')} --precision {key.precision} --target {device_target}")
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
                target: str | Iterable[str] = "auto", flavour: TensorRTFlavour | None = None,
                typing: str = "auto") -> EngineKey:
        return self._plan(onnx_path, precision, shapes, target, flavour or detect_tensorrt(), typing)[0]

    def _plan(self, onnx_path, precision, shapes, target, flavour, typing) -> tuple[EngineKey, PluginUse]:
        check_typing(flavour, typing)
        summary = inspect_onnx(onnx_path)
        shapes = resolve_shapes(summary, shapes)
        build_target = resolve_build_target(flavour, target)
        fingerprint = DeviceFingerprint(flavour.name, flavour.version, build_target.targets, build_target.gpu_name)
        convert = needs_fp16_conversion(flavour, precision, summary, typing)
        # a converted graph carries FP16 casts and is built strongly typed
        built_typing = "strong" if convert else plan_precision(flavour, precision, summary, typing).typing
        plugins = PluginUse.for_graph(summary)
        key = EngineKey(fingerprint, precision, shapes, onnx_sha256(onnx_path), plugins.sha256,
                        _fp16_pass_hash() if convert else None, plugins.implementation, built_typing)
        return key, plugins

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
                     rebuild: bool = False, flavour: TensorRTFlavour | None = None,
                     typing: str = "auto") -> CachedEngine:
        """The cached engine for these settings, building it (in a subprocess) when missing or stale."""
        flavour = flavour or detect_tensorrt()
        key, plugins = self._plan(onnx_path, precision, shapes, target, flavour, typing)
        if not rebuild:
            hit = self.lookup(onnx_path, key)
            if hit is not None:
                return hit
        path = self.engine_path(onnx_path, key)
        # Full TensorRT builds for the local GPU only, which "auto" already resolved to.
        targets = list(key.fingerprint.targets) if flavour.supports_targets else "auto"
        result = build_engine(onnx_path, path, precision=precision, shapes=key.shapes, target=targets,
                              workspace=workspace, verbose_log_path=verbose_log_path, flavour=flavour,
                              plugin_library=plugins.library, typing=typing)
        try:
            plugins.check_built(result.plugins)
        except EngineBuildError:
            path.unlink(missing_ok=True)
            raise
        sidecar = engine_sidecar(key, onnx_path, path, plugins, result.plugins, result.layers, result.layer_source,
                                 result.onnx_metadata, build_seconds=round(result.build_seconds, 3),
                                 strongly_typed=result.strongly_typed, builder_flags=list(result.builder_flags),
                                 fp32_nodes=result.fp32_nodes)
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
