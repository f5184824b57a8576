"""DDSA and RECA-Net: size against the spec, padding, train/eval outputs, losses, ONNX export numerics."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import edge_derain.models.ddsa as ddsa  # noqa: F401  (registers "ddsa")
import edge_derain.models.recanet as recanet  # noqa: F401  (registers "recanet" and its loss)
from edge_derain.losses import build_loss
from edge_derain.models import conv_macs, create_model, get_entry, parameter_count
from edge_derain.ops.transposed_attention import transposed_attention_reference

FP32_REL_TOL = 1e-4
TINY_DDSA = dict(dim=8, num_blocks=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), refinement_blocks=1)
TINY_RECA = dict(n1=8, ca_reduction=4, mspam_widths=(8, 8, 8))


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial running statistics, so BN folding at export is actually exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


# ------------------------------------------------------------------------------------------ sizes


@pytest.mark.slow
def test_ddsa_default_matches_spec_size_topk_and_branch_init():
    model = create_model("ddsa")
    count = parameter_count(model)
    assert count == 20_879_336 and round(count / 1e6, 2) == 20.88  # MODELS_SPEC §4.2 / §8
    assert conv_macs(model, 256, 256) / 1e9 == pytest.approx(99.0, abs=0.05)  # §4.2: 99.0 GMACs at 256²
    attentions = [m for m in model.modules() if isinstance(m, ddsa.DualAttention)]
    assert len(attentions) == 2 * (4 + 6 + 6) + 8 + 2
    # k = int(0.7 * C_h): 33 for C_h = 48, 67 for the 96-channel single-head full-resolution decoder.
    assert {(a.qkv.in_channels // a.num_heads, a.topk) for a in attentions} == {(48, 33), (96, 67)}
    assert all(torch.equal(a.branch_weights.detach(), torch.tensor([0.5, 0.5])) for a in attentions)


def test_recanet_default_matches_spec_size():
    model = create_model("recanet")
    assert parameter_count(model) == 2_818_852  # MODELS_SPEC §6.2 [VERIFIED for the reconstruction]
    assert parameter_count(recanet.RainAutoencoder()) == 2_026_211  # ECNet's Autoencoder, §6.3
    # ≈ 82 GMACs at 512²; conv MACs scale exactly with the area.
    assert conv_macs(model, 128, 128) * 16 / 1e9 == pytest.approx(82.26, abs=0.01)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="4 entries"):
        create_model("ddsa", num_blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="must divide"):
        create_model("ddsa", dim=8, num_heads=(3, 1, 1, 1))
    with pytest.raises(ValueError, match="n1 must be a positive int"):
        create_model("recanet", n1=0)


# ------------------------------------------------------------------------------ forward behaviour


@pytest.mark.parametrize("name, config", [("ddsa", TINY_DDSA), ("recanet", TINY_RECA)])
@pytest.mark.parametrize("size", [(20, 28), (13, 17), (16, 8)])
def test_forward_pads_any_size_and_returns_one_image(name, config, size):
    torch.manual_seed(0)
    model = create_model(name, **config).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
        outputs = model.core(F.pad(x, (0, (-size[1]) % 8, 0, (-size[0]) % 8), mode="replicate"))
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and torch.isfinite(y).all()
    assert len(outputs) == 1


def test_recanet_training_outputs_embedding_and_attention_maps():
    torch.manual_seed(0)
    model = create_model("recanet", **TINY_RECA).train()
    derained, embedding, *maps = model.forward_train(torch.rand(2, 3, 32, 24))
    assert derained.shape == (2, 3, 32, 24) and embedding.shape == (2, 64, 4, 3)
    assert [m.shape for m in maps] == [(2, 1, 32, 24), (2, 1, 16, 12), (2, 1, 8, 6)]
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)


def test_ddsa_attention_is_operator_b_dual_on_mdta_projections():
    """The block's attention equals the spec §2.5 reference chain in mode "dual" on its own projections."""
    torch.manual_seed(3)
    block = ddsa.DualAttention(16, 2).double()
    with torch.no_grad():
        block.temperature.copy_(torch.tensor([1.7, 0.6]).reshape(2, 1, 1))
        block.branch_weights.copy_(torch.tensor([0.3, 0.9]))
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = block.qkv_dw(block.qkv(x)).chunk(3, dim=1)
        expected = block.project_out(transposed_attention_reference(
            q, k, v, block.temperature, 2, mode="dual", topk=[5], branch_weights=block.branch_weights))
        assert block.topk == 5  # int(0.7 * 8)
        assert torch.allclose(block(x), expected, atol=1e-12)


def test_rlcn_matches_box_sum_formula():
    """RLCN via average pools equals the spec's explicit box sums with border-aware counts (§6.1)."""
    torch.manual_seed(4)
    image = torch.rand(2, 3, 14, 11, dtype=torch.float64)
    box = torch.ones(3, 1, 9, 9, dtype=torch.float64)
    s1 = F.conv2d(image, box, padding=4, groups=3)
    s2 = F.conv2d(image * image, box, padding=4, groups=3)
    n = F.conv2d(torch.ones_like(image), box, padding=4, groups=3)
    sigma = torch.sqrt((s2 - s1 * s1 / n) / (n - 1) + 1e-5)
    expected = ((image - s1 / n) / (sigma + 1e-5)).clamp(0, 1)
    result = recanet.rlcn(image)
    assert torch.allclose(result, expected, atol=1e-10)
    assert 0.1 < float((result > 0).double().mean()) < 0.9  # neither branch of the clamp is degenerate


