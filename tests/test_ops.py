"""Numerical tests of the two custom operators (MODELS_SPEC §1 and §2).

Each efficient formulation is compared with its independent reference on random data; the layouts and
semantics both could share by mistake are pinned separately (one-hot kernel probes, a NumPy-computed
attention case, a deliberately tied top-k row).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edge_derain.ops import (check_dilation_filter_inputs, check_transposed_attention_inputs, dilation_filter,
                             dilation_filter_reference, topk_from_ratios, transposed_attention,
                             transposed_attention_reference)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# Operator A: dilation filter
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,h,w,dilations", [
    (1, 3, 13, 17, (1, 2, 3, 4)),
    (2, 3, 8, 8, (1, 2, 3, 4)),
    (3, 3, 1, 1, (1, 2, 3, 4)),
    (2, 3, 2, 3, (1, 2, 3, 4)),   # every dilation but 1 reaches past the image
    (2, 1, 5, 4, (1, 3)),
    (1, 4, 9, 6, (2,)),
    (2, 3, 7, 11, (5, 1, 2)),    # unsorted, larger than the image height
])
def test_dilation_filter_matches_reference_fp64(n, c, h, w, dilations):
    image = torch.rand(n, c, h, w, generator=_gen(1), dtype=F64)
    kernels = _randn(n, 9 * c, h, w, seed=2)
    fast = dilation_filter(image, kernels, dilations)
    ref = dilation_filter_reference(image, kernels, dilations)
    assert fast.shape == (n, c * len(dilations), h, w)
    assert fast.dtype == F64
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)


def test_dilation_filter_matches_reference_fp32():
    image = torch.rand(2, 3, 13, 17, generator=_gen(3))
    kernels = torch.randn(2, 27, 13, 17, generator=_gen(4))
    fast = dilation_filter(image, kernels)
    torch.testing.assert_close(fast, dilation_filter_reference(image, kernels), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.double(), dilation_filter_reference(image.double(), kernels.double()),
                               rtol=1e-5, atol=1e-5)


def test_dilation_filter_fp16_returns_fp16_close_to_fp64():
    image = torch.rand(1, 3, 9, 10, generator=_gen(5))
    kernels = torch.randn(1, 27, 9, 10, generator=_gen(6))
    try:
        out = dilation_filter(image.half(), kernels.half())
    except RuntimeError as err:  # some CPU builds lack half kernels
        pytest.skip(f"this torch build cannot run fp16 on CPU: {err}")
    assert out.dtype == torch.float16
    expected = dilation_filter_reference(image.half().double(), kernels.half().double())
    # Only the final cast rounds: the sums run in fp32.
    torch.testing.assert_close(out.double(), expected, rtol=2e-3, atol=2e-3)


def _shifted(plane: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = plane[y + dy, x + dx], zero outside the image (written with explicit loops)."""
    h, w = plane.shape
    out = np.zeros_like(plane)
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[y, x] = plane[y + dy, x + dx]
    return out


@pytest.mark.parametrize("op", [dilation_filter, dilation_filter_reference])
def test_dilation_filter_one_hot_probes_pin_layout(op):
    c, h, w, dilations = 3, 6, 7, (1, 2, 3, 4)
    image = torch.rand(1, c, h, w, generator=_gen(7), dtype=F64) + 0.5   # no zeros anywhere
    for channel in range(9 * c):
        colour, tap = divmod(channel, 9)        # colour-major: channel = 9c + 3i + j
        i, j = divmod(tap, 3)
        kernels = torch.zeros(1, 9 * c, h, w, dtype=F64)
        kernels[0, channel] = 1.0
        out = op(image, kernels, dilations)[0].numpy()
        for m, d in enumerate(dilations):
            for plane in range(c):
                expected = (_shifted(image[0, colour].numpy(), (i - 1) * d, (j - 1) * d)
                            if plane == colour else np.zeros((h, w)))
                np.testing.assert_array_equal(out[c * m + plane], expected,
                                              err_msg=f"kernel channel {channel}, dilation {d}, plane {plane}")


