"""Python IPluginV3 implementation of custom operator A, the pixel-wise dilation filter (spec §1).

The ONNX exporter emits the operator as a node ``DilationFilter`` (domain ``edge_derain``) with inputs
``image`` (N, C, H, W) and ``kernels`` (N, 9·C, H, W), one output (N, C·D, H, W) and the attributes
``dilations``, ``plugin_version = "1"`` and ``plugin_namespace = ""``. TensorRT's ONNX parser maps such
a node to the plugin creator registered under the same name, version and namespace, passing the
remaining attributes as plugin fields.

The plugin builds on a CPU-only machine: nothing here touches CUDA until ``enqueue``, which hands the
device pointers to ``edge_derain.engine.kernel_lib`` (imported on the first call only).

The classes derive from the TensorRT module that is in use (``tensorrt`` or ``tensorrt_rtx``), so they
are created per module by :func:`plugin_classes`; ``DilationFilterPlugin`` and
``DilationFilterPluginCreator`` as module attributes resolve to the classes of the detected flavour.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PLUGIN_NAME = "DilationFilter"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
DEFAULT_DILATIONS = (1, 2, 3, 4)
TAPS = 9  # 3×3 kernel per colour plane and pixel
# ONNX attributes the parser uses to find the creator; some parser versions pass them on as fields.
_LOOKUP_FIELDS = {"plugin_version", "plugin_namespace"}

#: Why plugin creation or shape inference failed; TensorRT's parser reports only a generic message
#: ("Could not create the plugin", "output shape computation failed"), so the builder adds these.
plugin_errors: list[str] = []

_CLASSES: dict[str, tuple[type, type]] = {}
# Registered creators, kept alive here: TensorRT holds only a raw pointer to a Python creator.
_CREATORS: dict[str, object] = {}


def validate_dilations(dilations: Iterable) -> tuple[int, ...]:
    values = tuple(int(d) for d in dilations)
    if not values or any(d < 1 for d in values):
        raise ValueError(f"DilationFilter dilations must be positive integers, got {list(values)}; "
                         f"the EfficientDeRain default is {list(DEFAULT_DILATIONS)}")
    return values


def dilations_from_fields(fields: Iterable) -> tuple[int, ...]:
    """Plugin fields (name, data) from the ONNX node -> validated dilations (default [1, 2, 3, 4])."""
    dilations = DEFAULT_DILATIONS
    for f in fields:
        if f.name == "dilations":
            dilations = np.asarray(f.data).reshape(-1).tolist()
        elif f.name not in _LOOKUP_FIELDS:
            raise ValueError(f"DilationFilter node has unknown attribute {f.name!r}; "
                             "it takes only 'dilations' (plus plugin_version / plugin_namespace)")
    return validate_dilations(dilations)


def check_channels(image_channels: int | None, kernel_channels: int | None) -> None:
    """Kernels carry one 3×3 kernel per colour plane (colour-major), so they need 9·C channels."""
    if image_channels is not None and kernel_channels is not None and kernel_channels != TAPS * image_channels:
        raise ValueError(f"DilationFilter kernels must have {TAPS * image_channels} channels for a "
                         f"{image_channels}-channel image, got {kernel_channels}; pass the KPN's raw "
                         f"{TAPS * image_channels}-channel output")


def check_runtime_shapes(image: Sequence[int], kernels: Sequence[int]) -> None:
    if len(image) != 4 or len(kernels) != 4:
        raise ValueError(f"DilationFilter needs 4-D NCHW inputs, got image {tuple(image)} and kernels "
                         f"{tuple(kernels)}")
    check_channels(image[1], kernels[1])
    if (image[0], image[2], image[3]) != (kernels[0], kernels[2], kernels[3]):
        raise ValueError(f"DilationFilter kernels {tuple(kernels)} must have the image's N, H, W "
                         f"{(image[0], image[2], image[3])}; the KPN output must be at input resolution")


def _define_classes(trt) -> tuple[type, type]:
    linear = trt.TensorFormat.LINEAR
    float_types = (trt.DataType.FLOAT, trt.DataType.HALF)

    class DilationFilterPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                               trt.IPluginV3OneRuntime):
        def __init__(self, dilations: Iterable[int] = DEFAULT_DILATIONS):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.num_outputs = 1
            self.dilations = validate_dilations(dilations)
            self._launch = None  # bound on the first enqueue

        # --- core -----------------------------------------------------------------------------
        def get_capability_interface(self, capability_type):
            return self

        def clone(self):
            return DilationFilterPlugin(self.dilations)

        # --- build ----------------------------------------------------------------------------
        def get_output_data_types(self, input_types):
            if input_types[0] != input_types[1]:
                message = (f"DilationFilter image and kernels must share one dtype, got {input_types[0].name} "
                           f"and {input_types[1].name}; cast both to the same precision in the ONNX")
                plugin_errors.append(message)
                raise ValueError(message)
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            # Raising here is safe: the parser turns it into an "invalid node" error.
            if len(inputs) != 2 or len(inputs[0]) != 4 or len(inputs[1]) != 4:
                raise ValueError("DilationFilter takes two 4-D NCHW inputs (image, kernels)")
            channels = [x[1].get_constant_value() if x[1].is_constant() else None for x in inputs]
            try:
                check_channels(*channels)
            except ValueError as exc:
                plugin_errors.append(str(exc))
                raise
            out = trt.DimsExprs(inputs[0])
            out[1] = expr_builder.operation(trt.DimensionOperation.PROD, inputs[0][1],
                                            expr_builder.constant(len(self.dilations)))
            return [out]

        def supports_format_combination(self, pos, in_out, num_inputs):
            # An exception escaping this callback aborts the process in some TensorRT versions.
            try:
                desc = in_out[pos].desc
                return (desc.format == linear and desc.type in float_types
                        and desc.type == in_out[0].desc.type)
            except Exception:  # log and decline instead of letting it escape (see above)
                log.exception("DilationFilter.supports_format_combination failed at position %s", pos)
                return False

        def configure_plugin(self, inputs, outputs):
            # One kernel per dtype and no tactics: nothing to choose. Shape checks that may raise live
            # in get_output_shapes / on_shape_change, because raising here aborts some TensorRT versions.
            return None

        # --- runtime --------------------------------------------------------------------------
        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([
                trt.PluginField("dilations", np.asarray(self.dilations, dtype=np.int32),
                                trt.PluginFieldType.INT32)])

        def on_shape_change(self, inputs, outputs):
            check_runtime_shapes(tuple(inputs[0].dims), tuple(inputs[1].dims))

        def attach_to_context(self, context):
            return self.clone()

        def set_tactic(self, tactic):
            return None  # no tactics are offered (get_valid_tactics keeps its empty default)

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            if self._launch is None:
                # Imported here, never at build time: ahead-of-time builds run on machines without
                # the compiled kernels or a GPU.
                from . import kernel_lib
                self._launch = functools.partial(kernel_lib.launch_dilation_filter,
                                                 lib=kernel_lib.load_kernel_library())
            n, c, h, w = (int(v) for v in input_desc[0].dims)
            dtype = 0 if input_desc[0].type == trt.DataType.FLOAT else 1  # kernel_lib's EDR_FLOAT32 / EDR_FLOAT16
            self._launch(int(inputs[0]), int(inputs[1]), int(outputs[0]), dtype, n, c, h, w, self.dilations,
                         int(stream))

    class DilationFilterPluginCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField("dilations", np.array([], dtype=np.int32), trt.PluginFieldType.INT32)])

        def create_plugin(self, name, field_collection, phase):
            try:
                return DilationFilterPlugin(dilations_from_fields(field_collection))
            except Exception as exc:
                plugin_errors.append(f"{name or PLUGIN_NAME}: {exc}")
                raise

    return DilationFilterPlugin, DilationFilterPluginCreator


def plugin_classes(trt) -> tuple[type, type]:
    """(DilationFilterPlugin, DilationFilterPluginCreator) deriving from this TensorRT module's bases."""
    key = trt.__name__
    if key not in _CLASSES:
        _CLASSES[key] = _define_classes(trt)
    return _CLASSES[key]


