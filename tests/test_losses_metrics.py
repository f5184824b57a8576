"""Metrics (vs scikit-image) and training losses (vs direct numpy/scipy formulas and analytic values)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from edge_derain.losses import (LOSSES, CharbonnierSSIMLoss, EfDeRainLoss, SSIMLoss, build_loss, charbonnier_loss,
                                l1_loss, ssim_torch)
from edge_derain.metrics import MetricAccumulator, psnr, rgb_to_y, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")
ndimage = pytest.importorskip("scipy.ndimage")

SIZES = [(11, 11), (32, 48), (37, 53), (64, 41)]


def clean_and_degraded(shape: tuple[int, int], seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random image with fine texture and a noisy, slightly blurred copy (realistic PSNR/SSIM)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = rng.random((max(2, h // 6), max(2, w // 6), 3)).astype(np.float32)
    clean = 0.8 * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR) + 0.2 * rng.random((h, w, 3))
    degraded = cv2.GaussianBlur(clean, (3, 3), 0.7) + rng.normal(0.0, noise, clean.shape)
    return clean.astype(np.float64), np.clip(degraded, 0.0, 1.0)


def sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float, channel_axis: int | None) -> float:
    return skimage_metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                 data_range=data_range, channel_axis=channel_axis)


# ----------------------------------------------------------------------------------------------- metrics


def test_rgb_to_y_matches_skimage():
    img = np.random.default_rng(0).random((17, 23, 3))
    np.testing.assert_allclose(rgb_to_y(img), skimage_color.rgb2ycbcr(img)[..., 0], rtol=0, atol=1e-10)
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(235.0)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("noise", [0.02, 0.1])
def test_psnr_and_ssim_match_skimage(shape, noise):
    clean, degraded = clean_and_degraded(shape, seed=shape[0] * 100 + shape[1], noise=noise)
    y_pred, y_true = skimage_color.rgb2ycbcr(degraded)[..., 0], skimage_color.rgb2ycbcr(clean)[..., 0]

    ref_psnr_y = skimage_metrics.peak_signal_noise_ratio(y_true, y_pred, data_range=255)
    ref_psnr_rgb = skimage_metrics.peak_signal_noise_ratio(clean, degraded, data_range=1)
    ref_ssim_y = sk_ssim(y_pred, y_true, 255, None)
    ref_ssim_rgb = sk_ssim(degraded, clean, 1, -1)
    assert 15 < ref_psnr_y < 45 and 0.2 < ref_ssim_rgb < 0.99  # a realistic range, not a degenerate pair

    assert psnr(degraded, clean, "y") == pytest.approx(ref_psnr_y, abs=1e-9)
    assert psnr(degraded, clean, "rgb") == pytest.approx(ref_psnr_rgb, abs=1e-9)
    assert ssim(degraded, clean, "y") == pytest.approx(ref_ssim_y, abs=1e-9)
    assert ssim(degraded, clean, "rgb") == pytest.approx(ref_ssim_rgb, abs=1e-9)


def test_float32_inputs_match_float64_reference():
    clean, degraded = clean_and_degraded((40, 36), seed=7)
    c32, d32 = clean.astype(np.float32), degraded.astype(np.float32)
    c64, d64 = c32.astype(np.float64), d32.astype(np.float64)
    assert ssim(d32, c32, "rgb") == pytest.approx(sk_ssim(d64, c64, 1, -1), abs=1e-9)
    assert psnr(d32, c32, "rgb") == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(c64, d64, data_range=1), abs=1e-9)


def test_inputs_are_clipped_to_unit_range():
    clean, degraded = clean_and_degraded((24, 24), seed=3)
    overshoot = degraded.copy()
    overshoot[::3, ::2] += 0.5
    overshoot[1::4] -= 0.7
    clipped = np.clip(overshoot, 0, 1)
    for channel in ("y", "rgb"):
        assert psnr(overshoot, clean, channel) == psnr(clipped, clean, channel)
        assert ssim(overshoot, clean, channel) == ssim(clipped, clean, channel)
    assert psnr(clipped, clean, "rgb") == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(clean, clipped, data_range=1), abs=1e-9)


def test_identical_images():
    img = clean_and_degraded((20, 30), seed=1)[0]
    for channel in ("y", "rgb"):
        assert psnr(img, img.copy(), channel) == math.inf
        assert ssim(img, img.copy(), channel) == pytest.approx(1.0, abs=1e-12)


def test_metric_input_errors():
    a = np.random.default_rng(0).random((16, 16, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:15], "y")
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(a, a[:, :15], "rgb")
    with pytest.raises(ValueError, match="HxWx3"):
        psnr(a[..., 0], a[..., 1])
    with pytest.raises(ValueError, match="channel must be one of"):
        psnr(a, a, "ycbcr")
    with pytest.raises(ValueError, match=r"float image in \[0, 1\].*uint8"):
        psnr((a * 255).astype(np.uint8), a)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:10], a[:10])
    with pytest.raises(ValueError, match="3 channels"):
        rgb_to_y(a[..., :2])


def test_metric_accumulator():
    acc = MetricAccumulator()
    pairs = [clean_and_degraded((24, 32), seed=s) for s in (10, 11)]
    rows = [acc.add_pair(f"img{i}", degraded, clean, time_ms=5.0 * (i + 1))
            for i, (clean, degraded) in enumerate(pairs)]
    assert len(acc) == 2 and rows[0]["name"] == "img0"
    assert rows[1]["ssim_y"] == ssim(pairs[1][1], pairs[1][0], "y")
    means = acc.means()
    assert list(means) == ["psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "time_ms"]
    assert means["psnr_rgb"] == pytest.approx(np.mean([psnr(d, c, "rgb") for c, d in pairs]))
    assert means["time_ms"] == pytest.approx(7.5)
    acc.add("extra", input_psnr_y=20.0)  # a key only one row has: mean over that row
    assert acc.means()["input_psnr_y"] == 20.0 and acc.means()["time_ms"] == pytest.approx(7.5)
    assert acc.summary().startswith("3 images: psnr_y ")

    only_y = MetricAccumulator(channels=("y",))
    assert set(only_y.add_pair("a", pairs[0][1], pairs[0][0])) == {"name", "psnr_y", "ssim_y"}
    with pytest.raises(ValueError, match="channels must be"):
        MetricAccumulator(channels=("lab",))
    with pytest.raises(ValueError, match="no values"):
        acc.add("empty")


# ------------------------------------------------------------------------------------------------ losses


def reference_ssim_zero_padded(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Direct numpy/scipy SSIM with zero-padded Gaussian windows (11x11, sigma 1.5), mean over everything."""
    def blur(plane):
        return ndimage.gaussian_filter(plane, sigma=1.5, truncate=3.5, mode="constant", cval=0.0)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    maps = []
    for xp, yp in zip(x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:])):
        mx, my = blur(xp), blur(yp)
        vx, vy, cxy = blur(xp * xp) - mx ** 2, blur(yp * yp) - my ** 2, blur(xp * yp) - mx * my
        maps.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(maps))


