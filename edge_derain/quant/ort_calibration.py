"""Activation ranges from ONNX Runtime: ``quantize_static`` on the portable graph with the settings TensorRT's
explicit INT8 accepts (QDQ format, symmetric ``QInt8`` activations and per-channel weights, float bias)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx

from .graphs import graph_input

log = logging.getLogger(__name__)

#: ``--method`` -> ONNX Runtime CalibrationMethod member.
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
# Both figures: benchmarks/precision_cpu.py --weights efderain_w025 (results/precision_cpu_efderain_w025.json, rows
# 'entropy' and 'entropy at 2048 bins').
ENTROPY_WARNING = (
    "ONNX Runtime's entropy calibration is unreliable for restoration networks: at its default bin count "
    "(quantize_static cannot change it) it equals MinMax, and at 2048 bins it cost the shipped efderain_w025 "
    "8.7 dB; prefer minmax or percentile")
DEFAULT_PERCENTILE = 99.999


@contextlib.contextmanager
def _without_preprocess_advice() -> Iterator[None]:
    """quantize_static logs advice to run quant_pre_process, which we skip on purpose (stray opset imports)."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    dropper = _Drop()
    root.addFilter(dropper)
    try:
        yield
    finally:
        root.removeFilter(dropper)


def ort_quantize(portable_path: str | os.PathLike, convs: list[str], frames: Iterable[np.ndarray],
                 method: str = "minmax", percentile: float = DEFAULT_PERCENTILE) -> onnx.ModelProto:
    """Calibrate the portable graph on ``frames`` ((1, 3, H, W) float32) with ORT; return ORT's Q/DQ model.

    ``quantize_static`` with TensorRT's constraints (see the module docstring), restricted to ``convs``
    and to conv *inputs* (``OpTypesToExcludeOutputQuantization=["Conv"]``: no Q/DQ on conv outputs,
    whose double rounding before the ReLU TensorRT does not need). Ranges are made symmetric
    (``CalibTensorRangeSymmetric``) so ``amax`` means ``max |x|`` as for TensorRT. Methods:
    ``minmax``; ``percentile`` (``percentile`` of ``|x|``, 99.999 by default); ``entropy`` — ORT's
    entropy calibration is unreliable (``ENTROPY_WARNING``), it is offered for comparison only.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}; 99.999 is a good default")
    if method == "entropy":
        log.warning(ENTROPY_WARNING)
    input_name = graph_input(onnx.load(str(portable_path), load_external_data=False)).name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.frames = iter(frames)
            self.count = 0

        def get_next(self):
            frame = next(self.frames, None)
            if frame is None:
                return None
            self.count += 1
            return {input_name: frame}

    reader = _Reader()
    chatter = io.StringIO()  # the histogram calibrators print their progress
    with tempfile.TemporaryDirectory(prefix="edge_derain_quant_") as scratch, _without_preprocess_advice(), \
            contextlib.redirect_stdout(chatter):
        out = Path(scratch) / "int8.onnx"
        quantize_static(
            str(portable_path), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
            per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=list(convs), calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "OpTypesToExcludeOutputQuantization": ["Conv"], "CalibTensorRangeSymmetric": True,
                           "CalibPercentile": float(percentile),
                           # keeps weight scales at max|w| / 127 (the adjustment exists for int32 biases)
                           "QDQDisableWeightAdjustForInt32Bias": True})
        log.debug("onnxruntime calibration output: %s", chatter.getvalue().strip())
        if reader.count == 0:
            raise ValueError("the calibration set gave no frames; collect some with 'edge-derain calibrate collect'")
        return onnx.load(str(out))
