"""ReMax: REINFORCE with the reward of the greedy response as each prompt's baseline.

The policy decodes each prompt twice (sampled: ``forward_step``; greedy: ``greedy_step``),
the reward scores both, and ``advantage`` subtracts the greedy score (``baseline_score``).
"""

from __future__ import annotations

from flowrl.config import FlowRLConfig
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


def engine(policy: BaseModule, reward: BaseModule, advantage: BaseModule, actor: BaseModule,
           reference: BaseModule | None = None, *, config: FlowRLConfig) -> Engine:
    """``reference`` is ``None`` when ``algorithm.kl.coef`` is 0."""

    @flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)
        greedy = policy.greedy_step(out)                # baseline_response(_mask)
        score = reward.forward_step(out)
        baseline = reward.baseline_step(out, greedy)    # baseline_score [B]
        if reference is None:
            return out, score, baseline, advantage.forward_step(out, score, baseline)
        ref = reference.forward_step(out)
        return out, ref, score, baseline, advantage.forward_step(out, ref, score, baseline)

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)

    return Engine(rollout, train, sync={actor: policy}, name="remax", config=config)