def noisy_batch(shape, seed, noise=0.1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen, dtype=dtype)
    pred = (target + noise * torch.randn(shape, generator=gen, dtype=dtype)).clamp(0, 1)
    return pred, target


@pytest.mark.parametrize("shape", [(2, 3, 16, 20), (1, 3, 13, 17), (1, 3, 7, 9)])
def test_ssim_torch_matches_zero_padded_reference(shape):
    pred, target = noisy_batch(shape, seed=shape[2])
    ref = reference_ssim_zero_padded(pred.numpy(), target.numpy())
    assert 0.2 < ref < 0.99
    assert ssim_torch(pred, target).item() == pytest.approx(ref, abs=1e-10)
    assert ssim_torch(pred.float(), target.float()).item() == pytest.approx(ref, abs=2e-5)


def test_ssim_torch_constant_images_analytic():
    # For constant images c, d and zero padding, with s = the window mass inside the image at a pixel:
    # mu = c·s, var = c²·s(1−s), cov = c·d·s(1−s)  (s factorises into row and column partial sums).
    h, w, c, d = 14, 19, 0.7, 0.3
    taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    taps /= taps.sum()

    def mass(n):
        return np.array([sum(taps[k] for k in range(11) if 0 <= i + k - 5 < n) for i in range(n)])

    s = np.outer(mass(h), mass(w))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    v = s * (1 - s)
    expected = ((2 * c * d * s * s + c1) * (2 * c * d * v + c2)
                / (((c * c + d * d) * s * s + c1) * ((c * c + d * d) * v + c2)))
    x = torch.full((1, 3, h, w), c, dtype=torch.float64)
    y = torch.full((1, 3, h, w), d, dtype=torch.float64)
    assert ssim_torch(x, y).item() == pytest.approx(expected.mean(), abs=1e-12)
    # In the interior (s = 1) this is the plain luminance term; the border makes the mean differ from it.
    assert expected[7, 9] == pytest.approx((2 * c * d + c1) / (c * c + d * d + c1), abs=1e-12)
    assert abs(expected.mean() - expected[7, 9]) > 1e-3


