"""The C++ plugin library (``libedge_derain_plugins.so``): where to find it, and loading it into a TensorRT
module's plugin registry once per process, checked to provide our plugins."""
from __future__ import annotations

import os
from pathlib import Path

from .flavour import TensorRTSetupError


#: Environment variable naming a built ``libedge_derain_plugins.so`` to use instead of the Python plugin.
PLUGIN_LIBRARY_ENV = "EDGE_DERAIN_PLUGIN_LIB"
PLUGIN_LIBRARY_NAME = "libedge_derain_plugins.so"
# (TensorRT module name, library path) -> handle; a library is loaded once per process and module.
_LOADED_LIBRARIES: dict[tuple[str, str], object] = {}


def find_plugin_library() -> Path | None:
    """The C++ plugin library to use: ``$EDGE_DERAIN_PLUGIN_LIB``, else the CMake build in the source
    checkout (``build/plugins/libedge_derain_plugins.so``), else None (the Python plugin is used)."""
    from . import kernel_lib

    explicit = kernel_lib.library_from_env(PLUGIN_LIBRARY_ENV, PLUGIN_LIBRARY_NAME, unset_means="use the Python plugin")
    if explicit:
        return explicit
    try:
        built = kernel_lib.plugin_source_dir().parent / "build" / "plugins" / PLUGIN_LIBRARY_NAME
    except FileNotFoundError:  # installed without the plugins/ sources: no CMake build either
        return None
    return built if built.is_file() else None


def load_plugin_library(trt, path: str | os.PathLike) -> Path:
    """Load a plugin library into ``trt``'s registry (once per process) and check it provides our plugins."""
    from .python_plugins import PLUGIN_NAMES, PLUGIN_NAMESPACE, PLUGIN_VERSION

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"plugin library {path} does not exist; build it with "
                                "cmake -S plugins -B build/plugins && cmake --build build/plugins")
    key = (trt.__name__, str(path))
    if key not in _LOADED_LIBRARIES:
        registry = trt.get_plugin_registry()
        handle = registry.load_library(str(path))
        if handle is None:
            raise TensorRTSetupError(f"{trt.__name__} could not load the plugin library {path} (its log says why); "
                                     "build it against the headers of the TensorRT in use")
        _LOADED_LIBRARIES[key] = handle
        missing = [name for name in PLUGIN_NAMES
                   if registry.get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None]
        if missing:
            raise TensorRTSetupError(f"{path} loaded but registered no {' / '.join(missing)} v{PLUGIN_VERSION} "
                                     "plugin creator; rebuild the edge_derain plugin library from this checkout "
                                     "(cmake --build build/plugins)")
    return path
