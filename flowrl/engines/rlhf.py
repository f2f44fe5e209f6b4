"""``RLHFEngine``: PPO over policy, reference, reward, value, ppo_policy and ppo_value.

Written with ``@flow`` like any user engine: read it as a template for your own.
"""

from __future__ import annotations

from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


class RLHFEngine(Engine):
    """PPO: generate, score against reference/value/reward, then train policy and value."""

    def __init__(self, policy: BaseModule, reference: BaseModule, reward: BaseModule,
                 value: BaseModule, ppo_policy: BaseModule, ppo_value: BaseModule) -> None:
        @flow(name="rollout")
        def rollout(batch):
            out = policy.forward_step(batch)
            ref = reference.forward_step(out)
            val = value.forward_step(out)
            rew = reward.forward_step(out, ref, val)
            return out, ref, val, rew

        @flow(name="train")
        def train(batch):
            ppo_policy.train_step(batch)
            ppo_value.train_step(batch)

        super().__init__(rollout, train, sync={ppo_policy: policy, ppo_value: value}, name="rlhf")
