"""Build checks for plugins/: the CUDA kernels compile for the Jetson and desktop architectures, the C
API library builds (nvcc and CMake), loads and rejects bad calls without a GPU, its host path (the
kernel's own per-pixel code run on the CPU) matches the reference operator, and the TensorRT plugin
library builds and passes its host-only check program when TensorRT headers are available.

Nothing here needs a GPU; benchmarks/gpu_check.py covers the device side.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from edge_derain.engine import kernel_lib
from edge_derain.ops import dilation_filter_reference

CUDA_ERROR_INVALID_VALUE = 1
# One architecture per compile keeps this file fast; sm_87 is Jetson Orin (JetPack 6).
TEST_ARCH = "87"


def _nvcc():
    try:
        return kernel_lib.find_nvcc()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """The C API library built through the user-cache path of kernel_library_path() (sm_87 only)."""
    _nvcc()
    cache_home = tmp_path_factory.mktemp("xdg_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        mp.delenv(kernel_lib.ENV_LIBRARY, raising=False)
        mp.setattr(kernel_lib, "local_archs", lambda: (TEST_ARCH,))
        mp.setattr(kernel_lib, "cmake_build_path", lambda: cache_home / "no_cmake_build" / kernel_lib.LIBRARY_NAME)
        path = kernel_lib.kernel_library_path()
        mtime = path.stat().st_mtime_ns
        again = kernel_lib.kernel_library_path()
    return {"path": path, "mtime": mtime, "again": again, "cache_home": cache_home}


@pytest.fixture(scope="module")
def lib(built_library):
    return kernel_lib.load_kernel_library(built_library["path"])


@pytest.mark.parametrize("arch", ["87", "86", "89", "90"])
def test_kernels_compile_to_cubin(arch, tmp_path):
    nvcc = _nvcc()
    root = kernel_lib.plugin_source_dir()
    cubin = tmp_path / f"dilation_filter_sm_{arch}.cubin"
    result = subprocess.run([str(nvcc), "-cubin", "-O3", "-std=c++17", f"-arch=sm_{arch}", "-I", str(root / "include"),
                             str(root / "kernels" / "dilation_filter.cu"), "-o", str(cubin)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert cubin.stat().st_size > 0


def test_library_is_cached_by_source_and_arch_hash(built_library):
    path = built_library["path"]
    key = kernel_lib.kernel_sources_hash(kernel_lib.nvcc_flags([TEST_ARCH]))
    assert path == built_library["cache_home"] / "edge_derain" / "kernels" / key[:16] / kernel_lib.LIBRARY_NAME
    assert built_library["again"] == path and path.stat().st_mtime_ns == built_library["mtime"]  # not rebuilt
    assert not list(path.parent.glob("*.tmp"))
    assert key != kernel_lib.kernel_sources_hash(kernel_lib.nvcc_flags(["86"]))
    assert kernel_lib.kernel_sources_hash() != key  # the engine-metadata hash ignores the flags


def test_library_reports_header_version(lib):
    version = lib.edr_kernels_version().decode()
    assert version == kernel_lib.kernels_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_env_library_path_wins_and_must_exist(built_library, monkeypatch, tmp_path):
    monkeypatch.setenv(kernel_lib.ENV_LIBRARY, str(built_library["path"]))
    assert kernel_lib.kernel_library_path() == built_library["path"]
    monkeypatch.setenv(kernel_lib.ENV_LIBRARY, str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="EDGE_DERAIN_KERNEL_LIB=.*does not exist"):
        kernel_lib.kernel_library_path()


FAKE = 0x1000  # never dereferenced: every case below fails argument validation before any CUDA call


@pytest.mark.parametrize("case", [
    dict(image=None),
    dict(output=None),
    dict(dilations=[]),
    dict(dilations=list(range(1, 10))),
    dict(dilations=[1, 0, 3]),
    dict(dtype=2),
    dict(n=0),
    dict(w=-5),
], ids=["null-image", "null-output", "no-dilations", "9-dilations", "zero-dilation", "bad-dtype", "n=0", "w<0"])
def test_invalid_calls_return_invalid_value(lib, case):
    args = dict(image=FAKE, kernels=FAKE, output=FAKE, dtype=0, n=1, c=3, h=8, w=8, dilations=[1, 2, 3, 4])
    args.update(case)
    dil = args["dilations"]
    array = (ctypes.c_int * max(len(dil), 1))(*dil)
    status = lib.edr_dilation_filter(args["image"], args["kernels"], args["output"], args["dtype"], args["n"],
                                     args["c"], args["h"], args["w"], array, len(dil), None)
    assert status == CUDA_ERROR_INVALID_VALUE
    assert lib.edr_error_string(status).decode() == "invalid argument"


def test_launch_wrapper_raises_one_line_error(lib):
    with pytest.raises(RuntimeError, match=r"CUDA error 1 \(invalid argument\).*dilations=\(\)") as info:
        kernel_lib.launch_dilation_filter(FAKE, FAKE, FAKE, "float32", 1, 3, 8, 8, [], None, lib=lib)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="dtype 'bfloat16' is not supported"):
        kernel_lib.launch_dilation_filter(FAKE, FAKE, FAKE, "bfloat16", 1, 3, 8, 8, [1], None, lib=lib)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float16, 1e-3)])
@pytest.mark.parametrize("shape,dilations", [
    ((2, 3, 13, 17), (1, 2, 3, 4)),
    ((1, 2, 5, 9), (1, 6)),  # C = 2 checks the general C*m + c layout; d = 6 > H pads whole rows
])
def test_host_path_matches_reference(lib, dtype, rtol, shape, dilations):
    """The kernel's per-pixel code, run on the CPU, against the spec §1.3 reference on random inputs."""
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(n, c, h, w, generator=gen).to(dtype)
    kernels = torch.randn(n, 9 * c, h, w, generator=gen).to(dtype)  # raw KPN output: signed
    out = torch.full((n, c * len(dilations), h, w), float("nan"), dtype=dtype)
    array = (ctypes.c_int * len(dilations))(*dilations)
    code = kernel_lib.EDR_FLOAT16 if dtype == torch.float16 else kernel_lib.EDR_FLOAT32
    status = lib.edr_dilation_filter_host(image.data_ptr(), kernels.data_ptr(), out.data_ptr(), code, n, c, h, w,
                                          array, len(dilations))
    assert status == 0
    expected = dilation_filter_reference(image.double(), kernels.double(), dilations)
    scale = expected.abs().max().item()
    error = (out.double() - expected).abs().max().item()
    assert error <= rtol * scale, f"max error {error:.3g} vs scale {scale:.3g}"


