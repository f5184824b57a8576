"""Run loaders on (mutated) files in a child process and report each outcome as one JSON line.

    python tests/support/fuzz_loaders.py CASES.json

``CASES.json`` lists ``{"loader": NAME, "path": FILE}``. For every case one line is printed as soon as it
finishes: ``{"case": i, "outcome": "ok" | "error" | "bug" | "hang", "type": ..., "message": ...}``:
``error`` is an exception the CLI prints as one line (``edge_derain.cli.USER_ERRORS``), ``bug`` any other
exception (a traceback for the user), ``hang`` a case that ran past its alarm. A crash of the process shows
as missing lines, so the parent knows the case that killed it. Loaders are the entry points the commands use.
"""
import json
import signal
import sys
from pathlib import Path

CASE_SECONDS = 30


def _onnx(path: str) -> None:
    from edge_derain.backends import open_backend
    from edge_derain.engine.builder import inspect_onnx

    inspect_onnx(path)
    open_backend(path)


def _engine_sidecar(path: str) -> None:
    from edge_derain.engine.cache import DeviceFingerprint, check_engine_compatible, read_sidecar

    sidecar = read_sidecar(Path(path).with_suffix(""))  # the engine's path; its sidecar is ENGINE.json
    check_engine_compatible(sidecar, DeviceFingerprint("tensorrt_rtx", "1.3.0", ("sm86",), "RTX A6000"))


def _checkpoint(path: str) -> None:
    from edge_derain.checkpoint import load_model

    load_model(Path(path).with_suffix(".safetensors"))


def _pipeline_toml(path: str) -> None:
    from edge_derain.gst.pipeline import PipelineOptions, compose

    compose(PipelineOptions(pipeline=path, source=None, derain=None, sink="fake", platform="desktop"))


def _calibration_manifest(path: str) -> None:
    from edge_derain.quant import CalibrationSet

    calib = CalibrationSet.load(Path(path).parent)
    for frame in calib.frames:
        calib.read_input(frame)


def _image(path: str) -> None:
    from edge_derain.data import read_image

    read_image(path)


LOADERS = {"onnx": _onnx, "engine_sidecar": _engine_sidecar, "checkpoint": _checkpoint,
           "pipeline_toml": _pipeline_toml, "calibration_manifest": _calibration_manifest, "image": _image}


class _Hang(BaseException):
    """Raised by the alarm; a BaseException, so no loader's ``except Exception`` swallows it."""


def _alarm(signum, frame):
    raise _Hang()


def main() -> int:
    from edge_derain.cli import USER_ERRORS

    cases = json.loads(Path(sys.argv[1]).read_text())
    signal.signal(signal.SIGALRM, _alarm)
    for index, case in enumerate(cases):
        signal.alarm(CASE_SECONDS)
        try:
            LOADERS[case["loader"]](case["path"])
            report = {"outcome": "ok"}
        except _Hang:
            report = {"outcome": "hang"}
        except USER_ERRORS as exc:
            report = {"outcome": "error", "type": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - what the fuzzing looks for
            report = {"outcome": "bug", "type": type(exc).__name__, "message": str(exc)}
        finally:
            signal.alarm(0)
        print(json.dumps({"case": index, **report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
