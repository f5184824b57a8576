"""Locate, build and call the CUDA kernel library ``libedge_derain_kernels.so`` (the C API of
``plugins/include/edge_derain/kernels.h``) from Python.

Where the library comes from, first match wins:

1. ``$EDGE_DERAIN_KERNEL_LIB``: the path of a built ``.so``;
2. ``<repo>/build/plugins/libedge_derain_kernels.so``, left by ``cmake -S plugins -B build/plugins``;
3. a per-user cache, ``$XDG_CACHE_HOME/edge_derain/kernels/<hash>/`` (``~/.cache`` by default), compiled
   there with nvcc on first use. The hash covers the kernel sources and the nvcc flags, so editing a
   kernel or targeting another GPU builds a fresh copy; the finished file is renamed into place, so
   concurrent first uses never load a half-written library.

The library links the CUDA runtime statically: loading it needs neither libcudart.so nor a GPU; only
launches need a device. ``kernel_sources_hash()`` and ``kernels_version()`` read the sources and need
no compiler at all, so engine builders on CPU-only machines can record them.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

from ..utils import atomic_path, files_sha256

log = logging.getLogger(__name__)

LIBRARY_NAME = "libedge_derain_kernels.so"
ENV_LIBRARY = "EDGE_DERAIN_KERNEL_LIB"
EDR_FLOAT32 = 0
EDR_FLOAT16 = 1
DTYPE_CODES = {"float32": EDR_FLOAT32, "float16": EDR_FLOAT16}
# Turing, Ampere desktop, Jetson Orin, Ada, Hopper: the CMake default, used when no local GPU is visible.
DEFAULT_ARCHS = ("75", "86", "87", "89", "90")
HEADER = Path("include/edge_derain/kernels.h")
_COMMON_NVCC_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                      "-cudart", "static")


def plugin_source_dir() -> Path:
    """The ``plugins/`` sources: the checkout's (editable install) or the copy a wheel carries."""
    from ..resources import resource_dir

    path = resource_dir("plugins")
    if not (path / HEADER).is_file():
        raise FileNotFoundError(f"CUDA kernel sources not found at {path}: reinstall edge_derain (pip install . or "
                                f"a wheel carries them) or set {ENV_LIBRARY} to a built {LIBRARY_NAME}")
    return path


def kernel_sources() -> list[Path]:
    """The files the kernel library is compiled from (headers and .cu/.cuh), in a stable order."""
    root = plugin_source_dir()
    files = [*(root / "include").rglob("*.h"), *(root / "kernels").glob("*.cu"), *(root / "kernels").glob("*.cuh")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def kernel_sources_hash(flags: Sequence[str] | None = None) -> str:
    """SHA-256 (hex) of the kernel sources, plus of the nvcc ``flags`` when given.

    Without flags it identifies the kernels' code and is what engine metadata records as the kernel
    hash (the same on every machine); with flags it keys the compiled-library cache.
    """
    return files_sha256(kernel_sources(), plugin_source_dir(), " ".join(flags).encode() if flags is not None else b"")


def _header_define(name: str) -> str:
    text = (plugin_source_dir() / HEADER).read_text()
    match = re.search(rf"^#define\s+{name}\s+(\S+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{HEADER} defines no {name}; the kernel sources are incomplete")
    return match.group(1)


def kernels_version() -> str:
    """``EDR_KERNELS_VERSION_STRING`` from the C header (the loaded library reports the same)."""
    return _header_define("EDR_KERNELS_VERSION_STRING").strip('"')


def max_dilations() -> int:
    """``EDR_MAX_DILATIONS``: the most dilations one call accepts."""
    return int(_header_define("EDR_MAX_DILATIONS"))


def max_head_channels() -> int:
    """``EDR_MAX_HEAD_CHANNELS``: the most channels per head the attention kernels accept."""
    return int(_header_define("EDR_MAX_HEAD_CHANNELS"))


def _normalize_arch(arch: str | int) -> str:
    digits = str(arch).lower().removeprefix("sm_").removeprefix("compute_").replace(".", "")
    if not digits.isdigit() or len(digits) < 2:
        raise ValueError(f"CUDA architecture {arch!r} is not understood; use a compute capability such as "
                         "'87', '8.7' or 'sm_87'")
    return digits


def arch_flags(archs: Iterable[str | int]) -> list[str]:
    """nvcc ``-gencode`` flags: SASS for each architecture plus PTX of the newest, which the driver
    JIT-compiles on GPUs newer than any listed."""
    normalized = sorted({_normalize_arch(a) for a in archs}, key=int)
    if not normalized:
        raise ValueError("no CUDA architecture given; pass e.g. archs=['87']")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in normalized]
    flags.append(f"-gencode=arch=compute_{normalized[-1]},code=compute_{normalized[-1]}")
    return flags


