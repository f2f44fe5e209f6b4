"""Policy losses, registered by name (:func:`register_policy_loss`).

Common signature::

    fn(logprobs, old_logprobs, advantages, mask, **options) -> (loss, metrics)

``logprobs`` ``[B, T]`` (differentiable, current policy), ``old_logprobs`` ``[B, T]`` (the
policy that sampled), ``advantages`` ``[B]`` (one per sequence) or ``[B, T]``, ``mask``
``[B, T]``. ``loss`` is a scalar to minimise; ``metrics`` (no grad) hold ``pg_loss``,
``clipfrac`` (tokens whose clipped term is the active one), ``clipfrac_low`` /
``clipfrac_high`` (ratio below ``1 - clip_low`` with ``A < 0`` / above ``1 + clip_high``
with ``A > 0``), ``approx_kl`` (``k3`` estimate of KL(old || new):
``mean(expm1(d) - d)``, ``d = log new - log old``) and ``ratio_mean``.

Every loss is the clipped surrogate ``l_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - clip_low,
1 + clip_high))`` reduced by an aggregation (:func:`flowrl.algorithms.masked.aggregate`):

=========  ==================================  ====================  ======================
name       ratio ``rho``                       clip (low, high)      aggregation (default)
=========  ==================================  ====================  ======================
ppo        ``exp(d_t)`` per token              0.2, = low            token-mean
grpo       ``exp(d_t)`` per token              0.2, = low            seq-mean-token-mean
dr_grpo    ``exp(d_t)`` per token              0.2, = low            seq-mean-token-sum-norm
dapo       ``exp(d_t)`` per token              0.2, 0.28 (decoupled) token-mean
gspo       ``exp(mean_t d_t)`` per sequence    3e-4, 4e-4            seq-mean-token-mean
=========  ==================================  ====================  ======================

A KL-in-loss term is added separately (:func:`flowrl.algorithms.kl.kl_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowrl.algorithms.masked import (aggregate, broadcast_tokens, check_tokens, float_dtype,
                                      masked_mean)
from flowrl.algorithms.registry import POLICY_LOSSES, register_policy_loss
from flowrl.errors import AlgorithmError

Metrics = dict[str, Tensor]


def compute_policy_loss(name: str, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor,
                        mask: Tensor, **options: Any) -> tuple[Tensor, Metrics]:
    """Run the policy loss registered as ``name`` (unknown options are reported by name)."""
    return POLICY_LOSSES.call(name, logprobs, old_logprobs, advantages, mask, **options)


def _token_advantages(fn: str, advantages: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    if isinstance(advantages, Tensor) and advantages.dim() == 1 and len(advantages) == len(mask):
        return broadcast_tokens(advantages.to(dtype), mask)
    check_tokens(fn, mask, advantages=advantages)
    return torch.where(mask != 0, advantages.to(dtype), torch.zeros((), dtype=dtype))


def _check_clip(fn: str, clip_low: float, clip_high: float) -> None:
    if not 0 <= clip_low < 1 or not clip_high >= 0:
        raise AlgorithmError(f"{fn}: need 0 <= clip_low < 1 and clip_high >= 0, got "
                             f"clip_low={clip_low}, clip_high={clip_high}")


def clipped_surrogate(fn: str, log_ratio: Tensor, advantages: Tensor, mask: Tensor, *,
                      clip_low: float, clip_high: float, agg: str,
                      max_length: int | None) -> tuple[Tensor, Metrics]:
    """The clipped objective from a per-token ``log_ratio`` (``[B, T]``, 0 on padding)."""
    _check_clip(fn, clip_low, clip_high)
    adv = _token_advantages(fn, advantages, mask, log_ratio.dtype)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate(per_token, mask, agg, max_length)
    with torch.no_grad():
        d = log_ratio.detach()
        metrics = {
            "pg_loss": loss.detach(),
            "clipfrac": masked_mean((clipped > unclipped).to(d.dtype), mask),
            "clipfrac_low": masked_mean(((ratio < 1 - clip_low) & (adv < 0)).to(d.dtype), mask),
            "clipfrac_high": masked_mean(((ratio > 1 + clip_high) & (adv > 0)).to(d.dtype), mask),
            "approx_kl": masked_mean(torch.expm1(d) - d, mask),
            "ratio_mean": masked_mean(ratio.detach(), mask),
        }
    return loss, metrics


def token_log_ratio(fn: str, logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """``log pi(y_t) - log pi_old(y_t)``, 0 on padding (whatever the padding holds)."""
    m = check_tokens(fn, mask, logprobs=logprobs, old_logprobs=old_logprobs)
    dt = float_dtype(logprobs)
    d = logprobs.to(dt) - old_logprobs.to(dt).detach()
    return torch.where(m, d, torch.zeros((), dtype=dt, device=d.device))


@register_policy_loss("ppo")
def ppo(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
        clip_low: float = 0.2, clip_high: float | None = None, agg: str = "token-mean",
        max_length: int | None = None) -> tuple[Tensor, Metrics]:
    """PPO-clip (Schulman et al., 2017), ``rho_t = exp(log pi - log pi_old)``;
    ``clip_high=None`` means ``clip_high = clip_low`` (the symmetric ``clip_eps``)."""
    high = clip_low if clip_high is None else clip_high
    d = token_log_ratio("policy loss 'ppo'", logprobs, old_logprobs, mask)
    return clipped_surrogate("policy loss 'ppo'", d, advantages, mask, clip_low=clip_low,
                             clip_high=high, agg=agg, max_length=max_length)


@register_policy_loss("grpo")
def grpo(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
         clip_low: float = 0.2, clip_high: float | None = None,
         agg: str = "seq-mean-token-mean", max_length: int | None = None) -> tuple[Tensor, Metrics]:
    """GRPO's loss: PPO-clip averaged per sequence, then over sequences (DeepSeekMath)."""
    return ppo(logprobs, old_logprobs, advantages, mask, clip_low=clip_low,
               clip_high=clip_high, agg=agg, max_length=max_length)