def test_ssim_torch_identical_and_scale():
    pred, target = noisy_batch((2, 3, 24, 24), seed=5, dtype=torch.float32)
    assert ssim_torch(target, target.clone()).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim_torch(pred * 255, target * 255, data_range=255.0).item() == pytest.approx(
        ssim_torch(pred, target).item(), abs=1e-5)
    assert SSIMLoss()(pred, target).item() == pytest.approx(1.0 - ssim_torch(pred, target).item(), abs=1e-7)


def test_ssim_torch_gradcheck():
    pred, target = noisy_batch((1, 2, 7, 8), seed=2)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: ssim_torch(p, target), (pred,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_l1_and_charbonnier():
    pred, target = noisy_batch((2, 3, 8, 8), seed=4, dtype=torch.float32)
    d = (pred - target).numpy().astype(np.float64)
    assert l1_loss(pred, target).item() == pytest.approx(np.abs(d).mean(), rel=1e-6)
    assert charbonnier_loss(pred, target).item() == pytest.approx(np.sqrt(d * d + 1e-6).mean(), rel=1e-6)
    assert charbonnier_loss(pred, target, eps=0.1).item() == pytest.approx(np.sqrt(d * d + 1e-2).mean(), rel=1e-6)
    assert charbonnier_loss(target, target).item() == pytest.approx(1e-3, rel=1e-6)
    # |d| >> eps: Charbonnier ~ L1 (relative gap ~ eps²/(2d²))
    far = target + 0.4 * torch.sign(torch.rand_like(target) - 0.5)
    assert charbonnier_loss(far, target).item() == pytest.approx(l1_loss(far, target).item(), rel=1e-5)


def test_composite_losses_equal_their_formulas():
    pred, target = noisy_batch((2, 3, 20, 16), seed=8, dtype=torch.float64)
    l1, ch, s = l1_loss(pred, target), charbonnier_loss(pred, target), ssim_torch(pred, target)
    assert EfDeRainLoss()(pred, target).item() == pytest.approx((l1 - 0.2 * s).item(), abs=1e-12)
    assert CharbonnierSSIMLoss()(pred, target).item() == pytest.approx((ch - 0.15 * s).item(), abs=1e-12)
    assert build_loss("charbonnier_ssim", alpha=-0.3, eps=0.01)(pred, target).item() == pytest.approx(
        (charbonnier_loss(pred, target, 0.01) - 0.3 * s).item(), abs=1e-12)
    assert build_loss("efderain", ssim_weight=0.5)(pred, target).item() == pytest.approx((l1 - 0.5 * s).item(),
                                                                                          abs=1e-12)


# Single-image losses; multi-output losses (takes_all_outputs) are tested with their models.
@pytest.mark.parametrize("name", sorted(n for n, cls in LOSSES.items() if not getattr(cls, "takes_all_outputs", False)))
@pytest.mark.parametrize("identical", [False, True])
def test_gradients_flow(name, identical):
    pred, target = noisy_batch((2, 3, 16, 16), seed=9, dtype=torch.float32)
    start = target.clone() if identical else pred
    x = start.clone().requires_grad_(True)
    loss = build_loss(name)(x, target)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if not identical:
        assert x.grad.abs().sum() > 0
        # a small step against the gradient lowers the loss
        with torch.no_grad():
            stepped = (start - 1e-2 * x.grad / x.grad.abs().max()).clamp(0, 1)
        assert build_loss(name)(stepped, target).item() < loss.item()


def test_loss_errors():
    a = torch.rand(1, 3, 8, 8)
    for fn in (l1_loss, charbonnier_loss, ssim_torch, build_loss("efderain")):
        with pytest.raises(ValueError, match="shapes differ"):
            fn(a, a[..., :7])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ssim_torch(a[0], a[0])
    with pytest.raises(ValueError, match="odd"):
        ssim_torch(a, a, window=10)
    with pytest.raises(ValueError, match="unknown loss 'mse'; valid names: charbonnier, charbonnier_ssim, efderain"):
        build_loss("mse")
    with pytest.raises(TypeError, match="bad options .* 'l1'"):
        build_loss("l1", eps=1e-3)
    with pytest.raises(ValueError, match="alpha must be <= 0"):
        CharbonnierSSIMLoss(alpha=0.15)
    with pytest.raises(ValueError, match="ssim_weight must be >= 0"):
        EfDeRainLoss(ssim_weight=-0.2)
    with pytest.raises(ValueError, match="eps must be > 0"):
        build_loss("charbonnier", eps=0.0)
