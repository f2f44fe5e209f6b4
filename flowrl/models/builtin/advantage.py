"""``Advantage``: the algorithm's advantage math as a weightless module in the flow.

It reads the rollout's ``score`` [B] and ``response_mask`` [B, N] and, by configuration
(:class:`~flowrl.algorithms.AlgorithmSettings`):

* DAPO's overlong penalty is added to ``score`` when ``algorithm.overlong`` is on;
* the KL penalty goes into the token rewards (``r_t - beta kl_t``) when ``algorithm.kl.
  placement == "reward"`` and ``coef > 0`` (needs ``logprobs`` and ``ref_logprobs``);
* ``algorithm.advantage.estimator`` runs on those rewards through
  :func:`flowrl.algorithms.compute_advantages`, with ``group_size =
  runtime_args.num_inference_per_prompt`` and the estimator's model-computed inputs taken
  from the batch (:data:`INPUT_KEYS`: GAE's ``values`` from the Critic, ReMax's
  ``baseline_rewards`` from the reward's ``baseline_step`` as ``baseline_score``).

A multi-turn batch (an agent rollout, :mod:`flowrl.agents.trajectory`) is recognised by its
keys: ``token_rewards`` (each turn's reward on its last policy token) are the rewards instead
of ``score`` alone, and ``response_attention_mask`` goes to estimators that take it (GAE,
REINFORCE++), so returns run across the observations between turns.

Outputs ``advantages`` and ``returns`` (``[B, N]``; the critic's targets for GAE, equal to
the advantages for the critic-free estimators). Logged: ``advantages/mean``,
``advantages/std`` (over real tokens), ``score/mean`` (after the overlong penalty) and
``kl_reward`` when the penalty is in the reward.
"""

from __future__ import annotations

import torch

from flowrl.algorithms import (AlgorithmSettings, advantage_inputs, apply_overlong_penalty,
                               compute_advantages, kl_estimate, kl_in_reward, masked_mean)
from flowrl.algorithms.advantages import accepts_attention_mask
from flowrl.algorithms.masked import scores_to_tokens
from flowrl.errors import AlgorithmError
from flowrl.models.base import BaseModule, outputs

#: estimator input -> (batch key, what produces it)
INPUT_KEYS: dict[str, tuple[str, str]] = {
    "values": ("values", "the Critic's forward_step"),
    "baseline_rewards": ("baseline_score", "the reward's baseline_step on the Policy's "
                                           "greedy_step responses"),
}
#: batch keys every estimator needs, and what produces them
BASE_KEYS: dict[str, str] = {"score": "the reward (FunctionReward or RewardModel)",
                             "response_mask": "the Policy's forward_step"}
KL_KEYS: dict[str, str] = {"logprobs": "the Policy's forward_step",
                           "ref_logprobs": "the Reference's forward_step"}


class Advantage(BaseModule):
    """Weightless: turns scores (and values, reference log-probs) into advantages."""

    def __init__(self, name: str, algorithm: AlgorithmSettings | None = None) -> None:
        super().__init__(name)
        self.algorithm = algorithm if algorithm is not None else AlgorithmSettings()

    @property
    def estimator(self) -> str:
        return self.algorithm.advantage.estimator

    @property
    def kl_in_reward(self) -> bool:
        """Whether the KL penalty goes into the rewards (needs a reference)."""
        kl = self.algorithm.kl
        return kl.placement == "reward" and kl.coef > 0

    def required_keys(self) -> dict[str, str]:
        """Batch key -> what produces it, for the configured algorithm."""
        need = dict(BASE_KEYS)
        for arg in sorted(advantage_inputs(self.estimator)):
            key, source = INPUT_KEYS.get(arg, (arg, "a model of your flow"))
            need[key] = source
        if self.kl_in_reward:
            need.update(KL_KEYS)
        return need

    def _check(self, data: dict) -> None:
        for key, source in self.required_keys().items():
            if key not in data:
                why = " for KL-in-reward (algorithm.kl.placement='reward', coef > 0)" \
                    if key in KL_KEYS else ""
                raise AlgorithmError(
                    f"{self.name}: advantage estimator {self.estimator!r} needs batch key "
                    f"{key!r}{why}, produced by {source}; the batch has "
                    f"{', '.join(sorted(data)) or 'no keys'}")

    def score(self, data: dict) -> torch.Tensor:
        """``score`` [B] with DAPO's overlong penalty when it is on."""
        score = data["score"].float()
        o = self.algorithm.overlong
        if o.enabled:
            score = apply_overlong_penalty(score, data["response_mask"], max_length=o.max_length,
                                           buffer=o.buffer, penalty_factor=o.penalty_factor)
        return score

    def rewards(self, score: torch.Tensor, data: dict) -> torch.Tensor:
        """``score`` as the estimator's rewards: ``[B]`` scores (a multi-turn batch: its
        ``[B, N]`` ``token_rewards``) or, with KL in the reward, ``[B, N]`` token rewards
        ``r_t - beta kl_t``."""
        rewards = score
        if "token_rewards" in data:  # per-turn rewards where earned; the penalty at the end
            rewards = data["token_rewards"].float() + scores_to_tokens(
                score - data["score"].float(), data["response_mask"])
        if not self.kl_in_reward:
            return rewards
        kl = self.algorithm.kl
        return kl_in_reward(rewards, data["logprobs"], data["ref_logprobs"],
                            data["response_mask"], kl_coef=kl.coef, estimator=kl.estimator)

    @outputs("advantages", "returns")
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        """``advantages`` and ``returns`` ``[B, N]`` for a rollout batch."""
        self._check(data)
        mask = data["response_mask"]
        score = self.score(data)
        rewards = self.rewards(score, data)
        inputs = {arg: data[INPUT_KEYS.get(arg, (arg,))[0]].float()
                  for arg in advantage_inputs(self.estimator)}
        if "response_attention_mask" in data and accepts_attention_mask(self.estimator):
            inputs["attention_mask"] = data["response_attention_mask"]
        out = compute_advantages(self.estimator, rewards, mask,
                                 group_size=self.runtime_args.num_inference_per_prompt,
                                 **inputs, **self.algorithm.advantage.options)
        self._log_metrics(data, score, out.advantages, mask)
        return {"advantages": out.advantages, "returns": out.returns}

    def _log_metrics(self, data: dict, score: torch.Tensor, adv: torch.Tensor,
                     mask: torch.Tensor) -> None:
        m = (mask != 0).to(adv.dtype)
        mean = masked_mean(adv, m)
        var = masked_mean((adv - mean).square(), m)
        self.log("advantages/mean", float(mean))
        self.log("advantages/std", float(var.sqrt()))
        self.log("score/mean", float(score.float().mean()))
        if self.kl_in_reward:
            kl = kl_estimate(data["logprobs"], data["ref_logprobs"], mask,
                             self.algorithm.kl.estimator)
            self.log("kl_reward", float(masked_mean(kl, m)))
