"""Python IPluginV3 implementations of our two custom operators (spec §1, §2).

The ONNX exporter emits each operator as one node in domain ``edge_derain`` with the attributes
``plugin_version = "1"`` and ``plugin_namespace = ""``; TensorRT's ONNX parser maps it to the plugin
creator registered under the same name, version and namespace, passing the other attributes as fields:

* ``DilationFilter(image (N, C, H, W), kernels (N, 9·C, H, W)) -> (N, C·D, H, W)``, field ``dilations``;
* ``TransposedAttention(q, k, v (N, C, H, W), temperature (heads,)[, branch_weights (branches,)])
  -> (N, C, H, W)``, fields ``num_heads``, ``mode`` (string), ``topk`` (ints), ``eps``.

The plugins build on a CPU-only machine: nothing here touches CUDA until ``enqueue``, which hands the
device pointers to ``edge_derain.engine.kernel_lib`` (whose compiled library is loaded on the first
call only; its pure-Python workspace sizing is used at build time).

The classes derive from the TensorRT module that is in use (``tensorrt`` or ``tensorrt_rtx``), so they
are created per module by :func:`plugin_classes`; ``DilationFilterPlugin``, ``TransposedAttentionPlugin``
and their ``...Creator`` names as module attributes resolve to the classes of the detected flavour.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

DILATION_FILTER = "DilationFilter"
TRANSPOSED_ATTENTION = "TransposedAttention"
PLUGIN_NAMES = (DILATION_FILTER, TRANSPOSED_ATTENTION)
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
DEFAULT_DILATIONS = (1, 2, 3, 4)
ATTENTION_MODES = ("dense", "sparse", "dual", "multi")
TAPS = 9  # 3×3 kernel per colour plane and pixel
# ONNX attributes the parser uses to find the creator; some parser versions pass them on as fields.
_LOOKUP_FIELDS = {"plugin_version", "plugin_namespace"}

#: Why plugin creation or shape inference failed; TensorRT's parser reports only a generic message
#: ("Could not create the plugin", "output shape computation failed"), so the builder adds these.
plugin_errors: list[str] = []

_CLASSES: dict[str, dict[str, tuple[type, type]]] = {}
# Registered creators, kept alive here: TensorRT holds only a raw pointer to a Python creator.
_CREATORS: dict[str, dict[str, object]] = {}


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


@dataclass(frozen=True)
class AttentionConfig:
    """The TransposedAttention node's attributes, validated (spec §2.2)."""
    num_heads: int
    mode: str = "dense"
    topk: tuple[int, ...] = ()
    eps: float = 1e-12

    def __post_init__(self):
        if self.num_heads < 1:
            raise ValueError(f"TransposedAttention num_heads must be >= 1, got {self.num_heads}; "
                             "export the block's head count")
        if self.mode not in ATTENTION_MODES:
            raise ValueError(f"TransposedAttention mode {self.mode!r} is unknown; use one of "
                             f"{', '.join(ATTENTION_MODES)}")
        expected = {"dense": "no", "sparse": "exactly one", "dual": "exactly one", "multi": "1 or more"}[self.mode]
        count = len(self.topk)
        if (self.mode == "dense" and count) or (self.mode in ("sparse", "dual") and count != 1) or \
                (self.mode == "multi" and count == 0):
            raise ValueError(f"TransposedAttention mode {self.mode!r} takes {expected} topk values, got "
                             f"{list(self.topk)}; re-export the model")
        if any(t < 1 for t in self.topk):
            raise ValueError(f"TransposedAttention topk values must be >= 1, got {list(self.topk)}")
        if not self.eps > 0:
            raise ValueError(f"TransposedAttention eps must be positive, got {self.eps}; the default is 1e-12")
        # The kernels take eps as a float32, and so does the serialized field: one value everywhere.
        object.__setattr__(self, "eps", float(np.float32(self.eps)))

    @property
    def num_branches(self) -> int:
        return {"dense": 1, "sparse": 1, "dual": 2}.get(self.mode, len(self.topk))

    @property
    def needs_weights(self) -> bool:
        return self.mode in ("dual", "multi")


def _field_text(data) -> str:
    """A CHAR plugin field as str (the parser passes the ONNX string as bytes, maybe NUL-terminated)."""
    if isinstance(data, str):
        return data
    raw = bytes(data) if isinstance(data, (bytes, bytearray)) else np.asarray(data).reshape(-1).astype(np.uint8).tobytes()
    return raw.split(b"\0", 1)[0].decode()


