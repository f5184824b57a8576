"""Precision stage: calibration sets, explicit INT8 (Q/DQ) graphs for TensorRT, legacy calibration caches,
accuracy-budgeted mixed precision and the per-precision accuracy-drop report.

One job per module: ``graphs`` (what calibration reads from an export), ``ort_calibration`` (activation ranges
from ONNX Runtime), ``table`` (the scales), ``qdq`` (Q/DQ written and checked), ``workflow`` (the ``calibrate``
command), ``legacy_cache``, ``sensitivity``, ``report``; the calibration sets: ``calibration_set`` (format, reading),
``set_writer``, ``recipe_set`` (the default set), ``media_set`` (footage).

Nothing here imports ONNX Runtime or TensorRT at import time. The workflow is documented in
``calibration/README.md``.
"""
from .calibration_set import CalibrationSet, Frame, HoldoutPair
from .graphs import quantizable_convs, quantized_convs_of
from .legacy_cache import CalibrationCache, read_calibration_cache, table_from_cache, write_calibration_cache
from .media_set import collect_from_media, rain_score
from .ort_calibration import METHODS, ort_quantize
from .qdq import check_trt_qdq, insert_qdq, qdq_problems
from .recipe_set import collect_from_recipe, load_recipe
from .report import precision_report, print_precision_report, write_precision_report
from .sensitivity import SensitivityPlan, conv_macs, greedy_plan, int8_coverage, plan_mixed_precision
from .table import QuantTable, read_quant_table
from .workflow import BudgetUnreachable, CalibrationResult, calibrate

__all__ = [
    "METHODS", "BudgetUnreachable", "CalibrationCache", "CalibrationResult", "CalibrationSet", "Frame",
    "HoldoutPair", "QuantTable", "SensitivityPlan", "calibrate", "check_trt_qdq", "collect_from_media",
    "collect_from_recipe", "conv_macs", "greedy_plan", "insert_qdq", "int8_coverage", "load_recipe", "ort_quantize",
    "plan_mixed_precision", "precision_report", "print_precision_report", "qdq_problems", "quantizable_convs",
    "quantized_convs_of", "rain_score", "read_calibration_cache", "read_quant_table", "table_from_cache",
    "write_calibration_cache", "write_precision_report",
]
