"""Kui Jiang family (MODELS_SPEC §0, §3, §5): shared blocks, ELF / ELF-LW, DANet / DANet◆, two-stage loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_derain.losses import CharbonnierSSIMLoss, build_loss
from edge_derain.models import conv_macs, create_model, get_entry, parameter_count, thop_parameter_count
from edge_derain.models.blocks import (MDTA, LayerNorm2d, ShuffleUpConv, half_resolution, shuffle_up,
                                       shuffle_up_permutation)
from edge_derain.models.elf import quadrant_stack

# ----------------------------------------------------------------------------------------------- blocks


def test_shuffle_up_matches_spec_formula_and_depth_to_space_form():
    torch.manual_seed(0)
    t = torch.randn(2, 12, 5, 7)
    ref = torch.empty(2, 3, 10, 14)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                ref[:, c, dy::2, dx::2] = t[:, 4 * c + 2 * dx + dy]  # spec §0.8: first sub-index = column
    assert torch.equal(shuffle_up(t), ref)
    assert torch.equal(F.pixel_shuffle(t[:, shuffle_up_permutation(12)], 2), ref)

    layer = ShuffleUpConv(6, 3)
    official = torch.randn(12, 6, 3, 3)
    with torch.no_grad():
        layer.conv.weight.copy_(ShuffleUpConv.from_official_weight(official))
    x = torch.randn(1, 6, 4, 5)
    torch.testing.assert_close(layer(x), shuffle_up(F.conv2d(x, official, padding=1)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        shuffle_up(torch.randn(1, 6, 2, 2))


def test_layernorm2d_with_bias_and_bias_free():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 4, 5) * 3 + 1
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)

    bias_free = LayerNorm2d(6, bias=False)
    assert bias_free.bias is None
    var = x.var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(bias_free(x), x / torch.sqrt(var + 1e-5), rtol=1e-5, atol=1e-5)


def test_mdta_matches_restormer_formula():
    torch.manual_seed(2)
    attn = MDTA(8, 2)
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.7, 1.9]).view(2, 1, 1))
    x = torch.randn(2, 8, 6, 5)
    q, k, v = (t.reshape(2, 2, 4, 30) for t in attn.qkv_dwconv(attn.qkv(x)).chunk(3, dim=1))
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * attn.temperature
    ref = attn.project_out((scores.softmax(-1) @ v).reshape(2, 8, 6, 5))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisor"):
        MDTA(8, 3)


def test_half_resolution_is_bilinear_and_quadrants_tile():
    x = torch.rand(1, 3, 8, 12)
    torch.testing.assert_close(half_resolution(x), F.interpolate(x, scale_factor=0.5, mode="bilinear",
                                                                 align_corners=False))
    q = quadrant_stack(x)
    assert torch.equal(q[:, 3:6], x[..., :4, 6:]) and torch.equal(q[:, 6:9], x[..., 4:, :6])


# ------------------------------------------------------------------------------------------ model sizes

@pytest.mark.parametrize("name, total, thop", [("elf", 1_536_785, 1_532_131), ("elf_lw", 568_308, 566_500),
                                               ("danet_plus", 2_943_138, 2_943_138),
                                               ("danet", 1_661_978, 1_661_978)])
def test_parameter_counts_match_spec(name, total, thop):
    model = create_model(name)
    assert parameter_count(model) == total
    assert thop_parameter_count(model) == thop
    assert get_entry(name).default_loss == "two_stage"


@pytest.mark.slow  # a 512x512 forward pass of each full-size model: 30-70 s apiece on a 2-core CPU
@pytest.mark.parametrize("name, gmacs", [("elf", 66.13), ("elf_lw", 21.35), ("danet_plus", 130.48)])
def test_conv_macs_at_512_match_spec(name, gmacs):
    assert conv_macs(create_model(name), 512, 512) / 1e9 == pytest.approx(gmacs, rel=5e-3)


# --------------------------------------------------------------------------------------------- forward

@pytest.mark.parametrize("name", ["elf", "elf_lw", "danet", "danet_plus"])
def test_forward_pads_and_train_outputs_are_full_and_half(name):
    torch.manual_seed(3)
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 37, 53)).shape == (1, 3, 37, 53)
        full, half = model.forward_train(torch.rand(2, 3, 32, 48))
    assert full.shape == (2, 3, 32, 48) and half.shape == (2, 3, 16, 24)
    assert torch.isfinite(full).all() and torch.isfinite(half).all()


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="GDFN activation"):
        create_model("elf", ffn_act="relu")
    with pytest.raises(ValueError, match="blocks_per_stage"):
        create_model("danet", edb_blocks=3)
    with pytest.raises(ValueError, match="even channel count"):
        create_model("danet_plus", channels=63)
    with pytest.raises(ValueError, match="multiples of 16"):
        create_model("elf_lw").forward_train(torch.rand(1, 3, 24, 32))


# ------------------------------------------------------------------------------------------------ loss

def test_two_stage_loss_combines_both_outputs():
    torch.manual_seed(4)
    target = torch.rand(2, 3, 32, 32)
    full, half = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 16, 16)
    loss = build_loss("two_stage", full_weight=0.5)
    assert loss.takes_all_outputs
    stage = CharbonnierSSIMLoss()
    expected = stage(half, F.avg_pool2d(target, 2)) + 0.5 * stage(full, target)
    torch.testing.assert_close(loss((full, half), target), expected)
    with pytest.raises(ValueError, match="outputs tuple"):
        loss(full, target)
    with pytest.raises(ValueError, match="full_weight"):
        build_loss("two_stage", full_weight=-1)


@pytest.mark.slow  # measured at ~100 s on the shared 2-core CPU machine
def test_loss_decreases_with_adam_on_small_elf():
    torch.manual_seed(5)
    model = create_model("elf_lw", channels=8, rtb_blocks=1)
    loss_fn = build_loss(get_entry("elf_lw").default_loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rainy, clean = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    losses = []
    for _ in range(10):
        loss = loss_fn(model.forward_train(rainy), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------- export

@pytest.mark.parametrize("name, config, attention_nodes", [
    pytest.param("elf", {"channels": 16, "rtb_blocks": 2}, 7, marks=pytest.mark.slow),  # IDN: 1 + 2, MAM: 1, BRN: 2 + 1
    ("danet_plus", {"channels": 16, "cabs": 2}, 0),
])
def test_export_portable_graph_matches_pytorch(tmp_path, name, config, attention_nodes):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_graphsurgeon")
    import onnx
    import onnxruntime as ort

    from edge_derain.export import export_model, list_custom_nodes

    torch.manual_seed(6)
    model = create_model(name, **config).eval()
    result = export_model(model, tmp_path / name)
    custom = list_custom_nodes(onnx.load(str(result.plugin_path)))
    assert [n.op_type for n in custom] == ["TransposedAttention"] * attention_nodes
    portable = onnx.load(str(result.portable_path))
    assert list_custom_nodes(portable) == []
    assert "DepthToSpace" in {n.op_type for n in portable.graph.node}

    session = ort.InferenceSession(str(result.portable_path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 48, 64)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model.core(x)[0].numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() / np.abs(ref).max() <= 1e-4
