"""PPO math: KL penalty, per-token rewards, advantages, clipped losses, KL control.

All functions are vectorised over ``[B, T]`` tensors with a ``mask`` (1 for real response
tokens, EOS included; 0 for padding). GAE, whitening and token log-probs go through
:mod:`flowrl.kernels`, which picks Triton on GPU and the torch path on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowrl import kernels
from flowrl.algorithms import off_policy
from flowrl.algorithms.off_policy import PolicyRatio

Tensor = torch.Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` where ``mask`` is 1 (0 when nothing is selected)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs.

    ``k1`` = log p - log q (unbiased, can be negative), ``k2`` = (log p - log q)^2 / 2,
    ``k3`` = (r - 1) - log r with r = q/p (unbiased, always >= 0).
    """
    log_ratio = logprobs.float() - ref_logprobs.float()
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for empty rows)."""
    t = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * (t + 1)).argmax(dim=1)


def token_rewards(score: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token reward: ``-kl_coef * kl`` on every token, plus the sequence score on the last."""
    rewards = -kl_coef * kl * mask
    has_tokens = mask.sum(1) > 0
    idx = last_token_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows[has_tokens], idx[has_tokens]] += score.float()[has_tokens]
    return rewards


def ppo_advantages(score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, values: Tensor,
                   mask: Tensor, kl_coef: float, gamma: float = 1.0, lam: float = 0.95,
                   kl_kind: str = "k1") -> dict[str, Tensor]:
    """Everything PPO needs after a rollout: KL, per-token rewards, GAE advantages, returns."""
    mask = mask.float()
    kl = kl_estimate(logprobs, ref_logprobs, kl_kind) * mask
    rewards = token_rewards(score, kl, mask, kl_coef)
    adv, ret = kernels.gae(rewards, values.float() * mask, mask, gamma, lam)
    return {"kl": kl, "token_rewards": rewards, "advantages": adv, "returns": ret}


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                clip_eps: float = 0.2, ratio: PolicyRatio | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate objective (negated for minimisation) and diagnostics.

    ``ratio``: the off-policy-corrected ratio of a batch with stale samples
    (:func:`flowrl.algorithms.off_policy.policy_ratio`); default ``exp(logprobs -
    old_logprobs)``. Its metrics (``off_policy/*``) join the stats.
    """
    pr = ratio if ratio is not None else off_policy.plain_ratio(logprobs, old_logprobs, mask)
    per_token, was_clipped = off_policy.clipped_surrogate(pr.ratio, advantages, clip_eps)
    if pr.weight is not None:  # decoupled PPO's behaviour weight on stale tokens
        per_token = per_token * pr.weight
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean(was_clipped.float(), mask),
            "approx_kl": masked_mean(0.5 * pr.log_ratio.square(), mask),
            **pr.metrics,
        }
    return loss, stats


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
               clip_eps: float = 0.2) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: 0.5 * max((v - R)^2, (clip(v, v_old +- eps) - R)^2)."""
    clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    loss = 0.5 * masked_mean(torch.maximum((values - returns).square(),
                                           (clipped - returns).square()), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean(((values - returns).square() <
                                             (clipped - returns).square()).float(), mask)}
    return loss, stats


def whiten_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """Zero-mean, unit-variance advantages over the masked tokens of a batch."""
    return kernels.whiten(advantages, mask)


@dataclass
class KLController:
    """KL coefficient: fixed, or adaptive towards ``target`` (Ziegler et al., 2019)."""

    kl_coef: float = 0.05
    target: float | None = None
    horizon: int = 10000

    def update(self, observed_kl: float, n_samples: int) -> float:
        if self.target is not None:
            err = max(min(observed_kl / self.target - 1.0, 0.2), -0.2)
            self.kl_coef *= 1.0 + err * n_samples / self.horizon
        return self.kl_coef

    def state_dict(self) -> dict[str, float]:
        """For checkpoints: the adaptive coefficient is state a resumed run must continue."""
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.kl_coef = float(state["kl_coef"])
