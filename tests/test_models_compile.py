"""The Transformer-free seed models through the whole compile path on a CPU machine: export, ONNX
Runtime parity, TensorRT-RTX engines in FP32 and FP16, and INT8 through the precision tooling.

Reduced configs keep it fast; the layer types and graph structure are those of the default configs.
"""
import numpy as np
import pytest
import torch

from edge_derain.backends import TorchBackend
from edge_derain.backends.ort_backend import OnnxRuntimeBackend
from edge_derain.engine import ShapeProfile, build_engine
from edge_derain.export import export_model
from edge_derain.models import create_model
from edge_derain.quant import calibrate, collect_from_recipe

SMALL = {"danet_plus": {"channels": 16, "cabs": 2}, "danet": {"channels": 16, "cabs": 2},
         "recanet": {"n1": 8, "mspam_widths": [8, 8, 16]}}
RECIPE = {"seed": 5, "clean_dir": "clean_bsd", "streak_dir": "streaks_garg06", "crop": [64, 64],
          "strata": [{"name": "light", "rain": "light", "count": 2, "holdout": 1},
                     {"name": "heavy", "rain": "heavy", "count": 2, "holdout": 1}]}
PROFILE = ShapeProfile((1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256))
# RECA-Net's instance norms export with train=True on purpose (they normalise by the input's own statistics).
pytestmark = pytest.mark.filterwarnings("ignore:ONNX export mode is set to TrainingMode.EVAL")


@pytest.fixture(scope="module", params=sorted(SMALL))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(request.param, **SMALL[request.param]).eval()
    return model, export_model(model, tmp_path_factory.mktemp("onnx") / request.param)


def test_portable_graph_matches_pytorch(exported):
    model, result = exported
    assert not result.custom_nodes  # standard ops only (RLCN as pooling ops)
    batch = np.random.default_rng(1).random((1, 3, 45, 70), dtype=np.float32)  # padded to the multiple
    reference = TorchBackend(model).run(batch)
    got = OnnxRuntimeBackend(result.portable_path).run(batch)
    assert np.abs(got - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())


@pytest.mark.parametrize("precision,dtype", [("fp32", "Float"), ("fp16", "Half")])
def test_engines_build_on_cpu(rtx, exported, tmp_path, precision, dtype):
    _, result = exported
    built = build_engine(result.plugin_path, tmp_path / "e.engine", precision=precision, shapes=PROFILE,
                         target="sm86", flavour=rtx)
    assert built.engine_path.stat().st_size > 10_000
    assert dtype in {d for layer in built.layers for d in layer.datatypes}


def test_int8_through_the_precision_tooling(rtx, exported, data_dir, tmp_path):
    _, result = exported
    calib = collect_from_recipe(data_dir, tmp_path / "calib", RECIPE)
    int8 = calibrate(result.plugin_path, tmp_path / "int8", calib_dir=calib.root)
    assert int8.record["int8_convs"] and int8.record["int8_coverage"] > 0.5
    built = build_engine(int8.plugin_path, tmp_path / "i.engine", precision="int8", shapes=PROFILE, target="sm86",
                         flavour=rtx)
    assert "Int8" in {d for layer in built.layers for d in layer.datatypes}
