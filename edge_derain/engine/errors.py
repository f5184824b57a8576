"""The errors of an engine build: one line for a person to read."""


class EngineBuildError(RuntimeError):
    """TensorRT failed to build an engine (or crashed while doing so)."""


class OnnxParseError(EngineBuildError):
    """The ONNX file could not be read or TensorRT's parser rejected it."""