def register_python_plugins(trt=None):
    """Register the DilationFilter creator with ``trt``'s plugin registry (idempotent); return the creator.

    ``trt`` defaults to the detected flavour's module. When another library (the C++ plugin) already
    registered DilationFilter v1 in the same namespace, that creator is kept and returned.
    """
    if trt is None:
        from .flavour import detect_tensorrt
        trt = detect_tensorrt().module
    key = trt.__name__
    if key not in _CREATORS:
        registry = trt.get_plugin_registry()
        creator = plugin_classes(trt)[1]()
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            creator = registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
            if creator is None:
                from .flavour import TensorRTSetupError
                raise TensorRTSetupError(f"{trt.__name__} refused to register the {PLUGIN_NAME} plugin creator")
            log.info("%s v%s is already registered by another library; using that creator",
                     PLUGIN_NAME, PLUGIN_VERSION)
        _CREATORS[key] = creator
    return _CREATORS[key]


def plugin_fingerprint() -> dict:
    """What an engine's plugin layers depend on: plugin identity, this file, and the CUDA kernels.

    The kernel fields are None when ``kernel_lib`` is not part of this installation.
    """
    kernels_hash = kernels_version = None
    if importlib.util.find_spec(f"{__package__}.kernel_lib") is not None:
        kernel_lib = importlib.import_module(f"{__package__}.kernel_lib")
        kernels_hash = kernel_lib.kernel_sources_hash()
        kernels_version = kernel_lib.kernels_version()
    return {
        "name": PLUGIN_NAME,
        "version": PLUGIN_VERSION,
        "namespace": PLUGIN_NAMESPACE,
        "python_plugin_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "kernels_sha256": kernels_hash,
        "kernels_version": kernels_version,
    }


def plugin_hash() -> str:
    return hashlib.sha256(json.dumps(plugin_fingerprint(), sort_keys=True).encode()).hexdigest()


def __getattr__(name: str):
    index = {"DilationFilterPlugin": 0, "DilationFilterPluginCreator": 1}.get(name)
    if index is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .flavour import detect_tensorrt
    return plugin_classes(detect_tensorrt().module)[index]
