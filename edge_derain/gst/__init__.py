"""GStreamer camera pipelines: the ``derain``, ``detect``, ``rainrender`` and ``caption`` elements, per-frame stats,
rain-aware gating, the pipeline composer and its runner.

Nothing here imports ``gi`` at import time. :func:`require_gst` imports and initialises GStreamer (with a
one-line error naming the fix when the bindings are missing); :mod:`edge_derain.gst.elements` defines
the elements and therefore needs it, so import that module only after :func:`require_gst`.

Two ways to get the elements:

* in this process: :func:`register_elements` (what ``edge-derain run``/``demo`` and the tests do);
* from ``gst-launch-1.0``/``gst-inspect-1.0``: the python plugin loader (Debian package
  ``gstreamer1.0-python3-plugin-loader``) imports ``$GST_PLUGIN_PATH/python/*.py``; our entry files live
  in ``edge_derain/gst/plugin/python``. :func:`plugin_environment` returns the variables to set: the
  loader embeds the system's libpython, which needs ``PYTHONPATH`` to see the virtualenv's packages.
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
GI_VERSIONS = {"Gst": "1.0", "GstBase": "1.0", "GstVideo": "1.0", "GstApp": "1.0"}
_INSTALL_HINT = ("install GStreamer and PyGObject from the system packages and expose gi to the virtualenv "
                 "(bash install.sh does both)")


def _keep_gcc_unwinder() -> None:
    """Put libgcc_s's C++ unwinder first in the global symbol scope before libgstreamer loads.

    Debian's libgstreamer links libunwind, whose ``_Unwind_Resume`` then takes over for every C++ library
    loaded after it (gi loads libgstreamer with RTLD_GLOBAL). A C++ exception thrown by one runtime and
    unwound through another (torch's ONNX exporter through onnxruntime's pybind11 translators, for one)
    then aborts the process. Loading libgcc_s globally first keeps the unwinder all of them were built
    for. Must run before GStreamer's library is loaded; harmless on systems without libgcc_s.
    """
    import ctypes

    try:
        ctypes.CDLL("libgcc_s.so.1", mode=os.RTLD_GLOBAL)
    except OSError:
        pass


def require_gst():
    """Import and initialise GStreamer; return the ``Gst`` module. ImportError (one line) if unavailable."""
    if sys.platform.startswith("linux") and "gi.repository.Gst" not in sys.modules:
        _keep_gcc_unwinder()
    try:
        import gi

        for namespace, version in GI_VERSIONS.items():
            gi.require_version(namespace, version)
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        raise ImportError(f"GStreamer Python bindings are not available ({exc}); {_INSTALL_HINT}") from None
    if not Gst.is_initialized():
        Gst.init(None)
    return Gst


def register_elements() -> None:
    """Make ``derain``, ``detect``, ``rainrender`` and ``caption`` available to ``Gst.parse_launch`` in this process."""
    require_gst()
    from .elements import register

    register()


def _site_dirs() -> list[str]:
    """This interpreter's site-packages (the virtualenv's, when running from one)."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def plugin_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ``os.environ``) plus what ``gst-launch-1.0`` needs to find the elements."""
    env = dict(os.environ if base is None else base)
    env["GST_PLUGIN_PATH"] = os.pathsep.join(p for p in (str(PLUGIN_DIR), env.get("GST_PLUGIN_PATH")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*_site_dirs(), env.get("PYTHONPATH")) if p)
    return env


def plugin_element_factory(name: str):
    """``__gstelementfactory__`` of a gst-launch entry file (``plugin/python/*.py``)."""
    Gst = require_gst()
    try:
        from .elements import ELEMENTS
    except ImportError as exc:
        # The plugin loader swallows the traceback; say what is missing where a person will see it.
        print(f"edge_derain: GStreamer element {name!r} unavailable: {exc}; run gst-launch-1.0 with the "
              f"PYTHONPATH of the environment edge_derain is installed in ({sys.executable} -m edge_derain.cli "
              f"run --print-pipeline prints it)", file=sys.stderr)
        raise
    return name, Gst.Rank.NONE, ELEMENTS[name]
