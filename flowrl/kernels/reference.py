"""Plain-torch implementations: the naive references and the vectorised paths.

Everything here runs on any device. The ``*_loop`` / ``*_reference`` functions
are deliberately naive and serve as ground truth for tests and benchmarks; the
other functions are the "torch" backend of :mod:`flowrl.kernels`.

Conventions shared by every GAE implementation (loop, torch, triton):

* ``mask[b, t] != 0`` marks a real response token (EOS included). A zero ends
  the episode: ``V(s_{t+1})`` is taken as 0 and the recursion does not cross it.
* Values/rewards at padded positions are ignored, even if NaN (``torch.where``
  instead of multiplying by the mask, because ``nan * 0 == nan``).
* Accumulation is fp32 (fp64 stays fp64); outputs are zero where ``mask == 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 (and integer) inputs, fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- GAE


def gae_loop(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Reference GAE: the usual reverse Python loop over T (slow, obviously right)."""
    cd = compute_dtype(torch.promote_types(rewards.dtype, values.dtype))
    m = mask != 0
    r = rewards.to(cd)
    v = torch.where(m, values.to(cd), 0.0)
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=cd, device=r.device)
    last = torch.zeros(B, dtype=cd, device=r.device)
    for t in reversed(range(T)):
        if t + 1 < T:
            next_v, next_m = v[:, t + 1], m[:, t + 1]
        else:
            next_v, next_m = torch.zeros_like(last), torch.zeros_like(m[:, 0])
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = delta + gamma * lam * next_m.to(cd) * last
        last = torch.where(m[:, t], last, 0.0)
        adv[:, t] = last
    return adv, torch.where(m, adv + v, 0.0)


def reverse_linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """Solve ``x[..., t] = b[..., t] + a[..., t] * x[..., t+1]`` with ``x[..., T] = 0``.

    Hillis-Steele doubling over the last dim: after the step with offset ``s``
    each position holds the composition of the affine maps ``t .. t+2s-1``, so
    ``ceil(log2 T)`` vectorised steps replace the T-step Python loop. Only
    products and sums of the inputs are formed - no division by ``a**t``, which
    would underflow for long sequences - so it is as accurate as the loop.
    Two ping-pong buffer pairs are allocated once; the steps write into them
    with ``out=`` (no allocation per step). ``a`` and ``b`` are not modified.
    """
    T = a.shape[-1]
    if T <= 1:
        return b.clone()
    a, b = a.clone(), b.clone()
    a2, b2 = torch.empty_like(a), torch.empty_like(b)
    s = 1
    while s < T:
        n = T - s
        torch.addcmul(b[..., :n], a[..., :n], b[..., s:], out=b2[..., :n])
        b2[..., n:] = b[..., n:]  # these already reach the end of the sequence
        if 2 * s < T:  # the last step does not need the composed coefficients
            torch.mul(a[..., :n], a[..., s:], out=a2[..., :n])
            a2[..., n:] = a[..., n:]
            a, a2 = a2, a
        b, b2 = b2, b
        s *= 2
    return b


def gae_torch(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Vectorised GAE (no Python loop over T): TD residuals + :func:`reverse_linear_scan`.

    ``A_t = delta_t + gamma*lam*m_{t+1} * A_{t+1}`` with
    ``delta_t = r_t + gamma*m_{t+1}*V_{t+1} - V_t`` (zeroed on padding).
    """
    cd = compute_dtype(torch.promote_types(rewards.dtype, values.dtype))
    m = mask != 0
    v = torch.where(m, values.to(cd), 0.0)
    next_v = torch.nn.functional.pad(v[:, 1:], (0, 1))  # already 0 where the next token is padding
    next_m = torch.nn.functional.pad(m[:, 1:], (0, 1))
    delta = torch.where(m, rewards.to(cd) + gamma * next_v - v, 0.0)
    coef = next_m.to(cd) * (gamma * lam)
    adv = torch.where(m, reverse_linear_scan(coef, delta), 0.0)
    return adv, torch.where(m, adv + v, 0.0)


# ------------------------------------------------------------------ normalisation


def whiten_torch(x: Tensor, mask: Tensor | None, *, shift_mean: bool = True, eps: float = 1e-8, unbiased: bool = False) -> Tensor:
    """Masked whitening over all elements where ``mask != 0`` (see :func:`flowrl.kernels.whiten`)."""
    cd = compute_dtype(x.dtype)
    xf = x.to(cd)
    m = torch.ones_like(xf, dtype=torch.bool) if mask is None else mask != 0
    n = m.sum().to(cd)
    mean = torch.where(m, xf, 0.0).sum() / n.clamp_min(1.0)
    centered = torch.where(m, xf - mean, 0.0)
    denom = (n - 1.0) if unbiased else n
    var = centered.square().sum() / denom.clamp_min(1.0)
    out = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, 0.0)


def group_normalize_torch(scores: Tensor, group_size: int, *, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """GRPO group-normalised advantage: ``(s - mean_g) / (std_g + eps)``, population std."""
    s = scores.to(compute_dtype(scores.dtype)).reshape(-1, group_size)
    centered = s - s.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (s.std(dim=1, correction=0, keepdim=True) + eps)
    return centered.reshape(-1)


# ------------------------------------------------------------------- log-probs


def token_logprobs_reference(
    logits: Tensor, targets: Tensor, *, temperature: float = 1.0, return_entropy: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Naive ``log_softmax(logits / T).gather(targets)``; materialises the full fp32 log-softmax.

    Differentiable by plain autograd (used for gradcheck and as ground truth).
    """
    x = logits.to(compute_dtype(logits.dtype)) / temperature
    lsm = torch.log_softmax(x, dim=-1)
    lp = lsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not return_entropy:
        return lp
    p = lsm.exp()
    # where(): p*log p is 0 for p == 0 even when log p == -inf (masked vocab entries)
    ent = -(p * torch.where(p > 0, lsm, 0.0)).sum(-1)
    return lp, ent


def linear_logprobs_reference(hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Reference for :func:`flowrl.kernels.linear_logprobs`: builds the full logits."""
    return token_logprobs_reference(hidden @ weight.t(), targets, temperature=temperature)