def test_dilation_filter_kernel_layout_is_colour_major_not_tap_major():
    # Channel 1 is (colour 0, tap 1 = up) colour-major; tap-major (3t + c) would read it as (tap 0, colour 1).
    image = torch.rand(1, 3, 5, 5, generator=_gen(8), dtype=F64) + 0.5
    kernels = torch.zeros(1, 27, 5, 5, dtype=F64)
    kernels[0, 1] = 1.0
    out = dilation_filter(image, kernels, (1,))[0]
    assert torch.equal(out[0, 1:], image[0, 0, :-1])     # the pixel one row up
    assert torch.equal(out[0, 0], torch.zeros(5, dtype=F64))  # border row: zero padding, not reflection
    assert torch.count_nonzero(out[1:]) == 0


def test_dilation_filter_border_is_zero_padded():
    image = torch.rand(1, 3, 4, 4, generator=_gen(9), dtype=F64) + 0.5
    kernels = torch.zeros(1, 27, 4, 4, dtype=F64)
    kernels[0, 9 * 2 + 8] = 1.0   # colour 2, bottom-right tap
    out = dilation_filter(image, kernels, (1, 3))[0]
    assert torch.equal(out[2, :3, :3], image[0, 2, 1:, 1:])
    assert torch.count_nonzero(out[2, 3, :]) == 0 and torch.count_nonzero(out[2, :, 3]) == 0
    # Dilation 3 reaches inside only from the top-left pixel.
    assert out[5, 0, 0] == image[0, 2, 3, 3]
    assert torch.count_nonzero(out[5]) == 1


@pytest.mark.parametrize("op", [dilation_filter, dilation_filter_reference])
def test_dilation_filter_gradcheck(op):
    image = torch.rand(1, 2, 4, 5, generator=_gen(10), dtype=F64, requires_grad=True)
    kernels = _randn(1, 18, 4, 5, seed=11).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, k: op(x, k, (1, 3)), (image, kernels))


@pytest.mark.parametrize("image_shape,kernel_shape,dilations,match", [
    ((3, 8, 8), (1, 27, 8, 8), (1,), r"image must be 4-D \(N, C, H, W\), got shape \(3, 8, 8\)"),
    ((1, 3, 8, 8), (1, 12, 8, 8), (1,), r"kernels must have 27 channels for a 3-channel image, got 12"),
    ((1, 3, 8, 8), (1, 27, 4, 8), (1,), r"kernels \(N, H, W\) = \(1, 4, 8\) must equal the image's \(1, 8, 8\)"),
    ((2, 3, 8, 8), (1, 27, 8, 8), (1,), r"must equal the image's \(2, 8, 8\)"),
    ((1, 3, 8, 8), (1, 27, 8, 8), (), r"dilations must be a non-empty sequence of positive ints"),
    ((1, 3, 8, 8), (1, 27, 8, 8), (1, 0), r"dilations must be positive ints, got 0"),
    ((1, 3, 8, 8), (1, 27, 8, 8), (1, 1.5), r"dilations must be positive ints, got 1.5"),
    ((1, 3, 8, 8), (1, 27, 8, 8), 2, r"dilations must be a non-empty sequence"),
])
def test_dilation_filter_rejects_bad_inputs(image_shape, kernel_shape, dilations, match):
    image = torch.rand(*image_shape)
    kernels = torch.rand(*kernel_shape)
    for fn in (check_dilation_filter_inputs, dilation_filter, dilation_filter_reference):
        with pytest.raises(ValueError, match=match):
            fn(image, kernels, dilations)


def test_dilation_filter_rejects_dtype_mismatch_and_integer_images():
    with pytest.raises(ValueError, match=r"kernels dtype torch.float64 differs from image dtype torch.float32"):
        dilation_filter(torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"image must be a floating-point tensor, got torch.uint8"):
        dilation_filter(torch.ones(1, 3, 4, 4, dtype=torch.uint8), torch.rand(1, 27, 4, 4))


# ----------------------------------------------------------------------------------------------------
# Operator B: transposed attention
# ----------------------------------------------------------------------------------------------------

def _attention_inputs(n, c, h, w, heads, seed):
    q, k, v = (_randn(n, c, h, w, seed=seed + i) for i in range(3))
    temperature = torch.rand(heads, generator=_gen(seed + 3), dtype=F64) * 2 + 0.5
    return q, k, v, temperature


