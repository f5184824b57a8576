"""The two custom operators, as plain differentiable PyTorch (MODELS_SPEC §1 and §2).

Each has an efficient formulation (what the models run and the TensorRT plugins implement) and an
independent reference built from standard ONNX ops (the plugin-free export and the test oracle).
"""
from .dilation_filter import check_dilation_filter_inputs, dilation_filter, dilation_filter_reference
from .transposed_attention import (check_transposed_attention_inputs, topk_from_ratios, transposed_attention,
                                   transposed_attention_reference)

__all__ = [
    "check_dilation_filter_inputs",
    "check_transposed_attention_inputs",
    "dilation_filter",
    "dilation_filter_reference",
    "topk_from_ratios",
    "transposed_attention",
    "transposed_attention_reference",
]
