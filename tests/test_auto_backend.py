"""``--backend auto``: TensorRT only where the installed flavour builds for the local GPU, else ONNX Runtime
(CUDA provider when usable), else PyTorch; decided from explicit GPUs, flavours and provider lists.

The TensorRT-RTX flavour is the one installed here when there is one (its real list of targets), else a
description with RTX 1.7's list; full tensorrt 10.3 (JetPack 6) is described without the module.
"""
from __future__ import annotations

import enum
import json

import pytest

from edge_derain.backends.auto import AutoChoice, auto_backend, choose_backend
from edge_derain.cli import main
from edge_derain.engine.flavour import CudaDevice, TensorRTFlavour, TensorRTUnavailable, detect_tensorrt

ORIN = CudaDevice(0, "Orin", (8, 7), 8 << 30)
H100 = CudaDevice(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)
RTX_4090 = CudaDevice(0, "NVIDIA GeForce RTX 4090", (8, 9), 24 << 30)
ORT_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
ORT_CPU = ["CPUExecutionProvider"]
TRT10 = TensorRTFlavour("tensorrt", "10.3.0", None, has_precision_flags=True, supports_targets=False)


def _rtx() -> TensorRTFlavour:
    try:
        flavour = detect_tensorrt("tensorrt_rtx")
    except TensorRTUnavailable:
        targets = ["SM75", "SM80", "SM86", "SM89", "SM120", "SM121"]  # TensorRT-RTX 1.7
        module = type("RTX", (), {"ComputeCapability": enum.Enum("ComputeCapability", ["CURRENT", *targets])})
        flavour = TensorRTFlavour("tensorrt_rtx", "1.7", module, False, True)
    assert "sm87" not in flavour.supported_targets() and "sm90" not in flavour.supported_targets()
    return flavour


RTX = _rtx()


@pytest.mark.parametrize("device", [ORIN, H100], ids=["jetson-orin-sm87", "h100-sm90"])
def test_rtx_that_cannot_target_the_gpu_falls_back_to_onnx_runtime_on_cuda(device):
    choice = choose_backend(RTX, [device], ORT_CUDA)
    assert choice.kind == "ort" and choice.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert f"cannot build for the local {device.name} ({device.target}; it targets" in choice.reason
    assert "\n" not in choice.reason


def test_tensorrt_is_chosen_where_it_builds_for_the_gpu():
    assert choose_backend(RTX, [RTX_4090], ORT_CUDA) == AutoChoice(
        "trt", f"{RTX.label} builds engines for the local NVIDIA GeForce RTX 4090 (sm89)")
    assert choose_backend(TRT10, [ORIN], ORT_CUDA).kind == "trt"  # JetPack's tensorrt builds for its own GPU
    assert choose_backend(TRT10, [H100], None).kind == "trt"


def test_onnx_runtime_on_the_cpu_then_pytorch():
    no_trt = TensorRTUnavailable("neither tensorrt nor tensorrt_rtx is importable")
    cpu = choose_backend(no_trt, [], ORT_CUDA)  # a CUDA-enabled onnxruntime without a GPU runs on the CPU
    assert cpu.kind == "ort" and cpu.providers == ("CPUExecutionProvider",)
    assert cpu.reason == ("ONNX Runtime on the CPU (no CUDA GPU is visible), because TensorRT is not usable "
                          "(neither tensorrt nor tensorrt_rtx is importable)")
    cpu_build = choose_backend(RTX, [ORIN], ORT_CPU)
    assert cpu_build.providers == ("CPUExecutionProvider",) and "has no CUDA provider" in cpu_build.reason
    assert choose_backend(TRT10, [], ORT_CPU).reason.endswith("is installed but no CUDA GPU is visible to run "
                                                              "engines on")
    torch = choose_backend(RTX, [H100], None)
    assert torch.kind == "torch" and torch.providers == ()
    assert torch.reason.startswith("PyTorch, because onnxruntime is not installed and tensorrt_rtx")


def test_info_says_what_auto_picks_and_why(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    choice = auto_backend()
    assert info["auto_backend"]["backend"] == choice.kind and info["auto_backend"]["why"] == choice.reason
    assert choice.kind in ("trt", "ort", "torch") and choice.reason