@register_policy_loss("dr_grpo")
def dr_grpo(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
            max_length: int, clip_low: float = 0.2, clip_high: float | None = None,
            agg: str = "seq-mean-token-sum-norm") -> tuple[Tensor, Metrics]:
    """Dr. GRPO's loss: PPO-clip summed over tokens and divided by the constant
    ``B * max_length`` (the generation budget), so long answers are not down-weighted."""
    return ppo(logprobs, old_logprobs, advantages, mask, clip_low=clip_low,
               clip_high=clip_high, agg=agg, max_length=max_length)


@register_policy_loss("dapo")
def dapo(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
         clip_low: float = 0.2, clip_high: float = 0.28, agg: str = "token-mean",
         max_length: int | None = None) -> tuple[Tensor, Metrics]:
    """DAPO (Yu et al., 2025): decoupled clip range ``[1 - clip_low, 1 + clip_high]`` with a
    higher upper bound ("clip-higher") and token-level averaging."""
    return ppo(logprobs, old_logprobs, advantages, mask, clip_low=clip_low,
               clip_high=clip_high, agg=agg, max_length=max_length)


@register_policy_loss("gspo")
def gspo(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
         clip_low: float = 3e-4, clip_high: float = 4e-4, agg: str = "seq-mean-token-mean",
         max_length: int | None = None) -> tuple[Tensor, Metrics]:
    """GSPO (Zheng et al., 2025): one length-normalised ratio per sequence,
    ``s_i = exp((1/|y_i|) sum_t d_it)``, clipped per sequence.

    Computed as GSPO-token: ``log rho_it = sg(log s_i) + log pi_it - sg(log pi_it)`` has the
    value ``log s_i`` on every token and, with ``seq-mean-token-mean``, exactly the gradient
    of the sequence-level objective; ``[B, T]`` advantages are then allowed too.
    """
    fn = "policy loss 'gspo'"
    d = token_log_ratio(fn, logprobs, old_logprobs, mask)
    lengths = (mask != 0).sum(1).clamp_min(1).to(d.dtype)
    seq = d.sum(1) / lengths
    lp = logprobs.to(d.dtype)
    per_token = seq.detach()[:, None] + lp - lp.detach()
    log_ratio = torch.where(mask != 0, per_token, torch.zeros((), dtype=d.dtype))
    return clipped_surrogate(fn, log_ratio, advantages, mask, clip_low=clip_low,
                             clip_high=clip_high, agg=agg, max_length=max_length)
