"""KL(policy || reference) estimators and the two places a KL penalty can go.

Per token, from the sampled tokens' log-probs ``log p`` (policy) and ``log q`` (reference),
with ``d = log p - log q`` (Schulman, "Approximating KL divergence", 2020):

* ``k1 = d`` — unbiased, high variance, can be negative;
* ``k2 = d^2 / 2`` — biased, low variance, >= 0 (its gradient is the true KL's);
* ``k3 = (q/p - 1) - log(q/p) = expm1(-d) + d`` — unbiased, low variance, >= 0.

**KL in reward** (PPO, REINFORCE++; ``KLSettings.placement = "reward"``): the penalty is
subtracted from the token rewards before the advantages, ``r_t - beta * kl_t``
(:func:`kl_in_reward`); usually ``k1``. **KL in loss** (GRPO; ``placement = "loss"``): the
advantages see the raw reward and ``beta * agg(kl_t)`` is added to the policy loss
(:func:`kl_loss`); usually ``k3``, whose gradient does not need a baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowrl.algorithms.masked import aggregate, check_tokens, float_dtype, masked_mean, token_rewards
from flowrl.algorithms.registry import KL_ESTIMATORS, register_kl


def _log_ratio(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    dt = float_dtype(logprobs)
    return logprobs.to(dt) - ref_logprobs.to(dt)


@register_kl("k1")
def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``log p - log q``."""
    return _log_ratio(logprobs, ref_logprobs)


@register_kl("k2")
def k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``(log p - log q)^2 / 2``."""
    return 0.5 * _log_ratio(logprobs, ref_logprobs).square()


@register_kl("k3")
def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``(q/p - 1) - log(q/p)``, computed as ``expm1(-d) + d`` (exact near ``d = 0``)."""
    d = _log_ratio(logprobs, ref_logprobs)
    return torch.expm1(-d) + d


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor | None = None,
                estimator: str = "k1") -> Tensor:
    """Per-token KL by the registered ``estimator``; 0 where ``mask == 0`` (padding may hold
    any value, NaN included)."""
    fn = KL_ESTIMATORS.get(estimator)
    if mask is None:
        return fn(logprobs, ref_logprobs)
    m = check_tokens(f"KL estimator {estimator!r}", mask, logprobs=logprobs,
                     ref_logprobs=ref_logprobs)
    zero = torch.zeros((), dtype=float_dtype(logprobs), device=logprobs.device)
    # mask the inputs first: exp() of a padded garbage log-ratio must not overflow
    kl = fn(torch.where(m, logprobs, zero), torch.where(m, ref_logprobs, zero))
    return torch.where(m, kl, zero)


def kl_in_reward(rewards: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, *,
                 kl_coef: float, estimator: str = "k1") -> Tensor:
    """Token rewards with the KL penalty: ``r_t - kl_coef * kl_t`` on real tokens.

    ``rewards`` are ``[B]`` sequence scores (placed on each row's last token) or ``[B, T]``
    token rewards. Returns fp32 ``[B, T]``, 0 on padding.
    """
    r = token_rewards("kl_in_reward", rewards, mask)
    return r - kl_coef * kl_estimate(logprobs, ref_logprobs, mask, estimator).to(r.dtype)


def kl_loss(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, *, kl_coef: float,
            estimator: str = "k3", agg: str = "token-mean",
            max_length: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The KL-in-loss term ``kl_coef * agg(kl_t)`` (differentiable w.r.t. ``logprobs``).

    Add it to the policy loss; ``agg`` is the policy loss's aggregation (see
    :func:`flowrl.algorithms.masked.aggregate`). Metrics: ``kl`` (token mean, no grad) and
    ``kl_loss``.
    """
    kl = kl_estimate(logprobs, ref_logprobs, mask, estimator)
    loss = kl_coef * aggregate(kl, mask, agg, max_length)
    with torch.no_grad():
        metrics = {"kl": masked_mean(kl, mask), "kl_loss": loss.detach()}
    return loss, metrics
