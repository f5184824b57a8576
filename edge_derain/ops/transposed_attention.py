"""Operator B: transposed (channel) attention with dense / top-k sparse branches (MODELS_SPEC §2).

Per batch item and head g (head-major contiguous channel split, C_h = C / num_heads channels each),
with rows = query channels and columns = key channels:

    P[i, j] = tau_g * <q_i, k_j> / (max(|q_i|, eps) * max(|k_j|, eps))     (L2 norms over H*W)
    A_m     = softmax_j(P)                         dense branch
            = softmax_j(P where P >= t_i else -inf) sparse branch, t_i = k_m-th largest of row i
    o       = (sum_m w_m A_m) @ v

Sparse masks use threshold semantics (ties at the k-th value keep more than k entries; spec §2.3, the
DDSA paper's definition) and fill with -inf (spec §2.3 [DISAGREE]: DDSA Eq. 5 says 0, DRSformer's code
uses -inf; -inf is the default). Temperature multiplies. Branch weights are free scalars, not
normalised.

Modes (spec §2.2):

* ``"dense"``  — one dense branch (Restormer MDTA, ELF); weight 1 unless one weight is given.
* ``"sparse"`` — one sparse branch, ``topk=[k]``; weight 1 unless one weight is given.
* ``"dual"``   — dense + sparse ``topk[0]`` (DDSA), two weights required. The DDSA default
  ``k = int(0.7 * C_h)`` and the weight init 0.5 are [UNKNOWN -> default] in the spec; they belong to
  the model, not to this op.
* ``"multi"``  — one sparse branch per k in ``topk`` and no dense one (DRSformer TKSA), ``len(topk)``
  weights required.

``topk`` holds Python ints fixed at build time (use :func:`topk_from_ratios`); never derive them from
tensor shapes, or ONNX export emits a data-dependent TopK that TensorRT < 10 rejects (spec §2.5).

Two independent formulations:

* :func:`transposed_attention` — normalises after the Gram GEMM (one pass fewer over H*W), selects
  thresholds with ``kthvalue`` and combines branches on the fly. This is what the models run and what
  the TensorRT plugin implements.
* :func:`transposed_attention_reference` — the spec §2.5 chain of standard ONNX ops (normalise first,
  MatMul, Mul tau, TopK + last value + GreaterOrEqual + Where(-inf), Softmax, Mul w, Sum, MatMul v):
  the plugin-free export and the test oracle.

Half-precision inputs are computed in FP32 (spec §2.4: norms over H*W overflow FP16) and the output is
cast back.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_nchw_float
from .dilation_filter import accumulation_dtype

MODES = ("dense", "sparse", "dual", "multi")


def topk_from_ratios(channels_per_head: int, ratios: Sequence[float]) -> list[int]:
    """Per-branch k values ``int(C_h * r)`` (each at least 1), as DRSformer and DDSA compute them.

    E.g. ``topk_from_ratios(48, [1/2, 2/3, 3/4, 4/5]) == [24, 32, 36, 38]``.
    """
    if isinstance(channels_per_head, bool) or not isinstance(channels_per_head, int) or channels_per_head < 1:
        raise ValueError(f"channels_per_head must be a positive int, got {channels_per_head!r}; "
                         "pass C // num_heads")
    for r in ratios:
        if not 0 < r <= 1:
            raise ValueError(f"top-k ratios must lie in (0, 1], got {r!r}; e.g. 0.7 keeps 70% of each row")
    return [max(1, int(channels_per_head * r)) for r in ratios]


def branch_topks(mode: str, topk: Sequence[int] | None) -> list[int | None]:
    """The k of every attention branch in summation order; ``None`` marks the dense branch.

    Assumes the arguments passed :func:`check_transposed_attention_inputs`.
    """
    if mode == "dense":
        return [None]
    if mode == "dual":
        return [None, topk[0]]
    return list(topk)


def _check_int(name: str, value, fix: str) -> int:
    try:
        result = operator.index(value)
    except TypeError:
        result = None
    if isinstance(value, bool) or result is None:
        raise ValueError(f"{name} must be an int, got {value!r}; {fix}")
    return result


def check_transposed_attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                      temperature: torch.Tensor, num_heads: int, mode: str = "dense",
                                      topk: Sequence[int] | None = None,
                                      branch_weights: torch.Tensor | None = None,
                                      eps: float = 1e-12) -> None:
    """Raise a one-line ValueError naming the problem and the fix if the arguments are inconsistent."""
    check_nchw_float(q=q, k=k, v=v)
    for name, tensor in (("k", k), ("v", v)):
        if tensor.shape != q.shape:
            raise ValueError(f"{name} shape {tuple(tensor.shape)} differs from q shape {tuple(q.shape)}; "
                             "q, k and v must have the same (N, C, H, W)")
        if tensor.dtype != q.dtype or tensor.device != q.device:
            raise ValueError(f"{name} is {tensor.dtype} on {tensor.device} but q is {q.dtype} on {q.device}; "
                             "cast q, k and v to the same dtype and device")
    heads = _check_int("num_heads", num_heads, "pass the block's head count")
    channels = q.shape[1]
    if heads < 1 or channels % heads:
        raise ValueError(f"num_heads must be a positive divisor of the channel count {channels}, got {heads}; "
                         "choose heads so that C % num_heads == 0")
    channels_per_head = channels // heads
    if not isinstance(temperature, torch.Tensor) or not temperature.is_floating_point():
        raise ValueError(f"temperature must be a floating-point tensor of shape ({heads},) or ({heads}, 1, 1), "
                         f"got {temperature!r}")
    if tuple(temperature.shape) not in ((heads,), (heads, 1, 1)):
        raise ValueError(f"temperature must have shape ({heads},) or ({heads}, 1, 1) for {heads} heads, "
                         f"got {tuple(temperature.shape)}; use one value per head")
    if mode not in MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "dense":
        if topk is not None:
            raise ValueError(f"mode 'dense' takes no topk, got {topk!r}; use mode 'dual' or 'sparse' for top-k")
    else:
        if isinstance(topk, (str, bytes)) or not isinstance(topk, Sequence) or len(topk) == 0:
            raise ValueError(f"mode {mode!r} needs topk as a non-empty list of ints, got {topk!r}; "
                             "e.g. topk=topk_from_ratios(C_h, [0.7])")
        if mode in ("sparse", "dual") and len(topk) != 1:
            raise ValueError(f"mode {mode!r} takes exactly one topk value, got {list(topk)}; "
                             "use mode 'multi' for several sparse branches")
        for value in topk:
            kth = _check_int("topk values", value, "compute them with topk_from_ratios")
            if not 1 <= kth <= channels_per_head:
                raise ValueError(f"topk values must lie in [1, {channels_per_head}] (channels per head), "
                                 f"got {kth}; compute them with topk_from_ratios")
    branches = len(branch_topks(mode, topk))
    if branch_weights is None:
        if mode in ("dual", "multi"):
            raise ValueError(f"mode {mode!r} needs branch_weights with {branches} values, got None; "
                             "pass the block's learnable branch weights")
    else:
        if not isinstance(branch_weights, torch.Tensor) or not branch_weights.is_floating_point():
            raise ValueError(f"branch_weights must be a floating-point tensor of shape ({branches},), "
                             f"got {branch_weights!r}")
        if tuple(branch_weights.shape) != (branches,):
            raise ValueError(f"branch_weights must have shape ({branches},) for mode {mode!r}, "
                             f"got {tuple(branch_weights.shape)}; pass one weight per branch")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}; the default is 1e-12")


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                         num_heads: int, mode: str = "dense", topk: Sequence[int] | None = None,
                         branch_weights: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Channel attention of ``q`` over ``k`` applied to ``v``; all (N, C, H, W), output (N, C, H, W)."""
    if torch.onnx.is_in_onnx_export():
        from .onnx import emit_custom_node, export_transposed_attention  # lazy: that module imports this one
        if emit_custom_node():
            return export_transposed_attention(q, k, v, temperature, num_heads, mode, topk, branch_weights, eps)
    check_transposed_attention_inputs(q, k, v, temperature, num_heads, mode, topk, branch_weights, eps)
    n, c, h, w = q.shape
    dtype = accumulation_dtype(q.dtype)
    channels_per_head = c // num_heads
    q_rows, k_rows, v_rows = (t.to(dtype).reshape(n, num_heads, channels_per_head, h * w) for t in (q, k, v))
    gram = q_rows @ k_rows.transpose(-2, -1)
    q_norm = torch.linalg.vector_norm(q_rows, dim=-1).clamp_min(eps)
    k_norm = torch.linalg.vector_norm(k_rows, dim=-1).clamp_min(eps)
    scale = temperature.to(dtype).reshape(num_heads, 1, 1) / (q_norm.unsqueeze(-1) * k_norm.unsqueeze(-2))
    scores = gram * scale

    weights = None if branch_weights is None else branch_weights.to(dtype)
    attention = None
    for index, kth in enumerate(branch_topks(mode, topk)):
        if kth is None:
            logits = scores
        else:
            # The k-th largest of a row is its (C_h - k + 1)-th smallest.
            threshold = scores.kthvalue(channels_per_head - kth + 1, dim=-1, keepdim=True).values
            logits = scores.masked_fill(scores < threshold, float("-inf"))
        branch = logits.softmax(dim=-1)
        if weights is not None:
            branch = branch * weights[index]
        attention = branch if attention is None else attention + branch
    return (attention @ v_rows).reshape(n, c, h, w).to(q.dtype)


