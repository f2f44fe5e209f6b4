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

from flowrl import algorithms as algo
from flowrl import context
from flowrl.algorithms.advantages import StdEstimator
from flowrl.algorithms.off_policy import PolicyRatio
from flowrl.dsl.flow import flow
from flowrl.engines import ppo
from flowrl.engines.engine import Engine
from flowrl.errors import AlgorithmError, ConfigError
from flowrl.models.base import BaseModule

Tensor = torch.Tensor


#: The KL coefficient of :func:`grpo_loss` (and of a trainer that does not set ``kl_coef``).
DEFAULT_KL_COEF = 0.04
_LOSS_AGGS = ("seq-mean-token-mean", "token-mean")


def group_advantages(scores: Tensor, group_size: int, scale: bool = True,
                     std: StdEstimator = "population", eps: float = 1e-6) -> Tensor:
    """``(s - mean_group) / (std_group + eps)`` over groups of ``group_size`` consecutive
    scores, by the library's :func:`flowrl.algorithms.group_normalize`: ``std`` is the
    ``"population"`` (divide by G, DeepSeekMath/veRL) or ``"unbiased"`` (G - 1, TRL)
    estimator; ``scale=False`` gives ``s - mean_group`` (Dr. GRPO). Groups whose samples all
    score the same get 0 advantage: they carry no signal."""
    return algo.group_normalize(scores.float(), group_size, std=std, scale=scale, eps=eps)


def grpo_loss(logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor | None,
              advantages: Tensor, mask: Tensor, clip_eps: float = 0.2,
              kl_coef: float = DEFAULT_KL_COEF, kl_kind: str = "k3",
              loss_agg: str = "seq-mean-token-mean", ratio: PolicyRatio | None = None
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO objective (negated for minimisation) over ``[B, T]`` response tokens.

    Per token: ``max(-A r, -A clip(r, 1 +- eps)) + kl_coef * KL(policy || reference)`` with
    ``r = exp(logprobs - old_logprobs)`` and ``A`` the sequence's advantage (``[B]``) on every
    token: the library's ``grpo`` policy loss plus its KL-in-loss term
    (:func:`flowrl.algorithms.kl_loss`). ``loss_agg`` averages tokens per sequence then
    sequences (``"seq-mean-token-mean"``, the GRPO paper) or all tokens of the batch together
    (``"token-mean"``). ``ratio``: the off-policy-corrected ratio of a batch with stale
    samples (:func:`flowrl.algorithms.off_policy.policy_ratio`, built with the same ``mask``);
    it replaces ``r`` and weighs the clipped term (not the KL term); its metrics join the
    stats. ``ref_logprobs`` may be ``None`` only with ``kl_coef == 0`` (no reference model
    ran); the ``kl`` stat is then absent. With ``kl_coef == 0`` and a reference, ``kl`` is
    still logged (to watch the drift) but adds nothing to the loss.
    """
    if loss_agg not in _LOSS_AGGS:
        raise AlgorithmError(f"grpo_loss: unknown loss_agg {loss_agg!r}; expected "
                             f"'seq-mean-token-mean' or 'token-mean'")
    if ref_logprobs is None and kl_coef != 0:
        raise AlgorithmError(f"grpo_loss: kl_coef={kl_coef} needs ref_logprobs (a reference "
                             f"model's output); set kl_coef to 0 or run a reference model")
    mask = mask.to(logprobs.dtype)
    loss, pg = ppo.clipped_loss(logprobs, old_logprobs, advantages, mask, clip_eps, loss_agg,
                                "grpo", ratio)
    stats = {"pg_loss": pg.pop("pg_loss"), "clipfrac": pg.pop("clipfrac")}
    pg.pop("approx_kl")
    if kl_coef != 0:
        kl_term, kl_stats = algo.kl_loss(logprobs, ref_logprobs, mask, kl_coef=kl_coef,
                                         estimator=kl_kind, agg=loss_agg)
        loss = loss + kl_term
        stats["kl"] = kl_stats["kl"]
    elif ref_logprobs is not None:
        with torch.no_grad():
            stats["kl"] = algo.masked_mean(
                algo.kl_estimate(logprobs, ref_logprobs, mask, kl_kind), mask)
    return loss, {**stats, **pg}


def kl_coef_of(trainer: BaseModule) -> float:
    """The KL coefficient a GRPO trainer trains with: its typed ``Args.kl_coef``, else
    ``models.<name>.args.kl_coef``, else :data:`DEFAULT_KL_COEF` (read it through this
    function in a trainer, so the engine and the loss agree)."""
    typed = trainer.typed_args
    if typed is not None and hasattr(typed, "kl_coef"):
        return float(typed.kl_coef)
    return float(trainer.model_args.get("kl_coef", DEFAULT_KL_COEF))


class GRPOEngine(Engine):
    """GRPO: sample n responses per prompt, score them, train the policy on group advantages.

    ``reward`` returns ``score`` and ``advantages`` for a rollout batch (see
    :class:`flowrl.engines.rewards.RuleReward`, which needs no reward model; its options set
    the group normalisation); ``reference`` returns ``ref_logprobs`` for the KL term;
    ``grpo_policy`` trains and is synced into ``policy``.

    ``reference=None`` runs no reference model (no ``ref_logprobs`` in the batch, ~20% less
    time per step): allowed only when the trainer's KL coefficient (:func:`kl_coef_of`) is
    0, as then the reference's output could only feed the ``kl`` monitor. A reference given
    with a coefficient of 0 still runs, so that drift can be watched.

    Raises:
        ConfigError: fewer than 2 samples per prompt, or ``reference=None`` with a non-zero
            ``models.<grpo_policy>.args.kl_coef``.
    """

    def __init__(self, policy: BaseModule, reference: BaseModule | None, reward: BaseModule,
                 grpo_policy: BaseModule) -> None:
        n = context.get_args().runtime_args.num_inference_per_prompt
        if n < 2:  # one sample per group: every group-normalised advantage is 0
            raise ConfigError(
                f"runtime_args.num_inference_per_prompt={n}: GRPO needs at least 2 samples per "
                f"prompt (with 1, every group advantage is 0 and nothing trains)")

        @flow(name="rollout")
        def rollout(batch):
            out = policy.forward_step(batch)
            if reference is None:
                return out, reward.forward_step(out)
            ref = reference.forward_step(out)
            rew = reward.forward_step(out)
            return out, ref, rew

        @flow(name="train")
        def train(batch):
            grpo_policy.train_step(batch)

        super().__init__(rollout, train, sync={grpo_policy: policy}, name="grpo")
        if reference is None and (beta := kl_coef_of(grpo_policy)) != 0:
            raise ConfigError(
                f"models.{grpo_policy.name}.args.kl_coef={beta}: the KL term needs a reference "
                f"model, but GRPOEngine got reference=None; set kl_coef: 0 or pass a reference")