def _mode_args(mode: str, channels_per_head: int, seed: int):
    """(topk, branch_weights) for a mode; weights are arbitrary signed numbers (they are not normalised)."""
    if mode == "dense":
        return None, None
    if mode == "sparse":
        return topk_from_ratios(channels_per_head, [0.6]), None
    if mode == "dual":
        return topk_from_ratios(channels_per_head, [0.7]), _randn(2, seed=seed)
    return topk_from_ratios(channels_per_head, [1 / 2, 2 / 3, 3 / 4, 4 / 5]), _randn(4, seed=seed)


@pytest.mark.parametrize("mode", ["dense", "sparse", "dual", "multi"])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_matches_reference(mode, heads):
    n, c, h, w = 2, 24, 5, 7   # odd H*W = 35
    q, k, v, temperature = _attention_inputs(n, c, h, w, heads, seed=20 + heads)
    topk, weights = _mode_args(mode, c // heads, seed=30)
    fast = transposed_attention(q, k, v, temperature, heads, mode, topk, weights)
    ref = transposed_attention_reference(q, k, v, temperature, heads, mode, topk, weights)
    assert fast.shape == q.shape and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    # The (h, 1, 1) parameter shape of Restormer-style blocks is accepted too.
    torch.testing.assert_close(transposed_attention(q, k, v, temperature.reshape(heads, 1, 1), heads, mode,
                                                    topk, weights), fast, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["dense", "dual"])
def test_attention_cross_attention_matches_reference(mode):
    # ELF's MAM: q comes from one stream, k and v from another.
    source = _randn(2, 16, 3, 5, seed=40)
    other = _randn(2, 32, 3, 5, seed=41)
    q, k, v = source, other[:, :16], other[:, 16:]
    temperature = torch.tensor([0.7, 1.9], dtype=F64)
    topk, weights = _mode_args(mode, 8, seed=42)
    fast = transposed_attention(q, k, v, temperature, 2, mode, topk, weights)
    ref = transposed_attention_reference(q, k, v, temperature, 2, mode, topk, weights)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    swapped = transposed_attention(k, q, v, temperature, 2, mode, topk, weights)
    assert not torch.allclose(fast, swapped), "q and k must play different roles"


def test_attention_fp32_matches_fp64_reference():
    q, k, v, temperature = _attention_inputs(2, 16, 9, 9, 2, seed=50)
    topk, weights = _mode_args("multi", 8, seed=51)
    fast = transposed_attention(q.float(), k.float(), v.float(), temperature.float(), 2, "multi", topk,
                                weights.float())
    assert fast.dtype == torch.float32
    ref = transposed_attention_reference(q, k, v, temperature, 2, "multi", topk, weights)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-5, atol=1e-5)


