"""PPO math: KL penalty, per-token rewards, advantages, clipped losses, KL control.

Thin wrappers over the algorithm library (:mod:`flowrl.algorithms`), which owns the math;
the names stay because examples and user modules call them. All functions are vectorised
over ``[B, T]`` tensors with a ``mask`` (1 for real response tokens, EOS included; 0 for
padding). GAE and whitening go through :mod:`flowrl.kernels`, which picks Triton on GPU
and the torch path on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowrl import algorithms as algo
from flowrl import kernels
from flowrl.algorithms import off_policy
from flowrl.algorithms.masked import last_token_index as last_index
from flowrl.algorithms.masked import scores_to_tokens
from flowrl.algorithms.off_policy import PolicyRatio

Tensor = torch.Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` where ``mask`` is non-zero (0 when nothing is selected)."""
    return algo.masked_mean(x, mask, dim)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs, by the
    library's estimator ``kind`` (:mod:`flowrl.algorithms.kl`: ``k1`` = log p - log q,
    ``k2`` = (log p - log q)^2 / 2, ``k3`` = (r - 1) - log r with r = q/p)."""
    return algo.kl_estimate(logprobs, ref_logprobs, estimator=kind)


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for empty rows)."""
    return last_index(mask)


def token_rewards(score: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token reward: ``-kl_coef * kl`` on every token, plus the sequence score on the last."""
    return scores_to_tokens(score, mask) - kl_coef * kl * mask


def ppo_advantages(score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, values: Tensor,
                   mask: Tensor, kl_coef: float, gamma: float = 1.0, lam: float = 0.95,
                   kl_kind: str = "k1") -> dict[str, Tensor]:
    """Everything PPO needs after a rollout: KL, per-token rewards (KL in reward), GAE
    advantages and returns, by the library's ``kl_kind`` estimator and ``gae`` estimator."""
    mask = mask.float()
    kl = algo.kl_estimate(logprobs, ref_logprobs, mask, kl_kind)
    rewards = token_rewards(score, kl, mask, kl_coef)
    out = algo.compute_advantages("gae", rewards, mask, values=values.float() * mask,
                                  gamma=gamma, lam=lam)
    return {"kl": kl, "token_rewards": rewards, "advantages": out.advantages,
            "returns": out.returns}


def clipped_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                 clip_eps: float, agg: str, loss_name: str = "ppo",
                 ratio: PolicyRatio | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate of the built-in engines, aggregated by ``agg``.

    Without ``ratio`` it is the library's registered policy loss ``loss_name``; with one
    (a batch's off-policy correction) the library's off-policy surrogate of that ratio and
    weight, aggregated the same way; on fresh samples both give the same bits. Stats:
    ``clipfrac``, ``pg_loss`` (token mean of the per-token term) and ``approx_kl``
    (``0.5 * d^2`` with ``d`` the log-ratio: the value these engines always logged, not the
    library's ``k3``), plus the correction's metrics.
    """
    if ratio is None:
        loss, m = algo.compute_policy_loss(loss_name, logprobs, old_logprobs, advantages, mask,
                                           clip_low=clip_eps, agg=agg)
        with torch.no_grad():
            pg = m["pg_loss"] if agg == "token-mean" else algo.compute_policy_loss(
                loss_name, logprobs, old_logprobs, advantages, mask, clip_low=clip_eps,
                agg="token-mean")[1]["pg_loss"]
            log_ratio = (logprobs - old_logprobs) * mask
            return loss, {"clipfrac": m["clipfrac"], "pg_loss": pg,
                          "approx_kl": algo.masked_mean(0.5 * log_ratio.square(), mask)}
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    per_token, was_clipped = off_policy.clipped_surrogate(ratio.ratio, adv.to(logprobs.dtype),
                                                          clip_eps)
    if ratio.weight is not None:  # decoupled PPO's behaviour weight on stale tokens
        per_token = per_token * ratio.weight
    loss = algo.aggregate(per_token, mask, agg)
    with torch.no_grad():
        stats = {"clipfrac": algo.masked_mean(was_clipped.float(), mask),
                 "pg_loss": algo.masked_mean(per_token, mask),
                 "approx_kl": algo.masked_mean(0.5 * ratio.log_ratio.square(), mask),
                 **ratio.metrics}
    return loss, stats


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                clip_eps: float = 0.2, ratio: PolicyRatio | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate objective (negated for minimisation, token mean) and diagnostics
    ``clipfrac`` and ``approx_kl`` (see :func:`clipped_loss`).

    ``ratio``: the off-policy-corrected ratio of a batch with stale samples
    (:func:`flowrl.algorithms.off_policy.policy_ratio`); default ``exp(logprobs -
    old_logprobs)``. Its metrics (``off_policy/*``) join the stats.
    """
    loss, stats = clipped_loss(logprobs, old_logprobs, advantages, mask, clip_eps,
                               "token-mean", "ppo", ratio)
    del stats["pg_loss"]  # not part of PPO's logged stats
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
