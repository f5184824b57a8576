"""Build checks for plugins/: the CUDA kernels compile for the Jetson and desktop architectures, the C
API library builds (nvcc and CMake), loads and rejects bad calls without a GPU, its host path (the
kernel's own per-pixel code run on the CPU) matches the reference operator, and the TensorRT plugin
library builds and passes its host-only check program against each TensorRT header set (10.3 of
JetPack 6 and 11.x; tests/plugin_build.py finds them and fails when there are none).

Nothing here needs a GPU; benchmarks/gpu_check.py covers the device side.
"""
from __future__ import annotations

import ctypes
import re
import subprocess

import numpy as np
import pytest
import torch

from edge_derain.engine import kernel_lib
from edge_derain.ops import dilation_filter_reference, transposed_attention
from plugin_build import HEADER_SET_LABELS, build_plugins, header_version, include_dir

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


@pytest.mark.parametrize("kernel", ["dilation_filter", "transposed_attention"])
@pytest.mark.parametrize("arch", ["87", "86", "89", "90"])
def test_kernels_compile_to_cubin(arch, kernel, tmp_path):
    nvcc = _nvcc()
    root = kernel_lib.plugin_source_dir()
    cubin = tmp_path / f"{kernel}_sm_{arch}.cubin"
    result = subprocess.run([str(nvcc), "-cubin", "-O3", "-std=c++17", f"-arch=sm_{arch}", "-I", str(root / "include"),
                             str(root / "kernels" / f"{kernel}.cu"), "-o", str(cubin)],
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


# ---- transposed attention: the kernels' host path against the PyTorch operator ----------------------

ATTENTION_CASES = {
    # name: (shape, num_heads, mode, topk) — head sizes the models use, odd spatial sizes, several splits
    "dense-2heads": ((2, 16, 9, 13), 2, "dense", None),
    "sparse": ((1, 12, 7, 5), 1, "sparse", [5]),
    "dual-3heads": ((1, 24, 11, 10), 3, "dual", [5]),
    "multi-48": ((1, 48, 6, 7), 1, "multi", [24, 32, 36, 38]),
    "dense-96-split": ((1, 96, 40, 41), 1, "dense", None),  # 1640 positions: two split-K slices
}


def _attention_inputs(shape, num_heads, mode, topk, seed=11):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    temperature = torch.rand(num_heads, generator=gen) * 2 + 0.5
    branches = {"dense": 1, "sparse": 1, "dual": 2}.get(mode, len(topk or ()))
    weights = None if mode in ("dense", "sparse") else torch.rand(branches, generator=gen) + 0.25
    return q, k, v, temperature, weights


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=list(ATTENTION_CASES))
@pytest.mark.parametrize("dtype,param_dtype,atol", [(torch.float32, torch.float32, 2e-5),
                                                    (torch.float16, torch.float16, 3e-3),
                                                    (torch.float16, torch.float32, 3e-3)])
def test_attention_host_path_matches_operator(lib, case, dtype, param_dtype, atol):
    """The kernels' split-K sums, row selection and softmax, run on the CPU, against the PyTorch op."""
    shape, heads, mode, topk = ATTENTION_CASES[case]
    q, k, v, temperature, weights = _attention_inputs(shape, heads, mode, topk)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    temperature = temperature.to(param_dtype)
    weights = None if weights is None else weights.to(param_dtype)
    out = kernel_lib.transposed_attention_host(q, k, v, temperature, heads, mode, topk, weights, lib=lib)
    # The reference sees exactly the values the kernels read (FP16 parameters rounded), computed in FP64.
    expected = transposed_attention(q.double(), k.double(), v.double(), temperature.double(), heads, mode, topk,
                                    None if weights is None else weights.double())
    assert out.dtype == dtype and torch.isfinite(out).all()
    scale = expected.abs().max().item()
    error = (out.double() - expected).abs().max().item()
    assert error <= atol * scale, f"max error {error:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("topk", [3, 5])
