"""Legacy TensorRT INT8 calibration caches -> explicit Q/DQ scales, so old calibrations are not lost.

The deprecated implicit calibrators (``IInt8EntropyCalibrator2`` & co., removed in TensorRT-RTX and
11.x) saved their result as a text cache::

    TRT-8601-EntropyCalibration2
    image: 3c010204
    /conv1/conv1.1/Relu_output_0: 3b8e4a1c
    ...

The first line is ``TRT-<TensorRT version number>-<algorithm>``; every other line is a network tensor
name, a colon, and the bits of a float32 in hex: the tensor's per-tensor activation scale
``amax / 127``, the same value an explicit Q/DQ pair uses. The tensor names are the ONNX tensor names
(TensorRT's ONNX parser keeps them), so the scales of the conv input tensors can be put back onto our
graphs as Q/DQ (``qdq.insert_qdq``); weights get per-channel scales from the weights themselves.
Never use the implicit calibrators for new work: calibrate with ``edge-derain calibrate``.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import onnx

from .table import QuantTable

_HEADER_RE = re.compile(r"^TRT-(?P<version>\d+)-(?P<algorithm>[A-Za-z0-9_]+)$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{1,8}$")


@dataclass(frozen=True)
class CalibrationCache:
    path: Path
    version: int  # TensorRT's version number as the header has it, e.g. 8601 for 8.6.1
    algorithm: str  # e.g. EntropyCalibration2, MinMaxCalibration, LegacyCalibration
    scales: dict[str, float]  # tensor name -> amax / 127


def float_to_hex(value: float) -> str:
    """The cache's encoding: the float32's bits as lowercase hex without leading zeros (as TensorRT writes)."""
    return format(struct.unpack(">I", struct.pack(">f", value))[0], "x")


def hex_to_float(text: str) -> float:
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


def read_calibration_cache(path: str | os.PathLike) -> CalibrationCache:
    """Parse a TensorRT calibration cache; one-line errors name the file and the bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration cache {path} not found")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text TensorRT calibration cache (binary data); pass the file written by "
                         "writeCalibrationCache") from None
    lines = [line.strip() for line in lines]
    header = _HEADER_RE.match(lines[0]) if lines else None
    if header is None:
        first = lines[0][:60] if lines else "(empty file)"
        raise ValueError(f"{path} is not a TensorRT calibration cache: the first line must look like "
                         f"TRT-8601-EntropyCalibration2, got {first!r}")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        name, colon, value = line.rpartition(":")
        value = value.strip()
        if not colon or not name.strip() or not _HEX_RE.match(value):
            raise ValueError(f"{path} line {number} is not 'tensor_name: <hex float32>': {line[:80]!r}")
        scales[name.strip()] = hex_to_float(value)
    if not scales:
        raise ValueError(f"{path} holds no tensor scales (only the header); recalibrate with 'edge-derain calibrate'")
    return CalibrationCache(path, int(header["version"]), header["algorithm"], scales)


def write_calibration_cache(path: str | os.PathLike, scales: dict[str, float], trt_version: int,
                            algorithm: str = "EntropyCalibration2") -> Path:
    """Write ``scales`` (tensor -> amax / 127) in TensorRT's cache format, e.g. to hand an edge_derain
    calibration to a pipeline that still uses implicit INT8. ``trt_version`` is the number TensorRT
    puts in the header (``NV_TENSORRT_VERSION``, e.g. 8601 for 8.6.1); TensorRT ignores a cache whose
    header does not match its version and algorithm."""
    from ..utils import atomic_write_bytes

    if not _HEADER_RE.match(f"TRT-{trt_version}-{algorithm}"):
        raise ValueError(f"trt_version must be a positive int and algorithm a word, got {trt_version!r}, {algorithm!r}")
    bad = [name for name, scale in scales.items() if not (scale > 0 and scale != float("inf"))]
    if bad or not scales:
        raise ValueError(f"cache scales must be finite and > 0 (tensor {bad[0]!r} is {scales[bad[0]]})" if bad
                         else "no scales to write")
    text = "\n".join([f"TRT-{trt_version}-{algorithm}"] + [f"{name}: {float_to_hex(scale)}"
                                                           for name, scale in scales.items()]) + "\n"
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)


def table_from_cache(cache: CalibrationCache, model: onnx.ModelProto, convs: list[str]) -> QuantTable:
    """The activation scales of ``convs``' input tensors from ``cache``; weight scales are left to the weights.

    A cache that has none of those tensors is from another model; one that has only some of them is
    from another model or another export of it (tensor names changed): both are one-line errors,
    because silently leaving layers unquantized or guessing their scales would be worse.
    """
    by_name = {node.name: node for node in model.graph.node}
    needed = list(dict.fromkeys(by_name[name].input[0] for name in convs))
    missing = [tensor for tensor in needed if tensor not in cache.scales]
    if len(missing) == len(needed):
        example = next(iter(cache.scales))
        raise ValueError(f"calibration cache {cache.path} is from another model: it has no scale for any of the "
                         f"{len(needed)} tensors this graph quantizes (e.g. {needed[0]!r}; the cache has e.g. "
                         f"{example!r}); calibrate this model with 'edge-derain calibrate --calib DIR'")
    if missing:
        raise ValueError(f"calibration cache {cache.path} lacks scales for {len(missing)} of the {len(needed)} tensors "
                         f"this graph quantizes (e.g. {missing[0]!r}): it is from another model or another export of "
                         "it; calibrate this export with 'edge-derain calibrate --calib DIR'")
    bad = [tensor for tensor in needed if not 0 < cache.scales[tensor] < float("inf")]
    if bad:
        raise ValueError(f"calibration cache {cache.path} gives tensor {bad[0]!r} the scale {cache.scales[bad[0]]}; "
                         "scales must be finite and > 0, recalibrate")
    source = f"TensorRT calibration cache {cache.path.name} (TRT-{cache.version}-{cache.algorithm})"
    return QuantTable({tensor: cache.scales[tensor] for tensor in needed}, {}, source)
