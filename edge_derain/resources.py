"""Folders of the source checkout that the package reads at run time, wherever it is installed.

``pipelines/`` (GStreamer pipeline definitions), ``plugins/`` (CUDA kernel and C++ plugin sources, which
the Python plugin compiles and hashes) and ``calibration/`` (the default calibration recipe) sit at the
top of the repository so that people find and edit them there. An editable install reads them in place;
a wheel (``pip install .``, ``pip wheel .``) carries a copy under ``edge_derain/_resources/``, which
``setup.py`` makes while building. Nothing here imports anything heavy: ``install.sh`` and the build
worker use it too.
"""
from __future__ import annotations

from pathlib import Path

#: The folders a wheel carries, by name.
RESOURCE_DIRS = ("pipelines", "plugins", "calibration")
PACKAGED_ROOT = Path(__file__).resolve().parent / "_resources"
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]


def resource_dir(name: str) -> Path:
    """The installed copy of ``name`` (a wheel), else the checkout's folder; the caller checks it exists.

    The packaged copy wins: beside an installed package, ``site-packages/<name>`` may belong to
    anything, while ``_resources`` exists only in a built wheel.
    """
    if name not in RESOURCE_DIRS:
        raise ValueError(f"unknown resource folder {name!r}; one of {', '.join(RESOURCE_DIRS)}")
    packaged = PACKAGED_ROOT / name
    return packaged if packaged.is_dir() else CHECKOUT_ROOT / name