def _numpy_attention(q, k, v, tau, keep=None):
    """One head, written out: rows = query channels, softmax over key channels, tau multiplies."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    scores = tau * qn @ kn.T
    if keep is not None:
        threshold = np.sort(scores, axis=1)[:, -keep][:, None]
        scores = np.where(scores >= threshold, scores, -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)) @ v


def test_attention_hand_computed_tiny_case():
    q = np.array([[1.0, 2.0, -1.0], [0.5, -1.5, 2.0]])   # C_h = 2 channels, 3 positions
    k = np.array([[2.0, -1.0, 0.5], [-0.5, 1.0, 3.0]])
    v = np.array([[1.0, -2.0, 4.0], [3.0, 0.5, -1.0]])
    tau = 2.5
    args = [torch.from_numpy(a).reshape(1, 2, 1, 3) for a in (q, k, v)] + [torch.tensor([tau], dtype=F64), 1]
    for op in (transposed_attention, transposed_attention_reference):
        np.testing.assert_allclose(op(*args)[0, :, 0].numpy(), _numpy_attention(q, k, v, tau), rtol=1e-12)
        sparse = op(*args, mode="sparse", topk=[1])[0, :, 0].numpy()
        np.testing.assert_allclose(sparse, _numpy_attention(q, k, v, tau, keep=1), rtol=1e-12)
    # With k = 1 each query row attends to exactly its most similar key channel.
    qn, kn = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (q, k))
    np.testing.assert_allclose(sparse, v[np.argmax(qn @ kn.T, axis=1)], rtol=1e-12)


@pytest.mark.parametrize("op", [transposed_attention, transposed_attention_reference])
def test_attention_heads_own_contiguous_channel_blocks(op):
    q, k, v, temperature = _attention_inputs(1, 12, 3, 3, 3, seed=65)
    out = op(q, k, v, temperature, 3, "sparse", [2])
    for g in range(3):
        block = slice(4 * g, 4 * (g + 1))
        single = op(q[:, block], k[:, block], v[:, block], temperature[g:g + 1], 1, "sparse", [2])
        torch.testing.assert_close(out[:, block], single, rtol=0, atol=1e-12)


def test_attention_branch_weights_are_not_normalised():
    q, k, v, temperature = _attention_inputs(1, 8, 3, 3, 1, seed=60)
    dense = transposed_attention(q, k, v, temperature, 1)
    sparse = transposed_attention(q, k, v, temperature, 1, "sparse", [3])
    weights = torch.tensor([2.0, -0.5], dtype=F64)
    for op in (transposed_attention, transposed_attention_reference):
        dual = op(q, k, v, temperature, 1, "dual", [3], weights)
        torch.testing.assert_close(dual, 2.0 * dense - 0.5 * sparse, rtol=0, atol=1e-12)


def _tied_inputs():
    """One head, C_h = 4, H*W = 5; query row 0 scores [1, 1/sqrt2, 1/sqrt2, 0] * tau (exact tie)."""
    q = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=F64)
    k = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=F64)
    v = _randn(4, 5, seed=70)
    return q.reshape(1, 4, 1, 5), k.reshape(1, 4, 1, 5), v.reshape(1, 4, 1, 5), torch.tensor([1.5], dtype=F64)


@pytest.mark.parametrize("op", [transposed_attention, transposed_attention_reference])
def test_attention_threshold_semantics_keep_ties(op):
    q, k, v, temperature = _tied_inputs()
    out = op(q, k, v, temperature, 1, "sparse", [2])[0, 0, 0]
    # top-2 by index would keep 2 keys; the threshold keeps keys 0, 1 and 2 (1 and 2 tie at the threshold).
    s = 1.5 * np.array([1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    weights = np.exp(s) / np.exp(s).sum()
    expected = weights @ v[0, :3, 0].numpy()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    exactly_two = np.exp(s[:2]) / np.exp(s[:2]).sum() @ v[0, :2, 0].numpy()
    assert not np.allclose(out.numpy(), exactly_two)


@pytest.mark.parametrize("mode", ["dense", "sparse", "dual", "multi"])
@pytest.mark.parametrize("op", [transposed_attention, transposed_attention_reference])
def test_attention_gradcheck(op, mode):
    # Random continuous data has no ties, and finite-difference steps are far too small to move a
    # score across its row's threshold.
    q, k, v, temperature = _attention_inputs(1, 8, 2, 3, 2, seed=80)
    topk, weights = _mode_args(mode, 4, seed=81)
    inputs = [q, k, v, temperature] + ([weights] if weights is not None else [])
    inputs = [t.clone().requires_grad_() for t in inputs]

    def fn(q, k, v, temperature, weights=None):
        return op(q, k, v, temperature, 2, mode, topk, weights)

    assert torch.autograd.gradcheck(fn, tuple(inputs))


def test_attention_fp16_is_computed_in_fp32():
    # Sums of squares over H*W of values ~300 overflow fp16 (max 65504); the op must not.
    q, k, v, temperature = _attention_inputs(1, 8, 16, 16, 2, seed=90)
    q16, k16, v16 = (t.mul(300).half() for t in (q, k, v))
    try:
        out = transposed_attention(q16, k16, v16, temperature.half(), 2)
    except RuntimeError as err:
        pytest.skip(f"this torch build cannot run fp16 on CPU: {err}")
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    ref = transposed_attention_reference(q16.double(), k16.double(), v16.double(), temperature.half().double(), 2)
    torch.testing.assert_close(out.double(), ref, rtol=2e-3, atol=0.5)


def test_topk_from_ratios():
    assert topk_from_ratios(48, [1 / 2, 2 / 3, 3 / 4, 4 / 5]) == [24, 32, 36, 38]
    assert topk_from_ratios(96, [1 / 2, 2 / 3, 3 / 4, 4 / 5]) == [48, 64, 72, 76]
    assert topk_from_ratios(48, [0.7]) == [33] and topk_from_ratios(96, [0.7]) == [67]
    assert topk_from_ratios(3, [0.1]) == [1]   # clamped: every row keeps at least one entry
    with pytest.raises(ValueError, match=r"top-k ratios must lie in \(0, 1\], got 1.5"):
        topk_from_ratios(8, [1.5])
    with pytest.raises(ValueError, match=r"channels_per_head must be a positive int, got 0"):
        topk_from_ratios(0, [0.5])


_Q = torch.rand(1, 8, 3, 3)


@pytest.mark.parametrize("overrides,match", [
    (dict(q=torch.rand(8, 3, 3)), r"q must be 4-D \(N, C, H, W\), got shape \(8, 3, 3\)"),
    (dict(k=torch.rand(1, 8, 3, 4)), r"k shape \(1, 8, 3, 4\) differs from q shape \(1, 8, 3, 3\)"),
    (dict(v=torch.rand(1, 8, 3, 3, dtype=F64)), r"v is torch.float64 on cpu but q is torch.float32"),
    (dict(num_heads=3), r"num_heads must be a positive divisor of the channel count 8, got 3"),
    (dict(num_heads=0), r"num_heads must be a positive divisor of the channel count 8, got 0"),
    (dict(num_heads=2.0), r"num_heads must be an int, got 2.0"),
    (dict(temperature=torch.ones(3)), r"temperature must have shape \(2,\) or \(2, 1, 1\) for 2 heads, got \(3,\)"),
    (dict(temperature=2.0), r"temperature must be a floating-point tensor"),
    (dict(mode="topk"), r"unknown attention mode 'topk'; choose one of dense, sparse, dual, multi"),
    (dict(topk=[2]), r"mode 'dense' takes no topk"),
    (dict(mode="sparse"), r"mode 'sparse' needs topk as a non-empty list of ints, got None"),
    (dict(mode="sparse", topk=2), r"mode 'sparse' needs topk as a non-empty list of ints, got 2"),
    (dict(mode="sparse", topk=[2, 3]), r"mode 'sparse' takes exactly one topk value, got \[2, 3\]"),
    (dict(mode="sparse", topk=[5]), r"topk values must lie in \[1, 4\] \(channels per head\), got 5"),
    (dict(mode="sparse", topk=[0]), r"topk values must lie in \[1, 4\] \(channels per head\), got 0"),
    (dict(mode="sparse", topk=[2.5]), r"topk values must be an int, got 2.5"),
    (dict(mode="dual", topk=[2]), r"mode 'dual' needs branch_weights with 2 values, got None"),
    (dict(mode="dual", topk=[2], branch_weights=torch.ones(3)),
     r"branch_weights must have shape \(2,\) for mode 'dual', got \(3,\)"),
    (dict(mode="multi", topk=[1, 2, 3], branch_weights=torch.ones(2)),
     r"branch_weights must have shape \(3,\) for mode 'multi', got \(2,\)"),
    (dict(mode="multi", topk=[1, 2]), r"mode 'multi' needs branch_weights with 2 values, got None"),
    (dict(branch_weights=torch.ones(2)), r"branch_weights must have shape \(1,\) for mode 'dense', got \(2,\)"),
    (dict(eps=0.0), r"eps must be a positive number, got 0.0"),
])
def test_attention_rejects_bad_arguments(overrides, match):
    args = dict(q=_Q, k=_Q, v=_Q, temperature=torch.ones(2), num_heads=2, mode="dense", topk=None,
                branch_weights=None, eps=1e-12)
    args.update(overrides)
    for fn in (check_transposed_attention_inputs, transposed_attention, transposed_attention_reference):
        with pytest.raises(ValueError, match=match):
            fn(**args)
