"""Model registry, EfficientDeRain structure and size, padding, and checkpoint round trips."""
import json

import numpy as np
import pytest
import torch

from edge_derain.checkpoint import load_model, read_sidecar, save_checkpoint
from edge_derain.models import conv_macs, create_model, list_models, pad_to_multiple, parameter_count
from edge_derain.ops import dilation_filter_reference


def test_efderain_width1_matches_paper_parameter_count_and_macs():
    model = create_model("efderain", width=1.0)
    assert parameter_count(model) == 27_395_406  # MODELS_SPEC §7.2 [VERIFIED]
    assert conv_macs(model, 512, 512) / 1e9 == pytest.approx(193.73, abs=0.005)  # conv-only GMACs at 512²


def test_registry_lists_and_rejects_unknown():
    assert "efderain" in [m.name for m in list_models()]
    with pytest.raises(ValueError, match="unknown model 'nope'.*efderain"):
        create_model("nope")
    with pytest.raises(ValueError, match="bad config for model 'efderain'"):
        create_model("efderain", depth=3)


@pytest.mark.parametrize("size", [(16, 16), (21, 37), (5, 7), (48, 33)])
def test_forward_any_size_keeps_shape(size):
    torch.manual_seed(0)
    model = create_model("efderain", width=0.125).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_padding_is_reflect_then_crop():
    x = torch.rand(1, 3, 20, 18)
    padded, size = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (32, 32) and size == (20, 18)
    assert torch.equal(padded[..., :20, :18], x)
    assert torch.equal(padded[..., 20, :18], x[..., 18, :])  # reflection about the last row


def test_core_equals_explicit_composition():
    """The model's filter stage is exactly operator A on the KPN output, then the fusion conv."""
    torch.manual_seed(1)
    model = create_model("efderain", width=0.125).eval().double()
    x = torch.rand(1, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        kernels = model.predict_kernels(x)
        expected = model.fusion(dilation_filter_reference(x, kernels, (1, 2, 3, 4)))
        assert torch.allclose(model.core(x)[0], expected, atol=1e-12)


def test_training_crop_must_be_multiple():
    model = create_model("efderain", width=0.125)
    with pytest.raises(ValueError, match="multiples of 16"):
        model.forward_train(torch.rand(1, 3, 24, 32))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(2)
    model = create_model("efderain", width=0.125)
    path = save_checkpoint(tmp_path / "ckpt", model, note="unit test")
    assert path.suffix == ".safetensors" and read_sidecar(path)["config"]["width"] == 0.125
    loaded = load_model(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors_are_one_line(tmp_path):
    model = create_model("efderain", width=0.125)
    path = save_checkpoint(tmp_path / "a", model)
    meta = read_sidecar(path)
    meta["config"]["width"] = 0.25
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit model efderain"):
        load_model(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="shipped names"):
        load_model(tmp_path / "missing.safetensors")


def test_shipped_default_weights_load_and_run():
    model = load_model()  # the project's default shipped weights
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    # Trained deraining output stays near the input range and is not a constant image.
    assert float(y.std()) > 0.05 and -0.5 < float(y.mean()) < 1.5
    assert np.isfinite(y.numpy()).all()


def test_checkpoint_of_a_model_with_shared_parameters(tmp_path):
    """ELF-LW shares one PReLU per sub-network (spec §0.5): it is stored once and fills every alias."""
    torch.manual_seed(3)
    model = create_model("elf_lw")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loaded = load_model(save_checkpoint(tmp_path / "elf", model))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    shared = loaded.idn.edb.encoders[0].blocks[0].act
    assert shared.weight is loaded.idn.edb.decoders[2].blocks[0].act.weight