def attention_config_from_fields(fields: Iterable) -> AttentionConfig:
    """Plugin fields (name, data) from the ONNX node -> validated AttentionConfig."""
    values: dict = {}
    for f in fields:
        if f.name == "num_heads":
            values["num_heads"] = int(np.asarray(f.data).reshape(-1)[0])
        elif f.name == "mode":
            values["mode"] = _field_text(f.data)
        elif f.name == "topk":
            values["topk"] = tuple(int(t) for t in np.asarray(f.data).reshape(-1))
        elif f.name == "eps":
            values["eps"] = float(np.asarray(f.data).reshape(-1)[0])
        elif f.name not in _LOOKUP_FIELDS:
            raise ValueError(f"TransposedAttention node has unknown attribute {f.name!r}; it takes num_heads, mode, "
                             "topk and eps (plus plugin_version / plugin_namespace)")
    if "num_heads" not in values:
        raise ValueError("TransposedAttention node has no num_heads attribute; re-export the model")
    return AttentionConfig(**values)


def check_attention_channels(config: AttentionConfig, channels: int | None) -> None:
    """C must split into num_heads heads of at most EDR_MAX_HEAD_CHANNELS, each >= every topk."""
    if channels is None:
        return
    from . import kernel_lib  # pure Python here: reads the header, loads no library

    if channels % config.num_heads:
        raise ValueError(f"TransposedAttention has {channels} channels, not divisible by num_heads="
                         f"{config.num_heads}; the block's dim must be a multiple of its head count")
    per_head, limit = channels // config.num_heads, kernel_lib.max_head_channels()
    if per_head > limit:
        raise ValueError(f"TransposedAttention has {per_head} channels per head, more than the plugin's {limit}; "
                         "use more heads or build the portable graph (the .portable.onnx that export writes)")
    if any(t > per_head for t in config.topk):
        raise ValueError(f"TransposedAttention topk {list(config.topk)} exceeds the {per_head} channels per head; "
                         "compute topk with topk_from_ratios(C_h, ratios)")


def check_attention_runtime_shapes(config: AttentionConfig, shapes: Sequence[Sequence[int]]) -> None:
    q = tuple(shapes[0])
    if len(q) != 4 or any(tuple(s) != q for s in shapes[1:3]):
        raise ValueError(f"TransposedAttention q, k, v must be equal 4-D NCHW shapes, got "
                         f"{[tuple(s) for s in shapes[:3]]}")
    check_attention_channels(config, q[1])
    if tuple(shapes[3]) != (config.num_heads,):
        raise ValueError(f"TransposedAttention temperature has shape {tuple(shapes[3])}, expected "
                         f"({config.num_heads},): one value per head")
    if len(shapes) > 4 and tuple(shapes[4]) != (config.num_branches,):
        raise ValueError(f"TransposedAttention branch_weights have shape {tuple(shapes[4])}, expected "
                         f"({config.num_branches},) for mode {config.mode!r}")


@contextlib.contextmanager
def _recording_errors():
    """Record a ValueError raised inside for the builder's report, and let it go on."""
    try:
        yield
    except ValueError as exc:
        plugin_errors.append(str(exc))
        raise


def _fail(message: str) -> None:
    """Record a build-time error for the builder's report and raise it (the parser turns it into an invalid node)."""
    plugin_errors.append(message)
    raise ValueError(message)


