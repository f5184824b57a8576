"""The whole compile path on a CPU machine: model -> ONNX -> TensorRT-RTX engines -> cache -> CLI.

TensorRT-RTX builds real engines ahead of time without a GPU, so these tests prove that our exported
plugin graph (with the Python DilationFilter plugin registered in the build subprocess) compiles for
several GPU targets in FP32 and FP16. Running an engine needs a GPU and is covered by gpu_check.
"""
import json

import pytest
import torch

from edge_derain.cli import main
from edge_derain.engine import ShapeProfile, build_engine
from edge_derain.export import export_model
from edge_derain.models import create_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx") / "efderain"
    return export_model(create_model("efderain", width=0.25), out)


PROFILE = ShapeProfile((1, 3, 64, 64), (1, 3, 256, 256), (2, 3, 512, 512))


@pytest.mark.parametrize("precision,dtype", [("fp32", "Float"), ("fp16", "Half")])
@pytest.mark.parametrize("target", ["sm86", "sm89"])
def test_plugin_graph_builds_for_target(rtx, exported, tmp_path, precision, dtype, target):
    result = build_engine(exported.plugin_path, tmp_path / "e.engine", precision=precision, shapes=PROFILE,
                          target=target, flavour=rtx)
    assert result.engine_path.stat().st_size > 10_000
    plugins = [layer for layer in result.layers if layer.plugin == "DilationFilter"]
    assert len(plugins) == 1, result.layer_summary()
    assert dtype in plugins[0].datatypes
    assert f"accelerators={{{target} }}".encode() in result.engine_path.read_bytes()


def test_portable_graph_builds_without_plugins(rtx, exported, tmp_path):
    result = build_engine(exported.portable_path, tmp_path / "p.engine", precision="fp32", shapes=PROFILE,
                          target="sm86", flavour=rtx)
    assert not [layer for layer in result.layers if layer.plugin]


def test_cli_build_model_uses_cache_and_info_lists_it(rtx, tmp_path, capsys):
    args = ["build", "--model", "efderain", "--precision", "fp16", "--target", "sm86,sm89",
            "--shapes", "1x3x64x64:1x3x256x256:1x3x512x512", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("built: ") and "DilationFilter" in first and "Half" in first
    assert "strongly typed (no precision flags)" in first and " plugin, " in first
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("cached: ")
    assert main(["info", "--cache-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tensorrt"]["flavour"] == rtx.name
    [engine] = info["engines"]
    assert engine["precision"] == "fp16" and engine["targets"] == ["sm86", "sm89"] and engine["problem"] is None


def test_cli_build_rejects_bad_profile_in_one_line(rtx, exported, tmp_path, capsys):
    assert main(["build", "--onnx", str(exported.plugin_path), "--shapes", "1x3x64", "--cache-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_export_compare_bench(tmp_path, capsys):
    assert main(["export", "--weights", "efderain_w025", "--out", str(tmp_path / "m")]) == 0
    assert "1 DilationFilter" in capsys.readouterr().out
    portable = tmp_path / "m.portable.onnx"
    assert main(["compare", "--backend", str(portable), "--weights", "efderain_w025", "--sizes", "48x64", "37x53",
                 "--json", str(tmp_path / "cmp.json")]) == 0
    report = json.loads((tmp_path / "cmp.json").read_text())
    assert report["passed"] and all(r["max_abs_err"] < 1e-4 for r in report["results"])
    assert main(["bench", "--backend", "torch", f"ort={portable}", "--weights", "efderain_w025", "--res", "64x96", "--iters", "3",
                 "--warmup", "1", "--out", str(tmp_path / "bench")]) == 0
    bench = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert {r["backend"] for r in bench["results"]} == {"torch", "ort"}
    assert (tmp_path / "bench" / "benchmark.png").stat().st_size > 1000


def test_cache_key_covers_the_fp16_pass_and_the_plugin_library(rtx, exported, tmp_path, monkeypatch):
    from edge_derain.engine import EngineCache

    cache = EngineCache(tmp_path)
    fp32 = cache.key_for(exported.plugin_path, "fp32", PROFILE, "sm86", rtx)
    fp16 = cache.key_for(exported.plugin_path, "fp16", PROFILE, "sm86", rtx)
    assert fp32.conversion_hash is None and fp16.conversion_hash  # RTX converts the FP32 graph to FP16 casts
    library = tmp_path / "libedge_derain_plugins.so"
    library.write_bytes(b"a C++ plugin build")
    monkeypatch.setenv("EDGE_DERAIN_PLUGIN_LIB", str(library))
    assert cache.key_for(exported.plugin_path, "fp32", PROFILE, "sm86", rtx).plugin_hash != fp32.plugin_hash


def test_cli_weak_typing_needs_a_flavour_with_precision_flags(rtx, exported, tmp_path, capsys):
    assert main(["build", "--onnx", str(exported.plugin_path), "--precision", "int8", "--weak-typing",
                 "--target", "sm86", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "builds strongly typed networks only" in err and "--weak-typing" in err
    assert not list(tmp_path.glob("*.engine"))


def test_build_device_is_the_deprecated_spelling_of_target(rtx, exported, tmp_path, capsys):
    # `--device` means the PyTorch device everywhere else; on `build` it still names the targets, with one warning line.
    assert main(["build", "--onnx", str(exported.plugin_path), "--precision", "int8", "--weak-typing",
                 "--device", "sm86", "--cache-dir", str(tmp_path)]) == 2
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning == ("edge-derain build: warning: --device is deprecated here, use --target "
                       "(--device now means the PyTorch device only)")
    assert "builds strongly typed networks only" in error
    from edge_derain.cli import build_parser

    assert build_parser().parse_args(["build", "--device", "sm86,sm89"]).target == "sm86,sm89"
    assert "deprecated" in capsys.readouterr().err
    assert build_parser().parse_args(["build", "--target", "sm89"]).target == "sm89"
    assert build_parser().parse_args(["build"]).target == "auto"
    assert "deprecated" not in capsys.readouterr().err