def transposed_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   temperature: torch.Tensor, num_heads: int, mode: str = "dense",
                                   topk: Sequence[int] | None = None,
                                   branch_weights: torch.Tensor | None = None,
                                   eps: float = 1e-12) -> torch.Tensor:
    """Same result as :func:`transposed_attention`, as the spec §2.5 chain of standard ONNX ops."""
    check_transposed_attention_inputs(q, k, v, temperature, num_heads, mode, topk, branch_weights, eps)
    n, c, h, w = q.shape
    dtype = accumulation_dtype(q.dtype)
    q_heads, k_heads, v_heads = (t.to(dtype).reshape(n, num_heads, c // num_heads, h * w) for t in (q, k, v))
    # F.normalize exports as ReduceL2 -> Max(eps) -> Div.
    q_hat = F.normalize(q_heads, dim=-1, eps=eps)
    k_hat = F.normalize(k_heads, dim=-1, eps=eps)
    scores = torch.matmul(q_hat, k_hat.transpose(-2, -1)) * temperature.to(dtype).reshape(num_heads, 1, 1)

    maps = []
    for kth in branch_topks(mode, topk):
        if kth is None:
            maps.append(torch.softmax(scores, dim=-1))
            continue
        kth_largest = torch.topk(scores, kth, dim=-1).values[..., kth - 1:kth]
        masked = torch.where(scores >= kth_largest, scores, torch.full_like(scores, float("-inf")))
        maps.append(torch.softmax(masked, dim=-1))
    stacked = torch.stack(maps)
    if branch_weights is not None:
        stacked = stacked * branch_weights.to(dtype).reshape(-1, 1, 1, 1, 1)
    attention = stacked.sum(dim=0)
    return torch.matmul(attention, v_heads).reshape(n, c, h, w).to(q.dtype)