class _PluginPlumbing:
    """The ``IPluginV3`` plumbing both plugins share: identity, one output, clone and attach by re-creating from
    the plugin's one constructor argument, no tactics, linear FP32/FP16 formats, the kernel launcher bound on the
    first enqueue. Mixed into classes that derive from the TensorRT module in use (see :func:`_plugin_bases`)."""

    linear = float_types = None  # the TensorRT module's LINEAR format and FP32/FP16 types, set per module

    def _init_plumbing(self, name: str) -> None:
        self.plugin_name = name
        self.plugin_version = PLUGIN_VERSION
        self.plugin_namespace = PLUGIN_NAMESPACE
        self.num_outputs = 1
        self._launch = None  # bound on the first enqueue

    def constructor_argument(self):
        """What ``clone`` passes to the plugin's constructor."""
        raise NotImplementedError

    def type_fits(self, pos, in_out, num_inputs) -> bool:
        """Whether the (linear, float) type at ``pos`` agrees with the others the plugin ties it to."""
        raise NotImplementedError

    # --- core -----------------------------------------------------------------------------
    def get_capability_interface(self, capability_type):
        return self

    def clone(self):
        return type(self)(self.constructor_argument())

    # --- build ----------------------------------------------------------------------------
    def supports_format_combination(self, pos, in_out, num_inputs):
        # An exception escaping this callback aborts the process in some TensorRT versions.
        try:
            desc = in_out[pos].desc
            linear_float = desc.format == self.linear and desc.type in self.float_types
            return linear_float and self.type_fits(pos, in_out, num_inputs)
        except Exception:  # log and decline instead of letting it escape (see above)
            log.exception("%s.supports_format_combination failed at position %s", self.plugin_name, pos)
            return False

    def configure_plugin(self, inputs, outputs):
        # One kernel per dtype and no tactics: nothing to choose. Shape checks that may raise live
        # in get_output_shapes / on_shape_change, because raising here aborts some TensorRT versions.
        return None

    # --- runtime --------------------------------------------------------------------------
    def attach_to_context(self, context):
        return self.clone()

    def set_tactic(self, tactic):
        return None  # no tactics are offered (get_valid_tactics keeps its empty default)

    def launcher(self, name: str):
        """``kernel_lib.<name>`` bound to the loaded kernel library, on the first call only: ahead-of-time
        builds run on machines without the compiled kernels or a GPU."""
        if self._launch is None:
            from . import kernel_lib
            self._launch = functools.partial(getattr(kernel_lib, name), lib=kernel_lib.load_kernel_library())
        return self._launch


class _CreatorPlumbing:
    """The plugin-creator side both plugins share: identity, the field names, and ``create_plugin`` turning fields
    into a plugin while recording why it could not for the builder's report."""

    def _init_plumbing(self, name: str, field_names) -> None:
        self.name = name
        self.plugin_version = PLUGIN_VERSION
        self.plugin_namespace = PLUGIN_NAMESPACE
        self.field_names = field_names

    def plugin_from_fields(self, field_collection):
        raise NotImplementedError

    def create_plugin(self, name, field_collection, phase):
        try:
            return self.plugin_from_fields(field_collection)
        except Exception as exc:
            plugin_errors.append(f"{name or self.name}: {exc}")
            raise


def _plugin_bases(trt) -> tuple[type, type]:
    """The plumbing mixed into ``trt``'s plugin and creator bases: what each plugin class derives from."""

    class EdgeDerainPlugin(_PluginPlumbing, trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                           trt.IPluginV3OneRuntime):
        linear = trt.TensorFormat.LINEAR
        float_types = (trt.DataType.FLOAT, trt.DataType.HALF)

        def __init__(self, name: str):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self._init_plumbing(name)

    class EdgeDerainPluginCreator(_CreatorPlumbing, trt.IPluginCreatorV3One):
        def __init__(self, name: str, fields: Sequence[tuple[str, type, str]]):
            """``fields``: (name, NumPy dtype, PluginFieldType name) of each field the plugin takes."""
            trt.IPluginCreatorV3One.__init__(self)
            self._init_plumbing(name, trt.PluginFieldCollection([
                trt.PluginField(field, np.array([], dtype=dtype), getattr(trt.PluginFieldType, kind))
                for field, dtype, kind in fields]))

    return EdgeDerainPlugin, EdgeDerainPluginCreator


def _check_attention_build_inputs(config: AttentionConfig, inputs) -> None:
    """The input count, ranks and (where constant) channels of a TransposedAttention node at build time."""
    allowed = (5,) if config.needs_weights else (4, 5)
    if len(inputs) not in allowed:
        raise ValueError(f"TransposedAttention mode {config.mode!r} takes {' or '.join(map(str, allowed))} inputs "
                         f"(q, k, v, temperature, branch_weights), got {len(inputs)}")
    if any(len(x) != 4 for x in inputs[:3]):
        raise ValueError("TransposedAttention q, k and v must be 4-D NCHW")
    channels = inputs[0][1]
    check_attention_channels(config, channels.get_constant_value() if channels.is_constant() else None)


def _attention_field_values(config: AttentionConfig) -> list[tuple[str, np.ndarray, str]]:
    """(name, values, PluginFieldType name) of the fields a TransposedAttention plugin serialises."""
    return [("num_heads", np.asarray([config.num_heads], dtype=np.int32), "INT32"),
            ("mode", np.frombuffer(config.mode.encode(), dtype=np.int8).copy(), "CHAR"),
            ("topk", np.asarray(config.topk, dtype=np.int32), "INT32"),
            ("eps", np.asarray([config.eps], dtype=np.float32), "FLOAT32")]


