"""Training losses (torch, differentiable) for (N, 3, H, W) images in [0, 1].

* ``l1``               — mean absolute error (DDSA, MODELS_SPEC §4.3).
* ``charbonnier``      — mean ``sqrt(d² + eps²)``, eps = 1e-3 (ELF/DANet, §3.5 and §5.5).
* ``ssim``             — ``1 − SSIM``; RECA-Net's ``L_image = −SSIM`` (§6.3) differs only by a constant.
* ``efderain``         — ``mean|Î − I_gt| − 0.2·SSIM(Î, I_gt)`` (EfficientDeRain, §7.3).
* ``charbonnier_ssim`` — ``Charb(pred, gt) + α·SSIM(pred, gt)``, α = −0.15 (ELF/DANet papers' per-branch
  loss, §3.5 Eq. 4).
* ``two_stage``        — that per-branch loss on both outputs of ELF/DANet: ``L_half + λ·L_full`` against
  the target and its bilinearly halved copy (§3.5, §5.5); takes the whole outputs tuple.

All SSIM terms use :func:`ssim_torch`, the training SSIM of the official repositories (zero-padded window
convolutions), which is not the evaluation metric of :mod:`edge_derain.metrics`.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["l1_loss", "charbonnier_loss", "ssim_torch", "L1Loss", "CharbonnierLoss", "SSIMLoss", "EfDeRainLoss",
           "CharbonnierSSIMLoss", "TwoStageLoss", "LOSSES", "build_loss"]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    # Broadcasting would silently compare, e.g., a batch against its first image.
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}; "
                         f"the loss needs tensors of the same (N, C, H, W) shape")


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements."""
    _check_pair(pred, target)
    return (pred - target).abs().mean()


