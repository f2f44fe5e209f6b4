"""PPO: a critic's values, GAE advantages, and two trainers (policy and value).

ChatLearn's six models, named by role: policy, reference, reward, critic (value),
actor (ppo_policy) and critic_trainer (ppo_value).
"""

from __future__ import annotations

from flowrl.config import FlowRLConfig
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


def engine(policy: BaseModule, critic: BaseModule, reward: BaseModule | None,
           advantage: BaseModule,
           actor: BaseModule, critic_trainer: BaseModule, reference: BaseModule | None = None,
           *, config: FlowRLConfig) -> Engine:
    """``reference`` is ``None`` when ``algorithm.kl.coef`` is 0; ``reward`` is ``None``
    when the policy scores its own samples (an agent's environment)."""

    @flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)
        values = critic.forward_step(out)             # values [B, N]
        if reward is None:                            # an agent: the episodes carry their score
            if reference is None:
                return out, values, advantage.forward_step(out, values)
            ref = reference.forward_step(out)
            return out, ref, values, advantage.forward_step(out, ref, values)
        score = reward.forward_step(out)
        if reference is None:
            return out, values, score, advantage.forward_step(out, values, score)
        ref = reference.forward_step(out)
        return out, ref, values, score, advantage.forward_step(out, ref, values, score)

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)                       # PPO-clip on advantages
        critic_trainer.train_step(batch)              # value loss on returns

    return Engine(rollout, train, sync={actor: policy, critic_trainer: critic}, name="ppo",
                  config=config)