def _attention_workspace_size(config: AttentionConfig, dims) -> int:
    """The kernels' scratch for an NCHW input of ``dims`` (the profile's largest at build time)."""
    from . import kernel_lib  # pure Python sizing: build machines need no compiled kernels

    n, c, h, w = (int(v) for v in dims)
    return kernel_lib.transposed_attention_workspace_size(n, c, h, w, config.num_heads)


def _kernel_dtype(trt, dtype) -> int:
    return 0 if dtype == trt.DataType.FLOAT else 1  # kernel_lib's EDR_FLOAT32 / EDR_FLOAT16


def _dilation_filter_classes(trt, bases: tuple[type, type]) -> tuple[type, type]:
    plugin_base, creator_base = bases

    class DilationFilterPlugin(plugin_base):
        def __init__(self, dilations: Iterable[int] = DEFAULT_DILATIONS):
            super().__init__(DILATION_FILTER)
            self.dilations = validate_dilations(dilations)

        def constructor_argument(self):
            return self.dilations

        def type_fits(self, pos, in_out, num_inputs) -> bool:
            return in_out[pos].desc.type == in_out[0].desc.type

        def get_output_data_types(self, input_types):
            if input_types[0] != input_types[1]:
                _fail(f"DilationFilter image and kernels must share one dtype, got {input_types[0].name} "
                      f"and {input_types[1].name}; cast both to the same precision in the ONNX")
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            # Raising here is safe: the parser turns it into an "invalid node" error.
            if len(inputs) != 2 or len(inputs[0]) != 4 or len(inputs[1]) != 4:
                raise ValueError("DilationFilter takes two 4-D NCHW inputs (image, kernels)")
            channels = [x[1].get_constant_value() if x[1].is_constant() else None for x in inputs]
            with _recording_errors():
                check_channels(*channels)
            out = trt.DimsExprs(inputs[0])
            out[1] = expr_builder.operation(trt.DimensionOperation.PROD, inputs[0][1],
                                            expr_builder.constant(len(self.dilations)))
            return [out]

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([
                trt.PluginField("dilations", np.asarray(self.dilations, dtype=np.int32),
                                trt.PluginFieldType.INT32)])

        def on_shape_change(self, inputs, outputs):
            check_runtime_shapes(tuple(inputs[0].dims), tuple(inputs[1].dims))

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            launch = self.launcher("launch_dilation_filter")
            n, c, h, w = (int(v) for v in input_desc[0].dims)
            launch(int(inputs[0]), int(inputs[1]), int(outputs[0]), _kernel_dtype(trt, input_desc[0].type),
                   n, c, h, w, self.dilations, int(stream))

    class DilationFilterPluginCreator(creator_base):
        def __init__(self):
            super().__init__(DILATION_FILTER, [("dilations", np.int32, "INT32")])

        def plugin_from_fields(self, field_collection):
            return DilationFilterPlugin(dilations_from_fields(field_collection))

    return DilationFilterPlugin, DilationFilterPluginCreator


