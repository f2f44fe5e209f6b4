"""Memory-lean torch paths for per-token log-probs (the "torch" backend).

The unfused ``log_softmax(logits.float()).gather(...)`` builds an ``[N, V]``
fp32 copy and an ``[N, V]`` fp32 log-softmax, keeps the latter alive for
backward, and backward adds more ``[N, V]`` fp32 buffers. Here rows are
processed in chunks of about ``_CHUNK_ELEMS`` elements: each chunk goes
through torch's fused ``log_softmax(..., dtype=float32)`` (upcast inside the
kernel), is gathered and discarded; backward recomputes the chunk's softmax
from the saved original-dtype logits. Extra memory is ``O(chunk) + O(N)``
besides the gradient itself, and on CPU it runs at about the unfused speed.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .reference import compute_dtype

# ~16 MiB of fp32 per chunk: large enough to keep the CPU/GPU busy, small
# enough to stay far below the size of the logits themselves.
_CHUNK_ELEMS = 1 << 22


def _chunks(logits: Tensor, chunk_elems: int | None):
    """Yield ``(rows of logits as [r, V], flat row slice)`` for ``logits [B, T, V]``."""
    B, T, V = logits.shape
    rows = max(1, (chunk_elems or _CHUNK_ELEMS) // max(V, 1))
    for b in range(B):
        for i in range(0, T, rows):
            j = min(i + rows, T)
            yield logits[b, i:j], slice(b * T + i, b * T + j)


def _log_softmax(chunk: Tensor, cd: torch.dtype, inv_temp: float) -> Tensor:
    # log_softmax(dtype=...) upcasts inside the kernel: no separate fp32 copy of the chunk
    if inv_temp != 1.0:
        return torch.log_softmax(chunk.to(cd) * inv_temp, dim=-1)
    return torch.log_softmax(chunk, dim=-1, dtype=cd)


def _scaled(chunk: Tensor, cd: torch.dtype, inv_temp: float) -> Tensor:
    # never modifies `chunk` in place: .to() returns the input itself when the dtype already matches
    x = chunk.to(cd)
    return x * inv_temp if inv_temp != 1.0 else x


class _ChunkedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, temperature: float, with_entropy: bool, chunk_elems: int | None):
        N = logits.shape[0] * logits.shape[1]
        cd = compute_dtype(logits.dtype)
        inv_temp = 1.0 / temperature
        lp = torch.empty(N, dtype=cd, device=logits.device)
        ent = torch.empty(N if with_entropy else 0, dtype=cd, device=logits.device)
        for chunk, sl in _chunks(logits, chunk_elems):
            lsm = _log_softmax(chunk, cd, inv_temp)
            lp[sl] = lsm.gather(1, targets[sl, None]).squeeze(1)
            if with_entropy:
                # -sum p log p; p = 0 where log p = -inf (masked vocab) gives nan -> 0
                plogp = lsm.exp().mul_(lsm).nan_to_num_(nan=0.0)
                ent[sl] = -plogp.sum(-1)
        ctx.save_for_backward(logits, targets, ent)
        ctx.inv_temp = inv_temp
        ctx.chunk_elems = chunk_elems
        if not with_entropy:
            ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp: Tensor | None, g_ent: Tensor | None):
        # recompute softmax per chunk (a fused torch kernel) instead of keeping [N, V] fp32 alive
        logits, targets, ent = ctx.saved_tensors
        N = logits.shape[0] * logits.shape[1]
        cd = compute_dtype(logits.dtype)
        inv_temp = ctx.inv_temp
        if ent.numel() == 0:
            g_ent = None
        if g_lp is None:
            g_lp = torch.zeros(N, dtype=cd, device=logits.device)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for (chunk, sl), g_rows in zip(_chunks(logits, ctx.chunk_elems), _chunks(grad, ctx.chunk_elems)):
            gl = g_lp[sl, None].to(cd)
            if g_ent is None:
                if inv_temp != 1.0:
                    p = torch.softmax(chunk.to(cd) * inv_temp, -1)
                else:
                    p = torch.softmax(chunk, -1, dtype=cd)
                g = p.mul_(-gl)
            else:
                # d/dx_v of g_lp*log p_t + g_H*H = g_lp*(1[v=t] - p_v) - g_H*p_v*(log p_v + H)
                lsm = _log_softmax(chunk, cd, inv_temp)
                p = lsm.exp()
                ent_term = lsm.add_(ent[sl, None]).mul_(p).nan_to_num_(nan=0.0)
                g = p.mul_(-gl).sub_(ent_term.mul_(g_ent[sl, None].to(cd)))
            g.scatter_add_(1, targets[sl, None], gl)
            if inv_temp != 1.0:
                g.mul_(inv_temp)
            g_rows[0].copy_(g)
        return grad, None, None, None, None


def token_logprobs_torch(
    logits: Tensor, targets: Tensor, temperature: float, return_entropy: bool, chunk_elems: int | None = None
) -> tuple[Tensor, Tensor]:
    """``logits [N, V]`` or ``[B, T, V]`` (any strides), ``targets [N]`` or ``[B*T]`` (row-major)
    -> ``(logp, entropy or empty)``, flat ``[N]``."""
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    return _ChunkedTokenLogprobs.apply(logits, targets, temperature, return_entropy, chunk_elems)


class _ChunkedLinearLogprobs(torch.autograd.Function):
    """log p(target) of ``softmax(hidden @ weight.T / T)`` without the ``[N, V]`` logits.

    Forward runs an online log-sum-exp over vocabulary chunks of ``chunk_size``
    rows of ``weight``; backward recomputes each chunk's logits and accumulates
    ``d hidden`` and writes ``d weight`` chunk by chunk.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, chunk_size: int):
        N, V = hidden.shape[0], weight.shape[0]
        cd = compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        inv_temp = 1.0 / temperature
        m = torch.full((N,), float("-inf"), dtype=cd, device=hidden.device)
        s = torch.zeros(N, dtype=cd, device=hidden.device)
        tgt = torch.zeros(N, dtype=cd, device=hidden.device)
        for v0 in range(0, V, chunk_size):
            z = _scaled(hidden @ weight[v0 : v0 + chunk_size].t(), cd, inv_temp)
            new_m = torch.maximum(m, z.amax(-1))
            safe_m = torch.where(torch.isfinite(new_m), new_m, 0.0)
            s = s * (m - safe_m).exp() + (z - safe_m[:, None]).exp().sum(-1)
            m = new_m
            in_chunk = (targets >= v0) & (targets < v0 + z.shape[1])
            idx = (targets - v0).clamp(0, z.shape[1] - 1)
            tgt = torch.where(in_chunk, z.gather(1, idx[:, None]).squeeze(1), tgt)
        lse = torch.where(torch.isfinite(m), m, 0.0) + s.log()
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.inv_temp, ctx.chunk_size = inv_temp, chunk_size
        return tgt - lse

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        cd, inv_temp, C = lse.dtype, ctx.inv_temp, ctx.chunk_size
        V = weight.shape[0]
        g = g.to(cd)
        g_hidden = torch.zeros(hidden.shape, dtype=cd, device=hidden.device) if ctx.needs_input_grad[0] else None
        g_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        for v0 in range(0, V, C):
            w = weight[v0 : v0 + C]
            z = _scaled(hidden @ w.t(), cd, inv_temp)
            gz = (z - lse[:, None]).exp_().mul_(-g[:, None])
            in_chunk = (targets >= v0) & (targets < v0 + w.shape[0])
            gz[rows[in_chunk], targets[in_chunk] - v0] += g[in_chunk]
            gz = gz.mul_(inv_temp).to(hidden.dtype)
            if g_hidden is not None:
                g_hidden += (gz @ w).to(cd)
            if g_weight is not None:
                g_weight[v0 : v0 + C] = gz.t() @ hidden
        if g_hidden is not None:
            g_hidden = g_hidden.to(hidden.dtype)
        return g_hidden, g_weight, None, None, None


def linear_logprobs_torch(hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, chunk_size: int) -> Tensor:
    """``hidden [N, H]``, ``weight [V, H]``, ``targets [N]`` -> ``logp [N]`` (chunked over V)."""
    return _ChunkedLinearLogprobs.apply(hidden, weight, targets, temperature, chunk_size)
