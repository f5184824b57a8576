"""Engine stage: TensorRT flavour detection, the Python DilationFilter plugin, the engine builder
(run in a subprocess) and the engine cache with device fingerprints and JSON sidecars.

Nothing here imports TensorRT at import time; ``detect_tensorrt()`` does so on first use.
"""
from .builder import BuildResult, build_engine, resolve_build_target
from .cache import (CachedEngine, CacheEntry, DeviceFingerprint, EngineCache, EngineKey, EngineMismatchError,
                    check_engine_compatible, read_sidecar, sidecar_path)
from .errors import EngineBuildError, OnnxParseError
from .flavour import (CudaDevice, NoCudaDevice, TensorRTFlavour, TensorRTSetupError, TensorRTUnavailable,
                      detect_tensorrt, list_devices)
from .layers import EngineLayer
from .profile import ShapeProfile
from .python_plugins import register_python_plugins

__all__ = [
    "BuildResult", "CacheEntry", "CachedEngine", "CudaDevice", "DeviceFingerprint", "EngineBuildError",
    "EngineCache", "EngineKey", "EngineLayer", "EngineMismatchError", "NoCudaDevice", "OnnxParseError",
    "ShapeProfile", "TensorRTFlavour", "TensorRTSetupError", "TensorRTUnavailable", "build_engine",
    "check_engine_compatible", "detect_tensorrt", "list_devices", "read_sidecar", "register_python_plugins",
    "resolve_build_target", "sidecar_path",
]
