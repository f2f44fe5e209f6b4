"""Memory-lean torch paths for per-token log-probs (the "torch" backend).

The unfused ``log_softmax(logits.float()).gather(...)`` keeps a ``[N, V]`` fp32
copy alive for backward (and another for its gradient). Here rows are processed
in chunks of about ``_CHUNK_ELEMS`` elements: each chunk is upcast, reduced to
a log-sum-exp and discarded; backward recomputes the softmax per chunk from
the saved (original-dtype) logits and the per-row ``lse``. Extra memory is
``O(chunk)`` plus ``O(N)`` instead of ``O(N * V)`` fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .reference import compute_dtype

# ~16 MiB of fp32 per chunk: large enough to keep the CPU/GPU busy, small
# enough to stay far below the size of the logits themselves.
_CHUNK_ELEMS = 1 << 22


def _rows_per_chunk(V: int, chunk_elems: int | None) -> int:
    return max(1, (chunk_elems or _CHUNK_ELEMS) // max(V, 1))


def _scaled(chunk: Tensor, cd: torch.dtype, inv_temp: float) -> Tensor:
    # never modifies `chunk` in place: .to() returns the input itself when the dtype already matches
    x = chunk.to(cd)
    return x * inv_temp if inv_temp != 1.0 else x


class _ChunkedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, temperature: float, with_entropy: bool, chunk_elems: int | None):
        N, V = logits.shape
        cd = compute_dtype(logits.dtype)
        inv_temp = 1.0 / temperature
        lp = torch.empty(N, dtype=cd, device=logits.device)
        lse = torch.empty(N, dtype=cd, device=logits.device)
        ent = torch.empty(N if with_entropy else 0, dtype=cd, device=logits.device)
        rows = _rows_per_chunk(V, chunk_elems)
        for i in range(0, N, rows):
            x = _scaled(logits[i : i + rows], cd, inv_temp)
            mx = x.amax(dim=-1, keepdim=True)
            mx = torch.where(torch.isfinite(mx), mx, 0.0)  # all -inf row: avoid inf - inf
            e = (x - mx).exp_()
            s = e.sum(-1)
            row_lse = mx.squeeze(-1) + s.log()
            lse[i : i + rows] = row_lse
            lp[i : i + rows] = x.gather(1, targets[i : i + rows, None]).squeeze(1) - row_lse
            if with_entropy:
                # H = lse - E_p[x]; 0 * (-inf) from masked vocab entries -> 0
                px = (e * x).nan_to_num_(nan=0.0, posinf=float("inf"), neginf=float("-inf"))
                ent[i : i + rows] = row_lse - px.sum(-1) / s
        ctx.save_for_backward(logits, targets, lse, ent)
        ctx.inv_temp = inv_temp
        ctx.chunk_elems = chunk_elems
        if not with_entropy:
            ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp: Tensor | None, g_ent: Tensor | None):
        logits, targets, lse, ent = ctx.saved_tensors
        N, V = logits.shape
        cd = lse.dtype
        inv_temp = ctx.inv_temp
        if ent.numel() == 0:
            g_ent = None
        if g_lp is None:
            g_lp = torch.zeros(N, dtype=cd, device=logits.device)
        grad = torch.empty_like(logits)
        rows = _rows_per_chunk(V, ctx.chunk_elems)
        for i in range(0, N, rows):
            sl = slice(i, i + rows)
            logp = _scaled(logits[sl], cd, inv_temp) - lse[sl, None]
            p = logp.exp()
            gl = g_lp[sl, None].to(cd)
            g = p * -gl
            g.scatter_add_(1, targets[sl, None], gl)
            if g_ent is not None:
                # dH/dx_v = -p_v (log p_v + H); the product is 0 where p == 0 (log p = -inf)
                t = (p * (logp + ent[sl, None])).nan_to_num_(nan=0.0)
                g.sub_(t * g_ent[sl, None].to(cd))
            if inv_temp != 1.0:
                g.mul_(inv_temp)
            grad[sl] = g
        return grad, None, None, None, None


def token_logprobs_torch(
    logits: Tensor, targets: Tensor, temperature: float, return_entropy: bool, chunk_elems: int | None = None
) -> tuple[Tensor, Tensor]:
    """``logits [N, V]``, ``targets [N]`` -> ``(logp [N], entropy [N] or empty)``."""
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
