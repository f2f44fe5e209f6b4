"""GRPO: group-normalised advantages, a clipped token loss with a KL-to-reference term.

n samples per prompt: ``runtime_args.num_inference_per_prompt = n``. The episode loop repeats
each prompt of a rollout batch n times in a row, so a rollout batch of
``generation_batch_size`` samples holds ``generation_batch_size / n`` prompts and the n
samples of one prompt are consecutive (one *group*); ``sample_per_episode`` counts samples
(prompts x n). The reward step, which sees a whole rollout batch, turns its scores into
advantages with :func:`group_advantages`; there is no value model.
"""

from __future__ import annotations

import torch

from flowrl import context, kernels
from flowrl.algorithms import off_policy
from flowrl.algorithms.off_policy import PolicyRatio
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.errors import ConfigError
from flowrl.engines.ppo import kl_estimate, masked_mean
from flowrl.models.base import BaseModule

Tensor = torch.Tensor


def group_advantages(scores: Tensor, group_size: int, scale: bool = True) -> Tensor:
    """``(s - mean_group) / (std_group + eps)`` over groups of ``group_size`` consecutive
    scores (``scale=False``: ``s - mean_group``, as Dr. GRPO). Groups whose samples all score
    the same get 0 advantage: they carry no signal."""
    return kernels.group_normalize(scores.float(), group_size, scale=scale)


def grpo_loss(logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor, advantages: Tensor,
              mask: Tensor, clip_eps: float = 0.2, kl_coef: float = 0.04, kl_kind: str = "k3",
              loss_agg: str = "seq-mean-token-mean", ratio: PolicyRatio | None = None
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO objective (negated for minimisation) over ``[B, T]`` response tokens.

    Per token: ``max(-A r, -A clip(r, 1 +- eps)) + kl_coef * KL(policy || reference)`` with
    ``r = exp(logprobs - old_logprobs)`` and ``A`` the sequence's advantage (``[B]``) on every
    token. ``loss_agg`` averages tokens per sequence then sequences (``"seq-mean-token-mean"``,
    the GRPO paper) or all tokens of the batch together (``"token-mean"``). ``ratio``: the
    off-policy-corrected ratio of a batch with stale samples
    (:func:`flowrl.algorithms.off_policy.policy_ratio`, built with the same ``mask``); it
    replaces ``r`` and weighs the clipped term (not the KL term); its metrics join the stats.
    """
    mask = mask.to(logprobs.dtype)
    pr = ratio if ratio is not None else off_policy.plain_ratio(logprobs, old_logprobs, mask)
    adv = advantages.to(logprobs.dtype)[:, None]
    pg, was_clipped = off_policy.clipped_surrogate(pr.ratio, adv, clip_eps)
    if pr.weight is not None:  # decoupled PPO's behaviour weight on stale tokens
        pg = pg * pr.weight
    kl = kl_estimate(logprobs * mask, ref_logprobs * mask, kl_kind) * mask  # finite on pads
    per_token = pg + kl_coef * kl
    if loss_agg == "token-mean":
        loss = masked_mean(per_token, mask)
    elif loss_agg == "seq-mean-token-mean":
        has = (mask.sum(1) > 0).to(per_token.dtype)
        loss = (masked_mean(per_token, mask, dim=1) * has).sum() / has.sum().clamp_min(1.0)
    else:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; expected 'seq-mean-token-mean' or "
                         f"'token-mean'")
    with torch.no_grad():
        stats = {"pg_loss": masked_mean(pg, mask), "kl": masked_mean(kl, mask),
                 "clipfrac": masked_mean(was_clipped.float(), mask), **pr.metrics}
    return loss, stats


class GRPOEngine(Engine):
    """GRPO: sample n responses per prompt, score them, train the policy on group advantages.

    ``reward`` returns ``score`` and ``advantages`` for a rollout batch (see
    :class:`flowrl.engines.rewards.RuleReward`, which needs no reward model); ``reference``
    returns ``ref_logprobs`` for the KL term; ``grpo_policy`` trains and is synced into
    ``policy``.
    """

    def __init__(self, policy: BaseModule, reference: BaseModule, reward: BaseModule,
                 grpo_policy: BaseModule) -> None:
        n = context.get_args().runtime_args.num_inference_per_prompt
        if n < 2:  # one sample per group: every group-normalised advantage is 0
            raise ConfigError(
                f"runtime_args.num_inference_per_prompt={n}: GRPO needs at least 2 samples per "
                f"prompt (with 1, every group advantage is 0 and nothing trains)")

        @flow(name="rollout")
        def rollout(batch):
            out = policy.forward_step(batch)
            ref = reference.forward_step(out)
            rew = reward.forward_step(out)
            return out, ref, rew

        @flow(name="train")
        def train(batch):
            grpo_policy.train_step(batch)

        super().__init__(rollout, train, sync={grpo_policy: policy}, name="grpo")