def test_attention_host_path_keeps_ties_at_the_threshold(lib, topk):
    """Threshold semantics (spec §2.3): entries tied with the k-th largest are all kept.

    Integer q and ±1 k rows make every Gram entry exact, and duplicated k rows make exact ties; the
    torch operator (kthvalue threshold) is the reference, and a strict top-k (k entries only) differs.
    """
    gen = torch.Generator().manual_seed(5)
    ch, length = 8, 16
    q = torch.randint(-3, 4, (1, ch, 4, 4), generator=gen).float()
    k = (torch.randint(0, 2, (1, ch // 2, 4, 4), generator=gen).float() * 2 - 1).repeat_interleave(2, dim=1)
    v = torch.randn(1, ch, 4, 4, generator=gen)
    temperature = torch.tensor([1.5])
    out = kernel_lib.transposed_attention_host(q, k, v, temperature, 1, "sparse", [topk], lib=lib)
    expected = transposed_attention(q, k, v, temperature, 1, "sparse", [topk])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Each row's k-th largest value is tied with its duplicate, so at least one row keeps more than k.
    scores = (q.reshape(ch, length) @ k.reshape(ch, length).T)
    kept = (scores >= scores.topk(topk, dim=-1).values[:, -1:]).sum(dim=-1)
    assert (kept > topk).any(), "the case must contain a tie at the threshold"


def test_attention_workspace_size_mirror_matches_library(lib):
    for n, c, h, w, heads in [(1, 48, 540, 960, 1), (2, 96, 8, 8, 2), (1, 8, 1, 1, 1), (4, 24, 33, 17, 3),
                              (1, 96, 1080, 1920, 1), (3, 36, 64, 64, 6)]:
        assert lib.edr_transposed_attention_workspace_size(n, c, h, w, heads) == \
            kernel_lib.transposed_attention_workspace_size(n, c, h, w, heads), (n, c, h, w, heads)
    assert lib.edr_transposed_attention_workspace_size(1, 10, 4, 4, 3) == 0  # C not divisible by heads
    # Monotone in N, H, W: a plugin reserves the size of its profile's largest shape.
    sizes = [[kernel_lib.transposed_attention_workspace_size(n, 48, h, 2 * h, 2) for h in (1, 7, 23, 64, 200, 540)]
             for n in range(1, 9)]
    assert all(row == sorted(row) for row in sizes)
    assert all(list(column) == sorted(column) for column in zip(*sizes))


@pytest.mark.parametrize("case", [
    dict(q=None), dict(temperature=None), dict(c=20, heads=3), dict(c=100, heads=1), dict(mode=7),
    dict(mode=0, topk=[2]), dict(mode=1, topk=[]), dict(mode=1, topk=[0]), dict(mode=1, topk=[9]),
    dict(mode=2, topk=[4], weights=None), dict(mode=3, topk=list(range(1, 10))), dict(eps=0.0), dict(dtype=2),
    dict(workspace_size=16),
], ids=["null-q", "null-temperature", "c%heads", "ch>96", "bad-mode", "dense+topk", "sparse-no-topk", "topk=0",
        "topk>ch", "dual-no-weights", "9-branches", "eps=0", "bad-dtype", "small-workspace"])
def test_invalid_attention_calls_return_invalid_value(lib, case):
    args = dict(q=FAKE, temperature=FAKE, weights=FAKE, dtype=0, c=8, heads=1, mode=0, topk=[], eps=1e-12,
                workspace_size=1 << 30)
    args.update(case)
    topk = args["topk"]
    array = (ctypes.c_int * max(len(topk), 1))(*topk)
    status = lib.edr_transposed_attention(args["q"], FAKE, FAKE, args["temperature"], args["weights"], FAKE,
                                          args["dtype"], 0, 1, args["c"], 4, 4, args["heads"], args["mode"], array,
                                          len(topk), args["eps"], FAKE, args["workspace_size"], None)
    assert status == CUDA_ERROR_INVALID_VALUE


def test_attention_launch_wrapper_raises_one_line_error(lib):
    with pytest.raises(RuntimeError, match=r"CUDA error 1 \(invalid argument\).*num_heads=3") as info:
        kernel_lib.launch_transposed_attention(FAKE, FAKE, FAKE, FAKE, None, FAKE, "float32", "float32", 1, 20, 4, 4,
                                               3, "dense", None, 1e-12, FAKE, 1 << 20, None, lib=lib)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="attention mode 'topk' is not supported"):
        kernel_lib.launch_transposed_attention(FAKE, FAKE, FAKE, FAKE, None, FAKE, "float32", "float32", 1, 8, 4, 4,
                                               1, "topk", [2], 1e-12, FAKE, 1 << 20, None, lib=lib)


@pytest.fixture(scope="module", params=HEADER_SET_LABELS)
def plugin_build(request, pytestconfig):
    """(header set, build dir): the whole plugins/ CMake build against each TensorRT header set."""
    return request.param, build_plugins(getattr(pytestconfig, "cache", None), request.param)


@pytest.mark.slow  # the first run compiles plugins/ per header set (~20-50 s on two cores)
def test_cmake_builds_kernel_library(plugin_build):
    _, build = plugin_build
    lib = kernel_lib.load_kernel_library(build / kernel_lib.LIBRARY_NAME)
    assert lib.edr_kernels_version().decode() == kernel_lib.kernels_version()


@pytest.mark.slow
def test_trt_plugin_builds_and_passes_host_check(plugin_build):
    label, build = plugin_build
    cache = (build / "CMakeCache.txt").read_text()
    assert f"TENSORRT_INCLUDE_DIR:PATH={include_dir(label)}" in cache  # built against this header set
    plugin = ctypes.CDLL(str(build / "libedge_derain_plugins.so"))  # links no TensorRT library: loads here
    for symbol in ("getCreators", "getPluginCreators", "setLoggerFinder", "edr_dilation_filter"):
        assert hasattr(plugin, symbol), symbol
    result = subprocess.run([str(build / "edge_derain_plugin_check")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"(\d+) of \1 checks passed", result.stdout)
    assert f"TensorRT headers {header_version(include_dir(label))}\n" in result.stdout