@pytest.fixture(scope="module")
def cmake_build(tmp_path_factory):
    """plugins/ configured with CMake for one architecture (TensorRT headers from the environment)."""
    _nvcc()
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    build = tmp_path_factory.mktemp("cmake_plugins")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    result = subprocess.run([cmake, "-S", str(kernel_lib.plugin_source_dir()), "-B", str(build), *generator,
                             f"-DCMAKE_CUDA_ARCHITECTURES={TEST_ARCH}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return cmake, build


def _cmake_build(cmake_build, *targets):
    cmake, build = cmake_build
    result = subprocess.run([cmake, "--build", str(build), "-j", "2", "--target", *targets],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return build


def test_cmake_builds_kernel_library(cmake_build):
    build = _cmake_build(cmake_build, "edge_derain_kernels")
    lib = kernel_lib.load_kernel_library(build / kernel_lib.LIBRARY_NAME)
    assert lib.edr_kernels_version().decode() == kernel_lib.kernels_version()


def test_trt_plugin_builds_and_passes_host_check(cmake_build):
    include = os.environ.get("TENSORRT_INCLUDE_DIR")
    if not include:
        pytest.skip("TensorRT headers not available (set TENSORRT_INCLUDE_DIR)")
    build = _cmake_build(cmake_build, "edge_derain_plugins", "edge_derain_plugin_check")
    plugin = ctypes.CDLL(str(build / "libedge_derain_plugins.so"))  # links no TensorRT library: loads here
    for symbol in ("getCreators", "getPluginCreators", "setLoggerFinder", "edr_dilation_filter"):
        assert hasattr(plugin, symbol), symbol
    result = subprocess.run([str(build / "edge_derain_plugin_check")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"(\d+) of \1 checks passed", result.stdout)
