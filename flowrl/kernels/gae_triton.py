"""Triton kernels for GAE and the GRPO group normalisation.

Imported lazily by :mod:`flowrl.kernels.api` (through
:func:`~flowrl.kernels.dispatch.load_triton_module`) so that the
``TRITON_INTERPRET`` setting in force at first use decides how the
``@triton.jit`` functions below are built.

GAE is the reverse linear recurrence ``A_t = delta_t + c_t * A_{t+1}`` with
``c_t = gamma * lam * m_{t+1}``. Each step is the affine map
``x -> c_t * x + delta_t``; composing maps is associative, so one program per
sequence computes every ``A_t`` with ``tl.associative_scan`` over ``(c, delta)``
pairs instead of a T-step loop. Sequences longer than ``BLOCK_T`` are walked
block by block from the end, carrying ``A`` at the block boundary.

Scan direction: by default the block is *loaded in reversed time order* and
scanned forward. ``tl.associative_scan(..., reverse=True)`` gives the same
result under the interpreter, but for non-commutative combine functions its
operand order on GPU has been reported wrong (triton-lang/triton#4362, open at
the time of writing); the forward scan's order is the well-tested one. The
``reverse=True`` variant stays available (``use_reverse_scan=True``) and is
tested under the interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .reference import compute_dtype


@triton.jit
def _affine_combine(a_acc, b_acc, a_cur, b_cur):
    # acc = composition of the maps of *later* time steps, cur = an earlier step:
    # cur(acc(x)) = a_cur * (a_acc * x + b_acc) + b_cur
    return a_cur * a_acc, a_cur * b_acc + b_cur


@triton.jit
def gae_kernel(
    r_ptr, v_ptr, m_ptr, adv_ptr, ret_ptr,
    T, stride_r, stride_v, stride_m, stride_o,
    gamma, gamma_lam,
    BLOCK_T: tl.constexpr, REVERSE_SCAN: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: B * T may exceed 2**31 elements
    r_ptr += row * stride_r
    v_ptr += row * stride_v
    m_ptr += row * stride_m
    adv_ptr += row * stride_o
    ret_ptr += row * stride_o
    acc_ty = adv_ptr.dtype.element_ty
    lane = tl.arange(0, BLOCK_T)
    carry = tl.sum(tl.zeros([BLOCK_T], dtype=acc_ty), axis=0)  # A at the first step after the block
    for blk in range(0, tl.cdiv(T, BLOCK_T)):
        end = T - blk * BLOCK_T  # exclusive end of this block in time
        if REVERSE_SCAN:
            t = end - BLOCK_T + lane  # natural order; the last lane is the latest step
        else:
            t = end - 1 - lane  # reversed order; lane 0 is the latest step
        ok = t >= 0
        ok_next = ok & (t + 1 < T)
        m_t = tl.load(m_ptr + t, mask=ok, other=0) != 0
        m_n = tl.load(m_ptr + t + 1, mask=ok_next, other=0) != 0
        # where() rather than * mask so NaN/garbage in padding cannot leak in
        v_t = tl.where(m_t, tl.load(v_ptr + t, mask=ok, other=0).to(acc_ty), 0.0)
        v_n = tl.where(m_n, tl.load(v_ptr + t + 1, mask=ok_next, other=0).to(acc_ty), 0.0)
        r_t = tl.load(r_ptr + t, mask=ok, other=0).to(acc_ty)
        delta = tl.where(m_t, r_t + gamma * v_n - v_t, 0.0)
        coef = tl.where(m_n, gamma_lam, 0.0).to(acc_ty)
        if REVERSE_SCAN:
            a, b = tl.associative_scan((coef, delta), 0, _affine_combine, reverse=True)
            first_lane = 0  # earliest step of the block
        else:
            a, b = tl.associative_scan((coef, delta), 0, _affine_combine)
            first_lane = BLOCK_T - 1
        adv = b + a * carry
        tl.store(adv_ptr + t, tl.where(m_t, adv, 0.0), mask=ok)
        tl.store(ret_ptr + t, tl.where(m_t, adv + v_t, 0.0), mask=ok)
        carry = tl.sum(tl.where(lane == first_lane, adv, 0.0), axis=0)


def _rowmajor(x: Tensor) -> Tensor:
    x = x if x.stride(-1) == 1 else x.contiguous()
    return x.view(torch.uint8) if x.dtype == torch.bool else x  # bool pointers: load as bytes


def gae_triton(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float,
    *, block_t: int | None = None, use_reverse_scan: bool = False,
) -> tuple[Tensor, Tensor]:
    """Triton GAE; same contract as :func:`flowrl.kernels.gae`. ``block_t`` (a power of two) is for tests."""
    B, T = rewards.shape
    cd = compute_dtype(torch.promote_types(rewards.dtype, values.dtype))
    adv = torch.empty(B, T, dtype=cd, device=rewards.device)
    ret = torch.empty_like(adv)
    if B == 0 or T == 0:
        return adv, ret
    r, v, m = _rowmajor(rewards), _rowmajor(values), _rowmajor(mask.to(rewards.device))
    if block_t is None:
        # one block for typical response lengths; longer ones loop over blocks
        block_t = min(triton.next_power_of_2(T), 2048)
    if block_t & (block_t - 1):
        raise ValueError(f"block_t must be a power of two, got {block_t}")
    gae_kernel[(B,)](
        r, v, m, adv, ret,
        T, r.stride(0), v.stride(0), m.stride(0), adv.stride(0),
        float(gamma), float(gamma * lam),
        BLOCK_T=block_t, REVERSE_SCAN=use_reverse_scan,
        num_warps=4 if block_t <= 512 else 8,
    )
    return adv, ret


@triton.jit
def group_norm_kernel(s_ptr, o_ptr, G, eps, BLOCK_G: tl.constexpr, SCALE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_G)
    ok = offs < G
    acc_ty = o_ptr.dtype.element_ty
    s = tl.load(s_ptr + row * G + offs, mask=ok, other=0).to(acc_ty)
    mean = tl.sum(s, axis=0) / G
    c = tl.where(ok, s - mean, 0.0)
    if SCALE:
        std = tl.sqrt(tl.sum(c * c, axis=0) / G)  # population std, as in the torch path
        c = c / (std + eps)
    tl.store(o_ptr + row * G + offs, c, mask=ok)


_MAX_GROUP = 1 << 14  # one program holds a whole group in registers


def group_normalize_triton(scores: Tensor, group_size: int, *, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """One program per group; groups larger than ``_MAX_GROUP`` use the torch path."""
    if group_size > _MAX_GROUP:
        from .reference import group_normalize_torch

        return group_normalize_torch(scores, group_size, eps=eps, scale=scale)
    s = scores.contiguous()
    out = torch.empty(s.shape, dtype=compute_dtype(s.dtype), device=s.device)
    block = triton.next_power_of_2(group_size)
    group_norm_kernel[(s.numel() // group_size,)](
        s, out, group_size, float(eps), BLOCK_G=block, SCALE=bool(scale), num_warps=1 if block <= 256 else 4
    )
    return out