# -------------------------------------------------------------------------------------------- losses


def _fit(model, loss_step, steps: int = 10) -> list[float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = loss_step()
        assert torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_ddsa_l1_loss_decreases():
    torch.manual_seed(5)
    model = create_model("ddsa", **TINY_DDSA).train()
    loss_fn = build_loss(get_entry("ddsa").default_loss)
    clean = torch.rand(2, 3, 16, 16)
    rainy = (clean + 0.3 * (torch.rand_like(clean) > 0.9)).clamp(0, 1)
    losses = _fit(model, lambda: loss_fn(model.forward_train(rainy)[0], clean))
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.slow
def test_recanet_loss_decreases_with_all_terms():
    torch.manual_seed(6)
    model = create_model("recanet", **TINY_RECA).train()
    autoencoder = recanet.RainAutoencoder(n1=8)
    loss_fn = build_loss("recanet", autoencoder=autoencoder)
    assert loss_fn.takes_all_outputs and loss_fn.needs_rainy_input
    clean = torch.rand(2, 3, 16, 16)
    rainy = (clean + 0.3 * (torch.rand_like(clean) > 0.9)).clamp(0, 1)
    frozen = [p.clone() for p in autoencoder.parameters()]
    losses = _fit(model, lambda: loss_fn(model.forward_train(rainy), clean, rainy=rainy))
    assert losses[-1] < 0.9 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(frozen, autoencoder.parameters()))
    loss_fn.train()
    assert not autoencoder.training and not any(p.requires_grad for p in autoencoder.parameters())


def test_recanet_loss_terms_and_errors():
    torch.manual_seed(7)
    clean = torch.rand(1, 3, 16, 16)
    rainy = clean.clone()
    rainy[..., 2:6, 3] += 0.2
    mask = recanet.rain_mask(rainy, clean)
    assert mask.shape == (1, 1, 16, 16) and int(mask.sum()) == 4
    assert torch.allclose(recanet.rain_layer(rainy, clean), 2 * (rainy - clean))
    # Perfect image and attention maps, no autoencoder: the loss is 1 − SSIM(B, B) = 0.
    with pytest.warns(UserWarning, match="rain-embedding term is skipped"):
        loss_fn = recanet.RECANetLoss()
    perfect = (clean, torch.zeros(1, 64, 2, 2), mask, F.max_pool2d(mask, 2), F.max_pool2d(mask, 4))
    assert float(loss_fn(perfect, clean, rainy=rainy)) == pytest.approx(0.0, abs=1e-6)
    wrong = (clean, perfect[1], 1 - mask, *perfect[3:])
    assert float(loss_fn(wrong, clean, rainy=rainy)) == pytest.approx(0.1, abs=1e-6)  # λ_att · MSE = 0.1 · 1
    with pytest.raises(ValueError, match="rainy input"):
        loss_fn(perfect, clean)
    with pytest.raises(ValueError, match="5 training outputs"):
        loss_fn((clean,), clean, rainy=rainy)
    with pytest.raises(FileNotFoundError, match="not found"):
        recanet.RECANetLoss(autoencoder="/nonexistent/ae.safetensors")


# -------------------------------------------------------------------------------------------- export


def _ort_run(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


# InstanceNorm (RECA-Net's stem, no running statistics) always normalises with the input's own statistics.
@pytest.mark.filterwarnings("ignore:ONNX export mode is set to TrainingMode.EVAL")
@pytest.mark.parametrize("name, config, custom", [("ddsa", TINY_DDSA, "TransposedAttention"),
                                                  ("recanet", TINY_RECA, None)])
def test_export_portable_matches_pytorch(tmp_path, name, config, custom):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_graphsurgeon")
    from edge_derain.export import export_model, list_custom_nodes

    torch.manual_seed(8)
    model = create_model(name, **config).eval()
    _randomise_batchnorm(model, 8)
    result = export_model(model, tmp_path / name)
    nodes = list_custom_nodes(onnx.load(str(result.plugin_path)))
    if custom is None:
        assert nodes == []
    else:
        assert len(nodes) == sum(isinstance(m, ddsa.DualAttention) for m in model.modules())
        for node in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert node.op_type == custom and attrs["mode"] == b"dual" and len(node.input) == 5
            assert attrs["topk"] in ([5], [11])  # int(0.7 * C_h) for C_h = 8, 16
    portable = onnx.load(str(result.portable_path))
    assert list_custom_nodes(portable) == []
    x = np.random.default_rng(8).random((1, 3, 24, 40), dtype=np.float32)
    with torch.no_grad():
        ref = model.core(torch.from_numpy(x))[0].numpy()
    assert _rel_err(_ort_run(result.portable_path, x), ref) <= FP32_REL_TOL