def local_archs() -> tuple[str, ...]:
    """The visible GPUs' compute capabilities (through torch), or DEFAULT_ARCHS when none is visible."""
    import torch

    if not torch.cuda.is_available():
        return DEFAULT_ARCHS
    return tuple(sorted({"%d%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}))


def find_nvcc() -> Path:
    """nvcc from ``$CUDACXX``, PATH, ``$CUDA_HOME``/``$CUDA_PATH`` or /usr/local/cuda, in that order."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    candidates += [str(Path(os.environ[v]) / "bin" / "nvcc") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates.append("/usr/local/cuda/bin/nvcc")
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise FileNotFoundError(f"nvcc not found: install the CUDA toolkit and put nvcc on PATH (or set CUDACXX), "
                            f"or build {LIBRARY_NAME} with CMake and set {ENV_LIBRARY} to it")


def nvcc_flags(archs: Iterable[str | int]) -> list[str]:
    """Every nvcc flag that shapes the compiled library (what the cache key covers), minus paths."""
    return [*_COMMON_NVCC_FLAGS, *arch_flags(archs)]


def build_kernel_library(out_dir: str | os.PathLike, archs: Iterable[str | int] | None = None,
                         nvcc: str | os.PathLike | None = None) -> Path:
    """Compile the kernels with nvcc into ``out_dir/libedge_derain_kernels.so`` and return its path.

    ``archs`` defaults to :func:`local_archs`. The file appears in one atomic rename when nvcc succeeds.
    """
    root = plugin_source_dir()
    nvcc = Path(nvcc) if nvcc else find_nvcc()
    flags = nvcc_flags(archs if archs is not None else local_archs())
    target = Path(out_dir) / LIBRARY_NAME
    sources = [str(p) for p in kernel_sources() if p.suffix == ".cu"]
    with atomic_path(target) as tmp:
        cmd = [str(nvcc), *flags, "-I", str(root / "include"), *sources, "-o", str(tmp)]
        log.info("building %s: %s", target, " ".join(cmd))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            first_error = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
            raise RuntimeError(f"nvcc failed (exit {result.returncode}) building {target}: {first_error.strip()}")
    return target


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge_derain" / "kernels"


def cached_library_path(archs: Iterable[str | int] | None = None) -> Path:
    """Where the per-user cache keeps the library built for ``archs`` (default: :func:`local_archs`)."""
    key = kernel_sources_hash(nvcc_flags(archs if archs is not None else local_archs()))
    return _cache_root() / key[:16] / LIBRARY_NAME


def cmake_build_path() -> Path:
    """Where ``cmake -S plugins -B build/plugins && cmake --build build/plugins`` leaves the library."""
    return plugin_source_dir().parent / "build" / "plugins" / LIBRARY_NAME


def library_from_env(variable: str, library_name: str, unset_means: str) -> Path | None:
    """The library an environment variable names (None when unset); one line naming the fix when it is missing."""
    explicit = os.environ.get(variable)
    if not explicit:
        return None
    path = Path(explicit)
    if not path.is_file():
        raise FileNotFoundError(f"{variable}={explicit} does not exist; point it at a built {library_name} "
                                f"or unset it to {unset_means}")
    return path


def kernel_library_path() -> Path:
    """The library to load: ``$EDGE_DERAIN_KERNEL_LIB`` > the CMake build in the checkout > the user
    cache, compiling it there with nvcc if it is not there yet."""
    explicit = library_from_env(ENV_LIBRARY, LIBRARY_NAME, unset_means="build one automatically")
    if explicit:
        return explicit
    cmake_built = cmake_build_path()
    if cmake_built.is_file():
        newest_source = max(p.stat().st_mtime for p in kernel_sources())
        if cmake_built.stat().st_mtime < newest_source:
            log.warning("%s is older than the kernel sources; rebuild it with `cmake --build build/plugins`",
                        cmake_built)
        return cmake_built
    archs = local_archs()
    cached = cached_library_path(archs)
    if not cached.is_file():
        build_kernel_library(cached.parent, archs)
    return cached


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    buffers = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    sizes = [ctypes.c_int] * 5  # dtype, n, c, h, w
    dilations = [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    lib.edr_dilation_filter.argtypes = [*buffers, *sizes, *dilations, ctypes.c_void_p]
    lib.edr_dilation_filter.restype = ctypes.c_int
    lib.edr_dilation_filter_host.argtypes = [*buffers, *sizes, *dilations]
    lib.edr_dilation_filter_host.restype = ctypes.c_int
    attention = [ctypes.c_void_p] * 6  # q, k, v, temperature, branch_weights, output
    attention += [ctypes.c_int] * 8     # dtype, param_dtype, n, c, h, w, num_heads, mode
    attention += [ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_float]  # topk, num_topk, eps
    lib.edr_transposed_attention.argtypes = [*attention, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.edr_transposed_attention.restype = ctypes.c_int
    lib.edr_transposed_attention_host.argtypes = attention
    lib.edr_transposed_attention_host.restype = ctypes.c_int
    lib.edr_transposed_attention_workspace_size.argtypes = [ctypes.c_int] * 5
    lib.edr_transposed_attention_workspace_size.restype = ctypes.c_size_t
    lib.edr_kernels_version.argtypes = []
    lib.edr_kernels_version.restype = ctypes.c_char_p
    lib.edr_error_string.argtypes = [ctypes.c_int]
    lib.edr_error_string.restype = ctypes.c_char_p
    return lib


@functools.lru_cache(maxsize=None)
def _load(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise RuntimeError(f"cannot load the kernel library {path}: {exc}; rebuild it or set {ENV_LIBRARY}") from exc
    return _bind(lib)


def load_kernel_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """The kernel library as a ctypes CDLL with argument and result types set (loaded once per path).

    ``path`` defaults to :func:`kernel_library_path`, which may compile the library on first use.
    """
    return _load(str(Path(path if path is not None else kernel_library_path()).resolve()))


def _dtype_code(dtype: int | str) -> int:
    if isinstance(dtype, str):
        if dtype not in DTYPE_CODES:
            raise ValueError(f"dtype {dtype!r} is not supported by the kernels; use one of {sorted(DTYPE_CODES)}")
        return DTYPE_CODES[dtype]
    if dtype not in (EDR_FLOAT32, EDR_FLOAT16):
        raise ValueError(f"dtype code {dtype} is not supported; use EDR_FLOAT32 (0) or EDR_FLOAT16 (1)")
    return int(dtype)


def launch_dilation_filter(image_ptr: int, kernels_ptr: int, out_ptr: int, dtype: int | str, n: int, c: int,
                           h: int, w: int, dilations: Sequence[int], stream_handle: int | None = None,
                           lib: ctypes.CDLL | None = None) -> None:
    """Enqueue the dilation filter on ``stream_handle`` (a cudaStream_t as int; None/0 = default stream).

    Pointers are device addresses of contiguous NCHW buffers: image (n, c, h, w), kernels (n, 9c, h, w),
    output (n, c*len(dilations), h, w). ``dtype`` is "float32"/"float16" or EDR_FLOAT32/EDR_FLOAT16.
    Raises RuntimeError naming the CUDA error when the library rejects the call or the launch fails.
    """
    lib = lib if lib is not None else load_kernel_library()
    code = _dtype_code(dtype)
    values = [int(d) for d in dilations]
    array = (ctypes.c_int * max(len(values), 1))(*values)
    status = lib.edr_dilation_filter(image_ptr, kernels_ptr, out_ptr, code, n, c, h, w, array, len(values),
                                     stream_handle)
    if status != 0:
        message = lib.edr_error_string(status).decode()
        dtype_name = next(name for name, value in DTYPE_CODES.items() if value == code)
        raise RuntimeError(f"edr_dilation_filter failed: CUDA error {status} ({message}) for dtype={dtype_name} "
                           f"n={n} c={c} h={h} w={w} dilations={tuple(values)}; pointers must be non-null device "
                           f"buffers, sizes positive, 1..{max_dilations()} dilations each >= 1")


ATTENTION_MODES = {"dense": 0, "sparse": 1, "dual": 2, "multi": 3}  # edr_attention_mode
# The kernels' launch geometry (plugins/kernels/transposed_attention.cu, make_geometry), mirrored so that
# engine builders size the plugin workspace without loading the compiled library, which build machines
# may lack; tests/test_plugins_build.py checks the two agree.
_MIN_SPLIT_POSITIONS, _TARGET_BLOCKS, _ALIGN_FLOATS = 1024, 1024, 64


def transposed_attention_workspace_size(n: int, c: int, h: int, w: int, num_heads: int) -> int:
    """Bytes of device workspace ``edr_transposed_attention`` needs for these dims (0 if they are invalid)."""
    if min(n, c, h, w, num_heads) <= 0 or c % num_heads:
        return 0
    def align(x: int) -> int:
        return -(-x // _ALIGN_FLOATS) * _ALIGN_FLOATS
    pairs, ch, length = n * num_heads, c // num_heads, h * w
    ch4 = -(-ch // 4) * 4
    records = min(pairs * -(-length // _MIN_SPLIT_POSITIONS), pairs + _TARGET_BLOCKS)  # >= pairs * splits
    stats = ch * ch + 2 * ch
    return 4 * (align(records * stats) + align(pairs * stats) + align(pairs * ch * ch4))


def _attention_codes(dtype, param_dtype, mode: str, topk: Sequence[int] | None):
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r} is not supported; use one of {sorted(ATTENTION_MODES)}")
    values = [int(t) for t in topk or ()]
    return _dtype_code(dtype), _dtype_code(param_dtype), ATTENTION_MODES[mode], values, \
        (ctypes.c_int * max(len(values), 1))(*values)


def launch_transposed_attention(q_ptr: int, k_ptr: int, v_ptr: int, temperature_ptr: int,
                                branch_weights_ptr: int | None, out_ptr: int, dtype: int | str,
                                param_dtype: int | str, n: int, c: int, h: int, w: int, num_heads: int, mode: str,
                                topk: Sequence[int] | None, eps: float, workspace_ptr: int, workspace_size: int,
                                stream_handle: int | None = None, lib: ctypes.CDLL | None = None) -> None:
    """Enqueue the transposed attention on ``stream_handle`` (a cudaStream_t as int; None/0 = default).

    q, k, v, out: device addresses of contiguous (n, c, h, w) buffers of ``dtype``; temperature (num_heads,)
    and branch_weights (one per branch, or None = weight 1 for dense/sparse) of ``param_dtype``;
    ``mode`` one of ATTENTION_MODES; ``workspace_ptr`` device memory of at least
    :func:`transposed_attention_workspace_size` bytes. Raises RuntimeError naming the CUDA error.
    """
    lib = lib if lib is not None else load_kernel_library()
    code, param_code, mode_code, values, array = _attention_codes(dtype, param_dtype, mode, topk)
    status = lib.edr_transposed_attention(q_ptr, k_ptr, v_ptr, temperature_ptr, branch_weights_ptr, out_ptr, code,
                                          param_code, n, c, h, w, num_heads, mode_code, array, len(values),
                                          float(eps), workspace_ptr, workspace_size, stream_handle)
    if status != 0:
        message = lib.edr_error_string(status).decode()
        raise RuntimeError(f"edr_transposed_attention failed: CUDA error {status} ({message}) for n={n} c={c} h={h} "
                           f"w={w} num_heads={num_heads} mode={mode} topk={values} workspace={workspace_size} B; "
                           f"pointers must be device buffers, C divisible by num_heads with at most "
                           f"{max_head_channels()} channels per head, topk in [1, C/num_heads], the workspace at "
                           f"least {transposed_attention_workspace_size(n, c, h, w, num_heads)} B")


def transposed_attention_host(q, k, v, temperature, num_heads: int, mode: str = "dense",
                              topk: Sequence[int] | None = None, branch_weights=None, eps: float = 1e-12,
                              lib: ctypes.CDLL | None = None):
    """Run the kernels' host path on contiguous CPU torch tensors (float32/float16); returns the output.

    For verification on machines without a GPU; slow.
    """
    import torch

    lib = lib if lib is not None else load_kernel_library()
    names = {torch.float32: "float32", torch.float16: "float16"}
    if q.dtype not in names or temperature.dtype not in names:
        raise ValueError(f"host attention takes float32/float16 tensors, got {q.dtype} and {temperature.dtype}")
    tensors = [t.contiguous() for t in (q, k, v, temperature)]
    weights = None if branch_weights is None else branch_weights.to(temperature.dtype).contiguous()
    out = torch.empty_like(tensors[0])
    code, param_code, mode_code, values, array = _attention_codes(names[q.dtype], names[temperature.dtype], mode,
                                                                  topk)
    n, c, h, w = q.shape
    status = lib.edr_transposed_attention_host(*(t.data_ptr() for t in tensors),
                                               None if weights is None else weights.data_ptr(), out.data_ptr(),
                                               code, param_code, n, c, h, w, num_heads, mode_code, array,
                                               len(values), float(eps))
    if status != 0:
        raise RuntimeError(f"edr_transposed_attention_host rejected the call (CUDA error {status}, "
                           f"{lib.edr_error_string(status).decode()}) for shape {tuple(q.shape)} num_heads={num_heads} "
                           f"mode={mode} topk={values}")
    return out
