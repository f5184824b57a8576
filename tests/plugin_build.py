"""The CMake build of plugins/ that the plugin tests share, once per TensorRT header set.

Header sets: ``$TENSORRT_INCLUDE_DIR`` when set (one set, labelled ``env``); otherwise every
``<version>/include`` under ``../shared/third_party/tensorrt-headers`` beside the repository (10.3.0 =
JetPack 6, 11.1 = desktop TensorRT 11.x), which CI always has. Finding neither is a test failure, not a
skip: the C++ plugins must be compiled wherever the suite runs.

Each set builds the whole project (kernel library, plugin library, host check) for one CUDA
architecture (sm_87, Jetson Orin, for the JetPack headers; sm_86 otherwise) in pytest's cache
directory, keyed by the sources folder, the headers and the architecture: the first run compiles
(about 20 s on two cores per set), later runs only rebuild what changed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
SHARED_HEADERS = REPO.parent / "shared" / "third_party" / "tensorrt-headers"
ENV_INCLUDE = "TENSORRT_INCLUDE_DIR"
#: CUDA architecture per header set: JetPack 6's TensorRT runs on Orin (sm_87).
ARCH_FOR_SET = {"10.3.0": "87"}
DEFAULT_ARCH = "86"


def header_sets() -> dict[str, Path]:
    """label -> TensorRT include directory; empty when there is none (see the module docstring)."""
    explicit = os.environ.get(ENV_INCLUDE)
    if explicit:
        return {"env": Path(explicit)}
    return {path.parent.name: path for path in sorted(SHARED_HEADERS.glob("*/include"))
            if (path / "NvInferRuntime.h").is_file()}


#: Labels to parametrize over; "missing" makes every header test fail with the reason.
HEADER_SET_LABELS = list(header_sets()) or ["missing"]


def include_dir(label: str) -> Path:
    """The include dir of ``label``, failing the test when the headers are absent."""
    sets = header_sets()
    if label not in sets:
        pytest.fail(f"TensorRT headers not found: set {ENV_INCLUDE} to a TensorRT include/ directory or provide "
                    f"{SHARED_HEADERS}/<version>/include (CI has 10.3.0 and 11.1 there)")
    include = sets[label]
    if not (include / "NvInferRuntime.h").is_file():
        pytest.fail(f"{ENV_INCLUDE}={include} has no NvInferRuntime.h; point it at TensorRT's include/ directory")
    return include


def header_version(include: Path) -> str:
    """``major.minor.patch`` from NvInferVersion.h (10.x defines the numbers, 11.x via TRT_*_ENTERPRISE)."""
    text = (include / "NvInferVersion.h").read_text()
    defines = dict(line.split()[1:3] for line in text.splitlines()
                   if line.startswith("#define ") and len(line.split()) >= 3)

    def value(name: str) -> str:
        seen = defines[name]
        return value(seen) if seen in defines else seen

    return ".".join(value(f"NV_TENSORRT_{part}") for part in ("MAJOR", "MINOR", "PATCH"))


def require_tools() -> str:
    """The cmake executable; skips when cmake or nvcc is missing (the machine image provides both)."""
    from edge_derain.engine import kernel_lib

    try:
        kernel_lib.find_nvcc()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found; it is needed to build plugins/")
    return cmake


def build_plugins(cache: pytest.Cache | None, label: str) -> Path:
    """The whole plugins/ CMake build for header set ``label`` (cached); returns its build directory.

    ``cache`` is pytest's (None under ``-p no:cacheprovider``: the build then lives in the temp folder)."""
    cmake = require_tools()
    include = include_dir(label)
    arch = ARCH_FOR_SET.get(label, DEFAULT_ARCH)
    key = hashlib.sha256(f"{PLUGINS}\0{include.resolve()}\0{arch}".encode()).hexdigest()[:12]
    name = f"edge_derain_plugins_{label}_{key}"
    build = cache.mkdir(name) if cache is not None else Path(tempfile.gettempdir()) / name
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build / "CMakeCache.txt").is_file() else []
    configure = [cmake, "-S", str(PLUGINS), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_CUDA_ARCHITECTURES={arch}", f"-DTENSORRT_INCLUDE_DIR={include}"]
    for command in (configure, [cmake, "--build", str(build), "-j", "2"]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return build
