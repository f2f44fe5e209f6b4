"""Triton fused log-softmax + gather (+ entropy) with a backward kernel.

Imported lazily (see :func:`flowrl.kernels.dispatch.load_triton_module`).

Forward: one program per token row streams the row once in ``BLOCK_V``
chunks, keeping an online log-sum-exp (running max ``m``, running
``sum exp(x - m)``) and, for the entropy, the running ``sum exp(x - m) * x``;
it writes ``logp``, ``lse`` and ``entropy`` (``O(N)`` fp32). No ``[N, V]``
buffer is allocated, so the forward pass reads the logits exactly once.

Backward: one program per row re-reads the logits and writes
``d logits = (g_lp * (onehot - p) - g_H * p * (log p + H)) / T`` in the
logits' dtype (``dH/dx_v = -p_v (log p_v + H)``): one read, one write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from .reference import compute_dtype


@triton.jit
def _logprob_fwd_kernel(
    x_ptr, t_ptr, lp_ptr, lse_ptr, ent_ptr,
    V, T, stride_b, stride_t, inv_temp,
    BLOCK_V: tl.constexpr, WITH_ENT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: N * V exceeds 2**31 at real sizes
    # logits are [B, T, V] with any row strides (e.g. logits[:, :-1] without a copy)
    x_row = x_ptr + (row // T) * stride_b + (row % T) * stride_t
    acc_ty = lp_ptr.dtype.element_ty
    offs = tl.arange(0, BLOCK_V)
    neg_inf = tl.full([BLOCK_V], float("-inf"), acc_ty)
    m = tl.max(neg_inf, axis=0)  # running max (scalar of acc_ty, loop-carried)
    s = tl.sum(tl.zeros([BLOCK_V], acc_ty), axis=0)  # running sum exp(x - m)
    w = s  # running sum exp(x - m) * x  (entropy)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + offs
        x = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(acc_ty) * inv_temp
        new_m = tl.maximum(m, tl.max(x, axis=0))
        # a chunk of only -inf (masked vocab) must not produce inf - inf = nan
        safe_m = tl.where(new_m == float("-inf"), 0.0, new_m)
        alpha = tl.exp(m - safe_m)
        e = tl.exp(x - safe_m)
        s = s * alpha + tl.sum(e, axis=0)
        if WITH_ENT:
            w = w * alpha + tl.sum(e * tl.where(e > 0, x, 0.0), axis=0)  # 0 * -inf -> 0
        m = new_m
    lse = tl.where(m == float("-inf"), 0.0, m) + tl.log(s)
    tgt = tl.load(t_ptr + row)
    # out-of-range targets give NaN instead of reading out of bounds
    x_t = tl.load(x_row + tgt, mask=(tgt >= 0) & (tgt < V), other=float("nan")).to(acc_ty) * inv_temp
    tl.store(lp_ptr + row, x_t - lse)
    tl.store(lse_ptr + row, lse)
    if WITH_ENT:
        tl.store(ent_ptr + row, lse - w / s)


@triton.jit
def _logprob_bwd_kernel(
    x_ptr, t_ptr, lse_ptr, ent_ptr, glp_ptr, gent_ptr, gx_ptr,
    V, T, stride_b, stride_t, inv_temp,
    BLOCK_V: tl.constexpr, HAS_GLP: tl.constexpr, HAS_GENT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + (row // T) * stride_b + (row % T) * stride_t
    gx_row = gx_ptr + row * V  # the gradient is allocated contiguous
    acc_ty = lse_ptr.dtype.element_ty
    offs = tl.arange(0, BLOCK_V)
    lse = tl.load(lse_ptr + row)
    tgt = tl.load(t_ptr + row)
    if HAS_GLP:
        g_lp = tl.load(glp_ptr + row).to(acc_ty)
    else:
        g_lp = tl.zeros([], acc_ty)
    if HAS_GENT:
        g_ent = tl.load(gent_ptr + row).to(acc_ty)
        ent = tl.load(ent_ptr + row)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + offs
        ok = cols < V
        x = tl.load(x_row + cols, mask=ok, other=0.0).to(acc_ty) * inv_temp
        logp = x - lse
        p = tl.exp(logp)
        g = tl.where(cols == tgt, g_lp, 0.0) - g_lp * p
        if HAS_GENT:
            g -= g_ent * p * (tl.where(p > 0, logp, 0.0) + ent)  # p = 0 where logp = -inf
        tl.store(gx_row + cols, (g * inv_temp).to(gx_ptr.dtype.element_ty), mask=ok)


def _pick_block(V: int, block_v: int | None, num_warps: int | None) -> tuple[int, int]:
    # Untuned heuristic (no GPU was available when this was written): 4096
    # elements (8 KiB of bf16) per iteration per program keeps enough bytes in
    # flight per SM; small vocabularies use one iteration. benchmarks/kernels.py
    # --sweep times the alternatives on a GPU.
    if block_v is None:
        block_v = min(triton.next_power_of_2(V), 4096)
    if block_v & (block_v - 1):
        raise ValueError(f"block_v must be a power of two, got {block_v}")
    return block_v, num_warps or (4 if block_v <= 1024 else 8)


class _TritonTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, logits: Tensor, targets: Tensor, temperature: float, with_entropy: bool,
        block_v: int | None, num_warps: int | None,
    ):
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        targets = targets.contiguous()
        B, T, V = logits.shape
        N = B * T
        cd = compute_dtype(logits.dtype)
        lp = torch.empty(N, dtype=cd, device=logits.device)
        lse = torch.empty(N, dtype=cd, device=logits.device)
        ent = torch.empty(N if with_entropy else 0, dtype=cd, device=logits.device)
        block, warps = _pick_block(V, block_v, num_warps)
        _logprob_fwd_kernel[(N,)](
            logits, targets, lp, lse, ent if with_entropy else lse,
            V, T, logits.stride(0), logits.stride(1), 1.0 / temperature,
            BLOCK_V=block, WITH_ENT=with_entropy, num_warps=warps,
        )
        ctx.save_for_backward(logits, targets, lse, ent)
        ctx.inv_temp, ctx.block_v, ctx.num_warps = 1.0 / temperature, block_v, num_warps
        if not with_entropy:
            ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp: Tensor | None, g_ent: Tensor | None):
        logits, targets, lse, ent = ctx.saved_tensors
        B, T, V = logits.shape
        N = B * T
        if ent.numel() == 0:
            g_ent = None
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        # grads of reductions such as .sum() arrive expanded (stride 0): make them real rows
        g_lp = g_lp.contiguous() if g_lp is not None else None
        g_ent = g_ent.contiguous() if g_ent is not None else None
        block, warps = _pick_block(V, ctx.block_v, ctx.num_warps)
        _logprob_bwd_kernel[(N,)](
            logits, targets, lse, ent if g_ent is not None else lse,
            g_lp if g_lp is not None else lse, g_ent if g_ent is not None else lse, grad,
            V, T, logits.stride(0), logits.stride(1), ctx.inv_temp,
            BLOCK_V=block, HAS_GLP=g_lp is not None, HAS_GENT=g_ent is not None, num_warps=warps,
        )
        return grad, None, None, None, None, None


def token_logprobs_triton(
    logits: Tensor, targets: Tensor, temperature: float, return_entropy: bool,
    block_v: int | None = None, num_warps: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``logits [N, V]`` or ``[B, T, V]`` (any row strides), flat ``targets [N]``
    -> flat ``(logp [N], entropy [N] or empty)``.

    ``block_v`` / ``num_warps`` override the launch heuristic (tests, tuning).
    """
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    return _TritonTokenLogprobs.apply(logits, targets, temperature, return_entropy, block_v, num_warps)