def _transposed_attention_classes(trt, bases: tuple[type, type]) -> tuple[type, type]:
    plugin_base, creator_base = bases

    class TransposedAttentionPlugin(plugin_base):
        def __init__(self, config: AttentionConfig):
            super().__init__(TRANSPOSED_ATTENTION)
            self.config = config

        def constructor_argument(self):
            return self.config

        def type_fits(self, pos, in_out, num_inputs) -> bool:
            if pos < 3 or pos == num_inputs:  # q, k, v and the output: one data type
                return in_out[pos].desc.type == in_out[0].desc.type
            return pos == 3 or in_out[pos].desc.type == in_out[3].desc.type  # the parameters: another one

        def get_output_data_types(self, input_types):
            if len(set(input_types[:3])) != 1 or len(set(input_types[3:])) > 1:
                _fail(f"TransposedAttention q, k, v must share one dtype and temperature / branch_weights "
                      f"another, got {[t.name for t in input_types]}; cast them in the ONNX")
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            # Raising here is safe: the parser turns it into an "invalid node" error.
            with _recording_errors():
                _check_attention_build_inputs(self.config, inputs)
            return [trt.DimsExprs(inputs[0])]

        def get_workspace_size(self, inputs, outputs):
            return _attention_workspace_size(self.config, inputs[0].max)

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([
                trt.PluginField(name, values, getattr(trt.PluginFieldType, kind))
                for name, values, kind in _attention_field_values(self.config)])

        def on_shape_change(self, inputs, outputs):
            check_attention_runtime_shapes(self.config, [tuple(x.dims) for x in inputs])

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            launch = self.launcher("launch_transposed_attention")
            n, c, h, w = (int(v) for v in input_desc[0].dims)
            config = self.config
            weights = int(inputs[4]) if len(inputs) > 4 else None
            size = _attention_workspace_size(config, input_desc[0].dims)
            launch(int(inputs[0]), int(inputs[1]), int(inputs[2]), int(inputs[3]), weights, int(outputs[0]),
                   _kernel_dtype(trt, input_desc[0].type), _kernel_dtype(trt, input_desc[3].type), n, c, h, w,
                   config.num_heads, config.mode, config.topk, config.eps, int(workspace), size, int(stream))

    class TransposedAttentionPluginCreator(creator_base):
        def __init__(self):
            super().__init__(TRANSPOSED_ATTENTION, [("num_heads", np.int32, "INT32"), ("mode", np.int8, "CHAR"),
                                                    ("topk", np.int32, "INT32"), ("eps", np.float32, "FLOAT32")])

        def plugin_from_fields(self, field_collection):
            return TransposedAttentionPlugin(attention_config_from_fields(field_collection))

    return TransposedAttentionPlugin, TransposedAttentionPluginCreator


def plugin_classes(trt) -> dict[str, tuple[type, type]]:
    """{plugin name: (plugin class, creator class)}, deriving from this TensorRT module's bases."""
    key = trt.__name__
    if key not in _CLASSES:
        bases = _plugin_bases(trt)
        _CLASSES[key] = {DILATION_FILTER: _dilation_filter_classes(trt, bases),
                         TRANSPOSED_ATTENTION: _transposed_attention_classes(trt, bases)}
    return _CLASSES[key]


def register_python_plugins(trt=None) -> dict[str, object]:
    """Register our plugin creators with ``trt``'s plugin registry (idempotent); return {name: creator}.

    ``trt`` defaults to the detected flavour's module. Where another library (the C++ plugins) already
    registered a plugin of the same name, version 1 and namespace, that creator is kept and returned.
    """
    if trt is None:
        from .flavour import detect_tensorrt
        trt = detect_tensorrt().module
    key = trt.__name__
    if key not in _CREATORS:
        registry = trt.get_plugin_registry()
        creators = {}
        for name, (_, creator_class) in plugin_classes(trt).items():
            creator = creator_class()
            if not registry.register_creator(creator, PLUGIN_NAMESPACE):
                creator = registry.get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE)
                if creator is None:
                    from .flavour import TensorRTSetupError
                    raise TensorRTSetupError(f"{trt.__name__} refused to register the {name} plugin creator")
                log.info("%s v%s is already registered by another library; using that creator", name, PLUGIN_VERSION)
            creators[name] = creator
        _CREATORS[key] = creators
    return _CREATORS[key]


def plugin_fingerprint() -> dict:
    """What an engine's plugin layers depend on: plugin identities, this file, and the CUDA kernels.

    The kernel fields are None when ``kernel_lib`` is not part of this installation.
    """
    kernels_hash = kernels_version = None
    if importlib.util.find_spec(f"{__package__}.kernel_lib") is not None:
        kernel_lib = importlib.import_module(f"{__package__}.kernel_lib")
        kernels_hash = kernel_lib.kernel_sources_hash()
        kernels_version = kernel_lib.kernels_version()
    return {
        "plugins": [f"{name}/{PLUGIN_VERSION}@{PLUGIN_NAMESPACE}" for name in PLUGIN_NAMES],
        "python_plugin_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "kernels_sha256": kernels_hash,
        "kernels_version": kernels_version,
    }


def plugin_hash() -> str:
    return hashlib.sha256(json.dumps(plugin_fingerprint(), sort_keys=True).encode()).hexdigest()


def __getattr__(name: str):
    for plugin in PLUGIN_NAMES:
        if name in (f"{plugin}Plugin", f"{plugin}PluginCreator"):
            from .flavour import detect_tensorrt
            return plugin_classes(detect_tensorrt().module)[plugin][name.endswith("Creator")]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