def _check_eps(eps: float) -> None:
    if eps <= 0:
        raise ValueError(f"Charbonnier eps must be > 0 (it keeps the gradient finite at d = 0), got {eps}")


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((pred − target)² + eps²)`` over all elements (a smooth L1; ≈ L1 when |d| ≫ eps)."""
    _check_pair(pred, target)
    diff = pred - target
    return torch.sqrt(diff * diff + eps * eps).mean()


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    taps = torch.exp(-x * x / (2 * sigma * sigma))
    taps = taps / taps.sum()
    window = torch.outer(taps, taps).to(dtype=dtype, device=device)
    return window.expand(channels, 1, size, size).contiguous()


def ssim_torch(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
               data_range: float = 1.0) -> torch.Tensor:
    """Differentiable mean SSIM of two (N, C, H, W) batches, as used for training (MODELS_SPEC §3.5, §7.3).

    ``window``x``window`` Gaussian (``sigma``), C1 = (0.01·data_range)², C2 = (0.03·data_range)², local
    statistics from depth-wise convolutions with **zero padding** (``window // 2``, same-size SSIM map),
    population variances, mean over all pixels, channels and images.  This is the SSIM of the EfDeRain
    and Kui Jiang (ELF/DANet) training code.  Because the zero padding darkens the local means near the
    border, it differs from the evaluation metric (:func:`edge_derain.metrics.ssim`, which averages only
    where the window fits inside the image) within ``window // 2`` pixels of the border; identical inputs
    still give 1 (up to rounding).
    """
    _check_pair(pred, target)
    if pred.ndim != 4:
        raise ValueError(f"ssim_torch expects (N, C, H, W) tensors, got shape {tuple(pred.shape)}; "
                         f"add a batch dimension with x.unsqueeze(0)")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd size, got {window}")
    channels = pred.shape[1]
    kernel = _gaussian_window(window, sigma, channels, pred.dtype, pred.device)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, padding=window // 2, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = local_mean(pred), local_mean(target)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = local_mean(pred * pred) - mu_xx
    var_y = local_mean(target * target) - mu_yy
    cov = local_mean(pred * target) - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


class L1Loss(nn.Module):
    """Mean absolute error (DDSA's loss)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target)


class CharbonnierLoss(nn.Module):
    """Mean Charbonnier penalty ``sqrt(d² + eps²)``."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        _check_eps(eps)
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier_loss(pred, target, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class SSIMLoss(nn.Module):
    """``1 − ssim_torch(pred, target)`` (0 for identical images)."""

    def __init__(self, window: int = 11, sigma: float = 1.5, data_range: float = 1.0):
        super().__init__()
        self.window, self.sigma, self.data_range = window, sigma, data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim_torch(pred, target, self.window, self.sigma, self.data_range)

    def extra_repr(self) -> str:
        return f"window={self.window}, sigma={self.sigma}, data_range={self.data_range}"


class EfDeRainLoss(nn.Module):
    """EfficientDeRain's loss ``mean|Î − I_gt| − ssim_weight·SSIM(Î, I_gt)``, ssim_weight = 0.2 (§7.3).

    The value is negative once SSIM is high (e.g. L1 0.02, SSIM 0.9 → −0.16); only its decrease matters.
    """

    def __init__(self, ssim_weight: float = 0.2):
        super().__init__()
        # A wrong sign would train the network to destroy structure while the loss still decreases.
        if ssim_weight < 0:
            raise ValueError(f"ssim_weight must be >= 0 (the loss subtracts ssim_weight·SSIM; EfDeRain uses 0.2), "
                             f"got {ssim_weight}")
        self.ssim_weight = ssim_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target) - self.ssim_weight * ssim_torch(pred, target)

    def extra_repr(self) -> str:
        return f"ssim_weight={self.ssim_weight}"


class CharbonnierSSIMLoss(nn.Module):
    """``Charb(pred, gt) + α·SSIM(pred, gt)`` with α = −0.15, Charbonnier eps = 1e-3 (MODELS_SPEC §3.5).

    This is the per-branch loss of the ELF and DANet papers (Eq. 4: ``L = L_IDN + λ·L_BRN`` applies it to
    each stage's output).  The released ELF/DANet training code instead uses a weighted composite with an
    edge (Laplacian) term; this module is the paper's form for a single output.
    """

    def __init__(self, alpha: float = -0.15, eps: float = 1e-3):
        super().__init__()
        # A wrong sign would train the network to destroy structure while the loss still decreases.
        if alpha > 0:
            raise ValueError(f"alpha must be <= 0 (the loss adds alpha·SSIM; ELF/DANet use -0.15), got {alpha}")
        _check_eps(eps)
        self.alpha, self.eps = alpha, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier_loss(pred, target, self.eps) + self.alpha * ssim_torch(pred, target)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, eps={self.eps}"


class TwoStageLoss(nn.Module):
    """``L = L_half + λ·L_full``, each ``Charb + α·SSIM`` (ELF/DANet papers, MODELS_SPEC §3.5 Eq. 4, §5.5).

    Takes the model's whole outputs tuple ``(I_B, I_B,S, ...)``: the full-resolution output is compared
    with the target, the half-resolution one with the target bilinearly resized to its size
    (align_corners=False, no anti-aliasing, as the official code resizes). Defaults α = −0.15, λ = 1,
    eps = 1e-3. The released training code's composite with a Laplacian edge term is not this loss.
    """

    takes_all_outputs = True

    def __init__(self, alpha: float = -0.15, full_weight: float = 1.0, eps: float = 1e-3):
        super().__init__()
        if full_weight < 0:
            raise ValueError(f"full_weight (λ) must be >= 0, got {full_weight}; the papers use 1")
        self.stage_loss = CharbonnierSSIMLoss(alpha, eps)
        self.full_weight = full_weight

    def forward(self, outputs: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, (tuple, list)) or len(outputs) < 2:
            raise ValueError("the two-stage loss needs the model's (full, half) outputs tuple, got "
                             f"{type(outputs).__name__}; pass model.forward_train(x), not model(x)")
        full, half = outputs[0], outputs[1]
        half_target = F.interpolate(target, size=half.shape[-2:], mode="bilinear", align_corners=False)
        return self.stage_loss(half, half_target) + self.full_weight * self.stage_loss(full, target)

    def extra_repr(self) -> str:
        return f"full_weight={self.full_weight}"


LOSSES: dict[str, type[nn.Module]] = {
    "l1": L1Loss,
    "charbonnier": CharbonnierLoss,
    "ssim": SSIMLoss,
    "efderain": EfDeRainLoss,
    "charbonnier_ssim": CharbonnierSSIMLoss,
    "two_stage": TwoStageLoss,
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered as ``name`` (see :data:`LOSSES`) with keyword options."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    try:
        return cls(**kwargs)
    except TypeError as err:
        options = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                   if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        accepted = f"it accepts {', '.join(options)}" if options else "it takes no options"
        raise TypeError(f"bad options {kwargs} for loss {name!r} ({err}); {accepted}") from None
